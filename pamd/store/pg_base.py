"""The plumbing every Postgres query module shares: a lazy asyncpg pool, timeouts, skips, keyset pages.

URLs: ``postgresql://user:password@host:5432/db`` (or ``postgres://``), with asyncpg's query parameters
(``sslmode``, ``sslrootcert``...; any other parameter is sent as a server setting, e.g. ``?search_path=pamd``).

``?pgbouncer=true`` says the URL points at PgBouncer in transaction pooling mode (Supabase's pooler on port 6543),
which hands each transaction to whichever server connection is free, so a named prepared statement made on one may
not exist on the next: pamd then turns asyncpg's statement cache off (``statement_cache_size=0``) and sends no
``statement_timeout`` startup parameter (PgBouncer refuses unknown ones unless listed in its
``ignore_startup_parameters``); the client-side ``command_timeout`` still applies. The parameter is removed from
the URL before connecting. Query modules (one per monitor) subclass :class:`PostgresBase`;
:class:`pamd.store.pg.PostgresStore` combines them.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from pamd.backoff import backoff
from pamd.store.records import Profile
from pamd.store.sqlite_base import INACTIVE_STATUSES, SQLiteBase

log = logging.getLogger("pamd.store.pg")

R = TypeVar("R")
T = TypeVar("T")

Step = Callable[[asyncpg.Connection, str | None], Awaitable[tuple[list[R], str | None]]]
"""``async def step(conn, after) -> (records, next_after | None)``: one page of a keyset stream."""

_INACTIVE_SQL = ", ".join(f"'{s}'" for s in INACTIVE_STATUSES)
_PROFILES_SQL = f"""
SELECT id, full_name, timezone, preferred_units, currency, vehicle_type, max_driving_hours FROM profiles
WHERE {{where}} AND COALESCE(status, 'active') NOT IN ({_INACTIVE_SQL})
ORDER BY id LIMIT {{limit}}
"""
_TRUE = ("1", "true", "yes", "on")
SCAN_WORK_MEM = "16MB"
"""``work_mem`` of pamd's connections (the server's default is 4MB). The candidate statements' hashes of a page's
rows are planned from estimates far above the page and spilled to temporary files in batches at 4MB: with 16MB the
maintenance candidates take 23 % less time a page, the budget ones 6 %. The pool holds at most ``max_size``
connections (4 by default), so the server's memory for them stays small."""

# A connection that died under a call: the server was told to end it (pg_terminate_backend, a restart, a failover),
# the network dropped it, or the pool handed out one that was already gone. Every pamd statement and transaction
# can be run again on a fresh connection (reads; writes are idempotent upserts, and an aborted transaction was rolled
# back by the server), so such calls are retried; anything else (a bad query, a timeout, a constraint) is not.
_CONNECTION_LOST: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.PostgresConnectionError,  # 08xxx, incl. "connection was closed in the middle of operation"
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    # a statement sent as the server's "terminating connection" notice arrives: "cannot switch to state ...;
    # another operation is in progress" (seen in tests/test_store_pg_kill.py); the connection is gone either way
    asyncpg.exceptions.InternalClientError,
    ConnectionError,
)


def connection_lost(exc: BaseException) -> bool:
    """True if ``exc`` says the call's connection died (not that the call itself was wrong)."""
    if isinstance(exc, asyncpg.exceptions.InterfaceError):
        # "connection is closed", or "... released back to the pool": asyncpg detaches a pooled connection's proxy
        # as soon as its server process ends, so a statement after a pg_terminate_backend fails with this one
        return "closed" in str(exc) or "released back to the pool" in str(exc)
    return isinstance(exc, _CONNECTION_LOST)


CALL_ATTEMPTS = 3
RECONNECT_BASE_SECONDS = 0.2


def split_pg_url(url: str) -> tuple[str, bool]:
    """``(dsn, pgbouncer)``: the URL without its ``pgbouncer`` parameter, and whether that parameter was true.

    Raises :class:`ValueError` for a URL that is not ``postgresql://`` or ``postgres://``, or that sets
    ``search_path`` (or ``options``) together with ``pgbouncer=true``.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("postgresql", "postgres"):
        raise ValueError(f"not a postgres URL: {url!r} (expected postgresql://user@host:5432/db)")
    query = parse_qsl(parts.query, keep_blank_values=True)
    pgbouncer = any(k.lower() == "pgbouncer" and v.lower() in _TRUE for k, v in query)
    kept = [(k, v) for k, v in query if k.lower() != "pgbouncer"]
    if pgbouncer and any(k.lower() in ("search_path", "options") for k, _ in kept):
        # PgBouncer refuses startup parameters it does not know, or drops them if told to ignore them: the tables
        # would silently go to the role's default schema (found by tests/test_store_pgbouncer.py).
        raise ValueError("search_path cannot be set in the URL behind PgBouncer (it drops startup parameters): give "
                         "the role its own (ALTER ROLE ... SET search_path = ...) or use a database of its own")
    return urlunsplit(parts._replace(query=urlencode(kept))), pgbouncer


class PostgresBase:
    """A Postgres database at ``url``, reached through a pool of asyncpg connections opened on first use.

    ``command_timeout`` (s) bounds every call on the client; ``statement_timeout`` (s) is also set on the server
    (except behind PgBouncer, see the module doc). ``max_size`` bounds the pool (at least 2: a monitor's stream
    reads its next page on one connection while the pipeline writes alerts on another). ``skipped_rows`` counts
    rows ignored because of bad data, keyed by table; each row is logged as a warning once.
    """

    def __init__(
        self,
        url: str,
        *,
        command_timeout: float = 60.0,
        statement_timeout: float | None = 60.0,
        max_size: int = 4,
        server_settings: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url
        self.dsn, self.pgbouncer = split_pg_url(url)
        # Who turns JIT off and raises work_mem (see _settle): each pooled connection, or, behind PgBouncer, where no
        # session setting may stay on a shared server connection, the statements that need it, in their own
        # transaction (pamd.store.pg_scan.fetch_page). Neither for a setting the URL makes itself.
        in_url = {k.lower() for k, _ in parse_qsl(urlsplit(self.dsn).query)}
        settings = ([] if "jit" in in_url else ["jit = off"]) + (
            [] if "work_mem" in in_url else [f"work_mem = '{SCAN_WORK_MEM}'"])
        self.session_settings = "" if self.pgbouncer else "".join(f"SET {s};" for s in settings)
        """What each pooled connection runs when opened and when reset (direct connections)."""
        self.scan_settings = "".join(f"SET LOCAL {s};" for s in settings) if self.pgbouncer else ""
        """What a candidate statement runs first in its own transaction (behind PgBouncer: no session settings)."""
        if max_size < 2:
            raise ValueError("max_size must be at least 2")
        self.command_timeout = command_timeout
        self.statement_timeout = statement_timeout
        self.max_size = max_size
        self.server_settings = dict(server_settings or {})
        self.skipped_rows: Counter[str] = Counter()
        self.reconnects = 0  # calls run again because their connection was lost
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._closed = False
        self._warned: set[tuple[str, str]] = set()
        self._column_types: dict[str, dict[str, str]] = {}  # table -> column -> udt_name (PostgresStore.add_rows)

    def __repr__(self) -> str:
        return f"PostgresStore({self._redacted()!r})"

    def _redacted(self) -> str:
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))

    # -- plumbing -------------------------------------------------------------------------------------------

    def _connect_kwargs(self) -> dict[str, Any]:
        settings = dict(self.server_settings)
        if self.statement_timeout is not None and not self.pgbouncer:
            settings.setdefault("statement_timeout", str(int(self.statement_timeout * 1000)))
        kwargs: dict[str, Any] = {"command_timeout": self.command_timeout, "server_settings": settings}
        if self.pgbouncer:
            kwargs["statement_cache_size"] = 0
        return kwargs

    async def _get_pool(self) -> asyncpg.Pool:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        if self._pool is None:
            async with self._pool_lock:
                if self._closed:
                    raise RuntimeError(f"{self!r} is closed")
                if self._pool is None:
                    hooks = {"init": self._settle, "reset": self._reset} if self.session_settings else {}
                    self._pool = await asyncpg.create_pool(
                        self.dsn, min_size=1, max_size=self.max_size, **hooks, **self._connect_kwargs())
        return self._pool

    async def _settle(self, conn: asyncpg.Connection) -> None:
        """Set up a new pooled connection (:attr:`session_settings`): JIT off, since Postgres compiles a plan at every
        execution, 150 ms for a monitor's page statement (more than running it) and 280 ms for the alert pipeline's
        daily counts; and :data:`SCAN_WORK_MEM`. Queries, not startup parameters (which a PgBouncer may refuse); not
        behind ``pgbouncer=true``, where a session setting would stay on a server connection other clients share;
        not what the URL sets itself."""
        await conn.execute(self.session_settings)

    async def _reset(self, conn: asyncpg.Connection) -> None:
        """The pool's reset of a released connection, with the settings made again in the same round trip (its
        ``RESET ALL`` undoes them; a ``SET`` at every acquire would cost a round trip each time)."""
        await conn.execute(f"{conn.get_reset_query()}\n{self.session_settings}")

    async def _call(self, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``await func(connection, *args)`` on a pooled connection; run again on a fresh one if the connection
        is lost (:func:`connection_lost`), up to :data:`CALL_ATTEMPTS` times."""
        return await self._retrying(False, func, args)

    async def _in_transaction(self, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``await func(connection, *args)`` inside one transaction on a pooled connection, retried as a whole
        like :meth:`_call`."""
        return await self._retrying(True, func, args)

    async def _retrying(self, transaction: bool, func: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
        attempt = 0
        while True:
            attempt += 1
            pool = await self._get_pool()
            try:
                async with pool.acquire() as conn:
                    if not transaction:
                        return await func(conn, *args)
                    async with conn.transaction():
                        return await func(conn, *args)
            except Exception as exc:
                if not connection_lost(exc) or attempt >= CALL_ATTEMPTS or self._closed:
                    raise
                self.reconnects += 1
                delay = backoff(attempt, RECONNECT_BASE_SECONDS)
                log.warning("postgres connection lost (%s: %s); retrying on a new connection in %.2f s",
                            type(exc).__name__, exc, delay)
                await asyncio.sleep(delay)

    async def _execute(self, sql: str, *args: Any) -> str:
        return await self._call(_execute, sql, *args)

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await self._call(_fetch, sql, *args)

    async def _fetchval(self, sql: str, *args: Any) -> Any:
        return await self._call(_fetchval, sql, *args)

    def _skip(self, table: str, row_id: object, reason: str) -> None:
        self.skipped_rows[table] += 1
        key = (table, str(row_id))
        level = logging.DEBUG if key in self._warned else logging.WARNING
        self._warned.add(key)
        log.log(level, "skipping %s row %s: %s", table, row_id, reason)

    # -- Store protocol -------------------------------------------------------------------------------------

    async def ping(self) -> None:
        """Raise if the database cannot be reached or queried."""
        await self._fetchval("SELECT 1")

    async def aclose(self) -> None:
        """Close the pool; further calls raise :class:`RuntimeError`. Safe to call twice."""
        async with self._pool_lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    # -- users, page by page --------------------------------------------------------------------------------

    @staticmethod
    def profile_where(after: str | None, user_id: str | None, first: int = 1) -> tuple[str, list[Any]]:
        """The WHERE clause (on ``profiles``) selecting the page after ``after`` (and only ``user_id``); its
        placeholders are numbered from ``$first``."""
        where, params = ["TRUE"], []
        if after is not None:
            params.append(after)
            where.append(f"id > ${first + len(params) - 1}")
        if user_id is not None:
            params.append(user_id)
            where.append(f"id = ${first + len(params) - 1}")
        return " AND ".join(where), params

    async def _profiles(
        self, conn: asyncpg.Connection, after: str | None, limit: int, user_id: str | None
    ) -> list[Profile]:
        """Up to ``limit`` monitored profiles with ids above ``after`` (keyset pagination), ordered by id."""
        where, params = self.profile_where(after, user_id)
        sql = _PROFILES_SQL.format(where=where, limit=f"${len(params) + 1}")
        return [self.profile(row) for row in await conn.fetch(sql, *params, limit)]

    async def _profiles_by_id(self, conn: asyncpg.Connection, ids: list[str]) -> list[Profile]:
        """The monitored profiles among ``ids`` (a candidate scan's users), ordered by id."""
        sql = _PROFILES_SQL.format(where="id = ANY($1::text[])", limit="$2")
        return [self.profile(row) for row in await conn.fetch(sql, ids, len(ids))]

    # The same normalisation as SQLite's (asyncpg records are read by column name the same way).
    profile = staticmethod(SQLiteBase.profile)

    async def monitored_profile(self, user_id: str) -> Profile | None:
        """The profile of ``user_id`` if it exists and is monitored (its status is not inactive), else ``None``."""
        profiles = await self._call(self._profiles, None, 1, user_id)
        return profiles[0] if profiles else None

    async def _pages(
        self,
        fetch: Callable[[asyncpg.Connection, list[Profile]], Awaitable[list[R]]],
        batch_size: int,
        user_id: str | None,
    ) -> AsyncGenerator[list[R], None]:
        """Stream users ``batch_size`` at a time: each page of profiles is handed to ``await fetch(conn,
        profiles)`` (on the same pooled connection), which loads their rows and returns the records to yield."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")

        async def step(conn: asyncpg.Connection, after: str | None) -> tuple[list[R], str | None]:
            profiles = await self._profiles(conn, after, batch_size, user_id)
            batch = await fetch(conn, profiles) if profiles else []
            return batch, profiles[-1].user_id if len(profiles) == batch_size else None

        async for batch in self._keyset(step):
            yield batch

    async def _keyset(self, step: Step[R]) -> AsyncGenerator[list[R], None]:
        """Keyset pagination with read-ahead: ``await step(conn, after)`` returns a page's records and the key to
        read the next page after (``None`` on the last page), on a pooled connection. The next page is fetched
        in a task while the caller works on this one; if the caller stops early, that read-ahead is cancelled."""

        async def run(after: str | None) -> tuple[list[R], str | None]:
            return await self._call(step, after)

        def submit(after: str | None) -> asyncio.Task[tuple[list[R], str | None]]:
            task = asyncio.create_task(run(after))
            task.add_done_callback(_consume)  # a read-ahead nobody awaits (the caller stopped) stays quiet
            return task

        pending: asyncio.Task[tuple[list[R], str | None]] | None = submit(None)
        try:
            while pending is not None:
                batch, after = await pending
                pending = submit(after) if after is not None else None
                if batch:
                    yield batch
        finally:
            if pending is not None and not pending.done():
                pending.cancel()


async def _execute(conn: asyncpg.Connection, sql: str, *args: Any) -> str:
    return str(await conn.execute(sql, *args))


async def _fetch(conn: asyncpg.Connection, sql: str, *args: Any) -> list[asyncpg.Record]:
    return list(await conn.fetch(sql, *args))


async def _fetchval(conn: asyncpg.Connection, sql: str, *args: Any) -> Any:
    return await conn.fetchval(sql, *args)


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def pg_ts(value: datetime) -> datetime:
    """An instant as pamd stores it: UTC (a naive ``datetime`` is taken to be UTC), truncated to milliseconds like
    :func:`pamd.store.records.format_ts`, so both stores hold and compare the same instants."""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)
