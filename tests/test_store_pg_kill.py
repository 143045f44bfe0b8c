"""Postgres connections killed under a running tick (``pg_terminate_backend``; the shared server is never restarted).

A single kill, while a page is read or while a batch of alerts is written, costs a retry on a new connection and
nothing else: the tick succeeds with exactly the alerts of an undisturbed run, each stored once. A killer that ends
every connection for a while fails the tick cleanly (its retries exhausted), leaves no half-written batch, and the
pool recovers by itself: the next tick, with no one resetting anything, stores the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest

from pamd.coordination.local import LocalCoordinator
from pamd.metrics import Metrics
from pamd.pipeline import AlertPipeline
from pamd.runner import Runner, TickResult
from pamd.store.pg import PostgresStore
from pamd.store.pg_alerts import PostgresAlertQueries
from pamd.store.pg_base import PostgresBase
from pamd.store.sqlite import SQLiteStore
from pamd.testing import make_job
from tests.conftest import PG_URL

if TYPE_CHECKING:  # mypy sees the source tree; at run time the package is installed as pamd_plugins
    from plugins import fuel
else:
    from pamd_plugins import fuel

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def victim(pg_url: str) -> AsyncIterator[PostgresStore]:
    """A demo-seeded Postgres store whose connections carry an application name of their own, to be killed."""
    name = f"pamd-victim-{pg_url.rsplit('=', 1)[1]}"
    # sslmode=disable: a failed attempt cancels the pool's connects in flight, and asyncpg (0.32) reports a connect
    # cancelled while it asks the server for TLS as an exception of a future nobody awaits (MagicStack/asyncpg#1211),
    # which the test's event loop raises as this test's failure (seen once in CI); the kills need no TLS request.
    store = PostgresStore(f"{pg_url}&application_name={name}&sslmode=disable")
    await store.migrate()
    await store.seed_demo(NOW)
    yield store
    await store.aclose()


async def kill_backends(store: PostgresStore) -> int:
    """Terminate every server process the store's pool holds; return how many. From a connection of its own."""
    conn = await asyncpg.connect(PG_URL)
    try:
        return int(await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = $1 AND pid <> pg_backend_pid()", _app_name(store)))
    finally:
        await conn.close()


def _app_name(store: PostgresStore) -> str:
    return store.dsn.rsplit("application_name=", 1)[1].split("&", 1)[0]


async def backend_pids(store: PostgresStore) -> set[int]:
    conn = await asyncpg.connect(PG_URL)
    try:
        rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE application_name = $1", _app_name(store))
        return {int(r[0]) for r in rows}
    finally:
        await conn.close()


def fuel_runner(store: PostgresStore | SQLiteStore, state_dir: Path) -> tuple[Runner, Any]:
    job = make_job(fuel.FuelMonitor(), fuel.FuelConfig(batch_size=3), retries=1, cooldown=3600)
    metrics = Metrics()
    coordinator = LocalCoordinator(str(state_dir))
    runner = Runner({"fuel": job}, AlertPipeline({}, metrics, book=store), metrics, coordinator, store,
                    clock=lambda: NOW, retry_base_seconds=0.05)
    return runner, job


async def tick(store: PostgresStore, state_dir: Path) -> TickResult:
    runner, job = fuel_runner(store, state_dir)
    await runner.coordinator.start()
    return await runner.run_tick(job, NOW)


async def expected_alerts(tmp_path: Path) -> set[tuple[str, str, str]]:
    """What an undisturbed tick stores, from SQLite (the Postgres store is tested to give the same alerts)."""
    lite = SQLiteStore(f"sqlite:///{tmp_path}/expected.db")
    await lite.migrate()
    await lite.seed_demo(NOW)
    runner, job = fuel_runner(lite, tmp_path / "lite-state")
    await runner.coordinator.start()
    result = await runner.run_tick(job, NOW)
    await lite.aclose()
    assert result.outcome == "success", result.error
    stored = {(a.user_id, a.kind, a.priority.value) for a in result.alerts}
    assert len(stored) >= 3
    return stored


async def stored_alerts(store: PostgresStore) -> list[tuple[str, str, str]]:
    rows = await store._fetch("SELECT user_id, kind, priority FROM pam_alerts ORDER BY user_id, kind")
    return [(r[0], r[1], r[2]) for r in rows]


async def assert_consistent(store: PostgresStore) -> None:
    """No half-written batch: every stored alert has its dedupe state and every state names a stored alert."""
    orphans = await store._fetchval(
        "SELECT count(*) FROM pam_alerts AS a FULL JOIN pam_alert_state AS s ON s.last_alert_id = a.id "
        "WHERE a.id IS NULL OR s.fingerprint IS NULL")
    assert orphans == 0
    twice = await store._fetchval("SELECT count(*) FROM (SELECT fingerprint FROM pam_alerts GROUP BY fingerprint "
                                  "HAVING count(*) > 1) AS d")
    assert twice == 0


def kill_on_call(monkeypatch: pytest.MonkeyPatch, owner: type, name: str, store: PostgresStore,
                 kills: list[int], calls: int = 1) -> None:
    """Make ``owner.name`` (an async method or staticmethod taking the connection first) kill the store's
    connections the ``calls``-th time it runs, after its first statement on that connection."""
    original: Callable[..., Awaitable[Any]] = getattr(owner, name)
    seen = [0]

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = await original(*args, **kwargs)
        seen[0] += 1
        if seen[0] == calls:
            kills.append(await kill_backends(store))
        return result

    monkeypatch.setattr(owner, name, staticmethod(wrapper) if isinstance(owner.__dict__.get(name), staticmethod)
                        else wrapper)


async def test_a_connection_killed_while_a_page_is_read(
        victim: PostgresStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kills: list[int] = []
    call = PostgresBase._call
    calls = [0]

    async def second_read_dies(self: PostgresBase, func: Any, *args: Any) -> Any:
        calls[0] += 1
        if calls[0] != 2:
            return await call(self, func, *args)

        async def dying(conn: asyncpg.Connection, *a: Any) -> Any:
            if not kills:  # the connection dies under the monitor's second read, once (not under its retry)
                kills.append(await kill_backends(victim))
            return await func(conn, *a)

        return await call(self, dying, *args)

    monkeypatch.setattr(PostgresBase, "_call", second_read_dies)
    result = await tick(victim, tmp_path)
    assert kills and kills[0] >= 1
    assert result.outcome == "success", result.error
    assert victim.reconnects >= 1
    assert set(await stored_alerts(victim)) == await expected_alerts(tmp_path)
    await assert_consistent(victim)


async def test_a_connection_killed_inside_the_write_transaction(
        victim: PostgresStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kills: list[int] = []
    # the fence row is locked, then the connection dies before the alerts are inserted: the transaction is rolled
    # back by the server and run again whole on a new connection
    kill_on_call(monkeypatch, PostgresAlertQueries, "_fence", victim, kills)
    before = await backend_pids(victim)
    result = await tick(victim, tmp_path)
    assert kills and kills[0] >= 1
    assert result.outcome == "success", result.error
    assert victim.reconnects >= 1
    stored = await stored_alerts(victim)
    assert len(stored) == len(set(stored))
    assert set(stored) == await expected_alerts(tmp_path)
    await assert_consistent(victim)
    assert not (await backend_pids(victim)) & before  # every connection the pool uses now is a new one


async def test_a_killer_fails_the_tick_cleanly_and_the_pool_recovers(victim: PostgresStore, tmp_path: Path) -> None:
    await victim.ping()
    stop = asyncio.Event()
    killed = [0]

    async def killer() -> None:
        while not stop.is_set():
            killed[0] += await kill_backends(victim)
            await asyncio.sleep(0.005)

    task = asyncio.create_task(killer())
    try:
        result = await tick(victim, tmp_path)
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert killed[0] >= 3
    assert result.outcome == "error", result  # its retry failed too
    await assert_consistent(victim)

    # no one resets the pool: the next tick simply works and stores every alert once
    again = await tick(victim, tmp_path)
    assert again.outcome == "success", again.error
    assert set(await stored_alerts(victim)) == await expected_alerts(tmp_path)
    await assert_consistent(victim)
