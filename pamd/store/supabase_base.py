"""The Supabase store's stand-in for the Postgres store's connection: statements become RPC calls.

The Postgres query modules (``pg_fuel``... ``pg_alerts``) call ``await conn.fetch(sql, *args)`` on what
:meth:`PostgresBase._call` hands them. :class:`SupabaseBase` hands them an :class:`RpcConnection` instead, which
finds the statement's function in :data:`pamd.store.supabase_sql.STATEMENTS`, calls it over PostgREST with the
arguments as JSON, and returns :class:`Row` values that read like asyncpg records (by position, slice or column
name) holding the Python types asyncpg would: so those modules' code runs unchanged on Supabase, with the same
records, skips and skip messages.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import date, datetime
from typing import Any, TypeVar

from pamd.store.pg_base import PostgresBase
from pamd.store.records import format_ts
from pamd.store.supabase_client import SupabaseRest, split_supabase_url
from pamd.store.supabase_sql import DECODERS, PROFILE_WHERE, STATEMENTS, Statement

T = TypeVar("T")


class Row(tuple[Any, ...]):
    """A result row: a tuple (index, slice, unpack) that also answers ``row["column"]`` like an asyncpg record."""

    _names: dict[str, int]

    def __new__(cls, values: Sequence[Any], names: dict[str, int]) -> Row:
        row = super().__new__(cls, values)
        row._names = names
        return row

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._names[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        """The column names, in order (as ``sqlite3.Row.keys``; the shared row rules ask for them)."""
        return list(self._names)


def to_json_value(value: object) -> object:
    """A statement argument or column value (or lists and dicts of them) as JSON: instants as UTC ISO text
    (milliseconds, like every store), dates as ``YYYY-MM-DD``, non-finite floats as the text Postgres reads them
    from (``NaN``, ``Infinity``)."""
    if isinstance(value, datetime):
        return format_ts(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, list | tuple):
        return [to_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json_value(v) for k, v in value.items()}
    return value


class RpcConnection:
    """What the Postgres query modules use of an asyncpg connection (``fetch``, ``fetchval``), over PostgREST."""

    def __init__(self, rest: SupabaseRest) -> None:
        self._rest = rest
        self._names: dict[str, dict[str, int]] = {}

    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        """The rows of the Postgres store's statement ``sql``, run by its function with ``args``."""
        statement = STATEMENTS.get(sql)
        if statement is None:
            raise LookupError("this Postgres store statement has no Supabase function (add it to "
                              f"pamd.store.supabase_sql): {' '.join(sql.split())[:160]!r}")
        if len(args) != len(statement.params):
            raise TypeError(f"{statement.function} takes {len(statement.params)} argument(s), got {len(args)}")
        params: dict[str, Any] = {f"p{n}": to_json_value(arg) for n, arg in enumerate(args, start=1)}
        response = await self._rest.run(statement.function, lambda c: c.rpc(statement.function, params),
                                        idempotent=True)
        return self._rows(statement, response.data)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        """The first column of the first row of ``sql``, or ``None`` without rows."""
        rows = await self.fetch(sql, *args)
        return rows[0][0] if rows else None

    def _rows(self, statement: Statement, data: Any) -> list[Row]:
        if not isinstance(data, list):
            raise TypeError(f"{statement.function} returned {type(data).__name__}, not a JSON array")
        names = self._names.get(statement.name)
        if names is None:
            names = self._names[statement.name] = {n: i for i, (n, _) in enumerate(statement.columns)}
        decoders = [DECODERS[code] for _, code in statement.columns]
        rows = []
        for values in data:
            if len(values) != len(decoders):
                raise TypeError(f"{statement.function} returned {len(values)} columns, expected {len(decoders)}")
            rows.append(Row([None if v is None else d(v) for d, v in zip(decoders, values, strict=True)], names))
        return rows


class SupabaseBase(PostgresBase):
    """A Supabase project at ``url`` (``supabase+https://...``, see :mod:`pamd.store.supabase_client`), reached over
    PostgREST. ``timeout`` (s) bounds each HTTP request; ``retries`` transient failures are retried per call.
    ``skipped_rows`` counts bad rows per table exactly as the Postgres store does (the same code does it)."""

    def __init__(self, url: str, *, timeout: float = 60.0, retries: int = 4, retry_base: float = 0.25) -> None:
        # Not PostgresBase.__init__: there is no DSN nor pool; only what the query modules read is set up.
        self.url = url
        base, key_env = split_supabase_url(url)
        self.rest = SupabaseRest(base, key_env, timeout=timeout, retries=retries, retry_base=retry_base)
        self.skipped_rows: Counter[str] = Counter()
        self._warned: set[tuple[str, str]] = set()
        self._column_types: dict[str, dict[str, str]] = {}
        self._conn = RpcConnection(self.rest)

    def __repr__(self) -> str:
        return f"SupabaseStore({self.url!r})"  # the key is never part of the URL

    async def _get_pool(self) -> Any:
        """The RPC connection (the Postgres modules' ``pool.fetch`` calls land here)."""
        self.rest.client()  # raises if closed or without a key
        return self._conn

    async def _call(self, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        return await func(self._conn, *args)

    async def _in_transaction(self, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        # Over REST a transaction is one RPC function: every multi-statement write of the Postgres store is
        # overridden by one (schema_supabase.sql). Reaching this means a new write was not.
        raise TypeError(f"{func!r} needs a transaction: give it a function in schema_supabase.sql")

    @staticmethod
    def profile_where(after: str | None, user_id: str | None, first: int = 1) -> tuple[str, list[Any]]:
        """One clause for every page (see :data:`pamd.store.supabase_sql.PROFILE_WHERE`): ``$1`` is ``after``,
        ``$2`` is ``user_id``, either may be NULL."""
        if first != 1:
            raise ValueError("the Supabase store's profile statements number their parameters from $1")
        return PROFILE_WHERE, [after, user_id]

    async def ping(self) -> None:
        """Raise if PostgREST cannot be reached, refuses the key, or pamd's functions are not installed."""
        await self.rest.run("ping", lambda c: c.rpc("pamd_supabase_version", {}), idempotent=True)

    async def aclose(self) -> None:
        """Close the HTTP connections; further calls raise :class:`RuntimeError`. Safe to call twice."""
        await self.rest.aclose()

    async def _rpc(self, function: str, params: dict[str, Any], *, idempotent: bool) -> Any:
        """``POST /rest/v1/rpc/<function>`` with ``params`` (made JSON by :func:`to_json_value`); its JSON result."""
        body: dict[str, Any] = {name: to_json_value(value) for name, value in params.items()}
        response = await self.rest.run(function, lambda c: c.rpc(function, body), idempotent=idempotent)
        return response.data
