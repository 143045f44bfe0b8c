"""The built-in budget monitor: periods, bands, text, the SQLite queries (bad rows, timezones) and the demo data."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import msgspec
import pluggy
import pytest

import pamd
from pamd import hookspecs
from pamd.store.records_budget import Budget, BudgetInput, BudgetStatus, CategorySpend, Period, current_period
from pamd.store.sqlite import SQLiteStore

if TYPE_CHECKING:  # mypy sees the source tree; at run time the package is installed as pamd_plugins
    from plugins import budget
else:
    from pamd_plugins import budget

P = pamd.Priority
CFG = budget.BudgetConfig()
D = date.fromisoformat


def b(period: str = "monthly", start: str | None = None, end: str | None = None, amount: float = 100.0,
      category: str | None = None) -> Budget:
    return Budget(id="b1", category=category, amount=amount, period=period,
                  start_date=D(start) if start else None, end_date=D(end) if end else None)


# -- periods ----------------------------------------------------------------------------------------------------

PERIODS: list[tuple[str, Budget, str, tuple[str, str] | None]] = [
    ("weekly without start: Monday..Sunday", b("weekly"), "2026-03-15", ("2026-03-09", "2026-03-15")),
    ("weekly on a Monday", b("weekly"), "2026-03-16", ("2026-03-16", "2026-03-22")),
    ("weekly anchored on a Thursday", b("weekly", "2026-01-01"), "2026-03-15", ("2026-03-12", "2026-03-18")),
    ("weekly before its start", b("weekly", "2026-03-20"), "2026-03-15", None),
    ("monthly calendar", b(), "2026-02-14", ("2026-02-01", "2026-02-28")),
    ("monthly calendar, leap February", b(), "2028-02-29", ("2028-02-01", "2028-02-29")),
    ("monthly calendar, December", b(), "2026-12-31", ("2026-12-01", "2026-12-31")),
    ("monthly anchored on the 15th, before it", b("monthly", "2026-01-15"), "2026-03-14",
     ("2026-02-15", "2026-03-14")),
    ("monthly anchored on the 15th, on it", b("monthly", "2026-01-15"), "2026-03-15", ("2026-03-15", "2026-04-14")),
    ("anchored on the 31st: Jan 31 .. Feb 27", b("monthly", "2025-12-31"), "2026-02-10",
     ("2026-01-31", "2026-02-27")),
    ("anchored on the 31st: Feb 28 .. Mar 30", b("monthly", "2025-12-31"), "2026-02-28",
     ("2026-02-28", "2026-03-30")),
    ("anchored on the 31st: leap Feb 29 .. Mar 30", b("monthly", "2027-12-31"), "2028-03-01",
     ("2028-02-29", "2028-03-30")),
    ("anchored on the 31st: Apr 30 .. May 30", b("monthly", "2025-12-31"), "2026-05-01",
     ("2026-04-30", "2026-05-30")),
    ("anchored on the 30th across a year end", b("monthly", "2025-01-30"), "2026-01-05",
     ("2025-12-30", "2026-01-29")),
    ("monthly after its end date", b("monthly", "2026-01-01", "2026-02-28"), "2026-03-01", None),
    ("yearly calendar", b("yearly"), "2026-07-04", ("2026-01-01", "2026-12-31")),
    ("yearly anchored on Jul 1, before it", b("yearly", "2024-07-01"), "2026-06-30",
     ("2025-07-01", "2026-06-30")),
    ("yearly anchored on Feb 29, common year", b("yearly", "2024-02-29"), "2026-03-01",
     ("2026-02-28", "2027-02-27")),
    ("yearly anchored on Feb 29, leap year", b("yearly", "2024-02-29"), "2028-02-29",
     ("2028-02-29", "2029-02-27")),
    ("explicit range, inside", b("custom", "2026-03-10", "2026-03-20"), "2026-03-20",
     ("2026-03-10", "2026-03-20")),
    ("explicit range, after", b("custom", "2026-03-10", "2026-03-20"), "2026-03-21", None),
    ("explicit range, before", b("trip", "2026-03-10", "2026-03-20"), "2026-03-09", None),
    ("explicit range without end", b("custom", "2026-03-10"), "2026-03-15", None),
]


@pytest.mark.parametrize(("case", "budget_", "today", "expected"), PERIODS, ids=[c[0] for c in PERIODS])
def test_current_period(case: str, budget_: Budget, today: str, expected: tuple[str, str] | None) -> None:
    period = current_period(budget_, D(today))
    assert period == (Period(D(expected[0]), D(expected[1])) if expected else None)
    if period is not None:
        assert period.start <= D(today) <= period.end


def test_monthly_anchors_tile_the_calendar() -> None:
    """Consecutive periods of every anchor day never overlap and leave no gap, across leap and common years."""
    for anchor in range(1, 32):
        budget_ = b("monthly", f"2023-01-{anchor:02d}")
        day, previous = D("2023-01-31"), None
        while day < D("2029-01-01"):
            period = current_period(budget_, day)
            assert period is not None and period.start <= day <= period.end
            if previous is not None and period != previous:
                assert period.start == previous.end + timedelta(days=1)
            previous, day = period, day + timedelta(days=1)


# -- bands ------------------------------------------------------------------------------------------------------

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)  # Sunday


def status(spent: float, amount: float = 1000.0, start: str = "2026-03-01", end: str = "2026-03-30",
           category: str | None = None, period: str = "monthly") -> BudgetStatus:
    return BudgetStatus(budget=Budget(id="b1", category=category, amount=amount, period=period),
                        period=Period(D(start), D(end)), spent=spent, expense_count=3,
                        top_categories=(CategorySpend("fuel", spent * 0.6), CategorySpend("food", spent * 0.4)))


# Local now 2026-03-15 12:00 in a 30-day period from Mar 1: 14.5 days elapsed, 16 days left (today included).
BANDS: list[tuple[str, BudgetStatus, tuple[P, str] | None]] = [
    ("nothing spent", status(0.0), None),
    ("40%: projection 82.8%", status(400.0), None),
    ("53%: projection 109.7%", status(530.0), None),
    ("54%: projection 111.7% -> pace", status(540.0), (P.MEDIUM, "budget_pace")),
    ("79.99% -> pace", status(799.9), (P.MEDIUM, "budget_pace")),
    ("80% -> high", status(800.0), (P.HIGH, "budget_threshold")),
    ("94.99% -> high", status(949.9), (P.HIGH, "budget_threshold")),
    ("95% -> urgent", status(950.0), (P.URGENT, "budget_threshold")),
    ("99.99% -> urgent", status(999.9), (P.URGENT, "budget_threshold")),
    ("100% -> over", status(1000.0), (P.URGENT, "budget_exceeded")),
    ("150% -> over", status(1500.0), (P.URGENT, "budget_exceeded")),
    ("day 2 of 30 (1.5 days elapsed): too early to project", status(500.0, start="2026-03-14", end="2026-04-12"),
     None),
    ("2.5 days of a week, 70%: projected", status(700.0, start="2026-03-13", end="2026-03-19"),
     (P.MEDIUM, "budget_pace")),
    ("yearly, 30 days in (< 10%): too early", status(300.0, start="2026-02-14", end="2027-02-13"), None),
    ("yearly, 40 days in: projected", status(300.0, start="2026-02-04", end="2027-02-03"),
     (P.MEDIUM, "budget_pace")),
    ("last day, 90%", status(900.0, start="2026-02-14", end="2026-03-15"), (P.HIGH, "budget_threshold")),
]


@pytest.mark.parametrize(("case", "st", "expected"), BANDS, ids=[c[0] for c in BANDS])
def test_bands(case: str, st: BudgetStatus, expected: tuple[P, str] | None) -> None:
    a = budget.assess(st, NOW, CFG)
    assert budget.classify(a, CFG) == expected


def test_assessment_numbers() -> None:
    a = budget.assess(status(540.0), NOW, CFG)
    assert (a.period_days, a.remaining_days) == (30, 16)
    assert a.elapsed_days == pytest.approx(14.5)
    assert a.percent == pytest.approx(54.0)
    assert a.daily_allowance == pytest.approx(460 / 16)
    assert a.projected == pytest.approx(540 / 14.5 * 30)
    over = budget.assess(status(1200.0), NOW, CFG)
    assert over.daily_allowance is None
    # A DST day counts as one calendar day: 02:30 local on the day after the spring-forward in Paris.
    paris = datetime(2026, 3, 30, 2, 30, tzinfo=ZoneInfo("Europe/Paris"))
    assert budget.assess(status(10.0), paris, CFG).elapsed_days == pytest.approx(29 + 2.5 / 24)


def test_config_overrides_and_validation() -> None:
    cfg = msgspec.convert({"high_pct": 50, "pace_pct": 200, "pace_min_elapsed_days": 0}, budget.BudgetConfig)
    assert budget.classify(budget.assess(status(540.0), NOW, cfg), cfg) == (P.HIGH, "budget_threshold")
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"high_percent": 50}, budget.BudgetConfig)
    for bad in ({"high_pct": 96}, {"over_pct": 90}, {"high_pct": 0}, {"batch_size": 0}, {"pace_min_elapsed_pct": 101}):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert(bad, budget.BudgetConfig)


# -- text -------------------------------------------------------------------------------------------------------


def user(*statuses: BudgetStatus, currency: str = "USD", tz: str = "UTC", today: str = "2026-03-15") -> BudgetInput:
    return BudgetInput(user_id="u1", timezone=tz, currency=currency, today=D(today), budgets=statuses)


def test_alert_pace_text_and_facts() -> None:
    st = status(540.0, category="fuel")
    [alert] = budget.evaluate(user(st), NOW, CFG)
    assert (alert.kind, alert.priority, alert.subject) == ("budget_pace", P.MEDIUM, "b1:2026-03-01")
    assert alert.title == "Monthly fuel budget: on pace to overspend"
    assert alert.body == (
        "You've spent $540.00 of your $1,000.00 monthly fuel budget (54%) for 1 Mar to 30 Mar, with 16 days "
        "left. At this pace you would spend about $1,117.24 (112%) by 30 Mar. That leaves about $28.75 a day "
        "($460.00 in all).")
    assert "Top categories" not in alert.body  # one category: nothing to rank
    f = alert.facts
    assert (f["spent"], f["budget"], f["percent"], f["remaining_days"]) == (540.0, 1000.0, 54.0, 16)
    assert (f["daily_allowance_left"], f["projected_spend"], f["currency"]) == (28.75, 1117.24, "USD")
    assert f["period_start"] == "2026-03-01" and f["period_end"] == "2026-03-30"
    assert alert.expires_at == datetime(2026, 3, 31, tzinfo=UTC)
    msgspec.json.encode(alert)


def test_alert_over_budget_other_currency_and_timezone() -> None:
    st = status(1234.5, amount=1000.0)
    [alert] = budget.evaluate(user(st, currency="EUR", tz="Pacific/Auckland", today="2026-03-16"), NOW, CFG)
    assert alert.kind == "budget_exceeded" and alert.priority == P.URGENT
    assert alert.title == "Over budget: monthly budget, €234.50 over"
    assert "€1,234.50 of your €1,000.00 monthly budget (123%)" in alert.body
    assert "That is €234.50 over budget." in alert.body and "a day" not in alert.body
    assert "Top categories: fuel €740.70, food €493.80." in alert.body
    assert alert.facts["daily_allowance_left"] is None and alert.facts["over_by"] == 234.5
    assert alert.facts["top_categories"] == [{"category": "fuel", "amount": 740.7},
                                             {"category": "food", "amount": 493.8}]
    # The period ends at midnight in Auckland (UTC+13 in March): 2026-03-31 11:00 UTC.
    assert alert.expires_at == datetime(2026, 3, 30, 11, 0, tzinfo=UTC)


def test_percentages_are_not_rounded_up_to_a_band() -> None:
    [alert] = budget.evaluate(user(status(999.9)), NOW, CFG)
    assert alert.kind == "budget_threshold" and alert.title == "Monthly budget: 99% spent"
    assert "(99%)" in alert.body and alert.facts["percent"] == 99.99


def test_escalation_keeps_kind_and_subject() -> None:
    high = budget.evaluate(user(status(850.0)), NOW, CFG)[0]
    urgent = budget.evaluate(user(status(960.0)), NOW, CFG)[0]
    assert (high.kind, high.subject) == (urgent.kind, urgent.subject) == ("budget_threshold", "b1:2026-03-01")
    assert high.priority < urgent.priority
    later = budget.evaluate(user(status(850.0, start="2026-03-31", end="2026-04-29")),
                            datetime(2026, 4, 2, tzinfo=UTC), CFG)[0]
    assert later.subject == "b1:2026-03-31"  # a new period is a new condition


def test_deferred_alerts_make_the_same_text_only_when_asked() -> None:
    st = status(1234.5, amount=1000.0)
    [made] = budget.evaluate(user(st), NOW, CFG)
    [later] = budget.evaluate(user(st), NOW, CFG, defer=True)
    assert not later.composed and later.title == later.body == "" and later.facts == {}
    assert (later.user_id, later.kind, later.priority, later.subject, later.expires_at) == (
        made.user_id, made.kind, made.priority, made.subject, made.expires_at)
    assert later.complete() is later and later.composed
    assert later == made


def test_explain_says_why() -> None:
    seen: list[tuple[str, str, dict[str, Any]]] = []

    def explain(uid: str, step: str, **data: Any) -> None:
        seen.append((uid, step, data))

    assert budget.evaluate(user(), NOW, CFG, explain) == []
    assert seen[-1][2]["reason"] == "no budgets"
    assert budget.evaluate(user(status(100.0)), NOW, CFG, explain) == []
    assert seen[-1][1] == "budget b1" and seen[-1][2]["outcome"] == "no alert"
    assert "not projected to reach 110%" in seen[-1][2]["reason"] and seen[-1][2]["percent"] == 10.0


# -- the SQLite store -------------------------------------------------------------------------------------------


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(f"sqlite:///{tmp_path}/budget.db")
    await s.migrate()
    yield s
    await s.aclose()


async def add_user(s: SQLiteStore, uid: str, tz: str = "UTC", currency: str = "USD",
                   budgets: list[dict[str, Any]] | tuple[()] = (),
                   expenses: list[tuple[Any, Any, str | None]] | tuple[()] = ()) -> None:
    await s.add_rows("profiles", [{"id": uid, "timezone": tz, "currency": currency}])
    await s.add_rows("budgets", [{"id": f"{uid}-b{n}", "user_id": uid, **row} for n, row in enumerate(budgets)])
    await s.add_rows("expenses", [{"id": f"{uid}-e{n}", "user_id": uid, "amount": amount, "date": day,
                                   "category": category} for n, (amount, day, category) in enumerate(expenses)])


async def run(s: Any, now: datetime = NOW, config: budget.BudgetConfig | None = None,
              user_id: str | None = None) -> list[pamd.Alert]:
    ctx = pamd.MonitorContext(monitor="budget", scheduled_at=now, store=s, config=config, user_id=user_id,
                              clock=lambda: now)
    # run() leaves the text to the pipeline (pamd.Alert.deferred): made here, as the pipeline makes it.
    return [alert.complete() async for alert in budget.BudgetMonitor().run(ctx)]


async def inputs(s: SQLiteStore, now: datetime = NOW) -> dict[str, BudgetInput]:
    return {inp.user_id: inp async for batch in s.iter_budget_inputs(now, 2) for inp in batch}


@pytest.mark.anyio
async def test_no_users_no_budgets_one_row(store: SQLiteStore) -> None:
    assert await run(store) == []
    await add_user(store, "u0")
    await add_user(store, "u1", budgets=[{"category": None, "amount": 100.0, "period": "monthly"}],
                   expenses=[(85.0, "2026-03-02", "food")])
    got = await inputs(store)
    assert got["u0"].budgets == () and got["u0"].inactive == ()
    [alert] = await run(store)
    assert (alert.user_id, alert.priority) == ("u1", P.HIGH)
    assert alert.facts["expense_count"] == 1


@pytest.mark.anyio
async def test_bad_rows_are_skipped_and_counted(store: SQLiteStore) -> None:
    expenses: list[tuple[Any, Any, str | None]] = [
        (50.0, "2026-03-10", "Fuel"), (20.0, "2026-03-11", " FUEL "), (5.0, "2026-03-11", "food"),
        (None, "2026-03-12", "fuel"), (-40.0, "2026-03-12", "fuel"), ("lots", "2026-03-12", "fuel"),
        (30.0, "2026-03-16", "fuel"),  # tomorrow: future-dated
        (30.0, "2026-02-30", "fuel"),  # in the text range of the budget anchored on the 16th, but no date
        (30.0, "2026-03-12T10:00:00Z", "fuel"), (30.0, None, "fuel"),
        (30.0, "2026-02-28", "fuel"),  # before March: only in the period anchored on the 16th
        (30.0, "2026-03-1x", "fuel"),
    ]
    budgets: list[dict[str, Any]] = [
        {"category": "fuel", "amount": 100.0, "period": "monthly"},
        {"category": "total", "amount": 100.0, "period": "Monthly"},
        {"category": "fuel", "amount": 0.0, "period": "monthly"},
        {"category": "fuel", "amount": None, "period": "monthly"},
        {"category": "fuel", "amount": 100.0, "period": "weekly", "start_date": "soon"},
        {"category": "fuel", "amount": 100.0, "period": "custom", "start_date": "2026-03-01"},
        {"category": "fuel", "amount": 100.0, "period": "custom", "start_date": "2026-03-10",
         "end_date": "2026-03-01"},
        {"category": "Fuel", "amount": 100.0, "period": "monthly", "start_date": "2026-01-16"},
    ]
    await add_user(store, "u1", budgets=budgets, expenses=expenses)
    inp = (await inputs(store))["u1"]
    by_id = {st.budget.id: st for st in inp.budgets}
    assert set(by_id) == {"u1-b0", "u1-b1", "u1-b7"}
    assert by_id["u1-b0"].spent == 70.0 and by_id["u1-b0"].expense_count == 2
    assert by_id["u1-b1"].spent == 75.0
    assert by_id["u1-b1"].top_categories == (CategorySpend("fuel", 70.0), CategorySpend("food", 5.0))
    assert by_id["u1-b7"].period == Period(D("2026-02-16"), D("2026-03-15")) and by_id["u1-b7"].spent == 100.0
    assert store.skipped_rows == {"budgets": 5, "expenses": 8}
    # The same rows are counted again on the next run (they are still bad), never twice in one run.
    await inputs(store)
    assert store.skipped_rows == {"budgets": 10, "expenses": 16}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("tz", "now", "expected_today", "expected_spent"),
    [
        # 2026-03-31 23:30 UTC: already April 1 in Auckland (UTC+13), so March spending is last period's.
        ("Pacific/Auckland", datetime(2026, 3, 31, 23, 30, tzinfo=UTC), "2026-04-01", 10.0),
        # The same instant is still March 31 in Honolulu (UTC-10): all of March counts, not April's.
        ("Pacific/Honolulu", datetime(2026, 3, 31, 23, 30, tzinfo=UTC), "2026-03-31", 300.0),
        # 2026-04-01 09:00 UTC is March 31 23:00 in Honolulu: still March there.
        ("Pacific/Honolulu", datetime(2026, 4, 1, 9, 0, tzinfo=UTC), "2026-03-31", 300.0),
        # 2026-03-01 05:00 UTC is February 28 in Honolulu: nothing of March counts yet.
        ("Pacific/Honolulu", datetime(2026, 3, 1, 5, 0, tzinfo=UTC), "2026-02-28", 0.0),
        # The evening of a leap day in UTC is March 1 in Paris.
        ("Europe/Paris", datetime(2028, 2, 29, 23, 30, tzinfo=UTC), "2028-03-01", 0.0),
        # The night of the spring-forward in Paris: still March 29, all of March so far counts.
        ("Europe/Paris", datetime(2026, 3, 29, 1, 30, tzinfo=UTC), "2026-03-29", 100.0),
    ],
)
async def test_local_dates(store: SQLiteStore, tz: str, now: datetime, expected_today: str,
                           expected_spent: float) -> None:
    await add_user(store, "u1", tz=tz, budgets=[{"category": None, "amount": 1000.0, "period": "monthly"}],
                   expenses=[(100.0, "2026-03-01", None), (200.0, "2026-03-31", "food"), (10.0, "2026-04-01", None)])
    inp = (await inputs(store, now))["u1"]
    assert inp.today == D(expected_today)
    assert (inp.budgets[0].spent if inp.budgets else 0.0) == expected_spent
    # Expenses of later periods are not looked at; one dated later in the current period would be skipped.
    assert store.skipped_rows == ({"expenses": 1} if expected_today == "2026-03-29" else {})


@pytest.mark.anyio
async def test_unknown_timezone_is_utc_and_reported(store: SQLiteStore) -> None:
    await add_user(store, "u1", tz="Mars/Olympus_Mons", budgets=[{"amount": 10.0}], expenses=[(9.0, "2026-03-15", "x")])
    inp = (await inputs(store))["u1"]
    assert inp.timezone == "UTC" and inp.today == D("2026-03-15")
    assert store.skipped_rows == {"profiles": 1}
    [alert] = await run(store)
    assert alert.priority == P.HIGH


@pytest.mark.anyio
async def test_constant_queries_per_batch(tmp_path: Path) -> None:
    statements: list[str] = []
    s = SQLiteStore(f"sqlite:///{tmp_path}/q.db", trace=statements.append)
    await s.migrate()
    for n in range(40):
        await add_user(s, f"u{n:02d}", budgets=[{"category": "fuel", "amount": 50.0}, {"amount": 500.0}],
                       expenses=[(10.0, "2026-03-10", "fuel"), (20.0, "2026-03-11", "food")])
    statements.clear()
    batches = [batch async for batch in s.iter_budget_inputs(NOW, 20)]
    assert [len(batch) for batch in batches] == [20, 20]
    selects = [q for q in statements if q.lstrip().upper().startswith(("SELECT", "WITH"))]
    assert len(selects) == 3 + 3 + 1  # profiles+budgets, spend, undated per page; the third page is empty
    assert all(st.spent == 10.0 for batch in batches for inp in batch for st in inp.budgets if st.budget.category)
    await s.aclose()


@pytest.mark.anyio
async def test_run_needs_a_budget_capable_store() -> None:
    with pytest.raises(TypeError, match="iter_budget_inputs"):
        await run(None)


def test_registered_through_the_plugin_hook() -> None:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(budget)
    found: list[pamd.Monitor] = []
    pm.hook.register_monitors(register=found.append)
    assert [type(m) for m in found] == [budget.BudgetMonitor]
    assert (found[0].name, found[0].schedule, found[0].config_type) == ("budget", "0 * * * *", budget.BudgetConfig)


# -- the demo data ----------------------------------------------------------------------------------------------

DEMO = {"demo-u01": ("budget_pace", P.MEDIUM), "demo-u02": ("budget_threshold", P.HIGH),
        "demo-u04": ("budget_threshold", P.URGENT), "demo-u08": ("budget_exceeded", P.URGENT)}


@pytest.mark.anyio
@pytest.mark.parametrize("now", [
    NOW, datetime(2026, 1, 1, 0, 30, tzinfo=UTC), datetime(2026, 2, 28, 23, 59, tzinfo=UTC),
    datetime(2028, 2, 29, 12, tzinfo=UTC), datetime(2026, 3, 29, 1, 30, tzinfo=UTC),
    datetime(2026, 7, 31, 18, tzinfo=UTC), datetime(2026, 12, 31, 23, tzinfo=UTC),
], ids=str)
async def test_demo_users_alert_as_documented(tmp_path: Path, now: datetime) -> None:
    s = SQLiteStore(f"sqlite:///{tmp_path}/demo.db")
    await s.seed_demo(now)
    alerts = await run(s, now, budget.BudgetConfig(batch_size=3))
    assert {a.user_id: (a.kind, a.priority) for a in alerts} == DEMO
    assert len(alerts) == 4
    by_user = {a.user_id: a for a in alerts}
    assert by_user["demo-u02"].facts["top_categories"] == [
        {"category": "repairs", "amount": 1650.0}, {"category": "fuel", "amount": 420.0},
        {"category": "campsites", "amount": 300.0}]
    assert by_user["demo-u02"].facts["spent"] == 2550.0 and "A$" in by_user["demo-u02"].body
    assert by_user["demo-u04"].facts["spent"] == 240.0 and by_user["demo-u08"].facts["spent"] == 630.0
    assert 127 <= by_user["demo-u01"].facts["projected_pct"] <= 155
    assert s.skipped_rows == {}
    assert await run(s, now, user_id="demo-u06") == [] and await run(s, now, user_id="demo-u03") == []
    await s.aclose()
