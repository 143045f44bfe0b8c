-- Migration 3: the fencing token of the newest leadership term that wrote alert state (DESIGN.md section 5).
-- A write carrying an older epoch is refused, so a leader that was paused past its lease cannot deliver.
CREATE TABLE IF NOT EXISTS pamd_fence (
    name   TEXT PRIMARY KEY NOT NULL,
    epoch  INTEGER NOT NULL
);
