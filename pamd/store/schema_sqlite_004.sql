-- Migration 4: cheaper alert writes (issue 3's throughput work).
-- The fingerprint index took a random B-tree insert per alert (fingerprints are hashes) and served only the
-- dropping of held alerts of resolved conditions, which the partial index of held alerts covers; dedupe reads
-- pam_alert_state. The state index held every alert ever written; what is waiting for delivery or retry is all a
-- reader needs, so a partial index keeps just that and stays small.
DROP INDEX IF EXISTS pam_alerts_fingerprint_idx;
DROP INDEX IF EXISTS pam_alerts_state_idx;
CREATE INDEX IF NOT EXISTS pam_alerts_outbox_idx ON pam_alerts (created_at) WHERE state IN ('pending', 'failed');
