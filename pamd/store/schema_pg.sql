-- pamd schema for the Postgres store (DESIGN.md section 6): migration 1, everything SQLite's migrations 1-5 create.
-- Applied by pamd.store.pg.PostgresStore.migrate inside one transaction, under an advisory lock.
--
-- Conventions (the same tables and names as schema_sqlite*.sql, in Postgres types)
--   * SI units only: litres (_l), kilometres (_km), km/h; money in the user's currency (profiles.currency).
--   * Instants are timestamptz (UTC); calendar dates are date; booleans are boolean; JSON columns are jsonb,
--     except pam_alerts' own facts and actions (json: an alert read back is the alert that was stored).
--   * Quiet hours stay HH:MM text (the user's local wall clock, parsed by pamd.alerts.prefs.parse_hhmm).
--   * pamd's own identifiers (alert ids are ULIDs) use COLLATE "C", so text order is byte order as in SQLite
--     whatever the database's default collation: the outbox keeps per-user order by alert id.

CREATE TABLE IF NOT EXISTS pamd_migrations (
    version     integer PRIMARY KEY,
    applied_at  timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS profiles (
    id                 text PRIMARY KEY,
    email              text,
    full_name          text,
    status             text NOT NULL DEFAULT 'active',
    timezone           text NOT NULL DEFAULT 'UTC',              -- IANA name
    preferred_units    text NOT NULL DEFAULT 'metric',           -- metric | imperial
    currency           text NOT NULL DEFAULT 'USD',              -- ISO 4217
    vehicle_type       text,
    max_driving_hours  double precision,
    created_at         timestamptz,
    updated_at         timestamptz
);

CREATE TABLE IF NOT EXISTS vehicles (
    id                       text PRIMARY KEY,
    user_id                  text NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
    name                     text,
    vehicle_type             text,
    fuel_type                text,
    fuel_capacity_l          double precision,
    consumption_l_per_100km  double precision,
    odometer_km              double precision,
    is_primary               boolean NOT NULL DEFAULT false,
    created_at               timestamptz,
    updated_at               timestamptz
);
CREATE INDEX IF NOT EXISTS vehicles_user_primary_idx ON vehicles (user_id, is_primary DESC, id);

CREATE TABLE IF NOT EXISTS fuel_log (
    id            text PRIMARY KEY,
    user_id       text NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
    vehicle_id    text REFERENCES vehicles (id) ON DELETE CASCADE,
    logged_at     timestamptz,
    volume_l      double precision,
    total_cost    double precision,
    odometer_km   double precision,
    is_full_tank  boolean DEFAULT true,
    lat           double precision,
    lon           double precision,
    created_at    timestamptz
);
CREATE INDEX IF NOT EXISTS fuel_log_vehicle_time_idx ON fuel_log (vehicle_id, logged_at);
CREATE INDEX IF NOT EXISTS fuel_log_user_time_idx ON fuel_log (user_id, logged_at);

CREATE TABLE IF NOT EXISTS budgets (
    id          text PRIMARY KEY,
    user_id     text NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
    category    text,                                            -- NULL or 'total': the whole budget
    amount      double precision,
    period      text NOT NULL DEFAULT 'monthly',                 -- weekly | monthly | yearly
    start_date  date,
    end_date    date,
    created_at  timestamptz
);
CREATE INDEX IF NOT EXISTS budgets_user_idx ON budgets (user_id);

CREATE TABLE IF NOT EXISTS expenses (
    id           text PRIMARY KEY,
    user_id      text NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
    amount       double precision,
    category     text,
    description  text,
    date         date,                                           -- the user's local date
    created_at   timestamptz
);
CREATE INDEX IF NOT EXISTS expenses_user_date_idx ON expenses (user_id, date);

CREATE TABLE IF NOT EXISTS trips (
    id           text PRIMARY KEY,
    user_id      text NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
    origin       text,
    destination  text,
    dest_lat     double precision,
    dest_lon     double precision,
    start_date   date,
    end_date     date,
    flex_days    integer NOT NULL DEFAULT 0,
    status       text NOT NULL DEFAULT 'planned',                -- planned | active | completed
    route_data   jsonb,
    created_at   timestamptz
);
CREATE INDEX IF NOT EXISTS trips_status_start_idx ON trips (status, start_date);
CREATE INDEX IF NOT EXISTS trips_user_idx ON trips (user_id, status);

CREATE TABLE IF NOT EXISTS maintenance_records (
    id                    text PRIMARY KEY,
    user_id               text NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
    vehicle_id            text REFERENCES vehicles (id) ON DELETE CASCADE,
    task                  text,
    date                  date,                                  -- the work was done
    odometer_km           double precision,
    cost                  double precision,
    next_due_date         date,
    next_due_odometer_km  double precision,
    created_at            timestamptz
);
CREATE INDEX IF NOT EXISTS maintenance_user_idx ON maintenance_records (user_id, vehicle_id);
CREATE INDEX IF NOT EXISTS maintenance_due_date_idx ON maintenance_records (next_due_date);

CREATE TABLE IF NOT EXISTS calendar_events (
    id             text PRIMARY KEY,
    user_id        text NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
    title          text,
    start_at       timestamptz,
    location_name  text,
    lat            double precision,
    lon            double precision,
    created_at     timestamptz
);
CREATE INDEX IF NOT EXISTS calendar_events_user_start_idx ON calendar_events (user_id, start_at);
CREATE INDEX IF NOT EXISTS calendar_events_start_idx ON calendar_events (start_at);

CREATE TABLE IF NOT EXISTS user_locations (
    user_id      text NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
    recorded_at  timestamptz NOT NULL,
    lat          double precision,
    lon          double precision,
    speed_kmh    double precision,
    PRIMARY KEY (user_id, recorded_at)
);
CREATE INDEX IF NOT EXISTS user_locations_recorded_idx ON user_locations (recorded_at);

CREATE TABLE IF NOT EXISTS notification_preferences (
    user_id      text NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
    monitor      text NOT NULL,                                  -- a monitor name, or '*' for all
    enabled      boolean NOT NULL DEFAULT true,
    quiet_start  text,                                           -- HH:MM, user's local time
    quiet_end    text,
    max_per_day  integer,
    PRIMARY KEY (user_id, monitor)
);

-- pamd's own state: every alert it accepted and what became of it.
CREATE TABLE IF NOT EXISTS pam_alerts (
    id             text COLLATE "C" PRIMARY KEY,                 -- ULID, sortable by creation time
    user_id        text NOT NULL,
    monitor        text NOT NULL,
    kind           text NOT NULL,
    priority       text NOT NULL CHECK (priority IN ('low', 'medium', 'high', 'urgent')),
    title          text NOT NULL,
    body           text NOT NULL,
    facts          json NOT NULL DEFAULT '{}',                   -- json, not jsonb: read back exactly as written
    actions        json NOT NULL DEFAULT '[]',                   -- (key order included)
    fingerprint    text NOT NULL,
    epoch          bigint NOT NULL DEFAULT 0,
    state          text NOT NULL DEFAULT 'pending',              -- pending | held | delivered | failed | resolved ...
    scheduled_at   timestamptz,                                  -- the tick that produced it
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz,
    delivered_at   timestamptz,
    resolved_at    timestamptz,
    deliver_after  timestamptz                                   -- held alerts (quiet hours) wait until then
);
CREATE INDEX IF NOT EXISTS pam_alerts_user_monitor_idx ON pam_alerts (user_id, monitor, created_at);
CREATE INDEX IF NOT EXISTS pam_alerts_held_idx ON pam_alerts (deliver_after) WHERE state = 'held';
CREATE INDEX IF NOT EXISTS pam_alerts_outbox_idx ON pam_alerts (created_at) WHERE state IN ('pending', 'failed');

-- The dedupe and cooldown state: one row per fingerprint pamd alerted about that still holds.
CREATE TABLE IF NOT EXISTS pam_alert_state (
    fingerprint    text PRIMARY KEY,
    user_id        text NOT NULL,
    monitor        text NOT NULL,
    kind           text NOT NULL,
    priority       text NOT NULL CHECK (priority IN ('low', 'medium', 'high', 'urgent')),
    last_alert_id  text NOT NULL,
    last_sent_at   timestamptz NOT NULL,
    last_seen_at   timestamptz NOT NULL,                         -- the last tick that produced it
    epoch          bigint NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS pam_alert_state_monitor_seen_idx ON pam_alert_state (monitor, last_seen_at);
CREATE INDEX IF NOT EXISTS pam_alert_state_user_idx ON pam_alert_state (user_id, monitor);

-- The fencing token of the newest leadership term that wrote alert state (DESIGN.md section 5).
CREATE TABLE IF NOT EXISTS pamd_fence (
    name   text PRIMARY KEY,
    epoch  bigint NOT NULL
);

-- The outbox's memory of deliveries that did not succeed at once (see schema_sqlite_005.sql).
CREATE TABLE IF NOT EXISTS pam_deliveries (
    alert_id         text COLLATE "C" NOT NULL,
    sink             text NOT NULL,
    user_id          text NOT NULL,
    state            text NOT NULL CHECK (state IN ('pending', 'delivered', 'failed', 'expired')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,
    last_error       text,
    updated_at       timestamptz NOT NULL,
    PRIMARY KEY (alert_id, sink)
);
CREATE INDEX IF NOT EXISTS pam_deliveries_queue_idx ON pam_deliveries (sink, user_id, alert_id)
    WHERE state = 'pending';

-- What the app shows the user (written by the "table" sink; idempotent on alert_id).
CREATE TABLE IF NOT EXISTS notifications (
    id          text PRIMARY KEY,
    user_id     text NOT NULL,
    alert_id    text UNIQUE,
    type        text NOT NULL,                                   -- the alert kind, e.g. fuel_low
    priority    text NOT NULL CHECK (priority IN ('low', 'medium', 'high', 'urgent')),
    title       text NOT NULL,
    body        text NOT NULL,
    data        jsonb NOT NULL DEFAULT '{}',                     -- facts and actions
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz,
    read_at     timestamptz
);
CREATE INDEX IF NOT EXISTS notifications_user_created_idx ON notifications (user_id, created_at);
