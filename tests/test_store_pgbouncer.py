"""The Postgres store behind a real PgBouncer in transaction pooling mode (what Supabase's pooler runs).

Each test gets a database of its own, created directly on ``PG_URL``'s server (a schema would not do: the
``search_path`` URL option is a startup parameter, and PgBouncer either refuses it or drops it, see
``test_search_path_in_the_url_does_not_pass_through_pgbouncer``), and PgBouncers started on free ports in front
of it with ``default_pool_size = 2``: every client connection shares those two server connections, one
transaction (or one statement outside a transaction) at a time.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import asyncpg
import pytest

from pamd.metrics import Metrics
from pamd.pipeline import AlertPipeline
from pamd.store.pg import PostgresStore
from pamd.store.pg_base import SCAN_WORK_MEM
from pamd.store.pg_scan import fetch_page
from tests.conftest import PG_URL, free_port
from tests.test_pipeline import COOLDOWN, Recorder, candidate

PGBOUNCER = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/local/sbin")
pytestmark = pytest.mark.skipif(
    PGBOUNCER is None, reason="pgbouncer is not installed (Debian: apt-get install pgbouncer; .ci/run does it)")

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
T0 = datetime(2026, 1, 15, 0, 0, tzinfo=UTC)
USERS = [f"u{n:02d}" for n in range(24)]
# Startup parameters no client of these tests may need: asyncpg sends none of them with ``?pgbouncer=true``.
STRICT = "extra_float_digits"
# What a pamd URL without ``pgbouncer=true`` needs to get connected at all (it sends ``statement_timeout``).
LENIENT = "extra_float_digits,statement_timeout"
# PgBouncer 1.18 tracks no search_path: ignoring it is the only way to let such a URL connect.
IGNORE_SEARCH_PATH = "extra_float_digits,statement_timeout,search_path"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _admin(sql: str) -> None:
    """Run ``sql`` directly on ``PG_URL`` (in a worker thread with its own event loop, like conftest's pg_url)."""

    async def run() -> None:
        conn = await asyncpg.connect(PG_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


def _with_db(url: str, host: str, port: int, db: str) -> str:
    parts = urlsplit(url)
    user = parts.username or "postgres"
    return urlunsplit(parts._replace(netloc=f"{user}@{host}:{port}", path=f"/{db}", query=""))


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh database of this test's own on ``PG_URL``'s server; its name. Dropped afterwards."""
    name = f"pamd_bouncer_{secrets.token_hex(5)}"
    _admin(f'CREATE DATABASE "{name}"')
    yield name
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Bouncer:
    """A pgbouncer subprocess in transaction mode in front of one database; ``url`` reaches it."""

    def __init__(self, database: str, ignore: str) -> None:
        assert PGBOUNCER is not None
        server = urlsplit(PG_URL)
        self.database = database
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pamd-pgbouncer-"))
        self.log = self.dir / "pgbouncer.log"
        self.url = _with_db(PG_URL, "127.0.0.1", self.port, database)
        (self.dir / "userlist.txt").write_text('"postgres" ""\n', encoding="utf-8")
        config = self.dir / "pgbouncer.ini"
        config.write_text(
            f"""
[databases]
{database} = host={server.hostname or "127.0.0.1"} port={server.port or 5432} dbname={database} user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.dir}/userlist.txt
admin_users = postgres
pool_mode = transaction
max_client_conn = 200
default_pool_size = 2
min_pool_size = 0
reserve_pool_size = 0
ignore_startup_parameters = {ignore}
logfile =
pidfile =
""",
            encoding="utf-8",
        )
        command = [PGBOUNCER, str(config)]
        if os.geteuid() == 0:  # pgbouncer refuses to run as root
            shutil.chown(self.dir, "postgres")
            for path in self.dir.iterdir():
                shutil.chown(path, "postgres")
            command[1:1] = ["-u", "postgres"]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"pgbouncer exited with {self.proc.returncode}:\n{self.output()}")
            with socket.socket() as s, suppress(OSError):
                s.settimeout(0.5)
                s.connect(("127.0.0.1", self.port))
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"pgbouncer did not listen on {self.port} within {timeout}s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def bouncers(database: str) -> Iterator[Callable[[str], Bouncer]]:
    """``start(ignore_startup_parameters) -> Bouncer`` in front of this test's database; all stopped after."""
    started: list[Bouncer] = []

    def start(ignore: str = STRICT) -> Bouncer:
        started.append(Bouncer(database, ignore))
        return started[-1]

    yield start
    for bouncer in started:
        bouncer.stop()


@pytest.fixture
def direct_url(database: str) -> str:
    """This test's database, straight on Postgres (no PgBouncer)."""
    server = urlsplit(PG_URL)
    return _with_db(PG_URL, server.hostname or "127.0.0.1", server.port or 5432, database)


@pytest.fixture
async def stores() -> AsyncIterator[list[PostgresStore]]:
    """Stores a test opened; closed after it."""
    opened: list[PostgresStore] = []
    yield opened
    for store in opened:
        await store.aclose()


async def fetch(store: PostgresStore, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    async def run(conn: asyncpg.Connection) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in await conn.fetch(sql, *args)]

    return await store._call(run)


async def workload(url: str, stores: list[PostgresStore], rounds: int = 2) -> list[str]:
    """Three replicas of pamd (a store each, 4 connections a pool) migrate at once, then submit alerts for
    ``USERS`` concurrently, one task per user, while streaming fuel inputs: their statements interleave on the
    bouncer's 2 server connections. Returns the outcomes of the last round, in ``USERS`` order."""
    replicas = [PostgresStore(url) for _ in range(3)]
    stores.extend(replicas)
    migrated: list[int] = []

    async def migrate(store: PostgresStore) -> None:
        migrated.append(await store.migrate())

    async with anyio.create_task_group() as tg:
        for store in replicas:
            tg.start_soon(migrate, store)
    assert sorted(migrated) == [0, 0, 1]
    await replicas[0].add_rows("profiles", [{"id": u, "timezone": "Pacific/Auckland"} for u in USERS],
                               on_conflict="ignore")
    sink = Recorder()
    pipelines = [AlertPipeline({sink.name: sink}, Metrics(), book=store) for store in replicas]
    outcomes: dict[str, str] = {}

    async def submit(n: int, user: str, now: datetime) -> None:
        result = await pipelines[n % 3].submit("fuel", [candidate(user=user)], epoch=1, now=now, cooldown=COOLDOWN,
                                               complete=True, user_id=user)
        outcomes[user] = "+".join(d.outcome for d in result.decisions)

    async def stream(store: PostgresStore) -> None:
        async for _ in store.iter_fuel_inputs(5, now=NOW):
            await asyncio.sleep(0)

    for r in range(rounds):
        async with anyio.create_task_group() as tg:
            for n, user in enumerate(USERS):
                tg.start_soon(submit, n, user, T0 + timedelta(minutes=5 * r))
            for store in replicas:
                tg.start_soon(stream, store)
                tg.start_soon(pipelines[0].release_held, T0 + timedelta(minutes=5 * r))
    assert len(sink.got) == len(USERS)
    return [outcomes[u] for u in USERS]


def leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for e in error.exceptions for leaf in leaves(e)]
    return [error]


# -- tests ---------------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_bouncer_shares_two_server_connections_between_many_clients(
        bouncers: Callable[[str], Bouncer], stores: list[PostgresStore]) -> None:
    bouncer = bouncers(STRICT)
    store = PostgresStore(f"{bouncer.url}?pgbouncer=true", max_size=8)
    stores.append(store)
    pids: list[int] = []

    async def backend(conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            pids.append(await conn.fetchval("SELECT pg_backend_pid()"))
            await conn.execute("SELECT pg_sleep(0.05)")

    async with anyio.create_task_group() as tg:
        for _ in range(16):
            tg.start_soon(store._call, backend)
    assert len(pids) == 16 and len(set(pids)) <= 2  # 8 client connections, at most 2 server ones


@pytest.mark.anyio
async def test_migrate_seed_and_monitor_reads_match_a_direct_connection(
        bouncers: Callable[[str], Bouncer], direct_url: str, stores: list[PostgresStore]) -> None:
    # STRICT: the bouncer refuses statement_timeout, which ?pgbouncer=true must not send.
    bouncer = bouncers(STRICT)
    pooled = PostgresStore(f"{bouncer.url}?pgbouncer=true", max_size=6)
    direct = PostgresStore(direct_url)
    stores += [pooled, direct]
    await pooled.ping()
    assert await pooled.migrate() == 1
    assert await pooled.migrate() == 0
    written = await pooled.seed_demo(NOW)
    assert written > 0
    assert await pooled.seed_demo(NOW) == written  # idempotent through the bouncer too
    assert not await direct.is_empty() and await direct.migrate() == 0  # the same database
    for size in (3, 500):
        fuel = [b async for b in pooled.iter_fuel_inputs(size, now=NOW)]
        assert fuel and fuel == [b async for b in direct.iter_fuel_inputs(size, now=NOW)]
        budget = [b async for b in pooled.iter_budget_inputs(NOW, size)]
        assert budget and budget == [b async for b in direct.iter_budget_inputs(NOW, size)]
    assert await pooled.monitored_profile("demo-u01") == await direct.monitored_profile("demo-u01")
    # Reads of different streams at once, each reading its next page ahead on another pooled connection.
    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(_drain_fuel, pooled)
            tg.start_soon(_drain_budget, pooled)


async def _drain_fuel(store: PostgresStore) -> None:
    async for _ in store.iter_fuel_inputs(2, now=NOW):
        pass


async def _drain_budget(store: PostgresStore) -> None:
    async for _ in store.iter_budget_inputs(NOW, 2):
        pass


@pytest.mark.anyio
async def test_the_alert_pipeline_under_concurrency_with_pgbouncer_true(
        bouncers: Callable[[str], Bouncer], direct_url: str, stores: list[PostgresStore]) -> None:
    bouncer = bouncers(STRICT)
    outcomes = await workload(f"{bouncer.url}?pgbouncer=true", stores)
    assert outcomes == ["cooldown"] * len(USERS)
    direct = PostgresStore(direct_url)
    stores.append(direct)
    assert await fetch(direct, "SELECT state, COUNT(*) FROM pam_alerts GROUP BY state") == [("delivered", len(USERS))]
    assert await fetch(direct, "SELECT COUNT(*) FROM pam_alert_state") == [(len(USERS),)]
    assert await fetch(direct, "SELECT name, epoch FROM pamd_fence") == [("leader", 1)]


@pytest.mark.anyio
async def test_without_pgbouncer_true_the_same_workload_fails(
        bouncers: Callable[[str], Bouncer], stores: list[PostgresStore]) -> None:
    # Without the flag pamd sends statement_timeout at startup, which a bouncer refuses unless told to ignore it:
    # the connection fails before any query...
    strict = bouncers(STRICT)
    refused = PostgresStore(strict.url)
    stores.append(refused)
    with pytest.raises(asyncpg.PostgresError, match="unsupported startup parameter: statement_timeout"):
        await refused.ping()
    # ...and once it is ignored, asyncpg's statement cache names its prepared statements per client connection,
    # but PgBouncer 1.18 (transaction mode) hands each transaction to whichever server connection is free: a
    # statement prepared on one is then used on the other ("prepared statement ... does not exist"), or a second
    # client prepares the same name again on a server connection that already has it ("... already exists").
    lenient = bouncers(LENIENT)
    with pytest.raises(BaseException) as caught:  # an anyio ExceptionGroup, checked below
        await workload(lenient.url, stores)
    errors = leaves(caught.value)
    assert errors and all(isinstance(e, asyncpg.PostgresError) for e in errors), errors
    assert all("prepared statement" in str(e) for e in errors), errors
    assert any(isinstance(e, (asyncpg.InvalidSQLStatementNameError, asyncpg.DuplicatePreparedStatementError))
               for e in errors), errors


@pytest.mark.anyio
async def test_search_path_in_the_url_does_not_pass_through_pgbouncer(
        bouncers: Callable[[str], Bouncer], direct_url: str, stores: list[PostgresStore]) -> None:
    schema = f"pamd_s_{secrets.token_hex(4)}"
    direct = PostgresStore(direct_url)
    stores.append(direct)
    await direct._call(lambda conn: conn.execute(f'CREATE SCHEMA "{schema}"'))
    # search_path is a startup parameter: a bouncer that does not list it in ignore_startup_parameters refuses
    # the connection...
    strict = bouncers(STRICT)
    with pytest.raises(asyncpg.PostgresError, match="unsupported startup parameter: search_path"):
        await asyncpg.connect(strict.url, server_settings={"search_path": schema}, statement_cache_size=0)
    # ...and one that ignores it drops it: the session runs in the default schema (public), not the one asked for.
    lenient = bouncers(IGNORE_SEARCH_PATH)
    conn = await asyncpg.connect(lenient.url, server_settings={"search_path": schema}, statement_cache_size=0)
    try:
        assert await conn.fetchval("SELECT current_schema()") == "public"
    finally:
        await conn.close()
    # So the store refuses the combination outright rather than migrate into the wrong schema.
    with pytest.raises(ValueError, match="search_path cannot be set in the URL behind PgBouncer"):
        PostgresStore(f"{lenient.url}?search_path={schema}&pgbouncer=true")


@pytest.mark.anyio
async def test_candidate_statements_run_without_jit_and_with_more_work_mem_behind_pgbouncer_too(
        bouncers: Callable[[str], Bouncer], direct_url: str, stores: list[PostgresStore]) -> None:
    """Directly each pooled connection turns JIT off and raises work_mem; behind PgBouncer no session setting may
    stay on a shared server connection, so a candidate page sets both in its own transaction, leaving other
    statements alone. Settings the URL names win."""
    bouncer = bouncers(STRICT)
    pooled = PostgresStore(f"{bouncer.url}?pgbouncer=true", max_size=2)
    direct = PostgresStore(direct_url)
    chosen = PostgresStore(f"{direct_url}?jit=on&work_mem=8MB", max_size=2)
    stores += [pooled, direct, chosen]
    setting = "SELECT current_setting('jit'), current_setting('work_mem')"
    default = (await fetch(pooled, "SELECT current_setting('work_mem')"))[0][0]
    assert default != SCAN_WORK_MEM  # else the test shows nothing

    async def in_page(store: PostgresStore) -> tuple[str, str]:
        async def run(conn: asyncpg.Connection) -> tuple[str, str]:
            row = await fetch_page(store, conn, setting)
            return str(row[0]), str(row[1])

        return await store._call(run)

    assert [await in_page(s) for s in (pooled, direct)] == [("off", SCAN_WORK_MEM)] * 2
    assert await fetch(pooled, setting) == [("on", default)]  # the server's defaults, untouched by SET LOCAL
    assert await fetch(direct, setting) == [("off", SCAN_WORK_MEM)]

    async def turn_on(conn: asyncpg.Connection) -> int:  # a statement that changes them, on a pooled connection
        await conn.execute("SET jit = on; SET work_mem = '1MB'")
        return int(await conn.fetchval("SELECT pg_backend_pid()"))

    async def pid_and_settings(conn: asyncpg.Connection) -> tuple[int, str, str]:
        jit, work_mem = await conn.fetchrow(setting)
        return int(await conn.fetchval("SELECT pg_backend_pid()")), str(jit), str(work_mem)

    pid = await direct._call(turn_on)
    assert await direct._call(pid_and_settings) == (pid, "off", SCAN_WORK_MEM)  # the same connection, reset
    assert await in_page(chosen) == ("on", "8MB")  # the URL's own settings win
