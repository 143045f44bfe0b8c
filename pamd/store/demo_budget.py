"""Demo budgets and expenses (:mod:`pamd.store.demo`).

Every date is a calendar-day offset from the user's local today at ``now``, and the budgets are anchored so that
the outcome is the same at any ``now`` (default thresholds: 80 / 95 / 100 %, pace 110 %):

=========  ===========================================================  ==========================================
user       budget and spend in its current period                       budget outcome
=========  ===========================================================  ==========================================
demo-u01   fuel, monthly $800 anchored on the day 10 days ago: $400     50 % with 10-11 of 28-31 days gone, pace
           of fuel (food and campsites do not count)                    127-155 % -> medium ``budget_pace``
demo-u02   all spending, calendar month A$3,000: A$2,550 today          85 % -> high ``budget_threshold``
           (A$900 40 days ago is in an earlier month)
demo-u03   explicit range 50..20 days ago (period ``custom``)           inactive -> none
demo-u04   food, weekly NZ$250 anchored 3 days ago: NZ$240              96 % -> urgent ``budget_threshold``
demo-u05   all spending, weekly (Mondays) €500: €40 today               8 %, pace <= 28 % -> none
demo-u06   no budgets                                                   none
demo-u07   all spending, yearly (1 Jan) $40,000: $150 today             < 1 % -> none (no projection before
                                                                        36.5 days, then < 4 %)
demo-u08   campsites, monthly £600 anchored 5 days ago: £630            105 % -> urgent ``budget_exceeded``
=========  ===========================================================  ==========================================

Top categories (all-spending budgets) for demo-u02: repairs A$1,650, fuel A$420, campsites A$300. No row is bad,
so a run over the demo data skips nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pamd.store.demo_common import DemoUser, Row, row


def _local_day(user: DemoUser, now: datetime, days: int) -> str:
    """The user's local calendar date ``days`` calendar days after their local today."""
    return (now.astimezone(user.tz).date() + timedelta(days=days)).isoformat()


# user, category, amount, period, start_date offset (local days) or None, end_date offset or None
_BUDGETS: tuple[tuple[str, str | None, float, str, int | None, int | None], ...] = (
    ("u01", "fuel", 800.0, "monthly", -10, None),
    ("u02", "total", 3000.0, "monthly", None, None),
    ("u03", "campsites", 400.0, "custom", -50, -20),
    ("u04", "Food", 250.0, "weekly", -3, None),
    ("u05", None, 500.0, "weekly", None, None),
    ("u07", "total", 40000.0, "yearly", None, None),
    ("u08", "campsites", 600.0, "monthly", -5, None),
)

# user, local days from today (<= 0), amount, category, description
_EXPENSES: tuple[tuple[str, int, float, str, str], ...] = (
    ("u01", -8, 130.0, "fuel", "Diesel, Cheyenne"), ("u01", -5, 120.5, "fuel", "Diesel, Casper"),
    ("u01", -3, 94.5, "Fuel", "Diesel, Loveland"), ("u01", -2, 45.0, "campsites", "Cherry Creek SP"),
    ("u01", -1, 55.0, "fuel", "Top-up, Denver"), ("u01", -1, 62.3, "food", "Groceries"),
    ("u02", 0, 420.0, "fuel", "Diesel, Gympie"), ("u02", 0, 1650.0, "repairs", "Trailer bearings and tyres"),
    ("u02", 0, 180.0, "food", "Woolworths Noosa"), ("u02", 0, 300.0, "campsites", "Noosa North Shore, 5 nights"),
    ("u02", -40, 900.0, "repairs", "Gearbox service"),
    ("u03", -30, 150.0, "campsites", "Spencer Beach Park"),
    ("u04", -3, 96.4, "food", "Pak'nSave Rotorua"), ("u04", -1, 85.6, "FOOD ", "Countdown Taupo"),
    ("u04", 0, 58.0, "food", "Fish and chips"), ("u04", 0, 38.0, "campsites", "Holiday park"),
    ("u05", 0, 40.0, "food", "Marché d'Annecy"),
    ("u07", 0, 150.0, "campsites", "Table Rock SP"),
    ("u08", -5, 210.0, "campsites", "Castlerigg Farm, 6 nights"), ("u08", -1, 420.0, "Campsites", "Lakeside lodge"),
    ("u08", -2, 32.5, "food", "Booths Keswick"),
)


def add(tables: dict[str, list[Row]], now: datetime, users: dict[str, DemoUser]) -> None:
    """Append the budget monitor's demo rows to ``tables``."""
    for key, category, amount, period, start, end in _BUDGETS:
        user = users[key]
        tables["budgets"].append(row(
            "b", key, category=category, amount=amount, period=period,
            start_date=None if start is None else _local_day(user, now, start),
            end_date=None if end is None else _local_day(user, now, end)))
    for n, (key, days, amount, category, text) in enumerate(_EXPENSES, start=1):
        tables["expenses"].append(row("e", key, n, amount=amount, category=category, description=text,
                                      date=_local_day(users[key], now, days)))
