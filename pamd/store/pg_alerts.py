"""Postgres side of the alert pipeline and the outbox: the same semantics as :mod:`pamd.store.sqlite_alerts` and
:mod:`pamd.store.sqlite_outbox` (:class:`pamd.alerts.book.AlertBook`, :class:`pamd.alerts.outbox.OutboxBook`).

Lists travel as arrays (``= ANY($1)``, ``unnest``), so nothing is chunked. The epoch fence is checked in the same
transaction as the writes it guards, holding ``pamd_fence``'s row lock until commit: two replicas that both
believe they lead are serialised, and the older term is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec

from pamd.alerts.book import AlertContext, FencedError
from pamd.alerts.decide import AlertState, Decision
from pamd.alerts.outbox import Delivery
from pamd.alerts.prefs import PreferenceRow, local_midnight, parse_hhmm, zone
from pamd.alerts.seen import TickFingerprints
from pamd.model import Alert, Priority
from pamd.sinks.table import notification_data
from pamd.store.pg_base import PostgresBase, pg_ts

COUNTED_STATES = ["pending", "held", "delivered", "failed"]

# A batch's rows reach the server by binary COPY into a temporary staging table of the connection, then one
# INSERT ... SELECT applies them with ON CONFLICT. Parallel arrays through unnest() cost the daemon 24-38 ms of CPU
# per 2,000 budget alerts (asyncpg checks every array element against collections.abc ABCs) and the round trip
# 100-120 ms; COPY 13 ms and 65-69 ms. The staging tables live as long as the server connection (behind PgBouncer,
# whichever one the transaction gets: created there if missing) and are emptied at every commit.
_ALERT_COLUMNS_IN = ("id", "user_id", "monitor", "kind", "priority", "title", "body", "facts", "actions", "fingerprint",
                     "epoch", "state", "scheduled_at", "created_at", "expires_at", "deliver_after")
_STATE_COLUMNS_IN = ("fingerprint", "user_id", "monitor", "kind", "priority", "last_alert_id", "last_sent_at",
                     "last_seen_at", "epoch")
_STAGE = ("CREATE TEMP TABLE IF NOT EXISTS {stage} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
_INSERT_ALERT = (f"INSERT INTO pam_alerts ({', '.join(_ALERT_COLUMNS_IN)}) SELECT {', '.join(_ALERT_COLUMNS_IN)} "
                 "FROM pg_temp.pamd_stage_alerts ON CONFLICT DO NOTHING")
_UPSERT_STATE = (
    f"INSERT INTO pam_alert_state ({', '.join(_STATE_COLUMNS_IN)}) SELECT {', '.join(_STATE_COLUMNS_IN)} "
    "FROM pg_temp.pamd_stage_states ON CONFLICT (fingerprint) DO UPDATE SET priority = excluded.priority, "
    "last_alert_id = excluded.last_alert_id, last_sent_at = excluded.last_sent_at, "
    "last_seen_at = excluded.last_seen_at, epoch = excluded.epoch")
# A LATERAL walk of pam_alerts_user_monitor_idx per user (OFFSET 0 keeps the planner from flattening it into a
# join): as a join it may scan and sort the whole table for every batch of users (330 ms per 2,000 users at 160,000
# stored alerts, growing with the table).
_SENT_TODAY = """
SELECT u.user_id, a.monitor, COUNT(*) AS n
FROM unnest($1::text[], $2::timestamptz[]) AS u(user_id, since)
CROSS JOIN LATERAL (
    SELECT x.monitor FROM pam_alerts AS x
    WHERE x.user_id = u.user_id AND x.created_at >= u.since AND x.priority <> 'urgent' AND x.state = ANY($3::text[])
    OFFSET 0
) AS a
GROUP BY u.user_id, a.monitor
"""
# A complete tick's sweep: the monitor's states (one user's, with $5) that the tick did not decide. The tick's
# fingerprints come as one bytea of 16-byte digests ($3, see pamd.alerts.seen) and a text[] of other spellings
# ($4); a hash anti-join against them costs about 0.5 s for 218,000 states, where marking each as seen batch by
# batch cost about 5 s of updates a tick. States written after the tick began (by a later run) are left alone.
_SWEEP = """
DELETE FROM pam_alert_state AS s
WHERE s.monitor = $1 AND s.last_seen_at <= $2 {user}AND NOT EXISTS (
    SELECT 1 FROM (
        SELECT encode(substr($3::bytea, i * 16 + 1, 16), 'hex') AS fingerprint
        FROM generate_series(0, length($3::bytea) / 16 - 1) AS i
        UNION ALL SELECT unnest($4::text[])
    ) AS seen WHERE seen.fingerprint = s.fingerprint)
RETURNING s.fingerprint
"""
_ALERT_COLUMNS = ("a.id, a.user_id, a.monitor, a.kind, a.priority, a.title, a.body, a.facts::text AS facts, "
                  "a.actions::text AS actions, a.fingerprint, a.epoch, a.created_at, a.expires_at")
_SAVE = """
INSERT INTO pam_deliveries (alert_id, sink, user_id, state, attempts, next_attempt_at, last_error, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (alert_id, sink) DO UPDATE SET state = excluded.state, attempts = excluded.attempts,
    next_attempt_at = excluded.next_attempt_at, last_error = excluded.last_error, updated_at = excluded.updated_at
"""
# The head of each (sink, user) queue, if due.
_DUE_HEADS = """
SELECT h.sink, h.user_id, h.head FROM (
    SELECT sink, user_id, MIN(alert_id) AS head FROM pam_deliveries WHERE state = 'pending' GROUP BY sink, user_id
) AS h JOIN pam_deliveries AS d ON d.alert_id = h.head AND d.sink = h.sink
WHERE d.next_attempt_at <= $1 ORDER BY h.head LIMIT $2
"""
_DELIVERY_COLUMNS = "alert_id, sink, user_id, state, attempts, next_attempt_at, last_error"
# The table sink's rows: id and alert_id are both the alert's id (ON CONFLICT: a retried batch inserts nothing twice).
_NOTIFY = """
INSERT INTO "{table}" (id, user_id, alert_id, type, priority, title, body, data, created_at, expires_at)
SELECT r.id, r.user_id, r.id, r.kind, r.priority, r.title, r.body, r.data::jsonb, r.created_at, r.expires_at
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::timestamptz[],
            $9::timestamptz[]) AS r(id, user_id, kind, priority, title, body, data, created_at, expires_at)
ON CONFLICT DO NOTHING
"""


async def _stage(
    conn: asyncpg.Connection, stage: str, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]
) -> None:
    """COPY ``rows`` into the connection's staging table ``stage`` (shaped like ``table``), inside a transaction."""
    await conn.execute(_STAGE.format(stage=stage, table=table))
    await conn.copy_records_to_table(stage, records=rows, columns=columns, schema_name="pg_temp")


def _json(value: object) -> str:
    return msgspec.json.encode(value).decode()


class PostgresAlertQueries(PostgresBase):
    """The alert book on Postgres: tables ``pam_alert_state``, ``pam_alerts`` and ``pamd_fence``."""

    async def alert_states(self, fingerprints: Sequence[str]) -> dict[str, AlertState]:
        """See :meth:`pamd.alerts.book.AlertBook.alert_states`."""
        if not fingerprints:
            return {}
        sql = ("SELECT fingerprint, user_id, monitor, kind, priority, last_alert_id, last_sent_at, epoch "
               "FROM pam_alert_state WHERE fingerprint = ANY($1::text[])")
        return {row["fingerprint"]: AlertState(
                    fingerprint=row["fingerprint"], user_id=row["user_id"], monitor=row["monitor"],
                    kind=row["kind"], priority=Priority(row["priority"]), last_alert_id=row["last_alert_id"],
                    last_sent_at=row["last_sent_at"], epoch=row["epoch"])
                for row in await self._fetch(sql, list(fingerprints))}

    async def alert_context(self, monitor: str, alerts: Sequence[Alert], now: datetime) -> AlertContext:
        """See :meth:`pamd.alerts.book.AlertBook.alert_context`."""
        return await self._call(self._alert_context, monitor, sorted({a.user_id for a in alerts}), now)

    async def _alert_context(
        self, conn: asyncpg.Connection, monitor: str, users: list[str], now: datetime
    ) -> AlertContext:
        ctx = AlertContext()
        if users:
            for row in await conn.fetch("SELECT id, timezone FROM profiles WHERE id = ANY($1::text[])", users):
                ctx.timezones[row["id"]] = row["timezone"] or "UTC"
            sql = ("SELECT user_id, monitor, enabled, quiet_start, quiet_end, max_per_day FROM notification_preferences"
                   " WHERE user_id = ANY($1::text[]) AND monitor IN ('*', $2) ORDER BY user_id, monitor")
            for row in await conn.fetch(sql, users, monitor):
                pref = self._preference(row)
                ctx.preferences.setdefault(pref.user_id, []).append(pref)
            # Today's counts: per user since their own local midnight (computed per time zone name: a batch has
            # thousands of users and few zones).
            midnights = {name: pg_ts(local_midnight(now, zone(name))) for name in {*ctx.timezones.values(), "UTC"}}
            since = [midnights[ctx.timezones.get(user, "UTC")] for user in users]
            for row in await conn.fetch(_SENT_TODAY, users, since, COUNTED_STATES):
                ctx.sent_today[row["user_id"]] = ctx.sent_today.get(row["user_id"], 0) + row["n"]
                if row["monitor"] == monitor:
                    ctx.sent_today_by_monitor[row["user_id"]] = row["n"]
        return ctx

    def _preference(self, row: asyncpg.Record) -> PreferenceRow:
        cap = row["max_per_day"]
        if cap is not None and cap < 0:
            self._skip("notification_preferences", f"{row['user_id']}/{row['monitor']}", f"bad max_per_day {cap!r}")
            cap = None
        start, end = parse_hhmm(row["quiet_start"]), parse_hhmm(row["quiet_end"])
        if (row["quiet_start"] or row["quiet_end"]) and (start is None or end is None):
            self._skip("notification_preferences", f"{row['user_id']}/{row['monitor']}",
                       f"bad quiet hours {row['quiet_start']!r}-{row['quiet_end']!r} (expected HH:MM)")
        return PreferenceRow(user_id=row["user_id"], monitor=row["monitor"], enabled=row["enabled"],
                             quiet_start=start, quiet_end=end, max_per_day=cap)

    async def record_decisions(
        self,
        monitor: str,
        decisions: Sequence[Decision],
        now: datetime,
        *,
        scheduled_at: datetime | None = None,
        sweep_user: str | None = None,
        sweep: bool = False,
        seen: TickFingerprints | None = None,
        epoch: int = 0,
    ) -> list[str]:
        """See :meth:`pamd.alerts.book.AlertBook.record_decisions`: the sweep is by set difference with ``seen``,
        so a steady tick (every condition in cooldown) updates no state row."""
        stamp = pg_ts(now)
        tick = pg_ts(scheduled_at) if scheduled_at else None
        alerts: list[tuple[Any, ...]] = []
        states: list[tuple[Any, ...]] = []
        # Monitor, tick and seen time are one value per batch (parameters, not columns); the instants of a batch
        # repeat (creation time, a period's end, the end of quiet hours), so each is converted once.
        instants: dict[datetime, datetime] = {}

        def instant(value: datetime) -> datetime:
            converted = instants.get(value)
            if converted is None:
                converted = instants[value] = pg_ts(value)
            return converted

        for d in decisions:
            a = d.alert
            if not d.accepted:
                continue
            release = instant(d.release_at) if d.release_at else None
            alerts.append((a.id, a.user_id, monitor, a.kind, a.priority.value, a.title, a.body, _json(a.facts),
                           _json(a.actions), a.fingerprint, a.epoch, "held" if d.outcome == "held" else "pending",
                           tick, instant(a.created_at or now), instant(a.expires_at) if a.expires_at else None,
                           release))
            # A held alert reaches the user when quiet hours end: its cooldown runs from then.
            states.append((a.fingerprint, a.user_id, monitor, a.kind, a.priority.value, a.id, release or stamp, stamp,
                           a.epoch))
        if sweep and seen is None:
            seen = TickFingerprints(d.alert.fingerprint for d in decisions)
        epoch = max((d.alert.epoch for d in decisions), default=epoch)

        async def write(conn: asyncpg.Connection) -> list[str]:
            await self._fence(conn, epoch)
            if alerts:
                await _stage(conn, "pamd_stage_alerts", "pam_alerts", _ALERT_COLUMNS_IN, alerts)
                await conn.execute(_INSERT_ALERT)
            if states:
                # One row per fingerprint (the last, as row-by-row upserts would leave it): a statement cannot
                # update a row twice.
                unique = list({row[0]: row for row in states}.values())
                await _stage(conn, "pamd_stage_states", "pam_alert_state", _STATE_COLUMNS_IN, unique)
                await conn.execute(_UPSERT_STATE)
            if not sweep or seen is None:
                return []
            # The set difference must be hashed whatever the planner believes: with statistics from before this
            # monitor had many states (a first big tick; autovacuum analyses a minute later at best) it expects one
            # row and loops over the tick's whole seen set for each state, quadratic (214,000 states: past the
            # statement timeout, the tick failed; hashed, 0.4 s). SET LOCAL ends with the transaction.
            await conn.execute("SET LOCAL enable_nestloop = off")
            params = [monitor, stamp, seen.digests, seen.others]  # the bytearray itself: no copy
            if sweep_user is not None:
                params.append(sweep_user)
            sql = _SWEEP.format(user="AND s.user_id = $5 " if sweep_user is not None else "")
            resolved = [r[0] for r in await conn.fetch(sql, *params)]
            if resolved:
                await conn.execute("UPDATE pam_alerts SET state = 'resolved', resolved_at = $1 WHERE state = 'held' "
                                   "AND deliver_after IS NOT NULL AND fingerprint = ANY($2::text[])", stamp, resolved)
            return resolved

        return await self._in_transaction(write)

    @staticmethod
    async def _fence(conn: asyncpg.Connection, epoch: int) -> None:
        """Refuse ``epoch`` if a newer leadership term already wrote; else remember it as the newest. The row
        stays locked until the transaction ends."""
        if epoch <= 0:
            return
        newest = await conn.fetchval("SELECT epoch FROM pamd_fence WHERE name = 'leader' FOR UPDATE")
        if newest is None:  # the first term to write: two may race to create the row, GREATEST settles it
            newest = await conn.fetchval(
                "INSERT INTO pamd_fence (name, epoch) VALUES ('leader', $1) ON CONFLICT (name) DO UPDATE "
                "SET epoch = GREATEST(pamd_fence.epoch, excluded.epoch) RETURNING epoch", epoch)
        elif epoch > newest:
            await conn.execute("UPDATE pamd_fence SET epoch = $1 WHERE name = 'leader'", epoch)
            newest = epoch
        if epoch < newest:
            raise FencedError(f"epoch {epoch} is older than epoch {newest}, which already wrote: this replica "
                              "lost its leadership and must not deliver")

    async def mark_alerts(self, alert_ids: Sequence[str], state: str, now: datetime) -> None:
        """See :meth:`pamd.alerts.book.AlertBook.mark_alerts`."""
        if not alert_ids:
            return
        if state == "delivered":
            await self._execute("UPDATE pam_alerts SET state = $1, delivered_at = $2 WHERE id = ANY($3::text[])",
                               state, pg_ts(now), list(alert_ids))
        else:
            await self._execute("UPDATE pam_alerts SET state = $1 WHERE id = ANY($2::text[])", state, list(alert_ids))

    async def due_held_alerts(self, now: datetime, limit: int = 500) -> list[Alert]:
        """See :meth:`pamd.alerts.book.AlertBook.due_held_alerts`."""
        sql = (f"SELECT {_ALERT_COLUMNS} FROM pam_alerts AS a WHERE a.state = 'held' AND a.deliver_after <= $1 "
               "ORDER BY a.deliver_after, a.id LIMIT $2")
        return [self._alert(row) for row in await self._fetch(sql, pg_ts(now), limit)]

    @staticmethod
    def _alert(row: asyncpg.Record) -> Alert:
        return Alert(
            id=row["id"], user_id=row["user_id"], monitor=row["monitor"], kind=row["kind"],
            priority=Priority(row["priority"]), title=row["title"], body=row["body"],
            facts=msgspec.json.decode(row["facts"]), actions=msgspec.json.decode(row["actions"]),
            fingerprint=row["fingerprint"], epoch=row["epoch"], created_at=row["created_at"],
            expires_at=row["expires_at"],
        )


class PostgresOutboxQueries(PostgresAlertQueries):
    """The outbox on Postgres (see :class:`pamd.alerts.outbox.OutboxBook`): table ``pam_deliveries``."""

    async def queued_users(self, sinks: Sequence[str], users: Sequence[str]) -> set[tuple[str, str]]:
        """See :meth:`pamd.alerts.outbox.OutboxBook.queued_users`."""
        if not sinks or not users:
            return set()
        sql = ("SELECT DISTINCT sink, user_id FROM pam_deliveries WHERE state = 'pending' AND sink = ANY($1::text[]) "
               "AND user_id = ANY($2::text[])")
        return {(row[0], row[1]) for row in await self._fetch(sql, list(sinks), sorted(set(users)))}

    async def save_deliveries(self, deliveries: Sequence[Delivery], now: datetime) -> None:
        """See :meth:`pamd.alerts.outbox.OutboxBook.save_deliveries`."""
        stamp = pg_ts(now)
        rows = [(d.alert_id, d.sink, d.user_id, d.state, d.attempts, pg_ts(d.next_attempt_at), d.last_error, stamp)
                for d in deliveries]

        async def write(conn: asyncpg.Connection) -> None:
            await conn.executemany(_SAVE, rows)

        if rows:
            await self._in_transaction(write)

    async def due_deliveries(self, now: datetime, limit: int = 500) -> list[tuple[Delivery, Alert]]:
        """See :meth:`pamd.alerts.outbox.OutboxBook.due_deliveries`."""

        async def read(conn: asyncpg.Connection) -> list[tuple[Delivery, Alert]]:
            found: list[tuple[Delivery, Alert]] = []
            for sink, user, _ in await conn.fetch(_DUE_HEADS, pg_ts(now), limit):
                sql = (f"SELECT {_DELIVERY_COLUMNS} FROM pam_deliveries WHERE state = 'pending' AND sink = $1 AND "
                       "user_id = $2 ORDER BY alert_id LIMIT $3")
                queue = [self._delivery(row) for row in await conn.fetch(sql, sink, user, limit)]
                alerts = await self._alerts_by_id(conn, [d.alert_id for d in queue])
                found += [(d, alerts[d.alert_id]) for d in queue if d.alert_id in alerts]
                if len(found) >= limit:
                    break
            return found

        return await self._call(read)

    async def stuck_alerts(self, before: datetime, limit: int = 500) -> list[Alert]:
        """See :meth:`pamd.alerts.outbox.OutboxBook.stuck_alerts`."""
        sql = (f"SELECT {_ALERT_COLUMNS} FROM pam_alerts AS a WHERE a.state = 'pending' AND a.created_at < $1 "
               "AND NOT EXISTS (SELECT 1 FROM pam_deliveries AS d WHERE d.alert_id = a.id) "
               "ORDER BY a.created_at, a.id LIMIT $2")
        return [self._alert(row) for row in await self._fetch(sql, pg_ts(before), limit)]

    async def settle_alerts(self, alert_ids: Sequence[str], now: datetime) -> dict[str, str]:
        """See :meth:`pamd.alerts.outbox.OutboxBook.settle_alerts`."""
        stamp = pg_ts(now)

        async def write(conn: asyncpg.Connection) -> dict[str, str]:
            sql = ("SELECT a.id, COUNT(*) FILTER (WHERE d.state = 'pending') AS pending, "
                   "COUNT(*) FILTER (WHERE d.state IN ('failed', 'expired')) AS failed FROM pam_alerts AS a "
                   "LEFT JOIN pam_deliveries AS d ON d.alert_id = a.id WHERE a.id = ANY($1::text[]) "
                   "AND a.state = 'pending' GROUP BY a.id")
            states: dict[str, str] = {}
            for alert_id, pending, failed in await conn.fetch(sql, sorted(set(alert_ids))):
                if not pending:
                    states[alert_id] = "failed" if failed else "delivered"
            for state in ("delivered", "failed"):
                ids = [i for i, s in states.items() if s == state]
                if ids:
                    await conn.execute("UPDATE pam_alerts SET state = $1, delivered_at = CASE WHEN $1 = 'delivered' "
                                       "THEN $2 ELSE delivered_at END WHERE id = ANY($3::text[])", state, stamp, ids)
            return states

        if not alert_ids:
            return {}
        return await self._in_transaction(write)

    async def outbox_size(self) -> int:
        """See :meth:`pamd.alerts.outbox.OutboxBook.outbox_size`."""
        return int(await self._fetchval("SELECT COUNT(*) FROM pam_alerts WHERE state = 'pending'"))

    async def add_notifications(self, alerts: Sequence[Alert], table: str = "notifications") -> int:
        """The ``table`` sink's write (:class:`pamd.sinks.table.NotificationWriter`): a row per alert id not
        there yet, all in one statement; how many were new."""
        if not alerts:
            return 0
        now = datetime.now(UTC)
        rows = [(a.id, a.user_id, a.kind, a.priority.value, a.title, a.body, _json(notification_data(a)),
                 pg_ts(a.created_at or now), pg_ts(a.expires_at) if a.expires_at else None) for a in alerts]
        # ``table`` is checked to be a plain name by the sink; quoted all the same.
        status = await self._execute(_NOTIFY.format(table=table), *(list(column) for column in zip(*rows, strict=True)))
        return int(status.rsplit(" ", 1)[1])

    async def _alerts_by_id(self, conn: asyncpg.Connection, ids: list[str]) -> dict[str, Alert]:
        if not ids:
            return {}
        sql = f"SELECT {_ALERT_COLUMNS} FROM pam_alerts AS a WHERE a.id = ANY($1::text[])"
        return {row["id"]: self._alert(row) for row in await conn.fetch(sql, ids)}

    @staticmethod
    def _delivery(row: asyncpg.Record) -> Delivery:
        return Delivery(alert_id=row["alert_id"], sink=row["sink"], user_id=row["user_id"], state=row["state"],
                        attempts=row["attempts"], next_attempt_at=row["next_attempt_at"], last_error=row["last_error"])
