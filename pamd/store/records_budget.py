"""Records of the budget monitor, and the calendar arithmetic of budget periods.

A budget row (``budgets``) is either recurring -- ``weekly``, ``monthly`` or ``yearly``, anchored on its
``start_date`` when it has one -- or an explicit range ``start_date..end_date`` (any other ``period`` value, e.g.
``custom``, with both dates). :func:`current_period` finds the period containing a user's local date; stores use it
to aggregate each budget's spend in SQL, so every backend agrees on what "this month" means.

Money is in the user's currency (``profiles.currency``); dates are the user's local calendar dates.
"""

from __future__ import annotations

import calendar
import functools
from collections.abc import AsyncGenerator
from datetime import UTC, date, datetime, timedelta
from typing import Protocol, runtime_checkable

import msgspec

from pamd.store.records import Units, zone

RECURRING_PERIODS = ("weekly", "monthly", "yearly")
"""``budgets.period`` values that repeat; any other value with both dates set is an explicit range."""

ALL_CATEGORIES = ("", "total", "all")
"""``budgets.category`` values (lower case, stripped; and ``NULL``) meaning "all spending"."""


class Budget(msgspec.Struct, frozen=True, kw_only=True):
    """One usable ``budgets`` row. ``category`` is lower case and stripped, ``None`` for all spending;
    ``period`` is lower case (``weekly``, ``monthly``, ``yearly``, or the explicit range's own label)."""

    id: str
    category: str | None
    amount: float
    period: str = "monthly"
    start_date: date | None = None
    end_date: date | None = None

    @property
    def recurring(self) -> bool:
        """True for weekly, monthly and yearly budgets; False for an explicit ``start_date..end_date`` range."""
        return self.period in RECURRING_PERIODS


class Period(msgspec.Struct, frozen=True):
    """A budget period: local calendar dates ``start`` to ``end``, both included."""

    start: date
    end: date

    @property
    def days(self) -> int:
        """The number of calendar days in the period."""
        return (self.end - self.start).days + 1


class CategorySpend(msgspec.Struct, frozen=True):
    """The spending in one expense category (``"uncategorised"`` for NULL)."""

    category: str
    amount: float


class BudgetStatus(msgspec.Struct, frozen=True, kw_only=True):
    """A budget in its current period: ``spent`` sums the valid expenses dated from ``period.start`` up to the
    user's local today (never later), ``top_categories`` are the largest categories among them."""

    budget: Budget
    period: Period
    spent: float
    expense_count: int
    top_categories: tuple[CategorySpend, ...] = ()


class BudgetInput(msgspec.Struct, frozen=True, kw_only=True):
    """What the budget monitor needs about one user.

    ``timezone`` is a valid IANA name (an unknown one is replaced by ``"UTC"`` and reported by the store);
    ``today`` is the user's local date at the store's ``now``. ``budgets`` are the budgets with a current period;
    ``inactive`` names the ones without (an explicit range not covering today, or not started yet).
    """

    user_id: str
    full_name: str | None = None
    timezone: str = "UTC"
    preferred_units: Units = "metric"
    currency: str = "USD"
    today: date
    budgets: tuple[BudgetStatus, ...] = ()
    inactive: tuple[str, ...] = ()


@runtime_checkable
class BudgetInputSource(Protocol):
    """A store that can stream :class:`BudgetInput` batches (what the budget monitor needs from ``ctx.store``)."""

    def iter_budget_inputs(
        self, now: datetime, batch_size: int = 500, user_id: str | None = None, *, top_categories: int = 3
    ) -> AsyncGenerator[list[BudgetInput], None]:
        """Yield users in batches of at most ``batch_size`` (only ``user_id`` when given), spend as of ``now``."""
        ...


class BudgetBands(msgspec.Struct, frozen=True, kw_only=True):
    """The budget monitor's thresholds, for a store that leaves out users who cannot be in a band."""

    high_pct: float  # the lowest percentage band
    pace_pct: float
    pace_min_elapsed_days: float
    pace_min_elapsed_pct: float


@runtime_checkable
class BudgetCandidateSource(Protocol):
    """A store that can stream only users with a budget that could be in a band (a superset: the monitor
    decides)."""

    def iter_budget_candidates(
        self, bands: BudgetBands, now: datetime, batch_size: int = 500, *, top_categories: int = 3
    ) -> AsyncGenerator[list[BudgetInput], None]:
        """As ``iter_budget_inputs`` over every user, but only users with a budget in or near a band."""
        ...


def parse_date(value: object) -> date | None:
    """A ``YYYY-MM-DD`` calendar date (an ISO timestamp uses its date part as written), else ``None``."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    text = value.strip() if isinstance(value, str) else ""
    if len(text) < 10 or (len(text) > 10 and text[10] not in "T "):
        return None
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


def _clamped(year: int, month: int, day: int) -> date:
    """``year-month-day``, with the day clamped to the month's length (the 31st -> the 30th, Feb 29 -> Feb 28)."""
    return date(year, month, min(day, calendar.monthrange(year, month)[1]))


def _month_anchor(year: int, month: int, day: int) -> date:
    """The anchor date in month ``month`` of ``year`` (months may be out of 1..12: they carry into the year)."""
    year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    return _clamped(year, month, day)


def current_period(budget: Budget, today: date) -> Period | None:
    """The period of ``budget`` containing the local date ``today``, or ``None`` if it has none.

    - weekly: 7-day periods starting on ``start_date``'s weekday (Monday without one);
    - monthly: calendar months, or months starting on ``start_date``'s day of the month, clamped to short months
      (anchored on the 31st: Jan 31..Feb 27, Feb 28..Mar 30, Mar 31..Apr 29);
    - yearly: calendar years, or years starting on ``start_date``'s month and day (Feb 29 -> Feb 28 in common
      years);
    - anything else: the explicit range ``start_date..end_date``, no recurrence.

    A recurring budget is inactive before its ``start_date`` and after its ``end_date``.
    """
    return _period(budget.period, budget.start_date, budget.end_date, today)


@functools.lru_cache(maxsize=4096)
def _period(kind: str, start: date | None, end: date | None, today: date) -> Period | None:
    if kind not in RECURRING_PERIODS:
        if start is None or end is None or not start <= today <= end:
            return None
        return Period(start, end)
    if (start is not None and today < start) or (end is not None and today > end):
        return None
    if kind == "weekly":
        anchor = start.weekday() if start is not None else 0
        first = today - timedelta(days=(today.weekday() - anchor) % 7)
        return Period(first, first + timedelta(days=6))
    if kind == "monthly":
        day = start.day if start is not None else 1
        first = _month_anchor(today.year, today.month, day)
        if first > today:
            first = _month_anchor(today.year, today.month - 1, day)
        following = _month_anchor(first.year, first.month + 1, day)
        return Period(first, following - timedelta(days=1))
    month, day = (start.month, start.day) if start is not None else (1, 1)
    first = _clamped(today.year, month, day)
    if first > today:
        first = _clamped(today.year - 1, month, day)
    return Period(first, _clamped(first.year + 1, month, day) - timedelta(days=1))


def zone_day(now: datetime, name: object) -> tuple[date, float, bool]:
    """The local date and fraction of the day (whole seconds) at ``now`` in the time zone ``name``, for the stores'
    budget candidates, and whether the zone is known (an unknown one is read as UTC, as the full stream reads it)."""
    tz = zone(name) if isinstance(name, str) else None
    local = now.astimezone(tz or UTC)
    return local.date(), (local.hour * 3600 + local.minute * 60 + local.second) / 86400, tz is not None
