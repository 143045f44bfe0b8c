"""The Postgres store's fuel and budget candidates (filtered in SQL) never drop a user who alerts.

For each data set, the alerts computed from the candidates equal those computed from the full input stream
(``iter_fuel_inputs``/``iter_budget_inputs``, which tests/test_store_pg_monitors.py compares with SQLite), and the
monitors' ticks give the same alerts on Postgres (candidates) and SQLite (full stream). Data: the demo set at several
instants, randomized users with bad rows, ties and odd spellings, and users placed just either side of each
threshold. Needs the PostgreSQL server of the ``pg_url`` fixture (tests/conftest.py).
"""

from __future__ import annotations

import math
import random
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from pamd.store.pg import PostgresStore
from pamd.store.pg_budget_candidates import _PERIOD_END, _PERIOD_START, zone_months
from pamd.store.records_budget import Budget, BudgetBands, BudgetInput, current_period
from pamd.store.sqlite import SQLiteStore
from pamd.testing import run_tick
from tests.store_pairs import add

if TYPE_CHECKING:  # mypy sees the source tree; at run time the package is installed as pamd_plugins
    from plugins import budget, fuel
else:
    from pamd_plugins import budget, fuel

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
Row = dict[str, Any]

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def fuel_alerts(pg: PostgresStore, now: datetime, candidates: bool) -> list[tuple[Any, ...]]:
    """``(user, priority, level)`` of every fuel alert, from the candidates or from the full stream."""
    cfg = fuel.FuelConfig()
    stream = (pg.iter_fuel_candidates(fuel.bounds(cfg), 7, now=now, scan_size=13) if candidates
              else pg.iter_fuel_inputs(7, now=now))
    found = []
    async for batch in stream:
        for inp in batch:
            est = fuel.estimate_fuel(inp, now, cfg)
            if isinstance(est, fuel.FuelEstimate) and (priority := fuel.classify(est, cfg)) is not None:
                found.append((inp.user_id, priority.value, round(est.level_pct, 9)))
    return sorted(found)


async def budget_alerts(pg: PostgresStore, now: datetime, candidates: bool) -> list[tuple[Any, ...]]:
    """``(user, kind, priority, subject)`` of every budget alert, from the candidates or from the full stream."""
    cfg = budget.BudgetConfig()
    bands = BudgetBands(high_pct=cfg.high_pct, pace_pct=cfg.pace_pct, pace_min_elapsed_days=cfg.pace_min_elapsed_days,
                        pace_min_elapsed_pct=cfg.pace_min_elapsed_pct)
    stream = (pg.iter_budget_candidates(bands, now, 7, scan_size=13) if candidates
              else pg.iter_budget_inputs(now, 7))
    return sorted([(a.user_id, a.kind, a.priority.value, a.subject)
                   async for batch in stream for inp in batch for a in budget.evaluate(inp, now, cfg)])


async def budget_inputs(pg: PostgresStore, now: datetime, candidates: bool) -> dict[str, BudgetInput]:
    cfg = budget.BudgetConfig()
    bands = BudgetBands(high_pct=cfg.high_pct, pace_pct=cfg.pace_pct, pace_min_elapsed_days=cfg.pace_min_elapsed_days,
                        pace_min_elapsed_pct=cfg.pace_min_elapsed_pct)
    stream = (pg.iter_budget_candidates(bands, now, 7, scan_size=13) if candidates
              else pg.iter_budget_inputs(now, 7))
    return {inp.user_id: inp async for batch in stream for inp in batch}


async def assert_same(pg: PostgresStore, now: datetime, expect_alerts: bool = True) -> None:
    """Candidates and the full stream give the same fuel and budget alerts at ``now``, and the same skips; each
    budget candidate's input is the full stream's."""
    full_fuel, full_budget = await fuel_alerts(pg, now, False), await budget_alerts(pg, now, False)
    full_inputs = await budget_inputs(pg, now, False)
    skipped = dict(pg.skipped_rows)
    pg.skipped_rows.clear()
    assert await fuel_alerts(pg, now, True) == full_fuel
    assert await budget_alerts(pg, now, True) == full_budget
    candidates = await budget_inputs(pg, now, True)
    assert _rounded(candidates) == _rounded({user: full_inputs[user] for user in candidates})
    assert set(pg.skipped_rows) <= set(skipped)  # candidates come back when the full stream skips something
    if expect_alerts:
        assert full_fuel and full_budget


def _rounded(value: Any) -> Any:
    """``value`` as builtins with floats to 1e-9: sums of the same expenses in another order may differ in the
    last bit (each statement adds them in the order its plan reads them)."""
    if isinstance(value, float):
        return round(value, 9)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    if isinstance(value, BudgetInput):
        return _rounded(msgspec.to_builtins(value))
    return value


# -- the demo set ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hours", [0, 7, 30, 200, 500])
async def test_demo_candidates_alert_the_same(pg: PostgresStore, hours: int) -> None:
    await pg.seed_demo(NOW)
    await assert_same(pg, NOW + timedelta(hours=hours), expect_alerts=hours < 100)


async def test_monitor_ticks_use_candidates_and_alert_as_on_sqlite(lite: SQLiteStore, pg: PostgresStore) -> None:
    rows = random_rows(random.Random(7), 150)
    for table, items in rows.items():
        await add((lite, pg), table, items)
    found = []
    for monitor, config in ((fuel.FuelMonitor(), fuel.FuelConfig(batch_size=3)),
                            (budget.BudgetMonitor(), budget.BudgetConfig(batch_size=3))):
        results = [await run_tick(monitor, config=config, store=store, now=NOW, retries=0) for store in (lite, pg)]
        assert [r.outcome for r in results] == ["success", "success"], [r.error for r in results]
        keys = [sorted((a.user_id, a.kind, a.priority.value, a.subject) for a in r.alerts) for r in results]
        assert keys[1] == keys[0]
        found += keys[0]
    assert {kind for _, kind, *_ in found} >= {"fuel_low", "budget_pace"}


# -- randomized data ----------------------------------------------------------------------------------------------

_TYPES = ("rv_class_a", "campervan", "Van", " truck-trailer", "car", "hovercraft", None, "")
_ZONES = ("UTC", "Europe/Paris", "Pacific/Auckland", "America/Denver", "Pacific/Honolulu", "Mars/Base", "")


def _maybe(rng: random.Random, value: Any, p: float = 0.15) -> Any:
    return None if rng.random() < p else value


def random_rows(rng: random.Random, users: int) -> dict[str, list[Row]]:
    """Users with random vehicles, fill-ups, budgets and expenses around ``NOW``, bad rows included."""
    rows: dict[str, list[Row]] = {t: [] for t in ("profiles", "vehicles", "fuel_log", "budgets", "expenses")}
    for n in range(users):
        uid = f"r{n:03d}"
        rows["profiles"].append({"id": uid, "timezone": rng.choice(_ZONES), "vehicle_type": rng.choice(_TYPES),
                                 "status": rng.choice(["active"] * 9 + ["deleted"])})
        add_fuel(rng, rows, uid)
        add_budgets(rng, rows, uid)
    return rows


def add_fuel(rng: random.Random, rows: dict[str, list[Row]], uid: str) -> None:
    vehicles = [f"{uid}-v{k}" for k in range(rng.choice([0, 1, 1, 1, 2]))]
    for k, vid in enumerate(vehicles):
        rows["vehicles"].append({
            "id": vid, "user_id": uid, "is_primary": k == 0, "vehicle_type": rng.choice(_TYPES),
            "fuel_capacity_l": rng.choice([60.0, 80.0, 120.0, 380.0, 0.0, None, math.nan]),
            "consumption_l_per_100km": _maybe(rng, rng.choice([2.0, 9.5, 14.0, 30.0, 85.0]), 0.4),
            "odometer_km": _maybe(rng, None, 1.0) if rng.random() < 0.3 else None})
    odometer, at = rng.uniform(1000, 90000), NOW - timedelta(days=rng.uniform(0, 40))
    for k in range(rng.choice([0, 1, 2, 3, 4, 6, 12])):
        at += timedelta(days=rng.choice([0.0, 0.3, 1.5, 3.0, 6.0]))
        odometer += rng.choice([0.0, 120.0, 380.0, 700.0, -50.0])
        volume = rng.choice([20.0, 45.0, 60.0, 90.0, -1.0, math.nan]) if rng.random() < 0.1 else rng.uniform(15, 95)
        rows["fuel_log"].append({
            "id": f"{uid}-f{k:02d}", "user_id": uid, "logged_at": _maybe(rng, at, 0.03),
            "vehicle_id": rng.choice([*vehicles, None]) if vehicles else None, "volume_l": volume,
            "odometer_km": _maybe(rng, odometer, 0.2), "is_full_tank": rng.random() < 0.75,
            "total_cost": volume * 2 if math.isfinite(volume) else None})
    if vehicles and rng.random() < 0.4:  # the app's current odometer, ahead of the last fill-up
        rows["vehicles"][-len(vehicles)]["odometer_km"] = odometer + rng.uniform(0, 900)


def add_budgets(rng: random.Random, rows: dict[str, list[Row]], uid: str) -> None:
    categories = ["food", "Food ", "fuel", "Café", None, "total", " campsites"]
    for k in range(rng.choice([0, 1, 1, 2, 3])):
        start = NOW.date() + timedelta(days=rng.randint(-400, 10))
        rows["budgets"].append({
            "id": f"{uid}-b{k}", "user_id": uid, "category": rng.choice(categories),
            "amount": rng.choice([100.0, 250.0, 800.0, 3000.0, 0.0, -5.0, math.nan]) if rng.random() < 0.15
            else rng.uniform(50, 2000),
            "period": rng.choice(["weekly", "monthly", "yearly", "custom", "Monthly", "", "WEEKLY"]),
            "start_date": _maybe(rng, start, 0.4),
            "end_date": _maybe(rng, start + timedelta(days=rng.randint(-3, 200)), 0.7)})
    for k in range(rng.choice([0, 2, 5, 12])):
        day = NOW.date() + timedelta(days=rng.randint(-70, 3))
        rows["expenses"].append({
            "id": f"{uid}-e{k:02d}", "user_id": uid, "category": rng.choice(categories),
            "amount": rng.choice([math.nan, -3.0, 1e16]) if rng.random() < 0.03 else rng.uniform(1, 400),
            "date": _maybe(rng, day, 0.02)})


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_candidates_alert_the_same(pg: PostgresStore, seed: int) -> None:
    rng = random.Random(seed)
    for table, items in random_rows(rng, 120).items():
        await pg.add_rows(table, items)
    for days in (0.0, 2.4, 9.9, 17.5):
        await assert_same(pg, NOW + timedelta(days=days), expect_alerts=False)


# -- users either side of a threshold -----------------------------------------------------------------------------


def fuel_edge_rows() -> dict[str, list[Row]]:
    """Users whose estimate lands just below, at and just above each band (10 L/100km, 100 L tank; odometer from
    the vehicle, so the level is exactly 100 - km / 10 %)."""
    rows: dict[str, list[Row]] = {"profiles": [], "vehicles": [], "fuel_log": []}
    for n, km in enumerate([799.999999, 800.0, 800.000001, 899.99, 900.0, 900.01, 950.0, 950.000001, 1000.0,
                            1116.0, 1114.0, 100.0, 500.0]):
        uid = f"edge{n:02d}"
        rows["profiles"].append({"id": uid})
        rows["vehicles"].append({"id": f"{uid}-v", "user_id": uid, "is_primary": True, "fuel_capacity_l": 100.0,
                                 "odometer_km": 10000.0 + km})
        for k, (days, odometer) in enumerate(((3.0, 9000.0), (1.0, 10000.0))):
            rows["fuel_log"].append({"id": f"{uid}-f{k}", "user_id": uid, "vehicle_id": f"{uid}-v",
                                     "logged_at": NOW - timedelta(days=days), "volume_l": 100.0,
                                     "odometer_km": odometer, "is_full_tank": True})
    # Days-based: no odometer; 150 km/day by default at the stated 3 L/100km in 70 L (14 days: 10 % left), stale
    # beyond 14 days.
    for n, days in enumerate([13.99, 14.0, 14.01, 2.0, 1.9]):
        uid = f"stale{n:02d}"
        rows["profiles"].append({"id": uid})
        rows["vehicles"].append({"id": f"{uid}-v", "user_id": uid, "is_primary": True, "fuel_capacity_l": 70.0,
                                 "consumption_l_per_100km": 3.0})
        rows["fuel_log"].append({"id": f"{uid}-f", "user_id": uid, "vehicle_id": f"{uid}-v", "volume_l": 50.0,
                                 "logged_at": NOW - timedelta(days=days), "is_full_tank": True})
    return rows


def budget_edge_rows() -> dict[str, list[Row]]:
    """Budgets of 1,000 spent just either side of a band: an explicit range starting today (too early to project)
    around 80 %, and a calendar month (March: 31 days, 14.5 gone at NOW) around the 110 % pace (spent / 14.5 x 31
    >= 1,100, i.e. spent >= 514.516...)."""
    rows: dict[str, list[Row]] = {"profiles": [], "budgets": [], "expenses": []}
    today = NOW.date()
    cases = [(799.99, "custom"), (800.0, "custom"), (800.01, "custom"), (514.51, "monthly"), (514.5162, "monthly"),
             (514.52, "monthly"), (1000.0, "custom"), (100.0, "monthly")]
    for n, (spent, period) in enumerate(cases):
        uid = f"bud{n:02d}"
        custom = period == "custom"
        rows["profiles"].append({"id": uid, "timezone": "UTC"})
        rows["budgets"].append({"id": f"{uid}-b", "user_id": uid, "amount": 1000.0, "period": period,
                                "category": None, "start_date": today if custom else None,
                                "end_date": today + timedelta(days=30) if custom else None})
        rows["expenses"] += [{"id": f"{uid}-e{k}", "user_id": uid, "amount": spent / 2, "category": "food",
                              "date": today if custom else date(2026, 3, 3 + k)} for k in range(2)]
    return rows


async def add_edges(pg: PostgresStore) -> None:
    for rows in (fuel_edge_rows(), budget_edge_rows()):
        for table, items in rows.items():
            await pg.add_rows(table, items)


async def test_edges_candidates_alert_the_same(pg: PostgresStore) -> None:
    await add_edges(pg)
    await assert_same(pg, NOW)
    levels = {user: level for user, _, level in await fuel_alerts(pg, NOW, False)}
    assert "edge00" not in levels and "edge02" in levels  # the medium band is strict: 20.0 % does not alert
    assert {u for u in levels if u.startswith("stale")} == {"stale00", "stale01"}  # stale only beyond 14 days
    assert [u for u, *_ in await budget_alerts(pg, NOW, False)] == ["bud01", "bud02", "bud04", "bud05", "bud06"]


async def test_candidates_leave_out_users_far_from_a_band(pg: PostgresStore) -> None:
    await add_edges(pg)
    cfg = fuel.FuelConfig()
    users = {inp.user_id async for batch in pg.iter_fuel_candidates(fuel.bounds(cfg), now=NOW) for inp in batch}
    assert {u for u, *_ in await fuel_alerts(pg, NOW, False)} <= users
    assert not users & {"edge11", "edge12", "stale03", "stale04"}  # 90 % and 50 % left; 2 days of 150 km
    bcfg = budget.BudgetConfig()
    bands = BudgetBands(high_pct=bcfg.high_pct, pace_pct=bcfg.pace_pct,
                        pace_min_elapsed_days=bcfg.pace_min_elapsed_days,
                        pace_min_elapsed_pct=bcfg.pace_min_elapsed_pct)
    found = {inp.user_id async for batch in pg.iter_budget_candidates(bands, NOW) for inp in batch}
    assert found == {u for u, *_ in await budget_alerts(pg, NOW, False)}


# -- the budget periods computed in SQL --------------------------------------------------------------------------


async def test_sql_periods_are_current_period_s_on_every_day_of_fifteen_months(pg: PostgresStore) -> None:
    """The candidate statement's period of a budget (its own SQL fragments) is :func:`current_period`'s, for weekly,
    monthly, yearly and explicit budgets anchored on month ends and leap days, every day from Dec 2023 to Mar 2025."""
    starts = [None, date(2023, 1, 1), date(2023, 1, 29), date(2023, 1, 30), date(2023, 1, 31), date(2023, 4, 30),
              date(2023, 11, 15), date(2024, 2, 29), date(2023, 12, 31), date(2024, 6, 5)]
    ends = [None, date(2024, 11, 3)]
    budgets = [Budget(id="b", category=None, amount=1.0, period=kind, start_date=start, end_date=end)
               for kind in ("weekly", "monthly", "yearly", "custom") for start in starts for end in ends]
    todays = [date(2023, 12, 20) + timedelta(days=n) for n in range(460)]
    cases = [(b, today) for today in todays for b in budgets]
    months = zone_months([today for _, today in cases])
    sql = f"""
        WITH b AS (SELECT * FROM unnest($1::text[], $2::date[], $3::date[], $4::int[], $5::int[], $6::date[],
                                        $7::date[], $8::int[], $9::date[], $10::int[], $11::date[], $12::int[])
                   AS b(kind, s, e, dd, mo, today, m0, dim0, pm0, dimp, nm0, dimn)),
             p AS MATERIALIZED (SELECT b.*, {_PERIOD_START} AS lo FROM b)
        SELECT lo, {_PERIOD_END} AS hi FROM p"""
    rows = await pg._fetch(
        sql, [b.period for b, _ in cases], [b.start_date for b, _ in cases], [b.end_date for b, _ in cases],
        [b.start_date.day if b.start_date else 1 for b, _ in cases],
        [b.start_date.month if b.start_date else 1 for b, _ in cases], [today for _, today in cases], *months)
    assert len(rows) == len(cases) > 30_000
    wrong = []
    for (b, today), (lo, hi) in zip(cases, rows, strict=True):
        period = current_period(b, today)
        expected = (period.start, period.end) if period is not None else (None, None)
        if (lo, hi if lo is not None else None) != expected:
            wrong.append((b.period, b.start_date, b.end_date, today, lo, hi, expected))
    assert wrong == []
