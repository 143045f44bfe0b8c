-- Migration 5: the outbox's memory of deliveries that did not succeed at once (issue 5).
-- One row per (alert, sink) that failed, was refused, expired, or waits behind an earlier undelivered alert of the
-- same user for that sink (per-user order). A delivery that succeeds at its first attempt leaves no row: the common
-- case costs nothing here. An alert's own state (pam_alerts.state) becomes 'delivered' when every sink has it.
CREATE TABLE IF NOT EXISTS pam_deliveries (
    alert_id         TEXT NOT NULL,
    sink             TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed', 'expired')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at  TEXT NOT NULL,
    last_error       TEXT,
    updated_at       TEXT NOT NULL,
    PRIMARY KEY (alert_id, sink)
);
CREATE INDEX IF NOT EXISTS pam_deliveries_queue_idx ON pam_deliveries (sink, user_id, alert_id) WHERE state = 'pending';
