"""The SQLite store's budget candidates (filtered in SQL) never drop a user who alerts.

For each data set the budget alerts computed from ``iter_budget_candidates`` (small pages, so scans and batches
split) equal those from the full stream ``iter_budget_inputs``, and the candidates report no skip the full stream
does not. Data: the demo set at several instants, randomized users with bad rows (the generators of
tests/test_store_pg_prefilter.py, plus rows only SQLite can hold: text in REAL columns, infinities, malformed date
text), users either side of each threshold, and month ends in UTC-10 and UTC+13. The SQL period arithmetic is also
checked day by day against :func:`pamd.store.records_budget.current_period`.
"""

from __future__ import annotations

import math
import random
import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pamd.store.records_budget import Budget, BudgetBands, current_period
from pamd.store.sqlite import SQLiteStore
from pamd.store.sqlite_budget_candidates import _PERIOD_CTES
from pamd.testing import run_tick
from tests.test_store_pg_prefilter import NOW, Row, budget_edge_rows, random_rows

if TYPE_CHECKING:  # mypy sees the source tree; at run time the package is installed as pamd_plugins
    from plugins import budget
else:
    from pamd_plugins import budget

pytestmark = pytest.mark.anyio

CFG = budget.BudgetConfig()
BANDS = BudgetBands(high_pct=CFG.high_pct, pace_pct=CFG.pace_pct, pace_min_elapsed_days=CFG.pace_min_elapsed_days,
                    pace_min_elapsed_pct=CFG.pace_min_elapsed_pct)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def budget_alerts(lite: SQLiteStore, now: datetime, candidates: bool) -> list[tuple[Any, ...]]:
    """``(user, kind, priority, subject)`` of every budget alert, from the candidates or from the full stream."""
    stream = (lite.iter_budget_candidates(BANDS, now, 7, scan_size=13) if candidates
              else lite.iter_budget_inputs(now, 7))
    return sorted([(a.user_id, a.kind, a.priority.value, a.subject)
                   async for batch in stream for inp in batch for a in budget.evaluate(inp, now, CFG)])


async def assert_same(lite: SQLiteStore, now: datetime, expect_alerts: bool = True) -> None:
    """Candidates and the full stream give the same budget alerts at ``now``; candidate skips are full skips."""
    lite.skipped_rows.clear()
    full = await budget_alerts(lite, now, False)
    skipped = dict(lite.skipped_rows)
    lite.skipped_rows.clear()
    assert await budget_alerts(lite, now, True) == full
    assert set(lite.skipped_rows) <= set(skipped)
    assert all(lite.skipped_rows[table] <= skipped[table] for table in lite.skipped_rows)
    if expect_alerts:
        assert full


async def add_all(lite: SQLiteStore, rows: dict[str, list[Row]]) -> None:
    for table in ("profiles", "vehicles", "fuel_log", "budgets", "expenses"):
        if rows.get(table):
            await lite.add_rows(table, rows[table])


# -- the period arithmetic ------------------------------------------------------------------------------------------


def test_sql_periods_are_current_period() -> None:
    """Every kind, anchored on every day of the month around leap years, on every day of 2027-2028."""
    cases: list[tuple[str, date | None, date | None]] = [("weekly", None, None), ("monthly", None, None),
                                                          ("yearly", None, None)]
    for day in [*range(1, 32), 60]:
        start = date(2024, 1, 1) + timedelta(days=day - 1) if day < 32 else date(2024, 2, 29)
        cases += [("weekly", start, None), ("monthly", start, None), ("yearly", start, None),
                  ("monthly", start + timedelta(days=1096), date(2028, 2, 10)), ("custom", start, date(2027, 6, 1))]
    cases += [("yearly", date(2024, 2, 29), None), ("yearly", date(2023, 12, 31), None),
              ("monthly", date(2024, 1, 30), None), ("monthly", date(2023, 5, 31), None)]
    days = [date(2027, 1, 1) + timedelta(days=n) for n in range(0, 731, 1)]
    rows = [(kind, s, e, today) for kind, s, e in cases for today in days]
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE b (n INTEGER, kind TEXT, s TEXT, e TEXT, today TEXT, odd INTEGER)")
    conn.executemany("INSERT INTO b VALUES (?, ?, ?, ?, ?, 0)", [
        (n, kind, s and s.isoformat(), e and e.isoformat(), today.isoformat()) for n, (kind, s, e, today)
        in enumerate(rows)])
    found = dict(((n, (lo, hi)) for n, lo, hi in conn.execute(f"WITH {_PERIOD_CTES} SELECT n, lo, hi FROM q")))
    for n, (kind, s, e, today) in enumerate(rows):
        period = current_period(Budget(id="b", category=None, amount=1.0, period=kind, start_date=s, end_date=e),
                                today)
        expected = (None, None) if period is None else (period.start.isoformat(), period.end.isoformat())
        assert found[n] == expected, (kind, s, e, today)


# -- the demo set ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hours", [0, 7, 30, 200, 500])
async def test_demo_candidates_alert_the_same(lite: SQLiteStore, hours: int) -> None:
    await lite.seed_demo(NOW)
    await assert_same(lite, NOW + timedelta(hours=hours), expect_alerts=hours < 100)


async def test_demo_candidates_are_the_alerting_users(lite: SQLiteStore) -> None:
    await lite.seed_demo(NOW)
    found = {inp.user_id async for batch in lite.iter_budget_candidates(BANDS, NOW) for inp in batch}
    everyone = {inp.user_id async for batch in lite.iter_budget_inputs(NOW) for inp in batch}
    assert found == {u for u, *_ in await budget_alerts(lite, NOW, False)} and len(found) < len(everyone)


@pytest.mark.parametrize("now", [datetime(2026, 3, 31, 10, 30, tzinfo=UTC), datetime(2026, 2, 28, 11, 0, tzinfo=UTC),
                                 datetime(2026, 4, 30, 23, 59, 59, tzinfo=UTC), datetime(2026, 12, 31, 12, tzinfo=UTC)])
async def test_demo_at_month_ends(lite: SQLiteStore, now: datetime) -> None:
    """Auckland (UTC+13 in its summer) is a day ahead of Honolulu (UTC-10): one is in the next month."""
    await lite.seed_demo(now - timedelta(days=3))
    await assert_same(lite, now, expect_alerts=False)


# -- randomized data ----------------------------------------------------------------------------------------------


def sqlite_oddities(rng: random.Random, rows: dict[str, list[Row]]) -> None:
    """Rows only SQLite holds this way: text or infinities in REAL columns, malformed date text, odd spellings."""
    users = [p["id"] for p in rows["profiles"]]
    odd_amounts: list[Any] = ["abc", "12.5", "", math.inf, -math.inf, 1e300, 0, 7]
    odd_dates: list[Any] = ["2026-02-30", "2026-03-05T10:00", " 2026-03-01", "2026-W11-1", "20260301", "2026-3-1",
                            "0000-01-01", "", "2026-13-01", "2026-03-01 08:00"]
    for n, uid in enumerate(rng.sample(users, len(users) // 3)):
        start = NOW.date() + timedelta(days=rng.randint(-40, 3))
        rows["budgets"].append({
            "id": f"{uid}-ob{n}", "user_id": uid, "amount": rng.choice([*odd_amounts, 300.0, 300.0]),
            "category": rng.choice(["food", "Food\t", "caf\u00e9", "  total ", "FUEL", None]),
            "period": rng.choice(["weekly", " monthly", "yearly\n", "Yearly", "custom", "MONTHLY"]),
            "start_date": rng.choice([*odd_dates, start, start, None]),
            "end_date": rng.choice([None, None, start + timedelta(days=40), "2026-04-31"])})
        for k in range(rng.choice([1, 3])):
            rows["expenses"].append({
                "id": f"{uid}-oe{n}-{k}", "user_id": uid, "category": rng.choice(["food", "Food ", "fuel", None]),
                "amount": rng.choice([*odd_amounts, 80.0, 120.0, 45.0]),
                "date": rng.choice([*odd_dates, NOW.date() - timedelta(days=rng.randint(0, 20))] * 1)})
    for profile in rng.sample(rows["profiles"], 3):
        profile["timezone"] = rng.choice(["Etc/GMT+10", "Pacific/Kiritimati", "Nowhere/Atlantis", "utc"])


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_random_candidates_alert_the_same(lite: SQLiteStore, seed: int) -> None:
    rng = random.Random(seed)
    rows = random_rows(rng, 120)
    if seed % 2 == 0:
        sqlite_oddities(rng, rows)
    await add_all(lite, rows)
    for days in (0.0, 2.4, 9.9, 17.5, 16.45):
        await assert_same(lite, NOW + timedelta(days=days), expect_alerts=False)


# -- users either side of a threshold -----------------------------------------------------------------------------


def zone_edge_rows() -> dict[str, list[Row]]:
    """Monthly budgets of 1,000 in Honolulu (UTC-10) and Auckland (UTC+13), at 80 % either side of the month's
    last local day, and just under/over the pace band on the 3rd of a month (anchored on the 31st)."""
    rows: dict[str, list[Row]] = {"profiles": [], "budgets": [], "expenses": []}
    cases = [("Pacific/Honolulu", 800.0, "2026-03-31"), ("Pacific/Honolulu", 799.0, "2026-03-31"),
             ("Pacific/Auckland", 800.0, "2026-03-31"), ("Pacific/Auckland", 800.0, "2026-04-01"),
             ("Pacific/Auckland", 800.0, "2026-04-02"), ("Etc/GMT+10", 800.0, "2026-04-01"),
             ("Etc/GMT-13", 800.0, "2026-04-01")]
    for n, (tz, spent, day) in enumerate(cases):
        uid = f"zone{n:02d}"
        rows["profiles"].append({"id": uid, "timezone": tz})
        rows["budgets"].append({"id": f"{uid}-b", "user_id": uid, "amount": 1000.0, "period": "monthly"})
        rows["expenses"].append({"id": f"{uid}-e", "user_id": uid, "amount": spent, "date": day})
    for n, spent in enumerate([70.0, 120.0, 200.0]):  # anchored on Jan 31: the period from Mar 31 to Apr 29
        uid = f"anchor{n:02d}"
        rows["profiles"].append({"id": uid, "timezone": "Pacific/Auckland"})
        rows["budgets"].append({"id": f"{uid}-b", "user_id": uid, "amount": 1000.0, "period": "monthly",
                                "start_date": "2026-01-31"})
        rows["expenses"].append({"id": f"{uid}-e", "user_id": uid, "amount": spent, "date": "2026-03-31"})
    return rows


async def test_edges_candidates_alert_the_same(lite: SQLiteStore) -> None:
    await add_all(lite, budget_edge_rows())
    await assert_same(lite, NOW)
    assert [u for u, *_ in await budget_alerts(lite, NOW, False)] == ["bud01", "bud02", "bud04", "bud05", "bud06"]


@pytest.mark.parametrize("now", [datetime(2026, 3, 31, 10, 0, tzinfo=UTC), datetime(2026, 3, 31, 11, 0, tzinfo=UTC),
                                 datetime(2026, 4, 1, 9, 59, tzinfo=UTC), datetime(2026, 4, 1, 10, 1, tzinfo=UTC),
                                 datetime(2026, 4, 3, 10, 0, tzinfo=UTC), datetime(2026, 4, 2, 0, 0, tzinfo=UTC)])
async def test_zone_edges_alert_the_same(lite: SQLiteStore, now: datetime) -> None:
    await add_all(lite, zone_edge_rows())
    await assert_same(lite, now, expect_alerts=False)


async def test_candidates_leave_out_users_far_from_a_band(lite: SQLiteStore) -> None:
    await add_all(lite, budget_edge_rows())
    found = {inp.user_id async for batch in lite.iter_budget_candidates(BANDS, NOW) for inp in batch}
    assert found == {u for u, *_ in await budget_alerts(lite, NOW, False)}
    assert not found & {"bud00", "bud03", "bud07"}  # 79.999 %, a pace just under 110 %, 10 %


async def test_candidates_bring_back_what_the_full_stream_skips(lite: SQLiteStore) -> None:
    """Far from any band, but with a row the full stream skips and reports: the user comes back."""
    today = NOW.date().isoformat()
    await lite.add_rows("profiles", [{"id": f"u{n}"} for n in range(7)] + [{"id": "tz", "timezone": "Mars/Base"}])
    await lite.add_rows("budgets", [
        {"id": f"u{n}-b", "user_id": f"u{n}", "amount": amount, "period": period, "category": category,
         "start_date": start}
        for n, (amount, period, category, start) in enumerate([
            (1000.0, "monthly", None, None), ("1000 USD", "monthly", None, None), (1000.0, "fortnightly", None, None),
            (1000.0, "monthly", "caf\u00e9", None), (1000.0, "monthly", None, "2026-03-01T00:00"),
            (1000.0, "monthly", None, None), (1000.0, "monthly", None, None)])])
    await lite.add_rows("expenses", [
        {"id": "u0-e", "user_id": "u0", "amount": 10.0, "date": today},
        {"id": "u5-e", "user_id": "u5", "amount": "ten", "date": today},
        {"id": "u6-e", "user_id": "u6", "amount": 10.0, "date": None}])
    lite.skipped_rows.clear()
    found = {inp.user_id async for batch in lite.iter_budget_candidates(BANDS, NOW) for inp in batch}
    assert found == {"u1", "u2", "u3", "u4", "u5", "u6", "tz"}
    assert dict(lite.skipped_rows) == {"budgets": 2, "expenses": 2, "profiles": 1}  # u3, u4: doubt, no skip


# -- the monitor --------------------------------------------------------------------------------------------------


async def test_monitor_tick_uses_candidates_and_alerts_as_the_full_stream(tmp_path: Path) -> None:
    statements: list[str] = []
    lite = SQLiteStore(f"sqlite:///{tmp_path}/tick.db", trace=statements.append)
    await lite.migrate()
    try:
        rows = random_rows(random.Random(7), 150)
        sqlite_oddities(random.Random(8), rows)
        await add_all(lite, rows)
        await add_all(lite, zone_edge_rows())
        now = datetime(2026, 3, 31, 10, 30, tzinfo=UTC)
        statements.clear()
        result = await run_tick(budget.BudgetMonitor(), config=budget.BudgetConfig(batch_size=3), store=lite,
                                now=now, retries=0)
        assert result.outcome == "success", result.error
        assert any("json_group_array" in sql for sql in statements)  # the candidates' scan ran
        keys = sorted((a.user_id, a.kind, a.priority.value, a.subject) for a in result.alerts)
        assert keys == await budget_alerts(lite, now, False)
        assert {kind for _, kind, *_ in keys} >= {"budget_pace", "budget_exceeded"}
    finally:
        await lite.aclose()
