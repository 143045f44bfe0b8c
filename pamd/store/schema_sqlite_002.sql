-- Migration 2: the alert pipeline's memory (issue 3).

-- One row per fingerprint ("the same condition") that pamd alerted about and that still holds: the dedupe and
-- cooldown state. A tick that no longer produces a fingerprint deletes its row (the condition resolved).
CREATE TABLE IF NOT EXISTS pam_alert_state (
    fingerprint    TEXT PRIMARY KEY NOT NULL,
    user_id        TEXT NOT NULL,
    monitor        TEXT NOT NULL,
    kind           TEXT NOT NULL,
    priority       TEXT NOT NULL CHECK (priority IN ('low', 'medium', 'high', 'urgent')),
    last_alert_id  TEXT NOT NULL,
    last_sent_at   TEXT NOT NULL,
    last_seen_at   TEXT NOT NULL,                                -- the last tick that produced it
    epoch          INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS pam_alert_state_monitor_seen_idx ON pam_alert_state (monitor, last_seen_at);
CREATE INDEX IF NOT EXISTS pam_alert_state_user_idx ON pam_alert_state (user_id, monitor);

-- Held alerts (quiet hours) wait until deliver_after. (The daily cap counts through pam_alerts_user_monitor_idx.)
ALTER TABLE pam_alerts ADD COLUMN deliver_after TEXT;
CREATE INDEX IF NOT EXISTS pam_alerts_held_idx ON pam_alerts (deliver_after) WHERE state = 'held';
