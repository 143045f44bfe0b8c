"""The plumbing every SQLite query module shares: one WAL connection behind a lock, worker threads, skips.

Two connections to one WAL database, each guarded by its own lock: the writer (the alert book, migrations, test
rows) and a query-only reader for the monitors' page-by-page streams, so a tick's next page can be read while the
pipeline writes alerts (SQLite releases the GIL while it works). Every blocking call runs in a worker thread, so the
event loop never waits on the disk. Query modules (one per monitor)
subclass :class:`SQLiteBase`; :class:`pamd.store.sqlite.SQLiteStore` combines them.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import aclosing, contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

import anyio.to_thread

from pamd.store.records import Profile, finite_or_none
from pamd.store.sqlite_reader import PageReader

log = logging.getLogger("pamd.store.sqlite")

T = TypeVar("T")
R = TypeVar("R")
K = TypeVar("K")  # the key a keyset page hands to the next: a last id, or a scan's state

READ_PROCESS_MIN_USERS = 20_000
"""Profiles from which a full scan is read by a second process (below, spawning it costs more than it saves)."""

RemotePages = tuple[str, tuple[Any, ...], Any]
"""A scan's pages as the page reader reads them: (store method, its arguments after ``conn, after``, record type)."""

INACTIVE_STATUSES = ("deleted", "disabled", "suspended", "inactive", "banned")
"""Profiles with one of these ``status`` values are never monitored."""

_INACTIVE_SQL = ", ".join(f"'{s}'" for s in INACTIVE_STATUSES)
_PROFILES_SQL = f"""
SELECT id, full_name, timezone, preferred_units, currency, vehicle_type, max_driving_hours FROM profiles
WHERE {{where}} AND COALESCE(status, 'active') NOT IN ({_INACTIVE_SQL})
ORDER BY id LIMIT ?
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



class SQLiteBase:
    """A SQLite database at ``url``.

    ``skipped_rows`` counts rows ignored because of bad data (NULL where required, negative amounts, unparsable
    timestamps), keyed by table; every skip counts, and each row is logged as a warning once. ``trace``, if given,
    receives every SQL statement executed (see :meth:`sqlite3.Connection.set_trace_callback`).

    A monitor's full scan of a database with at least ``read_process_min_users`` profiles is read by a second
    process (:mod:`pamd.store.sqlite_reader`); ``read_process=False`` keeps every read in this one.
    """

    def __init__(
        self, url: str, *, trace: Callable[[str], None] | None = None, read_process: bool = True,
        read_process_min_users: int = READ_PROCESS_MIN_USERS,
    ) -> None:
        self.url = url
        self.read_process = read_process and trace is None
        self.read_process_min_users = read_process_min_users
        self._page_reader: PageReader | None = None
        self.path = sqlite_path(url)
        self.skipped_rows: Counter[str] = Counter()
        self._trace = trace
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()
        self._reader: sqlite3.Connection | None = None
        self._closed = False
        self._columns: dict[str, frozenset[str]] = {}
        self._warned: set[tuple[str, str]] = set()

    def __repr__(self) -> str:
        return f"SQLiteStore({self.url!r})"

    # -- plumbing -------------------------------------------------------------------------------------------

    def _open(self, *, query_only: bool = False) -> sqlite3.Connection:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        if self._trace is not None:
            conn.set_trace_callback(self._trace)
        if query_only:
            conn.execute("PRAGMA query_only=ON")
        else:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _locked_read(self, func: Callable[..., T], *args: Any) -> T:
        """``func(reader, *args)`` holding the reader's lock (the writer's, for an in-memory database: a second
        connection to ``:memory:`` would be another, empty database)."""
        if self.path == ":memory:":
            return self._locked(func, *args)
        with self._reader_lock:
            if self._reader is None:
                with self._lock:
                    self._connect()  # the writer first: it puts a new file in WAL mode
                self._reader = self._open(query_only=True)
            return func(self._reader, *args)

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
            with self._reader_lock, self._lock:  # the order _locked_read takes them in
                for conn in (self._conn, self._reader):
                    if conn is not None:
                        conn.close()
                self._conn = self._reader = None
                self._closed = True

        if self._page_reader is not None:
            self._page_reader.close()
        await anyio.to_thread.run_sync(close)

    # -- users, page by page --------------------------------------------------------------------------------

    @staticmethod
    def profile_where(after: str | None, user_id: str | None) -> tuple[str, list[Any]]:
        """The WHERE clause (on ``profiles``) selecting the page after ``after`` (and only ``user_id``)."""
        where, params = ["1"], []
        if after is not None:
            where.append("id > ?")
            params.append(after)
        if user_id is not None:
            where.append("id = ?")
            params.append(user_id)
        return " AND ".join(where), params

    def _profiles(self, conn: sqlite3.Connection, after: str | None, limit: int, user_id: str | None) -> list[Profile]:
        """Up to ``limit`` monitored profiles with ids above ``after`` (keyset pagination), ordered by id."""
        where, params = self.profile_where(after, user_id)
        rows = conn.execute(_PROFILES_SQL.format(where=where), [*params, limit]).fetchall()
        return [self.profile(row) for row in rows]

    @staticmethod
    def profile(row: sqlite3.Row, id_column: str = "id") -> Profile:
        """A :class:`Profile` from a row with the ``profiles`` columns (``id`` named ``id_column``)."""
        hours = finite_or_none(row["max_driving_hours"]) if "max_driving_hours" in row.keys() else None  # noqa: SIM118
        return Profile(
            user_id=str(row[id_column]),
            full_name=row["full_name"],
            timezone=row["timezone"] or "UTC",
            preferred_units="imperial" if str(row["preferred_units"]).lower() == "imperial" else "metric",
            currency=str(row["currency"] or "USD").upper(),
            vehicle_type=row["vehicle_type"],
            max_driving_hours=hours if hours is not None and hours > 0 else None,
        )

    async def monitored_profile(self, user_id: str) -> Profile | None:
        """The profile of ``user_id`` if it exists and is monitored (its status is not inactive), else ``None``."""
        profiles = await self._call(self._profiles, None, 1, user_id)
        return profiles[0] if profiles else None

    async def _pages(
        self, fetch: str, args: tuple[Any, ...], record: Any, batch_size: int, user_id: str | None
    ) -> AsyncGenerator[list[Any], None]:
        """Stream users ``batch_size`` at a time: each page of profiles is handed to this store's method named
        ``fetch``, called ``fetch(conn, profiles, *args)`` (in the worker thread, under the lock, or in the page
        reader process for a big full scan), which loads their rows and returns the ``record`` values to yield."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        pages = self._method_pages("_fetched_page", (fetch, args, batch_size, user_id), record, user_id is None)
        async with aclosing(pages):
            async for batch in pages:
                yield batch

    async def _method_pages(
        self, method: str, args: tuple[Any, ...], record: Any, remote: bool
    ) -> AsyncGenerator[list[Any], None]:
        """The keyset pages of this store's ``method(conn, after, *args)`` (see :meth:`_keyset`); with ``remote``
        (a scan of every user), read by the page reader process if the database is big enough."""

        def step(conn: sqlite3.Connection, after: Any) -> tuple[list[Any], Any]:
            return cast(tuple[list[Any], Any], getattr(self, method)(conn, after, *args))

        pages = self._keyset(step, (method, args, record) if remote else None)
        async with aclosing(pages):  # closed at once, not when collected: it may hold the page reader
            async for batch in pages:
                yield batch

    def _fetched_page(
        self, conn: sqlite3.Connection, after: str | None, fetch: str, args: tuple[Any, ...], batch_size: int,
        user_id: str | None,
    ) -> tuple[list[Any], str | None]:
        profiles = self._profiles(conn, after, batch_size, user_id)
        batch = getattr(self, fetch)(conn, profiles, *args) if profiles else []
        return batch, profiles[-1].user_id if len(profiles) == batch_size else None

    async def _keyset(
        self,
        step: Callable[[sqlite3.Connection, K | None], tuple[list[R], K | None]],
        remote: RemotePages | None = None,
    ) -> AsyncGenerator[list[R], None]:
        """Keyset pagination with read-ahead: ``step(conn, after)`` returns a page's records and the key to read
        the next page after (``None`` on the last page; any picklable value). The next page is read in a worker
        thread while the caller works on this one, so SQLite's own work (it releases the GIL) overlaps the
        monitor's.

        ``remote``, for a scan of every user: the same pages as ``(method, args, record type)``, where
        ``method(conn, after, *args)`` is this store's; a big database's are then read by the page reader process
        (:mod:`pamd.store.sqlite_reader`) if it is free."""
        reader = await self._claim_page_reader() if remote is not None else None
        if reader is not None and remote is not None:
            try:
                async with aclosing(reader.pages(self.url, *remote, self._skip)) as pages:
                    async for batch in pages:
                        yield batch
            finally:
                reader.busy = False  # also when the stream is dropped before its first page
            return
        loop = asyncio.get_running_loop()

        def submit(after: K | None) -> asyncio.Future[tuple[list[R], K | None]]:
            future = loop.run_in_executor(None, self._locked_read, step, after)
            future.add_done_callback(_consume)  # a read-ahead nobody awaits (the caller stopped) stays quiet
            return future

        pending: asyncio.Future[tuple[list[R], K | None]] | None = submit(None)
        while pending is not None:
            batch, after = await pending
            pending = submit(after) if after is not None else None
            if batch:
                yield batch

    async def _claim_page_reader(self) -> PageReader | None:
        """The page reader process, marked busy, if this store may use one, it is not busy with another stream,
        and the database is big enough for a second process to pay (counted each time: a few ms for a million
        users). The caller must clear ``busy`` when its stream ends."""
        if not self.read_process or self.path == ":memory:":
            return None
        if self._page_reader is not None and self._page_reader.busy:
            return None
        users = await anyio.to_thread.run_sync(
            self._locked_read, lambda conn: conn.execute("SELECT count(*) FROM profiles").fetchone()[0])
        if users < self.read_process_min_users:
            return None
        if self._page_reader is None:
            self._page_reader = PageReader()
        elif self._page_reader.busy:  # claimed by another stream while this one counted
            return None
        self._page_reader.busy = True
        return self._page_reader


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
