"""The maintenance monitor's queries on Postgres give the same records, skips and alerts as on SQLite.

Needs the PostgreSQL server of the ``pg_url`` fixture (tests/conftest.py); every test gets a schema of its own.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

import pamd
from pamd.providers import ProviderHub
from pamd.store.pg import PostgresStore
from pamd.store.records_maintenance import MaintenanceInput, MaintenanceInputSource
from pamd.store.sqlite import SQLiteStore
from pamd.testing import run_tick
from tests.fakes.overpass import FakeOverpass, places_hub, serve_overpass
from tests.store_pairs import Stores, add
from tests.test_maintenance import SHOP_ELEMENTS

if TYPE_CHECKING:  # mypy sees the source tree; at run time the package is installed as pamd_plugins
    from plugins import maintenance as mnt
else:
    from pamd_plugins import maintenance as mnt

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)

pytestmark = pytest.mark.anyio


_Store = PostgresStore  # it includes the maintenance queries


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def both(lite: SQLiteStore, pg: _Store) -> Stores:
    """Both stores with the demo data at ``NOW``."""
    await lite.seed_demo(NOW)
    await pg.seed_demo(NOW)
    return lite, pg


async def batches(store: SQLiteStore | _Store, batch_size: int, user_id: str | None = None,
                  **kwargs: Any) -> list[list[MaintenanceInput]]:
    return [batch async for batch in store.iter_maintenance_inputs(batch_size, user_id, now=NOW, **kwargs)]


def test_the_store_is_a_maintenance_input_source() -> None:
    assert issubclass(_Store, MaintenanceInputSource)


# -- the same records -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 3, 500])
async def test_demo_inputs_are_the_same(both: Stores, batch_size: int) -> None:
    lite, pg = both
    expected = await batches(lite, batch_size)
    assert [len(b) for b in expected] == ([1] * 8 if batch_size == 1 else [3, 3, 2] if batch_size == 3 else [8])
    assert sum(len(i.records) for b in expected for i in b) > 5
    assert any(v.readings for b in expected for i in b for v in i.vehicles)
    assert await batches(pg, batch_size) == expected
    for kwargs in ({"max_records": 1}, {"max_fills": 2}, {"position_max_age": timedelta(minutes=5)}):
        assert await batches(pg, batch_size, **kwargs) == await batches(lite, batch_size, **kwargs), kwargs
    assert pg.skipped_rows == lite.skipped_rows == {}


@pytest.mark.parametrize("user_id", ["demo-u01", "demo-u03", "demo-u06", "demo-u07", "nobody"])
async def test_inputs_of_one_user_are_the_same(both: Stores, user_id: str) -> None:
    lite, pg = both
    expected = await batches(lite, 3, user_id)
    assert [i.user_id for b in expected for i in b] == ([] if user_id == "nobody" else [user_id])
    assert await batches(pg, 3, user_id) == expected
    assert await batches(pg, 1, user_id, position_max_age=timedelta(minutes=5)) == await batches(
        lite, 1, user_id, position_max_age=timedelta(minutes=5))


# -- bad rows, skipped and counted the same way -------------------------------------------------------------------


def _ts(days: float = 0.0, hours: float = 0.0) -> datetime:
    return NOW - timedelta(days=days, hours=hours)


# The bad rows of tests/test_maintenance.py that Postgres' typed columns can hold (no unparsable dates there).
BAD_ROWS: list[dict[str, Any]] = [
    {"id": "bad-task", "task": None},
    {"id": "bad-empty-task", "task": "  "},
    {"id": "bad-null-date", "date": None},
    {"id": "bad-future", "date": "2026-03-20"},
    {"id": "bad-odometer", "odometer_km": -5.0},
    {"id": "bad-due-odometer", "next_due_odometer_km": -1.0},
    {"id": "bad-cost", "cost": -20.0},
    {"id": "bad-infinite-cost", "cost": math.inf},
    {"id": "bad-vehicle", "vehicle_id": "demo-v02"},
]


async def _bad_data(stores: Stores) -> None:
    base: dict[str, Any] = {"user_id": "demo-u04", "vehicle_id": "demo-v04", "task": "Gas check",
                            "date": "2026-03-01", "next_due_date": "2026-03-16"}
    await add(stores, "maintenance_records", [base | row for row in BAD_ROWS] + [
        base | {"id": "ok-null-vehicle", "vehicle_id": None},
        base | {"id": "ok-timestamp", "date": "2026-03-02T10:00:00Z", "task": "Water pump"},
    ])
    await add(stores, "profiles", [
        {"id": "demo-u09", "full_name": "Zed", "timezone": "Mars/Olympus_Mons"},
        {"id": "x1", "timezone": "Europe/Paris", "currency": "eur"},
        {"id": "x2", "timezone": "Pacific/Auckland"},
        {"id": "x8", "timezone": "Mars/Olympus_Mons"},  # no records: its timezone is still counted
        {"id": "x9", "status": "deleted"},
    ])
    await add(stores, "vehicles", [
        {"id": "bad-odo", "user_id": "demo-u04", "name": "Trailer", "odometer_km": -1.0},
        # x1 has no primary: the first by id in byte order ("Vb" before "va") stands in for it
        {"id": "va", "user_id": "x1", "name": "Second", "odometer_km": 1000.0},
        {"id": "Vb", "user_id": "x1", "name": None, "vehicle_type": "campervan"},
        {"id": "w1", "user_id": "x2", "name": "Truck", "is_primary": True, "odometer_km": 200000.0},
        {"id": "w9", "user_id": "x9", "is_primary": True},
    ])
    await add(stores, "maintenance_records", [
        {"id": "z1", "user_id": "demo-u09", "task": "x", "date": "2026-01-01"},  # demo-u09 has no vehicle
        # x1: NULL vehicle = "Vb"; equal dates ranked by id in byte order ("Mz" before "ma")
        {"id": "Mz", "user_id": "x1", "vehicle_id": None, "task": "Oil change", "date": "2026-01-10",
         "odometer_km": 900.0, "next_due_odometer_km": 1900.0, "cost": 80.0},
        {"id": "ma", "user_id": "x1", "vehicle_id": "va", "task": "Tyre rotation", "date": "2026-01-10",
         "next_due_date": "2026-03-20"},
        {"id": "m0", "user_id": "x1", "vehicle_id": "va", "task": "Tyre rotation", "date": "2025-06-01",
         "next_due_date": "2026-01-01", "cost": 60.0},
        {"id": "mnull", "user_id": "x1", "vehicle_id": "va", "task": "Roof", "date": None},  # ranked last
        {"id": "n1", "user_id": "x2", "vehicle_id": "w1", "task": "Brake inspection", "date": "2025-03-16",
         "next_due_date": "2026-03-16", "next_due_odometer_km": 200500.0},
        {"id": "n2", "user_id": "x2", "vehicle_id": "va", "task": "Oil change", "date": "2025-03-16"},  # x1's
        {"id": "q1", "user_id": "x9", "vehicle_id": "w9", "task": "Oil change", "date": "2025-01-01"},
    ])
    await add(stores, "fuel_log", [
        {"id": "g01", "user_id": "x1", "vehicle_id": None, "logged_at": _ts(20), "volume_l": 40.0,
         "odometer_km": 1100.0, "lat": 45.0, "lon": 6.0},
        {"id": "g02", "user_id": "x1", "vehicle_id": "va", "logged_at": _ts(10), "volume_l": 40.0,
         "odometer_km": 1500.0},
        {"id": "g03", "user_id": "x1", "vehicle_id": "va", "logged_at": _ts(5), "volume_l": 40.0,
         "odometer_km": -3.0},
        {"id": "g04", "user_id": "x1", "vehicle_id": "Vb", "logged_at": None, "volume_l": 40.0},
        {"id": "g05", "user_id": "x1", "vehicle_id": "Vb", "logged_at": _ts(3), "volume_l": 40.0,
         "odometer_km": 1700.0},
        {"id": "g06", "user_id": "x1", "vehicle_id": "va", "logged_at": _ts(3), "volume_l": 40.0,
         "odometer_km": 1650.0, "lat": 45.2, "lon": 6.2},  # the same instant as g05: ranked by id
        {"id": "g07", "user_id": "x1", "vehicle_id": "va", "logged_at": _ts(1), "volume_l": 40.0},  # nothing
        {"id": "g20", "user_id": "x2", "vehicle_id": "w1", "logged_at": _ts(2), "volume_l": 90.0,
         "odometer_km": 200100.0, "lat": 0.0, "lon": 0.0},
        {"id": "g21", "user_id": "x2", "vehicle_id": "w1", "logged_at": _ts(4), "volume_l": 90.0,
         "odometer_km": 199900.0, "lat": -36.8, "lon": 174.7},
        {"id": "g90", "user_id": "x9", "vehicle_id": "w9", "logged_at": _ts(1), "odometer_km": -1.0},
    ])
    await add(stores, "user_locations", [
        {"user_id": "x1", "recorded_at": _ts(hours=-1), "lat": 45.9, "lon": 6.1},  # in the future
        {"user_id": "x1", "recorded_at": _ts(hours=2), "lat": 45.8, "lon": 6.2},
        {"user_id": "x2", "recorded_at": _ts(hours=1), "lat": 95.0, "lon": 6.1},  # impossible
        {"user_id": "x2", "recorded_at": _ts(hours=2), "lat": None, "lon": 6.1},  # not located
        {"user_id": "x8", "recorded_at": _ts(hours=1), "lat": 45.0, "lon": 6.1},  # no records: unread
        {"user_id": "x9", "recorded_at": _ts(hours=1), "lat": 95.0, "lon": 6.1},  # deleted: unread
    ])


async def test_bad_rows_are_skipped_and_counted_the_same(both: Stores) -> None:
    lite, pg = both
    await _bad_data(both)
    for batch_size in (1, 3, 500):
        variants: list[dict[str, Any]] = [{}, {"max_records": 1}, {"max_records": 2, "max_fills": 1}, {"max_fills": 3}]
        for kwargs in variants:
            expected = await batches(lite, batch_size, **kwargs)
            assert await batches(pg, batch_size, **kwargs) == expected, (batch_size, kwargs)
    for user_id in ("demo-u04", "x1", "x2", "x8", "x9", "demo-u09"):
        assert await batches(pg, 2, user_id) == await batches(lite, 2, user_id), user_id
    assert pg.skipped_rows == lite.skipped_rows
    assert set(lite.skipped_rows) == {"maintenance_records", "vehicles", "fuel_log", "user_locations", "profiles"}

    pg.skipped_rows.clear()
    [users] = await batches(pg, 500)
    by_id = {i.user_id: i for i in users}
    assert "x9" not in by_id and by_id["x8"].profile.timezone == by_id["demo-u09"].profile.timezone == "UTC"
    assert by_id["x8"].records == () and by_id["x8"].position is None
    aroha = by_id["demo-u04"]
    assert sorted(r.id for r in aroha.records) == ["demo-m04", "ok-null-vehicle", "ok-timestamp"]
    assert next(v for v in aroha.vehicles if v.id == "bad-odo").odometer_km is None
    x1 = by_id["x1"]
    assert [v.id for v in x1.vehicles] == ["Vb", "va"] and x1.vehicles[0].name == "your vehicle"
    assert [(r.km, r.at) for r in x1.vehicles[0].readings] == [(1100.0, _ts(20)), (1700.0, _ts(3))]
    assert [r.km for r in x1.vehicles[1].readings] == [1500.0, 1650.0]
    assert [(r.id, r.vehicle_id) for r in x1.records] == [("m0", "va"), ("Mz", "Vb"), ("ma", "va")]
    # the newest location is in the future (an older one is not looked for): the newest fill-up with coordinates
    assert x1.position is not None and (x1.position.source, x1.position.lat) == ("fuel_log", 45.2)
    x2 = by_id["x2"]
    assert [r.id for r in x2.records] == ["n1"]  # n2 names another user's vehicle
    assert x2.position is not None and (x2.position.source, x2.position.lat) == ("fuel_log", -36.8)
    assert pg.skipped_rows == {"maintenance_records": len(BAD_ROWS) + 3, "vehicles": 1, "fuel_log": 2,
                               "user_locations": 2, "profiles": 2}

    [[x1_newest]] = await batches(pg, 500, "x1", max_records=1, max_fills=1)
    assert [r.id for r in x1_newest.records] == ["ma"]  # the NULL date is ranked last, "ma" after "Mz"
    assert [len(v.readings) for v in x1_newest.vehicles] == [0, 0]  # the newest fill-up has no odometer


async def test_nan_is_a_bad_number_on_postgres(pg: _Store) -> None:
    """SQLite stores NaN as NULL (unknown, fine); Postgres keeps it, and it is skipped as a bad number."""
    await pg.add_rows("profiles", [{"id": "u1"}])
    await pg.add_rows("vehicles", [{"id": "v1", "user_id": "u1", "is_primary": True, "odometer_km": math.nan}])
    await pg.add_rows("maintenance_records", [
        {"id": "r1", "user_id": "u1", "task": "Oil change", "date": "2026-01-01", "cost": math.nan},
        {"id": "r2", "user_id": "u1", "task": "Oil change", "date": "2026-02-01"},
    ])
    [[u1]] = await batches(pg, 500)
    assert [r.id for r in u1.records] == ["r2"] and u1.vehicles[0].odometer_km is None
    assert pg.skipped_rows == {"maintenance_records": 1, "vehicles": 1}


# -- the monitor gives the same alerts ----------------------------------------------------------------------------


def rounded(value: Any) -> Any:
    """``value`` as builtins with floats rounded to 9 significant digits."""
    if isinstance(value, float):
        return float(f"{value:.9g}") if math.isfinite(value) else value
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v) for v in value]
    if isinstance(value, msgspec.Struct):
        return rounded(msgspec.to_builtins(value))
    return value


def _alerts(alerts: Sequence[pamd.Alert]) -> list[tuple[Any, ...]]:
    return sorted((a.user_id, a.subject, a.kind, a.priority, a.title, a.body, rounded(dict(a.facts)))
                  for a in alerts)


@pytest.fixture(scope="module")
def overpass() -> Iterator[FakeOverpass]:
    with serve_overpass(SHOP_ELEMENTS) as server:
        yield server


@pytest.fixture
async def hub(overpass: FakeOverpass) -> AsyncIterator[ProviderHub]:
    overpass.reset()
    providers = places_hub(overpass.url)
    yield providers
    await providers.aclose()


async def _ticks(stores: Stores, hub: ProviderHub | None, **kwargs: Any) -> list[list[tuple[Any, ...]]]:
    out = []
    for store in stores:
        result = await run_tick(mnt.MaintenanceMonitor(), store=store, now=NOW, providers=hub, retries=0, **kwargs)
        assert result.outcome == "success", result.error
        out.append(_alerts(result.alerts))
    return out


@pytest.mark.parametrize("batch_size", [1, 3, 500])
async def test_monitor_alerts_the_same(both: Stores, batch_size: int) -> None:
    lite, pg = both
    config = mnt.MaintenanceConfig(batch_size=batch_size)
    expected, got = await _ticks(both, None, config=config)
    assert {a[0]: a[3] for a in expected} == {"demo-u01": pamd.Priority.MEDIUM, "demo-u02": pamd.Priority.HIGH,
                                              "demo-u05": pamd.Priority.MEDIUM, "demo-u07": pamd.Priority.URGENT}
    assert got == expected
    expected, got = await _ticks(both, None, config=config, user_id="demo-u07")
    assert got == expected != []
    assert pg.skipped_rows == lite.skipped_rows == {}


async def test_monitor_alerts_the_same_with_shops(both: Stores, hub: ProviderHub) -> None:
    expected, got = await _ticks(both, hub)
    assert any(a[6]["shops"] for a in expected)
    assert got == expected


async def test_monitor_alerts_the_same_on_bad_data(both: Stores) -> None:
    lite, pg = both
    await _bad_data(both)
    expected, got = await _ticks(both, None, config=mnt.MaintenanceConfig(batch_size=2))
    assert {a[0] for a in expected} >= {"demo-u04", "x1", "x2"}
    assert got == expected
    assert pg.skipped_rows == lite.skipped_rows != {}
