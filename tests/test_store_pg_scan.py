"""The id ranges the Postgres candidate scans read side by side (pamd.store.pg_scan.range_bounds)."""

from __future__ import annotations

import pytest

from pamd.store.pg import PostgresStore
from pamd.store.pg_scan import range_bounds

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
