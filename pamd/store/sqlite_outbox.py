"""SQLite side of the outbox (:class:`pamd.alerts.outbox.OutboxBook`): table ``pam_deliveries``."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime

import anyio.to_thread
import msgspec

from pamd.alerts.outbox import Delivery
from pamd.model import Alert
from pamd.sinks.table import notification_data
from pamd.store.records import format_ts, parse_ts
from pamd.store.sqlite_alerts import _ALERT_COLUMNS, CHUNK, SQLiteAlertQueries, _chunks, _marks

_SAVE = """
INSERT INTO pam_deliveries (alert_id, sink, user_id, state, attempts, next_attempt_at, last_error, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (alert_id, sink) DO UPDATE SET state = excluded.state, attempts = excluded.attempts,
    next_attempt_at = excluded.next_attempt_at, last_error = excluded.last_error, updated_at = excluded.updated_at
"""
# The head of each (sink, user) queue, if due; then what waits behind the due heads.
_DUE_HEADS = """
SELECT d.sink, d.user_id, MIN(d.alert_id) AS head FROM pam_deliveries AS d WHERE d.state = 'pending'
GROUP BY d.sink, d.user_id
"""
_DELIVERY_COLUMNS = "alert_id, sink, user_id, state, attempts, next_attempt_at, last_error"


class SQLiteOutboxQueries(SQLiteAlertQueries):
    """The outbox on SQLite (see :class:`pamd.alerts.outbox.OutboxBook`)."""

    async def queued_users(self, sinks: Sequence[str], users: Sequence[str]) -> set[tuple[str, str]]:
        """See :meth:`pamd.alerts.outbox.OutboxBook.queued_users`."""

        def read(conn: sqlite3.Connection) -> set[tuple[str, str]]:
            found: set[tuple[str, str]] = set()
            if not conn.execute("SELECT EXISTS (SELECT 1 FROM pam_deliveries WHERE state = 'pending')").fetchone()[0]:
                return found  # the common case: nothing is waiting anywhere
            for chunk in _chunks(sorted(set(users)), CHUNK - len(sinks)):
                sql = (f"SELECT DISTINCT sink, user_id FROM pam_deliveries WHERE state = 'pending' AND sink IN "
                       f"({_marks(len(sinks))}) AND user_id IN ({_marks(len(chunk))})")
                found.update((row[0], row[1]) for row in conn.execute(sql, [*sinks, *chunk]))
            return found

        return await anyio.to_thread.run_sync(self._locked_read, read)

    async def save_deliveries(self, deliveries: Sequence[Delivery], now: datetime) -> None:
        """See :meth:`pamd.alerts.outbox.OutboxBook.save_deliveries`."""
        stamp = format_ts(now)
        rows = [(d.alert_id, d.sink, d.user_id, d.state, d.attempts, format_ts(d.next_attempt_at), d.last_error,
                 stamp) for d in deliveries]

        def write(conn: sqlite3.Connection) -> None:
            with self._transaction(conn):
                conn.executemany(_SAVE, rows)

        if rows:
            await self._call(write)

    async def due_deliveries(self, now: datetime, limit: int = 500) -> list[tuple[Delivery, Alert]]:
        """See :meth:`pamd.alerts.outbox.OutboxBook.due_deliveries`."""
        stamp = format_ts(now)

        def read(conn: sqlite3.Connection) -> list[tuple[Delivery, Alert]]:
            heads = conn.execute(f"SELECT h.sink, h.user_id, h.head FROM ({_DUE_HEADS}) AS h JOIN pam_deliveries AS d "
                                 "ON d.alert_id = h.head AND d.sink = h.sink WHERE d.next_attempt_at <= ? "
                                 "ORDER BY h.head LIMIT ?", [stamp, limit]).fetchall()
            found: list[tuple[Delivery, Alert]] = []
            for sink, user, _ in heads:
                sql = (f"SELECT {_DELIVERY_COLUMNS} FROM pam_deliveries WHERE state = 'pending' AND sink = ? AND "
                       "user_id = ? ORDER BY alert_id LIMIT ?")
                queue = [self._delivery(row) for row in conn.execute(sql, [sink, user, limit])]
                alerts = self._alerts_by_id(conn, [d.alert_id for d in queue])
                found += [(d, alerts[d.alert_id]) for d in queue if d.alert_id in alerts]
                if len(found) >= limit:
                    break
            return found

        return await anyio.to_thread.run_sync(self._locked_read, read)

    async def stuck_alerts(self, before: datetime, limit: int = 500) -> list[Alert]:
        """See :meth:`pamd.alerts.outbox.OutboxBook.stuck_alerts`."""

        def read(conn: sqlite3.Connection) -> list[Alert]:
            sql = (f"SELECT {_ALERT_FIELDS} FROM pam_alerts AS a WHERE a.state = 'pending' AND a.created_at < ? "
                   "AND NOT EXISTS (SELECT 1 FROM pam_deliveries AS d WHERE d.alert_id = a.id) "
                   "ORDER BY a.created_at, a.id LIMIT ?")
            return [self._alert(row) for row in conn.execute(sql, [format_ts(before), limit])]

        return await anyio.to_thread.run_sync(self._locked_read, read)

    async def settle_alerts(self, alert_ids: Sequence[str], now: datetime) -> dict[str, str]:
        """See :meth:`pamd.alerts.outbox.OutboxBook.settle_alerts`."""
        stamp = format_ts(now)

        def write(conn: sqlite3.Connection) -> dict[str, str]:
            states: dict[str, str] = {}
            with self._transaction(conn):
                for chunk in _chunks(sorted(set(alert_ids))):
                    sql = (f"SELECT a.id, SUM(d.state = 'pending'), SUM(d.state IN ('failed', 'expired')) FROM "
                           f"pam_alerts AS a LEFT JOIN pam_deliveries AS d ON d.alert_id = a.id WHERE a.id IN "
                           f"({_marks(len(chunk))}) AND a.state = 'pending' GROUP BY a.id")
                    for alert_id, pending, failed in conn.execute(sql, chunk).fetchall():
                        if pending:
                            continue
                        state = "failed" if failed else "delivered"
                        conn.execute("UPDATE pam_alerts SET state = ?, delivered_at = CASE WHEN ? = 'delivered' "
                                     "THEN ? ELSE delivered_at END WHERE id = ?", [state, state, stamp, alert_id])
                        states[alert_id] = state
            return states

        return await self._call(write)

    async def outbox_size(self) -> int:
        """See :meth:`pamd.alerts.outbox.OutboxBook.outbox_size`."""

        def read(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT COUNT(*) FROM pam_alerts WHERE state = 'pending'").fetchone()[0])

        return await anyio.to_thread.run_sync(self._locked_read, read)

    async def add_notifications(self, alerts: Sequence[Alert], table: str = "notifications") -> int:
        """The ``table`` sink's write (:class:`pamd.sinks.table.NotificationWriter`): a row per alert id not
        there yet, all in one transaction; how many were new."""
        now = format_ts(datetime.now(UTC))
        rows = [(a.id, a.user_id, a.id, a.kind, a.priority.value, a.title, a.body,
                 msgspec.json.encode(notification_data(a)).decode(),
                 format_ts(a.created_at) if a.created_at else now, format_ts(a.expires_at) if a.expires_at else None)
                for a in alerts]

        def write(conn: sqlite3.Connection) -> int:
            # ``table`` is checked to be a plain name by the sink; quoted all the same.
            sql = (f'INSERT OR IGNORE INTO "{table}" (id, user_id, alert_id, type, priority, title, body, data, '
                   "created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
            with self._transaction(conn):
                return conn.executemany(sql, rows).rowcount

        return await self._call(write) if rows else 0

    def _alerts_by_id(self, conn: sqlite3.Connection, ids: list[str]) -> dict[str, Alert]:
        alerts: dict[str, Alert] = {}
        for chunk in _chunks(ids):
            sql = f"SELECT {_ALERT_FIELDS} FROM pam_alerts AS a WHERE a.id IN ({_marks(len(chunk))})"
            alerts.update((row["id"], self._alert(row)) for row in conn.execute(sql, chunk))
        return alerts

    @staticmethod
    def _delivery(row: sqlite3.Row) -> Delivery:
        return Delivery(alert_id=row["alert_id"], sink=row["sink"], user_id=row["user_id"], state=row["state"],
                        attempts=row["attempts"], next_attempt_at=parse_ts(row["next_attempt_at"]) or datetime.min,
                        last_error=row["last_error"])


_ALERT_FIELDS = ", ".join(f"a.{column.strip()}" for column in _ALERT_COLUMNS.split(","))
