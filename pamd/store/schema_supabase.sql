-- The writes of the Supabase store (pamd.store.supabase_alerts) that must be atomic, as PostgREST RPC functions:
-- each call is one transaction, with the semantics of pamd.store.pg_alerts (see there for the why of each step).
-- Rows travel as JSON arrays of objects keyed by column name (json_populate_recordset); instants as ISO text.
-- Installed with the generated read functions by `pamd db sql` (pamd.store.supabase_sql.install_sql).

-- record_decisions: the epoch fence, then the accepted alerts, their dedupe state, the seen fingerprints and the
-- sweep, all in one transaction. Returns the resolved fingerprints (a JSON array).
CREATE OR REPLACE FUNCTION pamd_record_decisions(
    p_alerts json, p_states json, p_seen text[], p_stamp timestamptz, p_monitor text, p_sweep boolean,
    p_sweep_user text, p_epoch bigint
) RETURNS json LANGUAGE plpgsql AS $pamd$
DECLARE
    newest bigint;
    resolved text[];
    s pam_alert_state;
BEGIN
    IF p_epoch > 0 THEN
        SELECT epoch INTO newest FROM pamd_fence WHERE name = 'leader' FOR UPDATE;
        IF newest IS NULL THEN  -- the first term to write: two may race to create the row, GREATEST settles it
            INSERT INTO pamd_fence (name, epoch) VALUES ('leader', p_epoch) ON CONFLICT (name) DO UPDATE
                SET epoch = GREATEST(pamd_fence.epoch, excluded.epoch) RETURNING epoch INTO newest;
        ELSIF p_epoch > newest THEN
            UPDATE pamd_fence SET epoch = p_epoch WHERE name = 'leader';
            newest := p_epoch;
        END IF;
        IF p_epoch < newest THEN
            -- SQLSTATE PAMDF: the client turns it into pamd.alerts.book.FencedError.
            RAISE EXCEPTION USING ERRCODE = 'PAMDF', MESSAGE = format('epoch %s is older than epoch %s, which '
                'already wrote: this replica lost its leadership and must not deliver', p_epoch, newest);
        END IF;
    END IF;
    INSERT INTO pam_alerts (id, user_id, monitor, kind, priority, title, body, facts, actions, fingerprint, epoch,
                            state, scheduled_at, created_at, expires_at, deliver_after)
    SELECT id, user_id, monitor, kind, priority, title, body, facts, actions, fingerprint, epoch, state,
           scheduled_at, created_at, expires_at, deliver_after
    FROM json_populate_recordset(NULL::pam_alerts, p_alerts)
    ON CONFLICT DO NOTHING;
    -- One statement per state row, as the Postgres store's executemany: a fingerprint twice in one tick is an
    -- upsert of an upsert, not an error.
    FOR s IN SELECT * FROM json_populate_recordset(NULL::pam_alert_state, p_states) LOOP
        INSERT INTO pam_alert_state (fingerprint, user_id, monitor, kind, priority, last_alert_id, last_sent_at,
                                     last_seen_at, epoch)
        VALUES (s.fingerprint, s.user_id, s.monitor, s.kind, s.priority, s.last_alert_id, s.last_sent_at,
                s.last_seen_at, s.epoch)
        ON CONFLICT (fingerprint) DO UPDATE SET priority = excluded.priority,
            last_alert_id = excluded.last_alert_id, last_sent_at = excluded.last_sent_at,
            last_seen_at = excluded.last_seen_at, epoch = excluded.epoch;
    END LOOP;
    IF cardinality(p_seen) > 0 THEN
        UPDATE pam_alert_state SET last_seen_at = p_stamp WHERE fingerprint = ANY(p_seen);
    END IF;
    IF NOT p_sweep THEN
        RETURN '[]'::json;
    END IF;
    WITH gone AS (
        DELETE FROM pam_alert_state
        WHERE monitor = p_monitor AND last_seen_at < p_stamp AND (p_sweep_user IS NULL OR user_id = p_sweep_user)
        RETURNING fingerprint
    ) SELECT COALESCE(array_agg(fingerprint), '{}') INTO resolved FROM gone;
    IF cardinality(resolved) > 0 THEN
        UPDATE pam_alerts SET state = 'resolved', resolved_at = p_stamp
        WHERE state = 'held' AND deliver_after IS NOT NULL AND fingerprint = ANY(resolved);
    END IF;
    RETURN to_json(resolved);
END
$pamd$;

-- mark_alerts: one state for many alerts (delivered ones get delivered_at). Returns the rows changed.
CREATE OR REPLACE FUNCTION pamd_mark_alerts(p_ids text[], p_state text, p_stamp timestamptz)
RETURNS json LANGUAGE sql AS $pamd$
WITH changed AS (
    UPDATE pam_alerts SET state = p_state,
        delivered_at = CASE WHEN p_state = 'delivered' THEN p_stamp ELSE delivered_at END
    WHERE id = ANY(p_ids) RETURNING 1
) SELECT to_json(COUNT(*)) FROM changed
$pamd$;

-- save_deliveries: upsert the outbox rows (one statement per row, like executemany). Returns the rows written.
CREATE OR REPLACE FUNCTION pamd_save_deliveries(p_rows json) RETURNS json LANGUAGE plpgsql AS $pamd$
DECLARE
    d pam_deliveries;
    n integer := 0;
BEGIN
    FOR d IN SELECT * FROM json_populate_recordset(NULL::pam_deliveries, p_rows) LOOP
        INSERT INTO pam_deliveries (alert_id, sink, user_id, state, attempts, next_attempt_at, last_error,
                                    updated_at)
        VALUES (d.alert_id, d.sink, d.user_id, d.state, d.attempts, d.next_attempt_at, d.last_error, d.updated_at)
        ON CONFLICT (alert_id, sink) DO UPDATE SET state = excluded.state, attempts = excluded.attempts,
            next_attempt_at = excluded.next_attempt_at, last_error = excluded.last_error,
            updated_at = excluded.updated_at;
        n := n + 1;
    END LOOP;
    RETURN to_json(n);
END
$pamd$;

-- settle_alerts: pending alerts whose deliveries are all settled become delivered (or failed if any failed or
-- expired). Returns {alert id: new state}.
CREATE OR REPLACE FUNCTION pamd_settle_alerts(p_ids text[], p_stamp timestamptz) RETURNS json
LANGUAGE sql AS $pamd$
WITH settled AS (
    SELECT a.id, CASE WHEN COUNT(*) FILTER (WHERE d.state IN ('failed', 'expired')) > 0 THEN 'failed'
                      ELSE 'delivered' END AS state
    FROM pam_alerts AS a LEFT JOIN pam_deliveries AS d ON d.alert_id = a.id
    WHERE a.id = ANY(p_ids) AND a.state = 'pending'
    GROUP BY a.id
    HAVING COUNT(*) FILTER (WHERE d.state = 'pending') = 0
), changed AS (  -- runs although nothing reads it (a data-modifying WITH always does)
    UPDATE pam_alerts AS a SET state = s.state,
        delivered_at = CASE WHEN s.state = 'delivered' THEN p_stamp ELSE a.delivered_at END
    FROM settled AS s WHERE a.id = s.id
    RETURNING 1
) SELECT COALESCE(json_object_agg(id, state), '{}'::json) FROM settled
$pamd$;
