"""The Postgres store's weather candidates: only the users with a planned trip starting in the range are read.

They are exactly the users the full stream (tests/test_store_pg_weather.py) yields with a trip row in the range, with
the same inputs and the same skipped rows, and a tick of the weather monitor on Postgres, which reads them, gives
SQLite's alerts. Not run again over Supabase's REST (tests/test_store_supabase_weather.py): that store reads the
full stream. Needs the PostgreSQL server of the ``pg_url`` fixture (tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import date
from typing import TYPE_CHECKING, Any

import pytest

from pamd.providers import ProviderHub
from pamd.store.pg import PostgresStore
from pamd.store.records_weather import WeatherCandidateSource, WeatherInput
from pamd.store.sqlite import SQLiteStore
from pamd.testing import run_tick
from tests.test_store_pg_weather import NOW, RANGES, _alerts, _bad_data, hub, server, weather_batches

if TYPE_CHECKING:  # mypy sees the source tree; at run time the package is installed as pamd_plugins
    from plugins import weather
else:
    from pamd_plugins import weather

__all__ = ["hub", "server"]  # fixtures, used by name
_Store = PostgresStore

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_only_the_postgres_store_reads_candidates() -> None:
    assert issubclass(PostgresStore, WeatherCandidateSource)
    assert not issubclass(SQLiteStore, WeatherCandidateSource)


@pytest.mark.parametrize("page_size", [1, 2, 5000])
async def test_candidates_are_the_users_with_a_trip_in_range(lite: SQLiteStore, pg: _Store, page_size: int) -> None:
    """The users the full stream yields with trips, with the same inputs and the same skips; nobody else."""
    await lite.seed_demo(NOW)
    await pg.seed_demo(NOW)
    await _bad_data((lite, pg))
    for first, last in RANGES:
        full = [i for batch in await weather_batches(pg, first, last, 500) for i in batch]
        skipped = dict(pg.skipped_rows)
        pg.skipped_rows.clear()
        found = [i async for batch in pg.iter_weather_candidates(first, last, 2, page_size=page_size) for i in batch]
        ids = {i.user_id for i in found}
        assert found == [i for i in full if i.user_id in ids]  # the same inputs, in the same (id) order
        assert ids >= {i.user_id for i in full if i.trips}  # everyone with a trip to check
        assert pg.skipped_rows == skipped  # and everyone with a trip row to skip (w4 in the wider range)
        pg.skipped_rows.clear()
    first, last = RANGES[0]
    found_ids = [i.user_id async for batch in pg.iter_weather_candidates(first, last) for i in batch]
    assert {"w1", "w2"} <= set(found_ids) and not {"w3", "w4", "w5"} & set(found_ids)


async def test_monitor_tick_reads_candidates_and_alerts_as_on_sqlite(lite: SQLiteStore, pg: _Store,
                                                                     hub: ProviderHub) -> None:
    await lite.seed_demo(NOW)
    await pg.seed_demo(NOW)
    calls: list[tuple[date, date]] = []
    scan = pg.iter_weather_candidates

    def spy(first: date, last: date, *args: Any, **kwargs: Any) -> AsyncGenerator[list[WeatherInput], None]:
        calls.append((first, last))
        return scan(first, last, *args, **kwargs)

    pg.iter_weather_candidates = spy  # type: ignore[method-assign]
    monitor, config = weather.WeatherMonitor(), weather.WeatherConfig(batch_size=2)
    results = [await run_tick(monitor, config=config, store=store, now=NOW, providers=hub, retries=0)
               for store in (lite, pg)]
    assert [r.outcome for r in results] == ["success", "success"], [r.error for r in results]
    assert _alerts(results[1].alerts) == _alerts(results[0].alerts) != []
    assert len(calls) == 1
    one = await run_tick(monitor, config=config, store=pg, now=NOW, providers=hub, user_id="demo-u04", retries=0)
    assert one.alerts and len(calls) == 1  # one user: the full stream
