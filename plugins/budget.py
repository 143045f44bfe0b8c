"""The built-in budget monitor (DESIGN.md section 7).

Each budget's current period is computed in the user's timezone (weekly, monthly, yearly or an explicit range:
:func:`pamd.store.records_budget.current_period`); the store sums the expenses dated in it up to the user's local
today. Bands, on the percentage spent: >= 100 % over budget (urgent, kind ``budget_exceeded``), >= 95 % urgent and
>= 80 % high (kind ``budget_threshold``, so 80 -> 95 % is an escalation of one condition), and below 80 % a linear
projection of the spend to the end of the period >= 110 % is "on pace to overspend" (medium, kind ``budget_pace``).

The projection is spend / elapsed time x period length, with elapsed time counted in fractional days from the local
midnight the period started. It is only made once ``pace_min_elapsed_days`` (default 2 days) *and*
``pace_min_elapsed_pct`` (default 10 % of the period) have passed, so a purchase on the first day of a week or the
first weeks of a yearly budget do not look like a spree.
"""

from __future__ import annotations

import functools
import math
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

import msgspec

import pamd
from pamd import units
from pamd.store.records import zone
from pamd.store.records_budget import (
    BudgetBands,
    BudgetCandidateSource,
    BudgetInput,
    BudgetInputSource,
    BudgetStatus,
    CategorySpend,
    zone_day,
)

DAY = timedelta(days=1)
Kind = Literal["budget_exceeded", "budget_threshold", "budget_pace"]


class BudgetConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[monitors.budget]`` settings. Percentages are of the budget amount; bands fire at or above them."""

    high_pct: float = 80.0
    urgent_pct: float = 95.0
    over_pct: float = 100.0
    pace_pct: float = 110.0  # projected spend at period end, while below high_pct
    pace_min_elapsed_days: float = 2.0  # no projection before this many days of the period have passed...
    pace_min_elapsed_pct: float = 10.0  # ...nor before this share of the period
    top_categories: int = 3
    batch_size: int = 500

    def __post_init__(self) -> None:
        if not 0 < self.high_pct <= self.urgent_pct <= self.over_pct:
            raise ValueError("need 0 < high_pct <= urgent_pct <= over_pct")
        if self.pace_pct <= 0 or self.pace_min_elapsed_days < 0 or not 0 <= self.pace_min_elapsed_pct <= 100:
            raise ValueError("pace_pct must be > 0, pace_min_elapsed_days >= 0, pace_min_elapsed_pct in 0..100")
        if self.top_categories < 0 or self.batch_size < 1:
            raise ValueError("top_categories must be >= 0 and batch_size >= 1")


class Assessment(msgspec.Struct, frozen=True, kw_only=True):
    """The numbers of one budget in its current period (money in the user's currency)."""

    spent: float
    amount: float
    percent: float
    period_days: int
    elapsed_days: float  # fractional, since local midnight of the first day
    remaining_days: int  # calendar days left, today included
    daily_allowance: float | None  # (amount - spent) / remaining_days; None when nothing is left
    projected: float | None  # linear projection to the period's end; None when too early to project
    projected_pct: float | None


def assess(status: BudgetStatus, local_now: datetime, cfg: BudgetConfig) -> Assessment:
    """Compute spend, percentage, days and projection for ``status`` at the user's local time ``local_now``."""
    # Wall-clock time of day: a DST day counts as one day, as the user sees it.
    seconds = local_now.hour * 3600 + local_now.minute * 60 + local_now.second + local_now.microsecond / 1e6
    return _assess(status, local_now.toordinal(), seconds / 86400, cfg)


def _assess(status: BudgetStatus, today: int, day_fraction: float, cfg: BudgetConfig) -> Assessment:
    period, amount, spent = status.period, status.budget.amount, status.spent
    start, end = period.start.toordinal(), period.end.toordinal()
    days = end - start + 1
    elapsed = min(max(today - start + day_fraction, 0.0), float(days))
    remaining = max(0, end - today + 1)
    projected = None
    if elapsed > 0 and elapsed >= cfg.pace_min_elapsed_days and elapsed * 100 >= cfg.pace_min_elapsed_pct * days:
        projected = spent / elapsed * days
    return Assessment(
        spent=spent, amount=amount, percent=spent / amount * 100, period_days=days,
        elapsed_days=elapsed, remaining_days=remaining,
        daily_allowance=(amount - spent) / remaining if spent < amount and remaining > 0 else None,
        projected=projected, projected_pct=None if projected is None else projected / amount * 100,
    )


def classify(a: Assessment, cfg: BudgetConfig) -> tuple[pamd.Priority, Kind] | None:
    """The band of an assessment: ``(priority, kind)``, or ``None`` when all is well."""
    if a.percent >= cfg.over_pct:
        return pamd.Priority.URGENT, "budget_exceeded"
    if a.percent >= cfg.urgent_pct:
        return pamd.Priority.URGENT, "budget_threshold"
    if a.percent >= cfg.high_pct:
        return pamd.Priority.HIGH, "budget_threshold"
    if a.projected_pct is not None and a.projected_pct >= cfg.pace_pct:
        return pamd.Priority.MEDIUM, "budget_pace"
    return None


def budget_name(status: BudgetStatus) -> str:
    """``"monthly fuel budget"``, ``"weekly budget"``, ``"campsites budget"`` (explicit range)..."""
    budget = status.budget
    return _budget_name(budget.period if budget.recurring else None, budget.category)


@functools.lru_cache(maxsize=1024)  # few periods and categories, tens of thousands of alerts a tick
def _budget_name(period: str | None, category: str | None) -> str:
    return " ".join([word for word in (period, category) if word is not None] + ["budget"])


_MONTHS = ("", "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _day(value: date) -> str:
    return f"{value.day} {_MONTHS[value.month]}"


def _span(status: BudgetStatus) -> str:
    start, end = status.period.start, status.period.end
    return f"{_day(start)} to {_day(end)}" + (f" {end.year}" if start.year != end.year else "")


def render(inp: BudgetInput, status: BudgetStatus, a: Assessment, kind: Kind) -> tuple[str, str]:
    """Rule text for a budget alert, in the user's currency: ``(title, body)``."""
    cur = inp.currency

    def money(value: float) -> str:
        return units.money(value, cur)

    name = budget_name(status)
    pct = math.floor(a.percent)  # never "100%" while still under budget
    days_left = units.plural(a.remaining_days, "day")
    body = (f"You've spent {money(a.spent)} of your {money(a.amount)} {name} ({pct}%) for "
            f"{_span(status)}, with {days_left} left.")
    if kind == "budget_exceeded":
        title = f"Over budget: {name}, {money(a.spent - a.amount)} over"
        body += f" That is {money(a.spent - a.amount)} over budget."
    elif kind == "budget_threshold":
        title = f"{name[0].upper()}{name[1:]}: {pct}% spent"
    else:
        title = f"{name[0].upper()}{name[1:]}: on pace to overspend"
        assert a.projected is not None and a.projected_pct is not None
        body += (f" At this pace you would spend about {money(a.projected)} ({a.projected_pct:.0f}%) by "
                 f"{_day(status.period.end)}.")
    if a.daily_allowance is not None:
        body += f" That leaves about {money(a.daily_allowance)} a day ({money(a.amount - a.spent)} in all)."
    if status.budget.category is None and status.top_categories:
        top = ", ".join(f"{c.category} {money(c.amount)}" for c in status.top_categories)
        body += f" Top categories: {top}."
    return title, body


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _spent_dict(spend: CategorySpend) -> dict[str, Any]:
    return {"category": spend.category, "amount": round(spend.amount, 2)}


def facts(inp: BudgetInput, status: BudgetStatus, a: Assessment) -> dict[str, Any]:
    """Every number the text uses, plus the budget's identity (money in ``currency``)."""
    budget = status.budget
    return {
        "budget_id": budget.id, "category": budget.category, "period": budget.period,
        "period_start": status.period.start.isoformat(), "period_end": status.period.end.isoformat(),
        "local_today": inp.today.isoformat(), "spent": round(a.spent, 2), "budget": round(a.amount, 2),
        "percent": round(a.percent, 2), "over_by": round(max(0.0, a.spent - a.amount), 2),
        "remaining": round(max(0.0, a.amount - a.spent), 2), "remaining_days": a.remaining_days,
        "daily_allowance_left": _r(a.daily_allowance), "period_days": a.period_days,
        "elapsed_days": round(a.elapsed_days, 2), "projected_spend": _r(a.projected),
        "projected_pct": None if a.projected_pct is None else round(a.projected_pct, 1),
        "expense_count": status.expense_count, "currency": inp.currency, "units": inp.preferred_units,
        "top_categories": [_spent_dict(c) for c in status.top_categories],
    }


def period_end_utc(status: BudgetStatus, timezone: str) -> datetime:
    """The instant the period ends: local midnight after its last day, in UTC."""
    return _midnight_after(status.period.end, timezone)


@functools.lru_cache(maxsize=4096)
def _midnight_after(day: date, timezone: str) -> datetime:
    tz = zone(timezone) or UTC
    return datetime.combine(day + DAY, time(), tzinfo=tz).astimezone(UTC)


def text(inp: BudgetInput, status: BudgetStatus, a: Assessment, kind: Kind) -> pamd.AlertText:
    """Title, body, facts and actions of a budget alert."""
    title, body = render(inp, status, a, kind)
    actions = [{"action": "view_budget", "label": "Review budget"},
               {"action": "view_expenses", "label": "See expenses"}]
    return pamd.AlertText(title=title, body=body, facts=facts(inp, status, a), actions=actions)


def build_alert(inp: BudgetInput, status: BudgetStatus, a: Assessment, priority: pamd.Priority,
                kind: Kind, *, defer: bool = False) -> pamd.Alert:
    """The alert for one budget in a band. Its subject is the budget and period start: a new period is new.
    ``defer``: the text is made only if the pipeline needs it (:meth:`pamd.Alert.deferred`)."""
    alert = pamd.Alert.deferred(
        functools.partial(text, inp, status, a, kind), user_id=inp.user_id, kind=kind, priority=priority,
        subject=f"{status.budget.id}:{status.period.start.isoformat()}",
        expires_at=period_end_utc(status, inp.timezone))
    return alert if defer else alert.complete()


def evaluate(inp: BudgetInput, now: datetime, cfg: BudgetConfig,
             explain: Callable[..., None] | None = None, *, defer: bool = False) -> list[pamd.Alert]:
    """The alerts for one user's budgets at ``now`` (pure). ``explain(user_id, step, **data)`` sees each step;
    ``defer``: alerts whose text is made only if the pipeline needs it (most repeats are in cooldown)."""
    if not inp.budgets:
        if explain is not None:
            reason = "no active budget" if inp.inactive else "no budgets"
            explain(inp.user_id, "budgets", outcome="no alert", reason=reason, inactive=list(inp.inactive))
        return []
    today, fraction = _local_day(now, inp.timezone)
    alerts = []
    for status in inp.budgets:
        a = _assess(status, today, fraction, cfg)
        band = classify(a, cfg)
        if band is not None:
            alerts.append(build_alert(inp, status, a, *band, defer=defer))
        if explain is not None:
            outcome: dict[str, Any] = (
                {"outcome": band[1], "priority": band[0].value} if band is not None
                else {"outcome": "no alert", "reason": (
                    f"below {cfg.high_pct:g}% and not projected to reach {cfg.pace_pct:g}%" if a.projected_pct
                    is not None else f"below {cfg.high_pct:g}%, too early in the period to project")}
            )
            explain(inp.user_id, f"budget {status.budget.id}", **facts(inp, status, a), **outcome)
    return alerts


@functools.lru_cache(maxsize=1024)  # a tick evaluates every user at one ``now``, in few time zones
def _local_day(now: datetime, timezone: str) -> tuple[int, float]:
    """The user's local date (ordinal) and wall-clock fraction of the day (whole seconds) at ``now``: the stores'
    candidates compute them with the same :func:`~pamd.store.records_budget.zone_day`."""
    today, fraction, _ = zone_day(now, timezone)
    return today.toordinal(), fraction


class BudgetMonitor(pamd.Monitor):
    """Warns when a budget's current period reaches 80 % (high), 95 % (urgent), 100 % (over) or is on pace to
    end above 110 % (medium)."""

    name = "budget"
    description = "Budgets: spend in the current period (user's timezone) against thresholds and pace"
    schedule = "0 * * * *"
    cooldown = 3 * 24 * 3600.0  # a budget state lasts days: remind every 3 days at most, escalations at once
    config_type = BudgetConfig

    async def run(self, ctx: pamd.MonitorContext) -> AsyncIterator[pamd.Alert]:
        """Yield an alert for every budget in a band."""
        store = ctx.store
        if not isinstance(store, BudgetInputSource):
            raise TypeError(f"the budget monitor needs a store with iter_budget_inputs(), got {type(store).__name__}")
        cfg = ctx.config if isinstance(ctx.config, BudgetConfig) else BudgetConfig()
        now = ctx.now()
        explain = ctx.explain if ctx.explaining else None
        if ctx.user_id is None and not ctx.explaining and isinstance(store, BudgetCandidateSource):
            # Only users with a budget that could be in a band (the store filters in SQL; a superset).
            bands = BudgetBands(high_pct=cfg.high_pct, pace_pct=cfg.pace_pct,
                                pace_min_elapsed_days=cfg.pace_min_elapsed_days,
                                pace_min_elapsed_pct=cfg.pace_min_elapsed_pct)
            batches = store.iter_budget_candidates(bands, now, cfg.batch_size, top_categories=cfg.top_categories)
        else:
            batches = store.iter_budget_inputs(now, cfg.batch_size, ctx.user_id, top_categories=cfg.top_categories)
        async with aclosing(batches) as stream:
            async for batch in stream:
                for inp in batch:
                    for alert in evaluate(inp, now, cfg, explain, defer=True):
                        yield alert


@pamd.hookimpl
def register_monitors(register: Callable[[pamd.Monitor], None]) -> None:
    """Register the budget monitor."""
    register(BudgetMonitor())
