"""The id ranges the Postgres candidate scans read side by side (pamd.store.pg_scan.range_bounds), and the walks
over them (scan_ranges)."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest

from pamd.store.pg import PostgresStore
from pamd.store.pg_scan import range_bounds, scan_ranges

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def ranges_cover(ids: list[str], bounds: list[str | None]) -> list[int]:
    """How many of ``ids`` fall in each range ``(previous bound, bound]``; every id must fall in exactly one."""
    sizes = []
    lower: str | None = None
    for upper in bounds:
        sizes.append(sum(1 for i in ids if (lower is None or i > lower) and (upper is None or i <= upper)))
        lower = upper
    assert sum(sizes) == len(ids) and bounds[-1] is None
    return sizes


async def test_bounds_split_the_users_evenly_by_count_then_by_the_planner_s_estimate(pg: PostgresStore) -> None:
    ids = [f"u{n:03d}" for n in range(90)]
    await pg.add_rows("profiles", [{"id": i} for i in ids])
    # Never analysed (reltuples -1): the bounds come from a count.
    assert await pg._fetchval("SELECT reltuples FROM pg_class WHERE oid = 'profiles'::regclass") <= 0
    assert ranges_cover(ids, await range_bounds(pg, 3)) == [30, 30, 30]
    assert ranges_cover(ids, await range_bounds(pg, 2)) == [45, 45]
    assert await range_bounds(pg, 1) == [None]
    await pg._execute("ANALYZE profiles")
    assert ranges_cover(ids, await range_bounds(pg, 4)) == [22, 22, 22, 24]
    # A stale estimate (60 of the 90 deleted since): fewer, uneven ranges, but still every id exactly once.
    await pg._execute("DELETE FROM profiles WHERE id >= 'u030'")
    left = ids[:30]
    assert ranges_cover(left, await range_bounds(pg, 3)) == [30, 0]
    assert await range_bounds(pg, 2) == [None]  # the first bound lies past the end: one range of all


async def test_a_consumer_that_stops_early_leaves_no_walk_behind(pg: PostgresStore) -> None:
    """A tick that fails mid-scan closes the scan with its walks waiting for room in the full queue: the close
    ends them (it used to wait forever, and so did the event loop's shutdown)."""
    await pg.add_rows("profiles", [{"id": f"u{n:03d}"} for n in range(90)])

    async def one_id(conn: Any, after: str | None, upto: str | None) -> tuple[list[str], str | None]:
        row = await conn.fetchrow("SELECT id FROM profiles WHERE ($1::text IS NULL OR id > $1) "
                                  "AND ($2::text IS NULL OR id <= $2) ORDER BY id LIMIT 1", after, upto)
        return ([row[0]], row[0]) if row is not None else ([], None)

    before = asyncio.all_tasks()
    pages = scan_ranges(pg, one_id, 3)
    assert len(await anext(pages)) == 1
    await asyncio.sleep(0.3)  # every walk fills the queue (six pages) and waits
    with anyio.fail_after(5):
        await pages.aclose()
    assert asyncio.all_tasks() - before == set()
