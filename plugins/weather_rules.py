"""The weather monitor's rules: what makes a day good or severe, and the verdict on a trip. Pure; no I/O."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any, Literal

import msgspec

import pamd
from pamd.providers import weather as om
from pamd.providers.weather import DailyForecast, DailyWeather
from pamd.store.records_weather import PlannedTrip

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

    def verdict(self, when: date) -> DayVerdict | None:
        """The verdict of the local date ``when``, or ``None`` when it is outside the forecast."""
        first = self.forecast.first
        index = (when - first).days if first is not None else -1
        return self.verdicts[index] if 0 <= index < len(self.verdicts) else None

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
    planned, verdict = forecast.day(trip.start_date), judged.verdict(trip.start_date)  # judged once per forecast
    if planned is None or verdict is None:
        return TripOutcome(rule="none", reason="planned_day_outside_forecast")
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
