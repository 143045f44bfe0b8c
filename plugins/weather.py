"""The built-in weather monitor (DESIGN.md section 7): when to leave on a planned trip.

For each planned trip departing within ``horizon_days`` (in the user's timezone) whose destination has
coordinates, the monitor reads Open-Meteo's daily forecast for the destination's 0.1° cell and applies two rules:

1. **Departure window** (``weather_window``, low or medium): a departure day inside the trip's flexible range
   (``start_date`` +- ``flex_days``, not before today, within the forecast) that starts at least
   ``min_window_days`` consecutive good days. The window is the first days of the trip, so it may run past the end
   of the flexible range. The suggestion is the qualifying day closest to the planned one (ties: the longer run of
   good days, then the earlier day). Medium when the planned day itself is not a good day, low when it is (or its
   forecast is incomplete) but too few good days follow it. When the planned day already starts such a window,
   nothing is emitted: the plan is fine and saying so would be noise (``pamd explain`` shows it).
2. **Severe weather on the planned departure day** (``weather_severe``, high): a WMO code in ``severe_codes``
   (thunderstorm, heavy snow or rain, freezing rain...) or gusts of ``severe_gust_kmh`` or more. The text names the
   condition and the day, and the best departure window in the flexible range if there is one, else the closest
   day without severe weather, else says there is none. A trip gets at most one alert: rule 2 wins.

A day is *good* when its code is in ``good_codes``, precipitation, wind and gusts are known and within the limits,
and the precipitation probability (when known) is too. A day with missing values is never called good.

Subjects are ``trip:<id>:<planned date>``, so moving the trip starts a new condition. Alerts expire at the end of
the planned departure day (user's timezone) or after 24 h, whichever is first. Trips without coordinates are
explained and skipped; a provider failure marks the tick degraded and the other trips are still evaluated.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from datetime import date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

import pamd
from pamd import units
from pamd.providers import ProviderError
from pamd.providers import weather as om
from pamd.providers.weather import Cell, DailyForecast, DailyWeather, OpenMeteoWeather
from pamd.store.records_weather import PlannedTrip, WeatherInput, WeatherInputSource

DAY = timedelta(days=1)
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class WeatherConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[monitors.weather]`` settings. Units: mm, %, km/h; codes are WMO weather codes."""

    horizon_days: int = 14  # trips departing today .. today + horizon_days - 1 (user's timezone)
    min_window_days: int = 3
    good_codes: list[int] = msgspec.field(default_factory=lambda: [0, 1, 2, 3])  # clear .. overcast
    good_max_precipitation_mm: float = 1.0
    good_max_precipitation_probability_pct: float = 60.0
    good_max_wind_kmh: float = 40.0
    good_max_gust_kmh: float = 60.0
    # dense freezing drizzle, heavy rain, freezing rain, heavy snow, violent showers, heavy snow showers, storms
    severe_codes: list[int] = msgspec.field(default_factory=lambda: [57, 65, 66, 67, 75, 82, 86, 95, 96, 99])
    severe_gust_kmh: float = 75.0
    batch_size: int = 500

    def __post_init__(self) -> None:
        if not 1 <= self.horizon_days <= om.MAX_FORECAST_DAYS:
            raise ValueError(f"horizon_days must be 1..{om.MAX_FORECAST_DAYS} (the forecast's length)")
        if not 1 <= self.min_window_days <= om.MAX_FORECAST_DAYS:
            raise ValueError(f"min_window_days must be 1..{om.MAX_FORECAST_DAYS}")
        if any(not 0 <= code <= 99 for code in [*self.good_codes, *self.severe_codes]):
            raise ValueError("good_codes and severe_codes are WMO codes 0..99")
        if set(self.good_codes) & set(self.severe_codes):
            raise ValueError("a code cannot be both good and severe")
        limits = (self.good_max_precipitation_mm, self.good_max_precipitation_probability_pct,
                  self.good_max_wind_kmh, self.good_max_gust_kmh)
        if min(limits) < 0 or self.good_max_precipitation_probability_pct > 100:
            raise ValueError("good_max_* limits must be >= 0 (probability at most 100)")
        if self.severe_gust_kmh <= self.good_max_gust_kmh:
            raise ValueError("severe_gust_kmh must be above good_max_gust_kmh")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")


class DayVerdict(msgspec.Struct, frozen=True):
    """How one forecast day is judged: ``good``, the ``severe`` reasons (``code``, ``gust``) and why it is not
    good (``code``, ``precipitation``, ``probability``, ``wind``, ``gust`` or ``missing_<value>``)."""

    good: bool
    severe: tuple[str, ...] = ()
    not_good: tuple[str, ...] = ()


def assess(day: DailyWeather, cfg: WeatherConfig) -> DayVerdict:
    """Judge one forecast day against the thresholds."""
    severe = []
    if day.code is not None and day.code in cfg.severe_codes:
        severe.append("code")
    if day.gust_max_kmh is not None and day.gust_max_kmh >= cfg.severe_gust_kmh:
        severe.append("gust")
    checks = (
        ("code", day.code, lambda v: v in cfg.good_codes),
        ("precipitation", day.precipitation_mm, lambda v: v <= cfg.good_max_precipitation_mm),
        ("wind", day.wind_max_kmh, lambda v: v <= cfg.good_max_wind_kmh),
        ("gust", day.gust_max_kmh, lambda v: v <= cfg.good_max_gust_kmh),
    )
    not_good = [name if value is not None else f"missing_{name}" for name, value, ok in checks
                if value is None or not ok(value)]
    probability = day.precipitation_probability_pct
    if probability is not None and probability > cfg.good_max_precipitation_probability_pct:
        not_good.append("probability")
    return DayVerdict(good=not not_good, severe=tuple(severe), not_good=tuple(not_good))


class TripOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What the rules conclude for one trip. ``rule`` is ``severe``, ``window`` or ``none`` (then ``reason`` says
    why: ``planned_day_outside_forecast``, ``planned_day_starts_window`` or ``no_window``)."""

    rule: Literal["severe", "window", "none"]
    reason: str
    priority: pamd.Priority | None = None
    planned: DailyWeather | None = None
    planned_verdict: DayVerdict | None = None
    planned_run: int = 0
    range_first: date | None = None
    range_last: date | None = None
    best: date | None = None
    window: tuple[DailyWeather, ...] = ()
    alternative: DailyWeather | None = None
    next_not_good: DailyWeather | None = None


class JudgedForecast:
    """A forecast with every day judged once: a forecast is shared by every trip to its cell."""

    __slots__ = ("forecast", "runs", "verdicts")

    def __init__(self, forecast: DailyForecast, cfg: WeatherConfig) -> None:
        self.forecast = forecast
        self.verdicts = tuple(assess(day, cfg) for day in forecast.days)
        runs = [0] * (len(self.verdicts) + 1)
        for i in range(len(self.verdicts) - 1, -1, -1):
            runs[i] = runs[i + 1] + 1 if self.verdicts[i].good else 0
        self.runs = runs

    def good_run(self, start: date) -> tuple[DailyWeather, ...]:
        """The consecutive good days from ``start`` on (empty if ``start`` is not good or not in the forecast)."""
        first = self.forecast.first
        index = (start - first).days if first is not None else -1
        if not 0 <= index < len(self.verdicts):
            return ()
        return self.forecast.days[index : index + self.runs[index]]


def evaluate_trip(trip: PlannedTrip, forecast: DailyForecast | JudgedForecast, today: date,
                  cfg: WeatherConfig) -> TripOutcome:
    """Apply the two rules to ``trip`` (``today`` is the user's local date). Pure."""
    judged = forecast if isinstance(forecast, JudgedForecast) else JudgedForecast(forecast, cfg)
    forecast = judged.forecast
    planned = forecast.day(trip.start_date)
    if planned is None:
        return TripOutcome(rule="none", reason="planned_day_outside_forecast")
    verdict = assess(planned, cfg)
    first = max(trip.start_date - trip.flex_days * DAY, today, forecast.first or today)
    last = min(trip.start_date + trip.flex_days * DAY, forecast.last or trip.start_date)
    planned_run = judged.good_run(trip.start_date)
    candidates = [first + i * DAY for i in range((last - first).days + 1)]
    runs = {d: judged.good_run(d) for d in candidates}
    qualifying = [d for d, run in runs.items() if len(run) >= cfg.min_window_days]
    best = min(qualifying, key=lambda d: (abs((d - trip.start_date).days), -len(runs[d]), d), default=None)
    if best == trip.start_date:
        best = None  # the plan is already the best
    common: dict[str, Any] = {
        "planned": planned, "planned_verdict": verdict, "planned_run": len(planned_run), "range_first": first,
        "range_last": last, "best": best, "window": runs[best] if best is not None else (),
    }
    if verdict.severe:
        alternative = None
        if best is None:
            calm = [forecast.day(d) for d in candidates if d != trip.start_date]
            calm_days = [d for d in calm if d is not None and d.code is not None and d.gust_max_kmh is not None
                         and not assess(d, cfg).severe]
            alternative = min(calm_days, key=lambda d: (abs((d.date - trip.start_date).days), d.date), default=None)
        return TripOutcome(rule="severe", reason="severe_on_planned_day", priority=pamd.Priority.HIGH,
                           alternative=alternative, **common)
    if len(planned_run) >= cfg.min_window_days:
        return TripOutcome(rule="none", reason="planned_day_starts_window", **common)
    if best is None:
        return TripOutcome(rule="none", reason="no_window", **common)
    known_bad = [r for r in verdict.not_good if not r.startswith("missing_")]
    next_bad = forecast.day(trip.start_date + len(planned_run) * DAY) if verdict.good else None
    priority = pamd.Priority.MEDIUM if known_bad else pamd.Priority.LOW
    return TripOutcome(rule="window", reason="better_departure_day", priority=priority, next_not_good=next_bad,
                       **common)


# -- text ---------------------------------------------------------------------------------------------------


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


def _day_facts(day: DailyWeather | None) -> dict[str, Any] | None:
    if day is None:
        return None
    facts: dict[str, Any] = msgspec.to_builtins(day)
    facts["condition"] = day.condition
    return facts


def _window_facts(days: Sequence[DailyWeather]) -> dict[str, Any] | None:
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


def build_alert(inp: WeatherInput, trip: PlannedTrip, forecast: DailyForecast, outcome: TripOutcome,
                now: datetime, cfg: WeatherConfig) -> pamd.Alert:
    """The ``weather_severe`` or ``weather_window`` alert for a trip: rule text, SI numbers in ``facts``."""
    assert outcome.priority is not None and outcome.planned is not None and outcome.planned_verdict is not None
    tz = _zone(inp.profile.timezone)
    title, body = render(trip, outcome, units.is_imperial(inp.profile.preferred_units), cfg)
    best = outcome.best
    facts: dict[str, Any] = {
        "trip_id": trip.id, "origin": trip.origin, "destination": trip.destination,
        "dest_lat": trip.dest_lat, "dest_lon": trip.dest_lon, "forecast_lat": forecast.lat,
        "forecast_lon": forecast.lon, "forecast_timezone": forecast.timezone,
        "planned_date": trip.start_date.isoformat(), "flex_days": trip.flex_days,
        "range_first": outcome.range_first.isoformat() if outcome.range_first else None,
        "range_last": outcome.range_last.isoformat() if outcome.range_last else None,
        "planned_day": _day_facts(outcome.planned), "severe": list(outcome.planned_verdict.severe),
        "not_good": list(outcome.planned_verdict.not_good),
        "suggested_date": best.isoformat() if best else None,
        "shift_days": (best - trip.start_date).days if best else None,
        "window": _window_facts(outcome.window), "alternative_day": _day_facts(outcome.alternative),
        "following_day": _day_facts(outcome.next_not_good) if outcome.rule == "window" else None,
        "min_window_days": cfg.min_window_days,  # the other thresholds are config, shown by `pamd explain`
    }
    actions = [{"action": "view_trip", "label": "View trip"}]
    if outcome.best is not None:
        actions.insert(0, {"action": "reschedule_trip", "label": f"Leave {fmt_day(outcome.best)}"})
    end_of_day = datetime.combine(trip.start_date + DAY, time(0), tzinfo=tz)
    return pamd.Alert(
        user_id=inp.user_id, kind="weather_severe" if outcome.rule == "severe" else "weather_window",
        priority=outcome.priority, title=title, body=body, facts=facts, actions=actions,
        subject=f"trip:{trip.id}:{trip.start_date.isoformat()}", expires_at=min(now + DAY, end_of_day),
    )


# -- the monitor --------------------------------------------------------------------------------------------


class WeatherMonitor(pamd.Monitor):
    """Suggests the best departure day for planned trips and warns of severe weather on the planned day."""

    name = "weather"
    description = "Trip weather: best departure day in the flexible range, severe weather on the departure day"
    schedule = "*/30 * * * *"
    timeout = 300.0
    config_type = WeatherConfig

    async def run(self, ctx: pamd.MonitorContext) -> AsyncIterator[pamd.Alert]:
        """Yield ``weather_window`` and ``weather_severe`` alerts for planned trips (see the module docstring)."""
        store = ctx.store
        if not isinstance(store, WeatherInputSource):
            raise TypeError(f"the weather monitor needs a store with iter_weather_inputs(), got {type(store).__name__}")
        cfg = ctx.config if isinstance(ctx.config, WeatherConfig) else WeatherConfig()
        now = ctx.now()
        utc_today = now.date()
        # Every timezone's today is within a day of UTC's; each user's own range is applied below.
        first, last = utc_today - DAY, utc_today + (cfg.horizon_days + 1) * DAY
        provider: OpenMeteoWeather | str | None = None
        async with aclosing(store.iter_weather_inputs(first, last, cfg.batch_size, ctx.user_id)) as batches:
            async for batch in batches:
                todo = [(inp, trip, today) for inp in batch for today in [_today(inp, now, utc_today)]
                        for trip in self._trips_to_check(ctx, inp, today, cfg)]
                if not todo:
                    continue
                if provider is None:
                    provider = self._provider(ctx)
                forecasts = await self._forecasts(ctx, provider, {_cell(trip) for _, trip, _ in todo})
                judged = {cell: JudgedForecast(f, cfg) for cell, f in forecasts.items() if not isinstance(f, str)}
                for inp, trip, today in todo:
                    found = judged.get(_cell(trip))
                    if found is None:
                        ctx.explain(inp.user_id, "no_forecast", trip_id=trip.id, problem=forecasts[_cell(trip)])
                        continue
                    outcome = evaluate_trip(trip, found, today, cfg)
                    ctx.explain(inp.user_id, "outcome", trip_id=trip.id, today=today, outcome=outcome)
                    if outcome.priority is not None:
                        yield build_alert(inp, trip, found.forecast, outcome, now, cfg)

    @staticmethod
    def _trips_to_check(ctx: pamd.MonitorContext, inp: WeatherInput, today: date,
                        cfg: WeatherConfig) -> list[PlannedTrip]:
        if not inp.trips:
            ctx.explain(inp.user_id, "trips", reason="no planned trip departs within the horizon")
            return []
        horizon_last = today + (cfg.horizon_days - 1) * DAY
        soon = [t for t in inp.trips if today <= t.start_date <= horizon_last]
        located = [t for t in soon if t.has_coordinates]
        ctx.explain(inp.user_id, "trips", today=today, horizon_last=horizon_last,
                    planned_in_horizon=[t.id for t in soon],
                    without_coordinates=[t.id for t in soon if not t.has_coordinates],
                    reason=None if soon else "no planned trip departs within the horizon")
        return located

    @staticmethod
    def _provider(ctx: pamd.MonitorContext) -> OpenMeteoWeather | str:
        if ctx.providers is None:
            problem = "no providers configured"
        else:
            try:
                return ctx.providers.weather
            except ProviderError as exc:
                problem = exc.problem
        ctx.degraded(f"weather provider: {problem}")
        return problem

    @staticmethod
    async def _forecasts(ctx: pamd.MonitorContext, provider: OpenMeteoWeather | str,
                         cells: set[Cell]) -> dict[Cell, DailyForecast | str]:
        """The forecast of each cell, or the provider's problem (the tick is then marked degraded)."""
        if isinstance(provider, str):
            return dict.fromkeys(cells, provider)

        async def one(cell: Cell) -> DailyForecast | str:
            try:
                return await provider.daily_forecast(*om.cell_centre(cell), days=om.MAX_FORECAST_DAYS)
            except ProviderError as exc:
                ctx.degraded(f"weather provider: {exc.problem}")
                return exc.problem

        ordered = sorted(cells)
        return dict(zip(ordered, await ctx.map_bounded(one, ordered), strict=True))


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return ZoneInfo("UTC")  # the store has counted the bad profile already


def _today(inp: WeatherInput, now: datetime, utc_today: date) -> date:
    """The user's local date (only looked up for users with trips: the others need none)."""
    return now.astimezone(_zone(inp.profile.timezone)).date() if inp.trips else utc_today


def _cell(trip: PlannedTrip) -> Cell:
    assert trip.dest_lat is not None and trip.dest_lon is not None
    return om.cell_of(trip.dest_lat, trip.dest_lon)


@pamd.hookimpl
def register_monitors(register: Callable[[pamd.Monitor], None]) -> None:
    """Register the weather monitor."""
    register(WeatherMonitor())
