"""The embedded SQLite store (the default backend): schema, demo data, and every monitor's queries.

URLs: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or ``sqlite:///:memory:``. The plumbing is in
:mod:`pamd.store.sqlite_base`; each monitor's queries live in their own module and are combined here.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Literal

from pamd.store.records import format_ts, to_sql_value
from pamd.store.sqlite_alerts import SQLiteAlertQueries
from pamd.store.sqlite_base import INACTIVE_STATUSES, SQLiteBase, sqlite_path
from pamd.store.sqlite_budget_candidates import SQLiteBudgetCandidates
from pamd.store.sqlite_context import SQLiteContextQueries
from pamd.store.sqlite_fuel import SQLiteFuelQueries
from pamd.store.sqlite_maintenance import SQLiteMaintenanceQueries
from pamd.store.sqlite_outbox import SQLiteOutboxQueries
from pamd.store.sqlite_weather import SQLiteWeatherQueries

__all__ = ["INACTIVE_STATUSES", "PRIMARY_KEYS", "SQLiteStore", "sqlite_path"]

log = logging.getLogger("pamd.store.sqlite")

OnConflict = Literal["error", "ignore", "update"]

_MIGRATIONS: tuple[tuple[int, str], ...] = (
    (1, "schema_sqlite.sql"),
    (2, "schema_sqlite_002.sql"),
    (3, "schema_sqlite_003.sql"),
    (4, "schema_sqlite_004.sql"),
    (5, "schema_sqlite_005.sql"),
)
"""(version, SQL resource in pamd.store), applied in order; each version at most once."""

PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    "profiles": ("id",),
    "vehicles": ("id",),
    "fuel_log": ("id",),
    "budgets": ("id",),
    "expenses": ("id",),
    "trips": ("id",),
    "maintenance_records": ("id",),
    "calendar_events": ("id",),
    "user_locations": ("user_id", "recorded_at"),
    "notification_preferences": ("user_id", "monitor"),
    "pam_alerts": ("id",),
    "pam_alert_state": ("fingerprint",),
    "pam_deliveries": ("alert_id", "sink"),
    "notifications": ("id",),
}
"""The tables :meth:`SQLiteStore.add_rows` may write, with their primary keys (the upsert conflict target)."""


class SQLiteStore(
    SQLiteFuelQueries,
    SQLiteBudgetCandidates,
    SQLiteWeatherQueries,
    SQLiteMaintenanceQueries,
    SQLiteContextQueries,
    SQLiteOutboxQueries,
    SQLiteAlertQueries,
    SQLiteBase,
):
    """The embedded default :class:`pamd.store.base.Store`, with the queries of every built-in monitor."""

    # -- schema and data ------------------------------------------------------------------------------------

    async def migrate(self) -> int:
        """Apply the schema migrations not yet recorded in ``pamd_migrations``; return how many were applied."""
        return await self._call(self._migrate)

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> int:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS pamd_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
        )
        applied = {row[0] for row in conn.execute("SELECT version FROM pamd_migrations")}
        count = 0
        for version, resource in _MIGRATIONS:
            if version in applied:
                continue
            script = resources.files("pamd.store").joinpath(resource).read_text(encoding="utf-8")
            stamp = format_ts(datetime.now(UTC))
            try:
                conn.executescript(
                    f"BEGIN IMMEDIATE;\n{script}\nINSERT OR IGNORE INTO pamd_migrations (version, applied_at)"
                    f" VALUES ({int(version)}, '{stamp}');\nCOMMIT;"
                )
            except BaseException:
                if conn.in_transaction:
                    conn.rollback()
                raise
            log.info("applied store migration %d (%s)", version, resource)
            count += 1
        return count

    async def is_empty(self) -> bool:
        """True when there are no profiles (or the schema has not been created yet)."""

        def query(conn: sqlite3.Connection) -> bool:
            try:
                row = conn.execute("SELECT EXISTS (SELECT 1 FROM profiles)").fetchone()
            except sqlite3.OperationalError as exc:
                if "no such table" in str(exc):
                    return True
                raise
            return not row[0]

        return await self._call(query)

    async def seed_demo(self, now: datetime) -> int:
        """Migrate, then write the demo data set (:mod:`pamd.store.demo`) relative to ``now``.

        Idempotent: ids are deterministic and rows are upserted, so seeding again refreshes rather than
        duplicates. Returns the number of rows written.
        """
        from pamd.store import demo

        await self.migrate()
        tables = demo.demo_rows(now)

        def write(conn: sqlite3.Connection) -> None:
            with self._transaction(conn):
                users = [row["id"] for row in tables["profiles"]]
                marks = ",".join("?" * len(users))
                conn.execute(f"DELETE FROM user_locations WHERE user_id IN ({marks})", users)
                for table, rows in tables.items():
                    self._insert(conn, table, rows, "update")

        await self._call(write)
        return sum(len(rows) for rows in tables.values())

    async def add_rows(
        self, table: str, rows: Sequence[Mapping[str, Any]], *, on_conflict: OnConflict = "error"
    ) -> int:
        """Insert ``rows`` (column -> value) into ``table`` in one transaction; return the rows written.

        Values are converted with :func:`to_sql_value` (datetimes become UTC ISO text). ``on_conflict``: "error"
        raises on a duplicate key, "ignore" keeps the existing row, "update" upserts it.
        """
        if table not in PRIMARY_KEYS:
            raise ValueError(f"unknown table {table!r}")

        def write(conn: sqlite3.Connection) -> int:
            with self._transaction(conn):
                return self._insert(conn, table, rows, on_conflict)

        return await self._call(write)

    def _insert(
        self, conn: sqlite3.Connection, table: str, rows: Sequence[Mapping[str, Any]], on_conflict: OnConflict
    ) -> int:
        if table not in self._columns:
            self._columns[table] = frozenset(r["name"] for r in conn.execute(f'PRAGMA table_info("{table}")'))
        groups: dict[tuple[str, ...], list[tuple[object, ...]]] = {}
        for row in rows:
            unknown = set(row) - self._columns[table]
            if unknown:
                raise ValueError(f"unknown column(s) for {table}: {', '.join(sorted(unknown))}")
            groups.setdefault(tuple(row), []).append(tuple(to_sql_value(v) for v in row.values()))
        written = 0
        keys = PRIMARY_KEYS[table]
        for columns, values in groups.items():
            names = ", ".join(f'"{c}"' for c in columns)
            verb = "INSERT OR IGNORE" if on_conflict == "ignore" else "INSERT"
            sql = f'{verb} INTO "{table}" ({names}) VALUES ({", ".join("?" * len(columns))})'
            if on_conflict == "update":
                updates = ", ".join(f'"{c}" = excluded."{c}"' for c in columns if c not in keys)
                target = ", ".join(f'"{k}"' for k in keys)
                sql += f" ON CONFLICT ({target}) DO " + (f"UPDATE SET {updates}" if updates else "NOTHING")
            written += conn.executemany(sql, values).rowcount
        return written

