"""The embedded SQLite store (the default backend).

One connection in WAL mode, guarded by a lock; every blocking call runs in a worker thread through
:func:`anyio.to_thread.run_sync`, so the event loop never waits on the disk. URLs: ``sqlite:///relative/path.db``,
``sqlite:////absolute/path.db`` or ``sqlite:///:memory:``.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

import anyio.to_thread

from pamd.store.records import FuelFill, FuelInput, FuelVehicle, finite_or_none, format_ts, parse_ts, to_sql_value

log = logging.getLogger("pamd.store.sqlite")

T = TypeVar("T")
OnConflict = Literal["error", "ignore", "update"]

_MIGRATIONS: tuple[tuple[int, str], ...] = ((1, "schema_sqlite.sql"),)
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
    "notifications": ("id",),
}
"""The tables :meth:`SQLiteStore.add_rows` may write, with their primary keys (the upsert conflict target)."""

INACTIVE_STATUSES = ("deleted", "disabled", "suspended", "inactive", "banned")
"""Profiles with one of these ``status`` values are never monitored."""

_PROFILE_VEHICLE_SQL = """
WITH page AS (
    SELECT id, full_name, timezone, preferred_units, currency, vehicle_type FROM profiles
    WHERE {where} AND COALESCE(status, 'active') NOT IN ({inactive})
    ORDER BY id LIMIT ?
), ranked AS (
    SELECT v.*, ROW_NUMBER() OVER (PARTITION BY v.user_id ORDER BY v.is_primary DESC, v.id) AS rn
    FROM vehicles AS v WHERE v.user_id IN (SELECT id FROM page)
)
SELECT page.id AS user_id, page.full_name, page.timezone, page.preferred_units, page.currency,
       page.vehicle_type, r.id AS v_id, r.name AS v_name, r.vehicle_type AS v_type, r.fuel_type AS v_fuel,
       r.fuel_capacity_l AS v_capacity, r.consumption_l_per_100km AS v_consumption, r.odometer_km AS v_odometer
FROM page LEFT JOIN ranked AS r ON r.user_id = page.id AND r.rn = 1
ORDER BY page.id
"""

_FUEL_LOG_SQL = """
WITH sel(user_id, vehicle_id) AS (VALUES {values})
SELECT id, user_id, logged_at, volume_l, total_cost, odometer_km, is_full_tank, lat, lon FROM (
    SELECT f.*, ROW_NUMBER() OVER (PARTITION BY f.user_id ORDER BY f.logged_at DESC, f.id DESC) AS rn
    FROM fuel_log AS f JOIN sel ON f.user_id = sel.user_id
        AND (f.vehicle_id = sel.vehicle_id OR f.vehicle_id IS NULL)
) WHERE rn <= ?
"""


def sqlite_path(url: str) -> str:
    """The file path in a ``sqlite:///...`` URL (``sqlite:////abs`` is absolute; ``~`` is expanded)."""
    prefix = "sqlite://"
    if not url.lower().startswith(prefix) or not url[len(prefix) :].startswith("/"):
        raise ValueError(f"not a sqlite URL: {url!r} (expected sqlite:///relative.db or sqlite:////abs.db)")
    path = url[len(prefix) + 1 :].split("?", 1)[0]
    if not path:
        raise ValueError(f"sqlite URL {url!r} has no path")
    return path if path == ":memory:" else str(Path(path).expanduser())


class SQLiteStore:
    """The embedded default :class:`pamd.store.base.Store`.

    ``skipped_rows`` counts rows ignored because of bad data (NULL where required, negative amounts, unparsable
    timestamps), keyed by table; every skip counts, and each row is logged as a warning once. ``trace``, if given,
    receives every SQL statement executed (see :meth:`sqlite3.Connection.set_trace_callback`).
    """

    def __init__(self, url: str, *, trace: Callable[[str], None] | None = None) -> None:
        self.url = url
        self.path = sqlite_path(url)
        self.skipped_rows: Counter[str] = Counter()
        self._trace = trace
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._columns: dict[str, frozenset[str]] = {}
        self._warned: set[tuple[str, str]] = set()

    def __repr__(self) -> str:
        return f"SQLiteStore({self.url!r})"

    # -- plumbing -------------------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        if self._conn is None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            if self._trace is not None:
                conn.set_trace_callback(self._trace)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._conn = conn
        return self._conn

    def _locked(self, func: Callable[..., T], *args: Any) -> T:
        with self._lock:
            return func(self._connect(), *args)

    async def _call(self, func: Callable[..., T], *args: Any) -> T:
        """Run ``func(connection, *args)`` in a worker thread, holding the connection lock."""
        return await anyio.to_thread.run_sync(self._locked, func, *args)

    @staticmethod
    @contextmanager
    def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.rollback()
            raise
        conn.commit()

    def _skip(self, table: str, row_id: object, reason: str) -> None:
        self.skipped_rows[table] += 1
        key = (table, str(row_id))
        level = logging.DEBUG if key in self._warned else logging.WARNING
        self._warned.add(key)
        log.log(level, "skipping %s row %s: %s", table, row_id, reason)

    # -- Store protocol -------------------------------------------------------------------------------------

    async def ping(self) -> None:
        """Raise if the database cannot be opened or queried."""
        await self._call(lambda conn: conn.execute("SELECT 1").fetchone())

    async def aclose(self) -> None:
        """Close the connection; further calls raise :class:`RuntimeError`. Safe to call twice."""

        def close() -> None:
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                self._closed = True

        await anyio.to_thread.run_sync(close)

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

    # -- fuel monitor ---------------------------------------------------------------------------------------

    async def iter_fuel_inputs(
        self, batch_size: int = 500, user_id: str | None = None, *, max_fills: int = 100
    ) -> AsyncGenerator[list[FuelInput], None]:
        """Stream monitored users with their primary vehicle and its fill-ups, ``batch_size`` users at a time.

        Users are paged by id (keyset pagination: no offset scans, never all users in memory); each batch costs
        one profile+vehicle query and one ``fuel_log`` query. At most the ``max_fills`` most recent fill-ups per
        user are returned (oldest first). Fill-ups with no vehicle are taken to be the primary vehicle's. Only
        ``user_id`` is read when given. Users whose ``status`` is in :data:`INACTIVE_STATUSES` are left out.
        """
        if batch_size < 1 or max_fills < 1:
            raise ValueError("batch_size and max_fills must be at least 1")
        after: str | None = None
        while True:
            batch, last_id = await self._call(self._fuel_batch, after, batch_size, user_id, max_fills)
            if batch:
                yield batch
            if last_id is None or len(batch) < batch_size:
                return
            after = last_id

    def _fuel_batch(
        self, conn: sqlite3.Connection, after: str | None, limit: int, user_id: str | None, max_fills: int
    ) -> tuple[list[FuelInput], str | None]:
        where, params = ["1"], []
        if after is not None:
            where.append("id > ?")
            params.append(after)
        if user_id is not None:
            where.append("id = ?")
            params.append(user_id)
        inactive = ", ".join(f"'{s}'" for s in INACTIVE_STATUSES)
        sql = _PROFILE_VEHICLE_SQL.format(where=" AND ".join(where), inactive=inactive)
        rows = conn.execute(sql, [*params, limit]).fetchall()
        if not rows:
            return [], None
        vehicles = {row["user_id"]: self._vehicle(row) for row in rows}
        owned = [(uid, v.id) for uid, v in vehicles.items() if v is not None]
        fills: dict[str, list[FuelFill]] = {}
        if owned:
            sql = _FUEL_LOG_SQL.format(values=", ".join("(?, ?)" for _ in owned))
            flat = [item for pair in owned for item in pair]
            for frow in conn.execute(sql, [*flat, max_fills]):
                fill = self._fill(frow)
                if fill is not None:
                    fills.setdefault(frow["user_id"], []).append(fill)
        batch = [
            FuelInput(
                user_id=row["user_id"],
                full_name=row["full_name"],
                timezone=row["timezone"] or "UTC",
                preferred_units="imperial" if str(row["preferred_units"]).lower() == "imperial" else "metric",
                currency=str(row["currency"] or "USD").upper(),
                vehicle_type=row["vehicle_type"],
                vehicle=vehicles[row["user_id"]],
                fills=tuple(sorted(fills.get(row["user_id"], ()), key=lambda f: (f.logged_at, f.id))),
            )
            for row in rows
        ]
        return batch, str(rows[-1]["user_id"])

    def _vehicle(self, row: sqlite3.Row) -> FuelVehicle | None:
        if row["v_id"] is None:
            return None
        numbers = {}
        for column, field in (("v_capacity", "fuel_capacity_l"), ("v_consumption", "consumption_l_per_100km"),
                              ("v_odometer", "odometer_km")):
            raw = row[column]
            value = finite_or_none(raw)
            if raw is not None and (value is None or value < 0):
                self._skip("vehicles", row["v_id"], f"bad {field} {raw!r}")
                return None
            numbers[field] = value
        return FuelVehicle(
            id=str(row["v_id"]),
            name=str(row["v_name"] or "your vehicle"),
            vehicle_type=row["v_type"],
            fuel_type=row["v_fuel"],
            **numbers,
        )

    def _fill(self, row: sqlite3.Row) -> FuelFill | None:
        logged_at = parse_ts(row["logged_at"])
        volume = finite_or_none(row["volume_l"])
        odometer = finite_or_none(row["odometer_km"])
        if logged_at is None:
            reason = f"unparsable logged_at {row['logged_at']!r}"
        elif volume is None or volume < 0:
            reason = f"bad volume_l {row['volume_l']!r}"
        elif row["is_full_tank"] is None:
            reason = "is_full_tank is NULL"
        elif row["odometer_km"] is not None and (odometer is None or odometer < 0):
            reason = f"bad odometer_km {row['odometer_km']!r}"
        else:
            cost = finite_or_none(row["total_cost"])
            return FuelFill(
                id=str(row["id"]),
                logged_at=logged_at,
                volume_l=volume,
                is_full_tank=bool(row["is_full_tank"]),
                odometer_km=odometer,
                total_cost=cost if cost is not None and cost >= 0 else None,
                lat=finite_or_none(row["lat"]),
                lon=finite_or_none(row["lon"]),
            )
        self._skip("fuel_log", row["id"], reason)
        return None
