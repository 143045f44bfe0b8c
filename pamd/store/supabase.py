"""The Supabase store (``supabase+https://<project>.supabase.co``): the Postgres store's tables and queries, reached
over Supabase's REST API (PostgREST) for deployments that have the project URL and its service-role key only.

* Reads: the Postgres store's own statements, each run by a SQL function (:mod:`pamd.store.supabase_sql`) through
  :class:`~pamd.store.supabase_base.RpcConnection`, so both stores give the same records, skips and alerts.
* Atomic writes (alert book, outbox): RPC functions (:mod:`pamd.store.supabase_alerts`, ``schema_supabase.sql``).
* Plain writes (``seed_demo``, ``add_rows``) and ``is_empty``: the table endpoints, in bulk
  (``Prefer: resolution=merge-duplicates`` / ``ignore-duplicates``).
* No DDL is possible over REST: :meth:`SupabaseStore.migrate` only checks that the installed functions are the
  ones this pamd needs and otherwise fails with one line telling the operator to run ``pamd db sql``.

Connection plumbing, key and retries: :mod:`pamd.store.supabase_client`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

import msgspec

from pamd.store.pg import _CONVERTERS, PRIMARY_KEYS, _to_text
from pamd.store.pg_budget import PostgresBudgetQueries
from pamd.store.pg_context import PostgresContextQueries
from pamd.store.pg_fuel import PostgresFuelQueries
from pamd.store.pg_maintenance import PostgresMaintenanceQueries
from pamd.store.pg_weather import PostgresWeatherQueries
from pamd.store.supabase_alerts import SupabaseOutboxQueries
from pamd.store.supabase_base import to_json_value
from pamd.store.supabase_client import INSTALL_HINT, SupabaseError, SupabaseSchemaError
from pamd.store.supabase_sql import SCHEMA_VERSION, STATEMENTS, digest

__all__ = ["SupabaseError", "SupabaseStore"]

log = logging.getLogger("pamd.store.supabase")

OnConflict = Literal["error", "ignore", "update"]
CHUNK = 500
"""Rows per ``POST``: bounded request bodies, still few requests."""

_COLUMN_TYPES = next(s.sql for s in STATEMENTS.values() if s.name == "column_types")


def _json_column(value: object) -> object:
    """A json/jsonb column's value as a JSON value (text is taken to be JSON already, as the Postgres store does)."""
    return msgspec.json.decode(value) if isinstance(value, str) else _to_builtins(value)


def _to_builtins(value: object) -> object:
    return msgspec.json.decode(msgspec.json.encode(value))


class SupabaseStore(
    PostgresFuelQueries,
    PostgresBudgetQueries,
    PostgresWeatherQueries,
    PostgresMaintenanceQueries,
    PostgresContextQueries,
    SupabaseOutboxQueries,
):
    """The Supabase :class:`pamd.store.base.Store`: pamd's own state and the built-in monitors' queries, over REST."""

    async def migrate(self) -> int:
        """Check that pamd's tables and functions are installed and current (nothing can be created over REST);
        returns 0. Raises :class:`SupabaseSchemaError` with the command to install them otherwise."""
        try:
            installed = await self._rpc("pamd_supabase_version", {}, idempotent=True)
        except SupabaseSchemaError:
            raise SupabaseSchemaError(f"pamd's schema is not installed in the Supabase database at {self.rest.base}; "
                                      f"{INSTALL_HINT}") from None
        expected = {"version": SCHEMA_VERSION, "digest": digest()}
        if not isinstance(installed, dict) or {k: installed.get(k) for k in expected} != expected:
            raise SupabaseSchemaError(f"pamd's functions in the Supabase database at {self.rest.base} are "
                                      f"{installed!r}, this pamd needs {expected!r}; {INSTALL_HINT}")
        return 0

    async def is_empty(self) -> bool:
        """True when there are no profiles (or pamd's schema is not installed yet)."""
        try:
            response = await self.rest.run("read profiles", lambda c: c.table("profiles").select("id").limit(1),
                                           idempotent=True)
        except SupabaseSchemaError:
            return True
        return not response.data

    async def seed_demo(self, now: datetime) -> int:
        """Check the schema, then write the demo data set (:mod:`pamd.store.demo`) relative to ``now``.

        Idempotent (deterministic ids, upserts). Unlike the Postgres store's it is not one transaction: PostgREST
        makes each request one; a seed cut short leaves some tables refreshed, and seeding again completes it.
        """
        from pamd.store import demo

        await self.migrate()
        tables = demo.demo_rows(now)
        users = [row["id"] for row in tables["profiles"]]
        await self.rest.run("delete demo locations",
                            lambda c: c.table("user_locations").delete(returning=_minimal()).in_("user_id", users),
                            idempotent=True)
        for table, rows in tables.items():
            await self._insert(table, rows, "update")
        return sum(len(rows) for rows in tables.values())

    async def add_rows(
        self, table: str, rows: Sequence[Mapping[str, Any]], *, on_conflict: OnConflict = "error"
    ) -> int:
        """Insert ``rows`` into ``table`` (``POST /rest/v1/<table>``, :data:`CHUNK` rows a request); return the rows
        written. Values are converted by column type as :meth:`pamd.store.pg.PostgresStore.add_rows` converts them;
        ``on_conflict`` as there ("error" raises :class:`SupabaseError` with code ``23505``)."""
        if table not in PRIMARY_KEYS:
            raise ValueError(f"unknown table {table!r}")
        return await self._insert(table, rows, on_conflict)

    async def _types(self, table: str) -> dict[str, str]:
        if table not in self._column_types:
            rows = await self._conn.fetch(_COLUMN_TYPES, table)
            self._column_types[table] = {row["column_name"]: row["udt_name"] for row in rows}
        return self._column_types[table]

    async def _insert(self, table: str, rows: Sequence[Mapping[str, Any]], on_conflict: OnConflict) -> int:
        from postgrest.types import CountMethod

        types = await self._types(table)
        groups: dict[tuple[str, ...], list[dict[str, object]]] = {}  # PostgREST wants the same keys in a request
        for row in rows:
            unknown = set(row) - set(types)
            if unknown:
                raise ValueError(f"unknown column(s) for {table}: {', '.join(sorted(unknown))}")
            converted: dict[str, object] = {}
            for column, value in row.items():
                kind = types[column]
                if value is None:
                    converted[column] = None
                elif kind in ("json", "jsonb"):
                    converted[column] = _json_column(value)
                else:
                    converted[column] = to_json_value(_CONVERTERS.get(kind, _to_text)(value))
            groups.setdefault(tuple(row), []).append(converted)
        keys = ",".join(PRIMARY_KEYS[table])
        written = 0
        for chunk in (group[i:i + CHUNK] for group in groups.values() for i in range(0, len(group), CHUNK)):
            def build(c: Any, chunk: list[dict[str, object]] = chunk) -> Any:
                if on_conflict == "error":
                    return c.table(table).insert(chunk, count=CountMethod.exact, returning=_minimal())
                return c.table(table).upsert(chunk, count=CountMethod.exact, returning=_minimal(), on_conflict=keys,
                                             ignore_duplicates=on_conflict == "ignore")

            # A plain insert is not retried: after a lost answer, the second try would fail on its own rows.
            response = await self.rest.run(f"insert into {table}", build, idempotent=on_conflict != "error")
            written += response.count or 0
        return written


def _minimal() -> Any:
    from postgrest.types import ReturnMethod

    return ReturnMethod.minimal
