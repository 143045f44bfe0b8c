-- pamd schema for the embedded SQLite store (DESIGN.md section 6). Idempotent: safe to apply again.
--
-- Conventions
--   * Table and column names are the PAM app's, so the same code reads an existing Supabase project.
--   * SI units only: litres (_l), kilometres (_km), km/h; money in the user's currency (profiles.currency).
--   * Timestamps are UTC ISO-8601 text, fixed width with milliseconds: 2026-01-31T09:30:00.000Z
--     (pamd.store.records.format_ts). Calendar dates are YYYY-MM-DD text. Booleans are 0/1 integers.
--   * JSON columns (route_data, facts, actions, data) hold JSON text.
--   * The app's tables stay lenient about values (the app writes them, pamd only reads them and skips bad rows
--     with a warning); pamd's own tables (pam_alerts, notifications, pamd_migrations) are strict.

CREATE TABLE IF NOT EXISTS pamd_migrations (
    version     INTEGER PRIMARY KEY,
    applied_at  TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS profiles (
    id                 TEXT PRIMARY KEY NOT NULL,
    email              TEXT,
    full_name          TEXT,
    status             TEXT NOT NULL DEFAULT 'active',
    timezone           TEXT NOT NULL DEFAULT 'UTC',              -- IANA name
    preferred_units    TEXT NOT NULL DEFAULT 'metric',           -- metric | imperial
    currency           TEXT NOT NULL DEFAULT 'USD',              -- ISO 4217
    vehicle_type       TEXT,
    max_driving_hours  REAL,
    created_at         TEXT,
    updated_at         TEXT
);

CREATE TABLE IF NOT EXISTS vehicles (
    id                       TEXT PRIMARY KEY NOT NULL,
    user_id                  TEXT NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
    name                     TEXT,
    vehicle_type             TEXT,                               -- rv_class_a, campervan, truck_trailer, ...
    fuel_type                TEXT,                               -- diesel | petrol | lpg | electric ...
    fuel_capacity_l          REAL,
    consumption_l_per_100km  REAL,
    odometer_km              REAL,                               -- current odometer as last reported
    is_primary               INTEGER NOT NULL DEFAULT 0,
    created_at               TEXT,
    updated_at               TEXT
);
CREATE INDEX IF NOT EXISTS vehicles_user_primary_idx ON vehicles (user_id, is_primary DESC, id);

CREATE TABLE IF NOT EXISTS fuel_log (
    id            TEXT PRIMARY KEY NOT NULL,
    user_id       TEXT NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
    vehicle_id    TEXT REFERENCES vehicles (id) ON DELETE CASCADE,
    logged_at     TEXT,
    volume_l      REAL,
    total_cost    REAL,
    odometer_km   REAL,
    is_full_tank  INTEGER DEFAULT 1,
    lat           REAL,
    lon           REAL,
    created_at    TEXT
);
CREATE INDEX IF NOT EXISTS fuel_log_vehicle_time_idx ON fuel_log (vehicle_id, logged_at);
CREATE INDEX IF NOT EXISTS fuel_log_user_time_idx ON fuel_log (user_id, logged_at);

CREATE TABLE IF NOT EXISTS budgets (
    id          TEXT PRIMARY KEY NOT NULL,
    user_id     TEXT NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
    category    TEXT,                                            -- NULL or 'total': the whole budget
    amount      REAL,
    period      TEXT NOT NULL DEFAULT 'monthly',                 -- weekly | monthly | yearly
    start_date  TEXT,
    end_date    TEXT,
    created_at  TEXT
);
CREATE INDEX IF NOT EXISTS budgets_user_idx ON budgets (user_id);

CREATE TABLE IF NOT EXISTS expenses (
    id           TEXT PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
    amount       REAL,
    category     TEXT,
    description  TEXT,
    date         TEXT,                                           -- YYYY-MM-DD, the user's local date
    created_at   TEXT
);
CREATE INDEX IF NOT EXISTS expenses_user_date_idx ON expenses (user_id, date);

CREATE TABLE IF NOT EXISTS trips (
    id           TEXT PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
    origin       TEXT,
    destination  TEXT,
    dest_lat     REAL,
    dest_lon     REAL,
    start_date   TEXT,
    end_date     TEXT,
    flex_days    INTEGER NOT NULL DEFAULT 0,
    status       TEXT NOT NULL DEFAULT 'planned',                -- planned | active | completed
    route_data   TEXT,                                           -- JSON
    created_at   TEXT
);
CREATE INDEX IF NOT EXISTS trips_status_start_idx ON trips (status, start_date);
CREATE INDEX IF NOT EXISTS trips_user_idx ON trips (user_id, status);

CREATE TABLE IF NOT EXISTS maintenance_records (
    id                    TEXT PRIMARY KEY NOT NULL,
    user_id               TEXT NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
    vehicle_id            TEXT REFERENCES vehicles (id) ON DELETE CASCADE,
    task                  TEXT,
    date                  TEXT,                                  -- YYYY-MM-DD the work was done
    odometer_km           REAL,
    cost                  REAL,
    next_due_date         TEXT,
    next_due_odometer_km  REAL,
    created_at            TEXT
);
CREATE INDEX IF NOT EXISTS maintenance_user_idx ON maintenance_records (user_id, vehicle_id);
CREATE INDEX IF NOT EXISTS maintenance_due_date_idx ON maintenance_records (next_due_date);

CREATE TABLE IF NOT EXISTS calendar_events (
    id             TEXT PRIMARY KEY NOT NULL,
    user_id        TEXT NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
    title          TEXT,
    start_at       TEXT,
    location_name  TEXT,
    lat            REAL,
    lon            REAL,
    created_at     TEXT
);
CREATE INDEX IF NOT EXISTS calendar_events_user_start_idx ON calendar_events (user_id, start_at);
CREATE INDEX IF NOT EXISTS calendar_events_start_idx ON calendar_events (start_at);

CREATE TABLE IF NOT EXISTS user_locations (
    user_id      TEXT NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
    recorded_at  TEXT NOT NULL,
    lat          REAL,
    lon          REAL,
    speed_kmh    REAL,
    PRIMARY KEY (user_id, recorded_at)
);
CREATE INDEX IF NOT EXISTS user_locations_recorded_idx ON user_locations (recorded_at);

CREATE TABLE IF NOT EXISTS notification_preferences (
    user_id      TEXT NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
    monitor      TEXT NOT NULL,                                  -- a monitor name, or '*' for all
    enabled      INTEGER NOT NULL DEFAULT 1,
    quiet_start  TEXT,                                           -- HH:MM, user's local time
    quiet_end    TEXT,
    max_per_day  INTEGER,
    PRIMARY KEY (user_id, monitor)
);

-- pamd's own state: every alert it accepted and what became of it.
CREATE TABLE IF NOT EXISTS pam_alerts (
    id            TEXT PRIMARY KEY NOT NULL,                     -- ULID, sortable by creation time
    user_id       TEXT NOT NULL,
    monitor       TEXT NOT NULL,
    kind          TEXT NOT NULL,
    priority      TEXT NOT NULL CHECK (priority IN ('low', 'medium', 'high', 'urgent')),
    title         TEXT NOT NULL,
    body          TEXT NOT NULL,
    facts         TEXT NOT NULL DEFAULT '{}',                    -- JSON
    actions       TEXT NOT NULL DEFAULT '[]',                    -- JSON
    fingerprint   TEXT NOT NULL,
    epoch         INTEGER NOT NULL DEFAULT 0,
    state         TEXT NOT NULL DEFAULT 'pending',               -- pending | held | delivered | suppressed | expired
    scheduled_at  TEXT,                                          -- the tick that produced it
    created_at    TEXT NOT NULL,
    expires_at    TEXT,
    delivered_at  TEXT,
    resolved_at   TEXT
);
CREATE INDEX IF NOT EXISTS pam_alerts_fingerprint_idx ON pam_alerts (fingerprint, created_at);
CREATE INDEX IF NOT EXISTS pam_alerts_user_monitor_idx ON pam_alerts (user_id, monitor, created_at);
CREATE INDEX IF NOT EXISTS pam_alerts_state_idx ON pam_alerts (state, created_at);

-- What the app shows the user (written by the "table" sink; idempotent on alert_id).
CREATE TABLE IF NOT EXISTS notifications (
    id          TEXT PRIMARY KEY NOT NULL,
    user_id     TEXT NOT NULL,
    alert_id    TEXT UNIQUE,
    type        TEXT NOT NULL,                                   -- the alert kind, e.g. fuel_low
    priority    TEXT NOT NULL CHECK (priority IN ('low', 'medium', 'high', 'urgent')),
    title       TEXT NOT NULL,
    body        TEXT NOT NULL,
    data        TEXT NOT NULL DEFAULT '{}',                      -- JSON: facts and actions
    created_at  TEXT NOT NULL,
    expires_at  TEXT,
    read_at     TEXT
);
CREATE INDEX IF NOT EXISTS notifications_user_created_idx ON notifications (user_id, created_at);
