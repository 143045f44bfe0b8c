"""The fuel and budget monitors' queries on Postgres give the same records, skips and alerts as on SQLite.

Needs the PostgreSQL server of the ``pg_url`` fixture (tests/conftest.py); every test gets a schema of its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

import pamd
from pamd.store.pg import PostgresStore
from pamd.store.records import FuelInput
from pamd.store.records_budget import BudgetInput
from pamd.store.sqlite import SQLiteStore
from pamd.testing import run_tick
from tests.store_pairs import Stores, add

if TYPE_CHECKING:  # mypy sees the source tree; at run time the package is installed as pamd_plugins
    from plugins import budget, fuel
else:
    from pamd_plugins import budget, fuel

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- the two stores -----------------------------------------------------------------------------------------------


@pytest.fixture
async def both(lite: SQLiteStore, pg: PostgresStore) -> Stores:
    """Both stores with the demo data at ``NOW``."""
    await lite.seed_demo(NOW)
    await pg.seed_demo(NOW)
    return lite, pg


async def fuel_batches(store: SQLiteStore | PostgresStore, batch_size: int, user_id: str | None = None,
                       **kwargs: Any) -> list[list[FuelInput]]:
    return [batch async for batch in store.iter_fuel_inputs(batch_size, user_id, now=NOW, **kwargs)]


async def budget_batches(store: SQLiteStore | PostgresStore, batch_size: int, user_id: str | None = None,
                         **kwargs: Any) -> list[list[BudgetInput]]:
    return [batch async for batch in store.iter_budget_inputs(NOW, batch_size, user_id, **kwargs)]


def rounded(value: Any) -> Any:
    """``value`` as builtins with floats rounded to 9 significant digits (SQL sums may add in another order)."""
    if isinstance(value, float):
        return float(f"{value:.9g}") if math.isfinite(value) else value
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v) for v in value]
    if isinstance(value, msgspec.Struct):
        return rounded(msgspec.to_builtins(value))
    return value


# -- the same records -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 3, 500])
async def test_fuel_inputs_are_the_same(both: Stores, batch_size: int) -> None:
    lite, pg = both
    expected = await fuel_batches(lite, batch_size)
    assert [len(b) for b in expected] == ([1] * 8 if batch_size == 1 else [3, 3, 2] if batch_size == 3 else [8])
    assert await fuel_batches(pg, batch_size) == expected
    assert await fuel_batches(pg, batch_size, max_fills=2) == await fuel_batches(lite, batch_size, max_fills=2)
    short = timedelta(minutes=1)
    assert await fuel_batches(pg, batch_size, position_max_age=short) == await fuel_batches(
        lite, batch_size, position_max_age=short)
    assert pg.skipped_rows == lite.skipped_rows == {}


@pytest.mark.parametrize("user_id", ["demo-u01", "demo-u03", "demo-u06", "nobody"])
async def test_fuel_inputs_of_one_user_are_the_same(both: Stores, user_id: str) -> None:
    lite, pg = both
    expected = await fuel_batches(lite, 3, user_id)
    assert [i.user_id for b in expected for i in b] == ([] if user_id == "nobody" else [user_id])
    assert await fuel_batches(pg, 3, user_id) == expected


@pytest.mark.parametrize("batch_size", [1, 3, 500])
async def test_budget_inputs_are_the_same(both: Stores, batch_size: int) -> None:
    lite, pg = both
    expected = await budget_batches(lite, batch_size)
    assert sum(len(b) for b in expected) == 8
    assert any(s.top_categories for b in expected for i in b for s in i.budgets)
    assert rounded(await budget_batches(pg, batch_size)) == rounded(expected)
    for top in (0, 1):
        assert rounded(await budget_batches(pg, batch_size, top_categories=top)) == rounded(
            await budget_batches(lite, batch_size, top_categories=top))
    assert pg.skipped_rows == lite.skipped_rows == {}


@pytest.mark.parametrize("user_id", ["demo-u02", "demo-u03", "demo-u06", "nobody"])
async def test_budget_inputs_of_one_user_are_the_same(both: Stores, user_id: str) -> None:
    lite, pg = both
    expected = await budget_batches(lite, 3, user_id)
    assert [i.user_id for b in expected for i in b] == ([] if user_id == "nobody" else [user_id])
    assert rounded(await budget_batches(pg, 3, user_id)) == rounded(expected)


# -- bad rows, skipped and counted the same way -------------------------------------------------------------------


def _ts(days: float = 0.0, hours: float = 0.0) -> datetime:
    return NOW - timedelta(days=days, hours=hours)


async def test_bad_fuel_rows_are_skipped_and_counted_the_same(lite: SQLiteStore, pg: PostgresStore) -> None:
    stores = (lite, pg)
    await add(stores, "profiles", [
        {"id": f"x{n}", "full_name": f"X {n}", "timezone": "Europe/Paris", "currency": "eur"} for n in range(1, 6)
    ] + [{"id": "x9", "status": "deleted"}])
    await add(stores, "vehicles", [
        {"id": "v1", "user_id": "x1", "name": "Main", "fuel_type": "diesel", "fuel_capacity_l": 90.0,
         "is_primary": True},
        {"id": "v1b", "user_id": "x1", "name": "Spare", "is_primary": False},
        {"id": "v2", "user_id": "x2", "name": "Bad", "fuel_capacity_l": -5.0, "is_primary": True},
        {"id": "v3", "user_id": "x3", "name": "First by id"},
        {"id": "v3b", "user_id": "x3", "name": "Second by id"},
        {"id": "v4", "user_id": "x4", "odometer_km": 1000.0, "is_primary": True},
        {"id": "v9", "user_id": "x9", "is_primary": True},
    ])
    fills: list[dict[str, Any]] = [
        {"id": "f01", "user_id": "x1", "vehicle_id": "v1", "logged_at": _ts(9), "volume_l": 50.0,
         "is_full_tank": True, "odometer_km": 500.0, "total_cost": 80.0, "lat": 45.0, "lon": 6.0},
        {"id": "f02", "user_id": "x1", "vehicle_id": None, "logged_at": _ts(7), "volume_l": 40.0,
         "is_full_tank": True, "total_cost": -3.0},
        {"id": "f03", "user_id": "x1", "vehicle_id": "v1", "logged_at": _ts(6), "volume_l": -4.0,
         "is_full_tank": True},
        {"id": "f04", "user_id": "x1", "vehicle_id": "v1", "logged_at": _ts(5), "volume_l": 30.0,
         "is_full_tank": None},
        {"id": "f05", "user_id": "x1", "vehicle_id": "v1", "logged_at": _ts(4), "volume_l": 30.0,
         "is_full_tank": True, "odometer_km": -1.0},
        {"id": "f06", "user_id": "x1", "vehicle_id": "v1b", "logged_at": _ts(3), "volume_l": 20.0,
         "is_full_tank": True},
        {"id": "f07", "user_id": "x1", "vehicle_id": "v1", "logged_at": _ts(2), "volume_l": 35.0,
         "is_full_tank": False, "lat": 0.0, "lon": 0.0},
        {"id": "f08", "user_id": "x1", "vehicle_id": "v1", "logged_at": None, "volume_l": 35.0,
         "is_full_tank": True},
        {"id": "f09", "user_id": "x1", "vehicle_id": "v1", "logged_at": _ts(2), "volume_l": 25.0,
         "is_full_tank": True, "lat": 45.5, "lon": 6.5},  # the same instant as f07: ordered by id
        {"id": "f10", "user_id": "x1", "vehicle_id": "v1", "logged_at": _ts(8), "volume_l": math.nan,
         "is_full_tank": True},  # NULL in SQLite, NaN in Postgres: skipped by both
        {"id": "f20", "user_id": "x2", "vehicle_id": "v2", "logged_at": _ts(1), "volume_l": 25.0,
         "is_full_tank": True},
        {"id": "f30", "user_id": "x3", "vehicle_id": "v3", "logged_at": _ts(1), "volume_l": 25.0,
         "is_full_tank": True, "lat": 40.0, "lon": 200.0},
        {"id": "f31", "user_id": "x3", "vehicle_id": "v3b", "logged_at": _ts(2), "volume_l": 25.0,
         "is_full_tank": True},
        {"id": "f40", "user_id": "x4", "vehicle_id": "v4", "logged_at": _ts(1), "volume_l": 25.0,
         "is_full_tank": True, "lat": 10.0, "lon": 10.0},
        {"id": "f90", "user_id": "x9", "vehicle_id": "v9", "logged_at": _ts(1), "volume_l": -1.0,
         "is_full_tank": True},
    ]
    await add(stores, "fuel_log", fills)
    await add(stores, "user_locations", [
        {"user_id": "x1", "recorded_at": _ts(hours=1), "lat": 45.9, "lon": 6.1},
        {"user_id": "x1", "recorded_at": _ts(hours=2), "lat": 45.8, "lon": 6.2},
        {"user_id": "x2", "recorded_at": _ts(hours=1), "lat": 45.9, "lon": 6.1},  # x2's vehicle is bad: unread
        {"user_id": "x3", "recorded_at": _ts(hours=-1), "lat": 45.9, "lon": 6.1},  # in the future
        {"user_id": "x3", "recorded_at": _ts(hours=3), "lat": 45.9, "lon": 6.1},
        {"user_id": "x4", "recorded_at": _ts(hours=1), "lat": 95.0, "lon": 6.1},  # impossible
        {"user_id": "x4", "recorded_at": _ts(hours=2), "lat": None, "lon": 6.1},  # not located
        {"user_id": "x5", "recorded_at": _ts(hours=1), "lat": 45.0, "lon": 6.1},  # no vehicle: unread
    ])
    for batch_size in (1, 2, 500):
        for max_fills in (1, 3, 100):
            expected = await fuel_batches(lite, batch_size, max_fills=max_fills)
            assert await fuel_batches(pg, batch_size, max_fills=max_fills) == expected
    assert pg.skipped_rows == lite.skipped_rows
    assert set(lite.skipped_rows) == {"fuel_log", "vehicles", "user_locations"}

    [users] = await fuel_batches(pg, 500)
    by_id = {i.user_id: i for i in users}
    assert list(by_id) == ["x1", "x2", "x3", "x4", "x5"]
    x1 = by_id["x1"]
    assert x1.currency == "EUR" and x1.vehicle is not None and x1.vehicle.id == "v1"
    assert [f.id for f in x1.fills] == ["f01", "f02", "f07", "f09"]
    assert x1.fills[1].total_cost is None and x1.fills[0].logged_at == _ts(9)
    assert x1.position is not None and (x1.position.source, x1.position.lat) == ("user_location", 45.9)
    assert by_id["x2"].vehicle is None and by_id["x2"].fills == ()
    x3 = by_id["x3"]
    assert x3.vehicle is not None and x3.vehicle.id == "v3" and [f.id for f in x3.fills] == ["f30"]
    assert x3.position is None  # the newest location is in the future, the fill-up's coordinates impossible
    assert by_id["x4"].position is not None and by_id["x4"].position.source == "fuel_log"
    assert by_id["x5"].vehicle is None
    assert await fuel_batches(pg, 500, "x9") == await fuel_batches(lite, 500, "x9") == []  # deleted


async def test_bad_budget_rows_are_skipped_and_counted_the_same(lite: SQLiteStore, pg: PostgresStore) -> None:
    stores = (lite, pg)
    await add(stores, "profiles", [
        {"id": "y1", "timezone": "Pacific/Auckland", "currency": "nzd"},  # already Mar 16 there
        {"id": "y2", "timezone": "Mars/Olympus"},
        {"id": "y3", "timezone": "America/Los_Angeles"},
        {"id": "y9", "status": "banned"},
    ])
    await add(stores, "budgets", [
        {"id": "b1", "user_id": "y1", "category": None, "amount": 500.0, "period": "weekly"},
        {"id": "b2", "user_id": "y1", "category": " Food ", "amount": 200.0, "period": "monthly",
         "start_date": "2026-01-10"},
        {"id": "b3", "user_id": "y1", "category": "fuel", "amount": -5.0, "period": "monthly"},
        {"id": "b4", "user_id": "y1", "category": "fuel", "amount": 50.0, "period": "custom",
         "start_date": "2026-03-01"},
        {"id": "b5", "user_id": "y2", "category": "total", "amount": 100.0, "period": "Yearly"},
        {"id": "b6", "user_id": "y3", "category": "all", "amount": 100.0, "period": "custom",
         "start_date": "2026-01-01", "end_date": "2026-02-01"},
        {"id": "b7", "user_id": "y1", "category": "fuel", "amount": 50.0, "period": "monthly",
         "start_date": "2026-03-20", "end_date": "2026-02-01"},
        {"id": "b9", "user_id": "y9", "amount": 100.0},
    ])
    await add(stores, "expenses", [
        {"id": "e01", "user_id": "y1", "amount": 20.0, "category": "food", "date": "2026-03-16"},
        {"id": "e02", "user_id": "y1", "amount": 30.25, "category": "FOOD", "date": "2026-03-12"},
        {"id": "e03", "user_id": "y1", "amount": 12.5, "category": None, "date": "2026-03-14"},
        {"id": "e04", "user_id": "y1", "amount": -3.0, "category": "food", "date": "2026-03-15"},
        {"id": "e05", "user_id": "y1", "amount": None, "category": "food", "date": "2026-03-15"},
        {"id": "e06", "user_id": "y1", "amount": 9.0, "category": "food", "date": "2026-03-17"},  # future
        {"id": "e07", "user_id": "y1", "amount": 7.0, "category": "fuel", "date": None},
        {"id": "e08", "user_id": "y1", "amount": 1e16, "category": "camp", "date": "2026-03-16"},
        {"id": "e09", "user_id": "y1", "amount": 0.1, "category": "camp", "date": "2026-03-16"},
        {"id": "e10", "user_id": "y1", "amount": 0.2, "category": "camp", "date": "2026-03-16"},
        {"id": "e11", "user_id": "y1", "amount": 99.0, "category": "food", "date": "2026-03-09"},
        {"id": "e12", "user_id": "y1", "amount": 5.0, "category": "food", "date": "2026-02-10"},
        {"id": "e20", "user_id": "y2", "amount": 40.0, "category": "x", "date": "2026-01-01"},
        {"id": "e21", "user_id": "y2", "amount": 60.0, "category": "y", "date": "2025-12-31"},
        {"id": "e30", "user_id": "y3", "amount": -60.0, "category": "y", "date": "2026-01-31"},
        {"id": "e90", "user_id": "y9", "amount": -60.0, "category": "y", "date": "2026-03-15"},
    ])
    for batch_size in (1, 2, 500):
        expected = await budget_batches(lite, batch_size)
        assert rounded(await budget_batches(pg, batch_size)) == rounded(expected)
    assert pg.skipped_rows == lite.skipped_rows
    assert lite.skipped_rows == {"budgets": 9, "profiles": 3, "expenses": 15}  # 3, 1 and 5 per run

    [users] = await budget_batches(pg, 500)
    y1, y2, y3 = users
    assert (y1.today, y1.currency, y2.timezone, y3.inactive) == (date(2026, 3, 16), "NZD", "UTC", ("b6",))
    weekly, food = y1.budgets
    assert (weekly.budget.id, weekly.period.start, weekly.expense_count) == ("b1", date(2026, 3, 16), 3)
    assert weekly.spent == pytest.approx(20.3)
    assert [(c.category, round(c.amount, 6)) for c in weekly.top_categories] == [("food", 20.0), ("camp", 0.3)]
    assert (food.budget.category, food.period.start, food.expense_count, food.spent) == (
        "food", date(2026, 3, 10), 2, 50.25)
    assert y1.inactive == ()  # b4 has no end date: skipped, not inactive
    assert y2.budgets[0].spent == 40.0
    assert await budget_batches(pg, 500, "y9") == await budget_batches(lite, 500, "y9") == []  # banned


# -- the monitors give the same alerts ----------------------------------------------------------------------------


def _alerts(alerts: Sequence[pamd.Alert]) -> list[tuple[Any, ...]]:
    return sorted((a.user_id, a.kind, a.priority, a.title, a.body, rounded(dict(a.facts))) for a in alerts)


@pytest.mark.parametrize("batch_size", [1, 3, 500])
async def test_monitors_alert_the_same(both: Stores, batch_size: int) -> None:
    lite, pg = both
    for monitor, config in ((fuel.FuelMonitor(), fuel.FuelConfig(batch_size=batch_size)),
                            (budget.BudgetMonitor(), budget.BudgetConfig(batch_size=batch_size))):
        results = [await run_tick(monitor, config=config, store=store, now=NOW, retries=0) for store in both]
        assert [r.outcome for r in results] == ["success", "success"], [r.error for r in results]
        expected = _alerts(results[0].alerts)
        assert expected and _alerts(results[1].alerts) == expected
        one = [await run_tick(monitor, config=config, store=store, now=NOW, user_id="demo-u02", retries=0)
               for store in both]
        assert _alerts(one[1].alerts) == _alerts(one[0].alerts) != []
    assert pg.skipped_rows == lite.skipped_rows == {}
