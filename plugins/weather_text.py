"""The weather monitor's alert text, in the user's units: days, conditions, windows, the suggestion."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

import msgspec

import pamd
from pamd import units
from pamd.providers import weather as om
from pamd.providers.weather import DailyWeather
from pamd.store.records_weather import PlannedTrip

from .weather_rules import _MONTHS, _WEEKDAYS, DayVerdict, TripOutcome, WeatherConfig, assess


def fmt_day(when: date) -> str:
    """``"Tue 17 Mar"`` (English, whatever the locale)."""
    return f"{_WEEKDAYS[when.weekday()]} {when.day} {_MONTHS[when.month - 1]}"


def _amount(mm: float, imp: bool) -> str:
    """``"9 mm"``, ``"0.4 mm"``, ``"0.4 in"``, ``"under 0.1 in"`` (never a misleading ``"0 mm"``)."""
    if imp and 0 < mm / 25.4 < 0.1:
        return "under 0.1 in"
    if not imp and 0 < mm < 1:
        return f"{mm:.1f} mm"
    return units.precipitation(mm, imp)


def _temps(days: Sequence[DailyWeather], imp: bool) -> str | None:
    lows = [d.tmin_c for d in days if d.tmin_c is not None]
    highs = [d.tmax_c for d in days if d.tmax_c is not None]
    if not lows or not highs:
        return None
    return f"{units.temperature(min(lows), imp)} to {units.temperature(max(highs), imp)}"


def describe_day(day: DailyWeather, imp: bool, condition: bool = True) -> str:
    """``"moderate rain (9 mm, 80% chance), wind to 28 km/h, gusts to 45 km/h, 6°C to 13°C"``; values the
    forecast lacks are left out."""
    parts = [day.condition] if condition else []
    mm, chance = day.precipitation_mm, day.precipitation_probability_pct
    if mm is not None and mm > 0:
        odds = f"{chance:.0f}% chance" if chance is not None else ""
        if parts:
            parts.append(f"{parts.pop()} ({_amount(mm, imp)}{', ' + odds if odds else ''})")
        else:
            parts.append(f"{_amount(mm, imp)} of precipitation" + (f" ({odds})" if odds else ""))
    elif mm is not None:
        parts.append("dry")
    if day.wind_max_kmh is not None:
        parts.append(f"wind to {units.speed(day.wind_max_kmh, imp)}")
    if day.gust_max_kmh is not None:
        parts.append(f"gusts to {units.speed(day.gust_max_kmh, imp)}")
    temps = _temps([day], imp)
    return ", ".join([*parts, temps] if temps else parts)


def describe_window(days: Sequence[DailyWeather], imp: bool) -> str:
    """``"clear sky to partly cloudy, dry, gusts at most 28 km/h, 9°C to 24°C"`` (every day of a window is good,
    so every value used is known)."""
    codes = sorted({d.code for d in days if d.code is not None})
    sky = om.describe_code(codes[0]) + (f" to {om.describe_code(codes[-1])}" if len(codes) > 1 else " every day")
    wettest = max(d.precipitation_mm or 0.0 for d in days)
    gusts = max(d.gust_max_kmh or 0.0 for d in days)
    amount = _amount(wettest, imp)
    most = amount if amount.startswith("under") else f"at most {amount}"
    rain = "dry" if wettest == 0 else f"{most} of precipitation a day"
    parts = [sky, rain, f"gusts at most {units.speed(gusts, imp)}"]
    temps = _temps(days, imp)
    return ", ".join([*parts, temps] if temps else parts)


def _shift(best: date, planned: date) -> str:
    days = (best - planned).days
    return f"{units.plural(abs(days), 'day')} {'later' if days > 0 else 'earlier'}"


def _severity(day: DailyWeather, verdict: DayVerdict, imp: bool) -> str:
    found = []
    if "code" in verdict.severe:
        found.append(om.describe_code(day.code))
    if "gust" in verdict.severe:
        found.append(f"gusts to {units.speed(day.gust_max_kmh or 0.0, imp)}")
    text = " with ".join(found)
    return text[:1].upper() + text[1:]


def render(trip: PlannedTrip, outcome: TripOutcome, imp: bool, cfg: WeatherConfig) -> tuple[str, str]:
    """Rule text for a trip's alert, in the user's units: ``(title, body)``."""
    planned = outcome.planned
    assert planned is not None and outcome.planned_verdict is not None
    dest = trip.destination or f"{trip.dest_lat:.2f}, {trip.dest_lon:.2f}"
    flex = f"within your {units.plural(trip.flex_days, 'flexible day')} either side"
    better = ""
    if outcome.best is not None:
        better = (f"Leaving {fmt_day(outcome.best)} instead ({_shift(outcome.best, trip.start_date)}, {flex}) "
                  f"starts {len(outcome.window)} good days in a row at {dest}: {describe_window(outcome.window, imp)}.")
    if outcome.rule == "severe":
        title = f"Severe weather for your departure to {dest} on {fmt_day(trip.start_date)}"
        body = (f"{_severity(planned, outcome.planned_verdict, imp)} forecast at {dest} on "
                f"{fmt_day(trip.start_date)}, your planned departure day: "
                f"{describe_day(planned, imp, condition=False)}.")
        if better:
            body += " " + better
        elif outcome.alternative is not None:
            alt = outcome.alternative
            body += (f" {fmt_day(alt.date)} ({_shift(alt.date, trip.start_date)}) has no severe weather in the "
                     f"forecast: {describe_day(alt, imp)}.")
        elif trip.flex_days == 0:
            body += " The trip has no flexible days set."
        elif outcome.range_first is not None and outcome.range_last is not None:
            body += (f" No other day from {fmt_day(outcome.range_first)} to {fmt_day(outcome.range_last)} "
                     f"({flex}, in the forecast) is free of severe weather.")
        return title, body
    assert outcome.best is not None
    if outcome.priority == pamd.Priority.MEDIUM:
        title = f"Better travel weather to {dest} if you leave {fmt_day(outcome.best)}"
        planned_text = f"The forecast there that day: {describe_day(planned, imp)}."
    else:
        title = f"Weather window for {dest}: consider leaving {fmt_day(outcome.best)}"
        after = outcome.next_not_good
        if not outcome.planned_verdict.good:
            planned_text = "The forecast for that day is incomplete."
        elif after is None:
            planned_text = "That day looks fine, but the forecast ends soon after it."
        elif any(not reason.startswith("missing_") for reason in assess(after, cfg).not_good):
            planned_text = (f"That day looks fine ({planned.condition}), but {fmt_day(after.date)} brings "
                            f"{describe_day(after, imp)}.")
        else:
            planned_text = f"That day looks fine, but the forecast for {fmt_day(after.date)} is incomplete."
    why = (f"Of the days in your flexible range that start at least {units.plural(cfg.min_window_days, 'good day')}, "
           "it is the closest to your plan.")
    body = f"Your trip to {dest} is planned to leave {fmt_day(trip.start_date)}. {planned_text} {better} {why}"
    return title, body


def day_facts(day: DailyWeather | None) -> dict[str, Any] | None:
    if day is None:
        return None
    facts: dict[str, Any] = msgspec.to_builtins(day)
    facts["condition"] = day.condition
    return facts


def window_facts(days: Sequence[DailyWeather]) -> dict[str, Any] | None:
    """The numbers :func:`describe_window` uses (every day of a window is good, so they are known)."""
    if not days:
        return None
    codes = [d.code or 0 for d in days]
    return {
        "first": days[0].date.isoformat(), "last": days[-1].date.isoformat(), "days": len(days),
        "codes": sorted(set(codes)), "max_precipitation_mm": max(d.precipitation_mm or 0.0 for d in days),
        "max_gust_kmh": max(d.gust_max_kmh or 0.0 for d in days),
        "min_tmin_c": min((d.tmin_c for d in days if d.tmin_c is not None), default=None),
        "max_tmax_c": max((d.tmax_c for d in days if d.tmax_c is not None), default=None),
    }
