"""SQLite side of the alert pipeline (:class:`pamd.alerts.book.AlertBook`): dedupe state, held alerts, counts."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from datetime import datetime
from itertools import islice
from typing import Any, TypeVar

import anyio.to_thread
import msgspec

from pamd.alerts.book import AlertContext, FencedError
from pamd.alerts.decide import AlertState, Decision
from pamd.alerts.prefs import PreferenceRow, local_midnight, parse_hhmm, zone
from pamd.alerts.seen import TickFingerprints
from pamd.model import Alert, Priority
from pamd.store.records import format_ts, parse_ts
from pamd.store.sqlite_base import SQLiteBase

T = TypeVar("T")
CHUNK = 500  # host parameters per IN (...) list
COUNTED_STATES = ("pending", "held", "delivered", "failed")

_INSERT_ALERT = """
INSERT OR IGNORE INTO pam_alerts (id, user_id, monitor, kind, priority, title, body, facts, actions, fingerprint,
    epoch, state, scheduled_at, created_at, expires_at, deliver_after)
VALUES {rows}
"""
_UPSERT_STATE = """
INSERT INTO pam_alert_state (fingerprint, user_id, monitor, kind, priority, last_alert_id, last_sent_at,
    last_seen_at, epoch)
VALUES {rows}
ON CONFLICT (fingerprint) DO UPDATE SET priority = excluded.priority, last_alert_id = excluded.last_alert_id,
    last_sent_at = excluded.last_sent_at, last_seen_at = excluded.last_seen_at, epoch = excluded.epoch
"""
ROWS_PER_INSERT = 500  # rows per multi-row INSERT: one statement step instead of one per row


def _insert_rows(conn: sqlite3.Connection, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """Run ``sql`` (with a ``{rows}`` slot for its VALUES) over ``rows``, ``ROWS_PER_INSERT`` at a time. Far
    cheaper than executemany from a worker thread, which gives up and waits for the GIL around every row."""
    for chunk in _chunks(rows, ROWS_PER_INSERT):
        row_marks = f"({_marks(len(chunk[0]))})"
        conn.execute(sql.format(rows=", ".join([row_marks] * len(chunk))), [v for row in chunk for v in row])


_ALERT_COLUMNS = "id, user_id, monitor, kind, priority, title, body, facts, actions, fingerprint, epoch, " \
                 "created_at, expires_at"


def _chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _marks(count: int) -> str:
    return ", ".join("?" * count)


class SQLiteAlertQueries(SQLiteBase):
    """The alert book on SQLite: tables ``pam_alert_state`` and ``pam_alerts``."""

    async def alert_states(self, fingerprints: Sequence[str]) -> dict[str, AlertState]:
        """See :meth:`pamd.alerts.book.AlertBook.alert_states`."""
        # On the reader, as alert_context: the pipeline decides a batch while the writer stores the previous one.
        return await anyio.to_thread.run_sync(self._locked_read, self._alert_states, list(fingerprints))

    def _alert_states(self, conn: sqlite3.Connection, fingerprints: list[str]) -> dict[str, AlertState]:
        states = {}
        for chunk in _chunks(fingerprints):
            sql = ("SELECT fingerprint, user_id, monitor, kind, priority, last_alert_id, last_sent_at, epoch "
                   f"FROM pam_alert_state WHERE fingerprint IN ({_marks(len(chunk))})")
            for row in conn.execute(sql, chunk):
                sent = parse_ts(row["last_sent_at"])
                if sent is not None:
                    states[row["fingerprint"]] = AlertState(
                        fingerprint=row["fingerprint"], user_id=row["user_id"], monitor=row["monitor"],
                        kind=row["kind"], priority=Priority(row["priority"]), last_alert_id=row["last_alert_id"],
                        last_sent_at=sent, epoch=row["epoch"])
        return states

    async def alert_context(self, monitor: str, alerts: Sequence[Alert], now: datetime) -> AlertContext:
        """See :meth:`pamd.alerts.book.AlertBook.alert_context`."""
        users = sorted({a.user_id for a in alerts})
        return await anyio.to_thread.run_sync(self._locked_read, self._alert_context, monitor, users, now)

    def _alert_context(self, conn: sqlite3.Connection, monitor: str, users: list[str], now: datetime) -> AlertContext:
        ctx = AlertContext()
        for chunk in _chunks(users):
            marks = _marks(len(chunk))
            for row in conn.execute(f"SELECT id, timezone FROM profiles WHERE id IN ({marks})", chunk):
                ctx.timezones[row["id"]] = row["timezone"] or "UTC"
            sql = ("SELECT user_id, monitor, enabled, quiet_start, quiet_end, max_per_day FROM "
                   f"notification_preferences WHERE user_id IN ({marks}) AND monitor IN ('*', ?)")
            for row in conn.execute(sql, [*chunk, monitor]):
                pref = self._preference(row)
                if pref is not None:
                    ctx.preferences.setdefault(pref.user_id, []).append(pref)
            # Today's counts: per user since their own local midnight, so group users by that instant. ("+state":
            # with many users the planner would otherwise walk the state index over every alert of the day.)
            by_midnight: dict[str, list[str]] = {}
            midnights: dict[str, str] = {}  # per timezone name: a batch has thousands of users and few zones
            for user in chunk:
                name = ctx.timezones.get(user, "UTC")
                if (midnight := midnights.get(name)) is None:
                    midnight = midnights[name] = format_ts(local_midnight(now, zone(name)))
                by_midnight.setdefault(midnight, []).append(user)
            for midnight, group in by_midnight.items():
                sql = (f"SELECT user_id, monitor, COUNT(*) AS n FROM pam_alerts WHERE user_id IN ({_marks(len(group))})"
                       f" AND created_at >= ? AND priority != 'urgent' AND +state IN ({_marks(len(COUNTED_STATES))})"
                       " GROUP BY user_id, monitor")
                for row in conn.execute(sql, [*group, midnight, *COUNTED_STATES]):
                    ctx.sent_today[row["user_id"]] = ctx.sent_today.get(row["user_id"], 0) + row["n"]
                    if row["monitor"] == monitor:
                        ctx.sent_today_by_monitor[row["user_id"]] = row["n"]
        return ctx

    def _preference(self, row: sqlite3.Row) -> PreferenceRow | None:
        cap = row["max_per_day"]
        if cap is not None and (not isinstance(cap, int) or cap < 0):
            self._skip("notification_preferences", f"{row['user_id']}/{row['monitor']}", f"bad max_per_day {cap!r}")
            cap = None
        start, end = parse_hhmm(row["quiet_start"]), parse_hhmm(row["quiet_end"])
        if (row["quiet_start"] or row["quiet_end"]) and (start is None or end is None):
            self._skip("notification_preferences", f"{row['user_id']}/{row['monitor']}",
                       f"bad quiet hours {row['quiet_start']!r}-{row['quiet_end']!r} (expected HH:MM)")
        return PreferenceRow(user_id=row["user_id"], monitor=row["monitor"],
                             enabled=None if row["enabled"] is None else bool(row["enabled"]),
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
        """See :meth:`pamd.alerts.book.AlertBook.record_decisions`: the sweep is by set difference with ``seen``
        (a temporary table), so a steady tick (every condition in cooldown) updates no state row."""
        if sweep and seen is None:
            seen = TickFingerprints(d.alert.fingerprint for d in decisions)
        return await self._call(self._record, monitor, decisions, now, scheduled_at, sweep_user,
                                seen if sweep else None, epoch)

    def _record(
        self, conn: sqlite3.Connection, monitor: str, decisions: Sequence[Decision], now: datetime,
        scheduled_at: datetime | None, sweep_user: str | None, seen: TickFingerprints | None, epoch: int,
    ) -> list[str]:
        stamp = format_ts(now)
        tick = format_ts(scheduled_at) if scheduled_at else None
        alerts: list[tuple[Any, ...]] = []
        states: list[tuple[Any, ...]] = []
        for d in decisions:
            a = d.alert
            if not d.accepted:
                continue
            created = stamp if a.created_at is None or a.created_at == now else format_ts(a.created_at)
            alerts.append((a.id, a.user_id, a.monitor, a.kind, a.priority.value, a.title, a.body,
                           msgspec.json.encode(a.facts).decode(), msgspec.json.encode(a.actions).decode(),
                           a.fingerprint, a.epoch, "held" if d.outcome == "held" else "pending", tick, created,
                           format_ts(a.expires_at) if a.expires_at else None,
                           format_ts(d.release_at) if d.release_at else None))
            # A held alert reaches the user when quiet hours end: its cooldown runs from then.
            sent = format_ts(d.release_at) if d.release_at else stamp
            states.append((a.fingerprint, a.user_id, a.monitor, a.kind, a.priority.value, a.id, sent, stamp,
                           a.epoch))
        epoch = max((d.alert.epoch for d in decisions), default=epoch)
        with self._transaction(conn):
            self._fence(conn, epoch)
            _insert_rows(conn, _INSERT_ALERT, alerts)
            _insert_rows(conn, _UPSERT_STATE, states)
            if seen is None:
                return []
            # The tick's fingerprints in a temporary table of this connection, emptied again before the commit.
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS pamd_tick_seen (fingerprint TEXT PRIMARY KEY) WITHOUT ROWID")
            conn.executemany("INSERT OR IGNORE INTO temp.pamd_tick_seen VALUES (?)", ((f,) for f in seen))
            where = ("monitor = ? AND last_seen_at <= ? AND fingerprint NOT IN "
                     "(SELECT fingerprint FROM temp.pamd_tick_seen)")
            params = [monitor, stamp]
            if sweep_user is not None:
                where, params = where + " AND user_id = ?", [*params, sweep_user]
            resolved = [r[0] for r in conn.execute(f"DELETE FROM pam_alert_state WHERE {where} RETURNING fingerprint",
                                                   params)]
            conn.execute("DELETE FROM temp.pamd_tick_seen")
            for chunk in _chunks(resolved):
                # "deliver_after IS NOT NULL": through the small partial index of held alerts.
                conn.execute(f"UPDATE pam_alerts SET state = 'resolved', resolved_at = ? WHERE state = 'held' AND "
                             f"deliver_after IS NOT NULL AND fingerprint IN ({_marks(len(chunk))})", [stamp, *chunk])
        return resolved

    @staticmethod
    def _fence(conn: sqlite3.Connection, epoch: int) -> None:
        """Refuse ``epoch`` if a newer leadership term already wrote; else remember it as the newest."""
        if epoch <= 0:
            return
        row = conn.execute("SELECT epoch FROM pamd_fence WHERE name = 'leader'").fetchone()
        if row is not None and epoch < row[0]:
            raise FencedError(f"epoch {epoch} is older than epoch {row[0]}, which already wrote: this replica "
                              "lost its leadership and must not deliver")
        if row is None or epoch > row[0]:
            conn.execute("INSERT INTO pamd_fence (name, epoch) VALUES ('leader', ?) ON CONFLICT (name) DO UPDATE "
                         "SET epoch = excluded.epoch", [epoch])

    async def mark_alerts(self, alert_ids: Sequence[str], state: str, now: datetime) -> None:
        """See :meth:`pamd.alerts.book.AlertBook.mark_alerts`."""
        column = ", delivered_at = ?" if state == "delivered" else ""

        def write(conn: sqlite3.Connection) -> None:
            with self._transaction(conn):
                for chunk in _chunks(list(alert_ids)):
                    params = [state, format_ts(now)] if column else [state]
                    conn.execute(f"UPDATE pam_alerts SET state = ?{column} WHERE id IN ({_marks(len(chunk))})",
                                 [*params, *chunk])

        await self._call(write)

    async def due_held_alerts(self, now: datetime, limit: int = 500) -> list[Alert]:
        """See :meth:`pamd.alerts.book.AlertBook.due_held_alerts`."""

        def read(conn: sqlite3.Connection) -> list[Alert]:
            sql = (f"SELECT {_ALERT_COLUMNS} FROM pam_alerts WHERE state = 'held' AND deliver_after <= ? "
                   "ORDER BY deliver_after, id LIMIT ?")
            return [self._alert(row) for row in conn.execute(sql, [format_ts(now), limit])]

        return await self._call(read)

    @staticmethod
    def _alert(row: sqlite3.Row) -> Alert:
        return Alert(
            id=row["id"], user_id=row["user_id"], monitor=row["monitor"], kind=row["kind"],
            priority=Priority(row["priority"]), title=row["title"], body=row["body"],
            facts=msgspec.json.decode(row["facts"]), actions=msgspec.json.decode(row["actions"]),
            fingerprint=row["fingerprint"], epoch=row["epoch"], created_at=parse_ts(row["created_at"]),
            expires_at=parse_ts(row["expires_at"]),
        )
