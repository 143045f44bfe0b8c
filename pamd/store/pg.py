"""The Postgres store (``postgresql://`` or ``postgres://``): schema, demo data, pamd's own state, monitor queries.

The plumbing (pool, timeouts, PgBouncer) is in :mod:`pamd.store.pg_base`; the alert book and outbox in
:mod:`pamd.store.pg_alerts`; each monitor's queries in their own module, combined here. Values are stored in
Postgres types (timestamptz, date, double precision, boolean, jsonb) and read back as what the SQLite store's
parsing yields: UTC datetimes, floats, bools.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from enum import Enum
from typing import Any, Literal

import asyncpg
import msgspec

from pamd.store import pg_schema
from pamd.store.mapping import TableMap, check_mapping
from pamd.store.pg_alerts import PostgresOutboxQueries
from pamd.store.pg_base import PostgresBase, pg_ts, split_pg_url
from pamd.store.pg_budget_candidates import PostgresBudgetCandidates
from pamd.store.pg_context_candidates import PostgresContextCandidates
from pamd.store.pg_fuel_candidates import PostgresFuelCandidates
from pamd.store.pg_maintenance_candidates import PostgresMaintenanceCandidates
from pamd.store.pg_weather import PostgresWeatherCandidates
from pamd.store.records import parse_ts, to_sql_value
from pamd.store.sqlite import PRIMARY_KEYS

__all__ = ["PRIMARY_KEYS", "PostgresStore", "split_pg_url"]

log = logging.getLogger("pamd.store.pg")

OnConflict = Literal["error", "ignore", "update"]



def _to_timestamptz(value: object) -> datetime:
    parsed = parse_ts(value)
    if parsed is None:
        raise ValueError(f"not a timestamp: {value!r}")
    return pg_ts(parsed)


def _to_date(value: object) -> date:
    if isinstance(value, datetime):
        return pg_ts(value).date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        return date.fromisoformat(value.strip()[:10])
    raise ValueError(f"not a date: {value!r}")


def _to_float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"not a number: {value!r}")
    return float(value)


def _to_int(value: object) -> int:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, int):
        raise ValueError(f"not an integer: {value!r}")
    return int(value)


def _to_bool(value: object) -> bool:
    if isinstance(value, bool | int):
        return bool(value)
    raise ValueError(f"not a boolean: {value!r}")


def _to_json(value: object) -> str:
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


def _to_text(value: object) -> str:
    if isinstance(value, Enum):
        value = value.value
    converted = to_sql_value(value)
    return converted if isinstance(converted, str) else str(converted)


_CONVERTERS: dict[str, Callable[[object], object]] = {
    "timestamptz": _to_timestamptz, "timestamp": lambda v: _to_timestamptz(v).replace(tzinfo=None),
    "date": _to_date, "float8": _to_float, "float4": _to_float, "numeric": _to_float,
    "int2": _to_int, "int4": _to_int, "int8": _to_int, "bool": _to_bool,
    "json": _to_json, "jsonb": _to_json, "text": _to_text, "varchar": _to_text,
}
"""Python value -> what asyncpg sends for a column of that type (``udt_name``); ``None`` stays NULL."""


class PostgresStore(
    PostgresFuelCandidates,
    PostgresBudgetCandidates,
    PostgresWeatherCandidates,
    PostgresMaintenanceCandidates,
    PostgresContextCandidates,
    PostgresOutboxQueries,
    PostgresBase,
):
    """The Postgres :class:`pamd.store.base.Store`: pamd's own state and the built-in monitors' queries.

    ``tables``: ``[store.tables]``, the app's tables under other names (:mod:`pamd.store.mapping`); checked here,
    applied by :meth:`migrate`. Other keyword arguments are :class:`PostgresBase`'s.
    """

    def __init__(self, url: str, *, tables: Mapping[str, TableMap] | None = None, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.tables = dict(tables or {})
        check_mapping(self.tables)

    # -- schema and data ------------------------------------------------------------------------------------

    async def migrate(self) -> int:
        """Apply the schema migrations not yet recorded in ``pamd_migrations`` and create the mapping views;
        return how many migrations were applied (see :mod:`pamd.store.pg_schema`)."""
        count = await self._in_transaction(pg_schema.migrate, self.tables)
        self._column_types.clear()
        return count

    async def is_empty(self) -> bool:
        """True when there are no profiles (or the schema has not been created yet)."""

        async def query(conn: asyncpg.Connection) -> bool:
            if await conn.fetchval("SELECT to_regclass('profiles')") is None:
                return True
            return not await conn.fetchval("SELECT EXISTS (SELECT 1 FROM profiles)")

        return await self._call(query)

    async def seed_demo(self, now: datetime) -> int:
        """Migrate, then write the demo data set (:mod:`pamd.store.demo`) relative to ``now``.

        Idempotent: ids are deterministic and rows are upserted, so seeding again refreshes rather than
        duplicates. Returns the number of rows written.
        """
        from pamd.store import demo

        await self.migrate()
        tables = demo.demo_rows(now)

        async def write(conn: asyncpg.Connection) -> None:
            users = [row["id"] for row in tables["profiles"]]
            await conn.execute("DELETE FROM user_locations WHERE user_id = ANY($1::text[])", users)
            for table, rows in tables.items():
                await self._insert(conn, table, rows, "update")

        await self._in_transaction(write)
        return sum(len(rows) for rows in tables.values())

    async def add_rows(
        self, table: str, rows: Sequence[Mapping[str, Any]], *, on_conflict: OnConflict = "error"
    ) -> int:
        """Insert ``rows`` (column -> value) into ``table`` in one transaction; return the rows written.

        Values are converted to the column's type (ISO text or datetimes for timestamptz, ``YYYY-MM-DD`` or dates
        for date, dicts and lists for jsonb...). ``on_conflict``: "error" raises
        (:class:`asyncpg.UniqueViolationError`) on a duplicate key, "ignore" keeps the existing row, "update"
        upserts it.
        """
        if table not in PRIMARY_KEYS:
            raise ValueError(f"unknown table {table!r}")
        return await self._in_transaction(self._insert, table, rows, on_conflict)

    async def _types(self, conn: asyncpg.Connection, table: str) -> dict[str, str]:
        cache = self._column_types
        if table not in cache:
            # through the search_path: the app's tables may live in another schema than pamd's, or be views
            rows = await conn.fetch("SELECT a.attname, t.typname FROM pg_attribute AS a JOIN pg_type AS t "
                                    "ON t.oid = a.atttypid WHERE a.attrelid = to_regclass(quote_ident($1)) "
                                    "AND a.attnum > 0 AND NOT a.attisdropped", table)
            cache[table] = {row[0]: row[1] for row in rows}
        return cache[table]

    async def _insert(
        self, conn: asyncpg.Connection, table: str, rows: Sequence[Mapping[str, Any]], on_conflict: OnConflict
    ) -> int:
        types = await self._types(conn, table)
        groups: dict[tuple[str, ...], list[list[object]]] = {}
        for row in rows:
            unknown = set(row) - set(types)
            if unknown:
                raise ValueError(f"unknown column(s) for {table}: {', '.join(sorted(unknown))}")
            columns = tuple(row)
            if columns not in groups:
                groups[columns] = [[] for _ in columns]
            for column_values, column in zip(groups[columns], columns, strict=True):
                value = row[column]
                column_values.append(None if value is None else _CONVERTERS.get(types[column], _to_text)(value))
        written = 0
        keys = PRIMARY_KEYS[table]
        for columns, values in groups.items():
            names = ", ".join(f'"{c}"' for c in columns)
            arrays = ", ".join(f'${n}::"{types[c]}"[]' for n, c in enumerate(columns, start=1))
            sql = f'INSERT INTO "{table}" ({names}) SELECT * FROM unnest({arrays})'
            if on_conflict == "ignore":
                sql += " ON CONFLICT DO NOTHING"
            elif on_conflict == "update":
                updates = ", ".join(f'"{c}" = excluded."{c}"' for c in columns if c not in keys)
                target = ", ".join(f'"{k}"' for k in keys)
                sql += f" ON CONFLICT ({target}) DO " + (f"UPDATE SET {updates}" if updates else "NOTHING")
            written += len(await conn.fetch(sql + " RETURNING 1", *values))
        return written
