"""The SQLite page reader process (pamd.store.sqlite_reader): the same pages as the in-process read, skips
counted in the parent, and a dead or abandoned reader never leaves a tick without an answer."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pamd.store.records_budget import BudgetBands
from pamd.store.sqlite import SQLiteStore
from pamd.store.sqlite_reader import PageReaderError

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
BANDS = BudgetBands(high_pct=80, pace_pct=110, pace_min_elapsed_days=3, pace_min_elapsed_pct=10)
USERS = 60

pytestmark = pytest.mark.anyio


def rows() -> dict[str, list[dict[str, Any]]]:
    """``USERS`` users with a vehicle, three fill-ups and a monthly budget with two expenses; a few bad rows."""
    data: dict[str, list[dict[str, Any]]] = {t: [] for t in ("profiles", "vehicles", "fuel_log", "budgets",
                                                             "expenses")}
    for n in range(USERS):
        uid = f"u{n:03d}"
        data["profiles"].append({"id": uid, "full_name": f"User {n}", "timezone": "Pacific/Auckland" if n % 2
                                 else "Pacific/Honolulu", "currency": "NZD", "preferred_units": "metric"})
        data["vehicles"].append({"id": f"v{n:03d}", "user_id": uid, "name": "Van", "vehicle_type": "campervan",
                                 "fuel_type": "diesel", "fuel_capacity_l": 80.0, "odometer_km": 10_000.0 + n,
                                 "is_primary": True})
        for k in range(3):
            data["fuel_log"].append({
                "id": f"f{n:03d}-{k}", "user_id": uid, "vehicle_id": f"v{n:03d}",
                "logged_at": NOW - timedelta(days=9 - 3 * k, hours=n % 5), "volume_l": 60.0 + k,
                "total_cost": 100.0, "odometer_km": 9_000.0 + 300 * k + n, "is_full_tank": True,
                # every 7th user has one fill-up with an impossible volume: skipped and counted
                **({"volume_l": -5.0} if n % 7 == 0 and k == 1 else {}),
            })
        data["budgets"].append({"id": f"b{n:03d}", "user_id": uid, "category": "fuel", "amount": 300.0 + n,
                                "period": "monthly"})
        for k in range(2):
            data["expenses"].append({"id": f"e{n:03d}-{k}", "user_id": uid, "category": "fuel",
                                     "amount": 120.0 + n * k if n % 2 == 0 else 5.0,  # odd users: far from a band
                                     "date": (NOW - timedelta(days=k + 1)).date()})
    return data


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """A store whose full scans go to the page reader from the first user."""
    path = f"sqlite:///{tmp_path}/reader.db"
    writer = SQLiteStore(path)
    await writer.migrate()
    for table, items in rows().items():
        await writer.add_rows(table, items)
    await writer.aclose()
    store = SQLiteStore(path, read_process_min_users=1)
    yield store
    await store.aclose()


async def scan(store: SQLiteStore, what: str, batch: int = 7, stop_after: int | None = None) -> list[Any]:
    stream: AsyncGenerator[list[Any], None]
    if what == "fuel":
        stream = store.iter_fuel_inputs(batch, now=NOW)
    elif what == "budget":
        stream = store.iter_budget_inputs(NOW, batch)
    else:
        stream = store.iter_budget_candidates(BANDS, NOW, batch, scan_size=11)
    pages = []
    async for page in stream:
        pages.append(page)
        if stop_after is not None and len(pages) >= stop_after:
            await stream.aclose()
            break
    return pages


@pytest.mark.parametrize("what", ["fuel", "budget", "budget candidates"])
async def test_reader_pages_equal_the_in_process_pages(store: SQLiteStore, tmp_path: Path, what: str) -> None:
    local = SQLiteStore(store.url, read_process=False)
    try:
        expected = await scan(local, what)
        remote = await scan(store, what)
    finally:
        await local.aclose()
    assert store._page_reader is not None and store._page_reader.pid is not None  # it really was the reader
    assert remote == expected
    if what == "budget candidates":  # the users over 80 % of their budget: every other one here
        assert 0 < sum(len(p) for p in remote) < USERS
    else:
        assert sum(len(p) for p in remote) == USERS and len(remote) == -(-USERS // 7)
    assert store.skipped_rows == local.skipped_rows  # the reader's skips are counted here
    if what == "fuel":
        assert store.skipped_rows["fuel_log"] == len(range(0, USERS, 7))


async def test_small_databases_and_single_users_stay_in_process(tmp_path: Path, store: SQLiteStore) -> None:
    small = SQLiteStore(store.url)  # the default threshold is far above USERS
    try:
        assert len(await scan(small, "fuel")) > 1
        assert small._page_reader is None
    finally:
        await small.aclose()
    async for _ in store.iter_fuel_inputs(5, "u001", now=NOW):
        pass
    assert store._page_reader is None  # one user's read is never worth a process


async def test_a_second_stream_while_the_reader_is_busy_is_read_in_process(store: SQLiteStore) -> None:
    first = store.iter_fuel_inputs(7, now=NOW)
    page = await anext(first)
    assert store._page_reader is not None and store._page_reader.busy
    other = await scan(store, "budget")
    assert sum(len(p) for p in other) == USERS
    rest = [page] + [p async for p in first]
    assert sum(len(p) for p in rest) == USERS


async def test_an_abandoned_stream_stops_the_reader_and_the_next_scan_starts_one(store: SQLiteStore) -> None:
    assert len(await scan(store, "fuel", stop_after=1)) == 1
    assert store._page_reader is not None and store._page_reader.pid is None
    assert sum(len(p) for p in await scan(store, "fuel")) == USERS


async def test_a_killed_reader_fails_the_scan_and_the_next_one_recovers(store: SQLiteStore) -> None:
    stream = store.iter_fuel_inputs(3, now=NOW)
    await anext(stream)
    assert store._page_reader is not None
    pid = store._page_reader.pid
    assert pid is not None
    # Time enough for a child without flow control to write the whole scan (20 small pages) into the pipe, after
    # which its death would go unnoticed; this one waits a page ahead.
    await asyncio.sleep(0.3)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(PageReaderError, match="died"):
        async for _ in stream:
            pass
    assert sum(len(p) for p in await scan(store, "fuel")) == USERS
    assert store._page_reader.pid not in (None, pid)


async def test_a_reader_error_is_raised_in_the_parent(tmp_path: Path) -> None:
    broken = SQLiteStore(f"sqlite:///{tmp_path}/empty.db", read_process_min_users=0)
    try:
        await broken._call(lambda conn: conn.execute("CREATE TABLE profiles (id TEXT)"))
        with pytest.raises(PageReaderError, match="no such table"):
            await scan(broken, "fuel")
    finally:
        await broken.aclose()


@pytest.mark.parametrize("what", ["weather", "maintenance", "context"])
async def test_reader_pages_of_the_other_monitors_equal_the_in_process_pages(tmp_path: Path, what: str) -> None:
    url = f"sqlite:///{tmp_path}/demo.db"
    seeded = SQLiteStore(url)
    await seeded.migrate()
    await seeded.seed_demo(NOW)
    await seeded.aclose()
    remote, local = SQLiteStore(url, read_process_min_users=1), SQLiteStore(url, read_process=False)

    def stream(store: SQLiteStore) -> AsyncGenerator[list[Any], None]:
        if what == "weather":
            return store.iter_weather_inputs(NOW.date(), (NOW + timedelta(days=16)).date(), 3)
        if what == "maintenance":
            return store.iter_maintenance_inputs(3, now=NOW)
        return store.iter_context_inputs(NOW, 3)

    try:
        expected = [page async for page in stream(local)]
        got = [page async for page in stream(remote)]
        assert remote._page_reader is not None and remote._page_reader.pid is not None
    finally:
        await remote.aclose()
        await local.aclose()
    assert got == expected and len(expected) > 1
    assert remote.skipped_rows == local.skipped_rows


async def test_concurrent_scans_never_share_the_reader(store: SQLiteStore) -> None:
    local = SQLiteStore(store.url, read_process=False)
    try:
        expected = [await scan(local, what) for what in ("fuel", "budget", "budget candidates")]
    finally:
        await local.aclose()
    # Claims made together (each counts the users first): exactly one gets the reader.
    claims = await asyncio.gather(*(store._claim_page_reader() for _ in range(3)))
    assert sum(claim is not None for claim in claims) == 1
    assert store._page_reader is not None and store._page_reader.busy
    store._page_reader.busy = False
    # Scans started together: one reads through the reader, the others in this process; all see the same pages.
    got = await asyncio.gather(scan(store, "fuel"), scan(store, "budget"), scan(store, "budget candidates"))
    assert list(got) == expected
    assert not store._page_reader.busy
