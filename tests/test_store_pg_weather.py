"""The weather monitor's query on Postgres gives the same records, skips and alerts as on SQLite.

Needs the PostgreSQL server of the ``pg_url`` fixture (tests/conftest.py); every test gets a schema of its own. The
monitor runs against the fake Open-Meteo on 127.0.0.1 (tests/fakes/openmeteo.py), as in tests/test_weather.py.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

import pamd
from pamd.config import ProvidersSection, WeatherProviderSection
from pamd.providers import ProviderHub
from pamd.store.pg import PostgresStore
from pamd.store.records_weather import WeatherInput
from pamd.store.sqlite import SQLiteStore
from pamd.testing import run_tick
from tests.fakes.openmeteo import OpenMeteoFake, serve_openmeteo
from tests.store_pairs import Stores, add

if TYPE_CHECKING:  # mypy sees the source tree; at run time the package is installed as pamd_plugins
    from plugins import weather
else:
    from pamd_plugins import weather

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
# What the monitor asks for at NOW (utc today - 1 .. utc today + horizon + 1), and a wider range.
RANGES = [(date(2026, 3, 14), date(2026, 3, 30)), (date(2026, 1, 1), date(2026, 6, 30))]

pytestmark = pytest.mark.anyio


_Store = PostgresStore  # it includes the weather queries


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- the two stores -----------------------------------------------------------------------------------------------


@pytest.fixture
async def both(lite: SQLiteStore, pg: _Store) -> Stores:
    """Both stores with the demo data at ``NOW``."""
    await lite.seed_demo(NOW)
    await pg.seed_demo(NOW)
    return lite, pg


async def weather_batches(store: SQLiteStore | _Store, first: date, last: date, batch_size: int,
                          user_id: str | None = None) -> list[list[WeatherInput]]:
    return [batch async for batch in store.iter_weather_inputs(first, last, batch_size, user_id)]


# -- the same records ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 3, 500])
async def test_weather_inputs_are_the_same(both: Stores, batch_size: int) -> None:
    lite, pg = both
    for first, last in RANGES:
        expected = await weather_batches(lite, first, last, batch_size)
        assert [len(b) for b in expected] == ([1] * 8 if batch_size == 1 else [3, 3, 2] if batch_size == 3 else [8])
        assert await weather_batches(pg, first, last, batch_size) == expected
    planned = {i.user_id: [t.id for t in i.trips] for b in expected for i in b if i.trips}
    assert planned == {"demo-u01": ["demo-t01"], "demo-u03": ["demo-tw03"], "demo-u04": ["demo-t04"],
                       "demo-u06": ["demo-tw06"], "demo-u07": ["demo-tw07"], "demo-u08": ["demo-tw08"]}
    assert pg.skipped_rows == lite.skipped_rows == {}


@pytest.mark.parametrize("user_id", ["demo-u01", "demo-u02", "demo-u05", "demo-u08", "nobody"])
async def test_weather_inputs_of_one_user_are_the_same(both: Stores, user_id: str) -> None:
    lite, pg = both
    for first, last in RANGES:
        expected = await weather_batches(lite, first, last, 3, user_id)
        assert [i.user_id for b in expected for i in b] == ([] if user_id == "nobody" else [user_id])
        assert await weather_batches(pg, first, last, 3, user_id) == expected


async def test_only_trips_that_can_matter_are_read(both: Stores) -> None:
    lite, pg = both
    [batch] = await weather_batches(pg, date(2026, 3, 18), date(2026, 3, 20), 500)
    assert {i.user_id: [t.id for t in i.trips] for i in batch if i.trips} == {
        "demo-u01": ["demo-t01"], "demo-u04": ["demo-t04"], "demo-u08": ["demo-tw08"]}
    assert [batch] == await weather_batches(lite, date(2026, 3, 18), date(2026, 3, 20), 500)
    with pytest.raises(ValueError, match="batch_size"):
        await weather_batches(pg, date(2026, 3, 18), date(2026, 3, 20), 0)


# -- bad rows, skipped and counted the same way -------------------------------------------------------------------

_TRIP = {"destination": "Noosa", "dest_lat": -26.39, "dest_lon": 153.09, "start_date": "2026-03-18",
         "end_date": "2026-03-25", "flex_days": 1, "status": "planned"}


async def _bad_data(stores: Stores) -> None:
    await add(stores, "profiles", [
        {"id": "w1", "timezone": "Australia/Brisbane"},
        {"id": "w2", "timezone": "Mars/Olympus"},  # has a trip: UTC, counted
        {"id": "w3", "timezone": "Nowhere/Else"},  # no trip in range: not checked
        {"id": "w4", "timezone": "Europe/Paris"},
        {"id": "w5", "timezone": "Europe/Paris", "status": "deleted"},
    ])
    trips: list[dict[str, Any]] = [
        {"id": "a-end", "user_id": "w1", "end_date": "2026-03-10"},
        {"id": "a-flex", "user_id": "w1", "flex_days": -1},
        {"id": "a-lat", "user_id": "w1", "dest_lat": 123.0},
        {"id": "a-lon", "user_id": "w1", "dest_lon": -180.5},
        {"id": "a-ok", "user_id": "w1", "start_date": "2026-03-16"},
        {"id": "a-nocoords", "user_id": "w1", "dest_lat": None, "dest_lon": None, "start_date": "2026-03-21"},
        {"id": "a-halfcoords", "user_id": "w1", "dest_lon": None, "start_date": "2026-03-21"},
        {"id": "a-noend", "user_id": "w1", "end_date": None, "start_date": "2026-03-22"},
        {"id": "a-stamp", "user_id": "w1", "start_date": "2026-03-23T09:00:00+01:00", "end_date": None},
        # the same day: ordered by id, byte-wise
        {"id": "w2-b", "user_id": "w2", "start_date": "2026-03-17"},
        {"id": "w2-B", "user_id": "w2", "start_date": "2026-03-17"},
        {"id": "w2-a", "user_id": "w2", "start_date": "2026-03-17"},
        {"id": "w2-_", "user_id": "w2", "start_date": "2026-03-16"},
        # never read, bad or not: other statuses, out of range, no start date, inactive user
        {"id": "w3-far", "user_id": "w3", "start_date": "2026-09-01", "flex_days": -5},
        {"id": "w4-done", "user_id": "w4", "status": "completed", "flex_days": -5},
        {"id": "w4-active", "user_id": "w4", "status": "active", "dest_lat": 100.0},
        {"id": "w4-past", "user_id": "w4", "start_date": "2026-03-01", "end_date": "2026-02-01"},
        {"id": "w4-nostart", "user_id": "w4", "start_date": None, "end_date": None},
        {"id": "w5-bad", "user_id": "w5", "flex_days": -1},
    ]
    await add(stores, "trips", [_TRIP | t for t in trips])


async def test_bad_rows_are_skipped_and_counted_the_same(lite: SQLiteStore, pg: _Store) -> None:
    await _bad_data((lite, pg))
    first, last = RANGES[0]
    for batch_size in (1, 3, 500):
        expected = await weather_batches(lite, first, last, batch_size)
        assert await weather_batches(pg, first, last, batch_size) == expected
    for user_id in ("w1", "w2", "w3", "w4", "w5"):
        expected = await weather_batches(lite, first, last, 3, user_id)
        assert await weather_batches(pg, first, last, 3, user_id) == expected
    assert pg.skipped_rows == lite.skipped_rows == {"trips": 4 * 4, "profiles": 1 * 4}

    [users] = await weather_batches(pg, first, last, 500)
    by_id = {i.user_id: i for i in users}
    assert list(by_id) == ["w1", "w2", "w3", "w4"]
    w1 = by_id["w1"]
    assert [t.id for t in w1.trips] == ["a-ok", "a-halfcoords", "a-nocoords", "a-noend", "a-stamp"]
    assert [t.has_coordinates for t in w1.trips] == [True, False, False, True, True]
    assert w1.trips[-1].start_date == date(2026, 3, 23) and w1.trips[-1].end_date is None
    assert w1.profile.timezone == "Australia/Brisbane"
    assert [t.id for t in by_id["w2"].trips] == ["w2-_", "w2-B", "w2-a", "w2-b"]
    assert by_id["w2"].profile.timezone == "UTC" and by_id["w3"].profile.timezone == "Nowhere/Else"
    assert by_id["w3"].trips == by_id["w4"].trips == ()


async def test_nan_coordinates_are_skipped_on_postgres(pg: _Store) -> None:
    # SQLite stores NaN as NULL (no coordinates); Postgres keeps it, and it is as bad as out of range.
    await pg.add_rows("profiles", [{"id": "n1"}])
    await pg.add_rows("trips", [_TRIP | {"id": "nan", "user_id": "n1", "dest_lat": math.nan}])
    [[n1]] = await weather_batches(pg, *RANGES[0], 500)
    assert n1.trips == () and pg.skipped_rows == {"trips": 1}


# -- the monitor gives the same alerts ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[OpenMeteoFake]:
    with serve_openmeteo(NOW) as running:
        yield running


@pytest.fixture
async def hub(server: OpenMeteoFake) -> AsyncIterator[ProviderHub]:
    server.reset(NOW)
    providers = ProviderHub(ProvidersSection(
        weather=WeatherProviderSection(base_url=server.url, timeout=2.0, retries=1)))
    yield providers
    await providers.aclose()


def _alerts(alerts: Sequence[pamd.Alert]) -> list[tuple[Any, ...]]:
    return sorted((a.user_id, a.kind, a.priority, a.title, a.body, msgspec.to_builtins(dict(a.facts)))
                  for a in alerts)


@pytest.mark.parametrize("batch_size", [1, 3, 500])
async def test_monitor_alerts_the_same(both: Stores, hub: ProviderHub, batch_size: int) -> None:
    lite, pg = both
    monitor, config = weather.WeatherMonitor(), weather.WeatherConfig(batch_size=batch_size)
    results = [await run_tick(monitor, config=config, store=store, now=NOW, providers=hub, retries=0)
               for store in both]
    assert [(r.outcome, r.degradations) for r in results] == [("success", [])] * 2, [r.error for r in results]
    expected = _alerts(results[0].alerts)
    assert [(a[0], a[1], a[2]) for a in expected] == [
        ("demo-u01", "weather_window", pamd.Priority.MEDIUM), ("demo-u04", "weather_severe", pamd.Priority.HIGH),
        ("demo-u07", "weather_window", pamd.Priority.LOW)]
    assert _alerts(results[1].alerts) == expected
    for user_id in ("demo-u04", "demo-u06"):
        one = [await run_tick(monitor, config=config, store=store, now=NOW, providers=hub, user_id=user_id,
                              retries=0) for store in both]
        assert _alerts(one[1].alerts) == _alerts(one[0].alerts)
        assert len(one[0].alerts) == (user_id == "demo-u04")
    assert pg.skipped_rows == lite.skipped_rows == {}
