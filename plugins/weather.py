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

import functools
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from datetime import UTC, date, datetime, time, tzinfo
from typing import Any

import pamd
from pamd import units
from pamd.providers import ProviderError
from pamd.providers import weather as om
from pamd.providers.weather import Cell, DailyForecast, OpenMeteoWeather
from pamd.store.records import zone
from pamd.store.records_weather import PlannedTrip, WeatherCandidateSource, WeatherInput, WeatherInputSource

from .weather_rules import (
    DAY,
    DayVerdict,
    JudgedForecast,
    TripOutcome,
    WeatherConfig,
    assess,
    evaluate_trip,
)
from .weather_text import day_facts, fmt_day, render, window_facts

__all__ = ["DayVerdict", "WeatherConfig", "WeatherMonitor", "assess", "build_alert", "evaluate_trip", "fmt_day",
           "render"]

def build_alert(inp: WeatherInput, trip: PlannedTrip, forecast: DailyForecast, outcome: TripOutcome,
                now: datetime, cfg: WeatherConfig, *, defer: bool = False) -> pamd.Alert:
    """The ``weather_severe`` or ``weather_window`` alert for a trip: rule text, SI numbers in ``facts``.
    ``defer``: the text is made only if the pipeline needs it (:meth:`pamd.Alert.deferred`)."""
    assert outcome.priority is not None
    end_of_day = datetime.combine(trip.start_date + DAY, time(0), tzinfo=_zone(inp.profile.timezone))
    alert = pamd.Alert.deferred(
        functools.partial(text, inp, trip, forecast, outcome, cfg), user_id=inp.user_id,
        kind="weather_severe" if outcome.rule == "severe" else "weather_window", priority=outcome.priority,
        subject=f"trip:{trip.id}:{trip.start_date.isoformat()}", expires_at=min(now + DAY, end_of_day))
    return alert if defer else alert.complete()


def text(inp: WeatherInput, trip: PlannedTrip, forecast: DailyForecast, outcome: TripOutcome,
         cfg: WeatherConfig) -> pamd.AlertText:
    """Title, body, facts and actions of a trip's weather alert."""
    assert outcome.priority is not None and outcome.planned is not None and outcome.planned_verdict is not None
    title, body = render(trip, outcome, units.is_imperial(inp.profile.preferred_units), cfg)
    best = outcome.best
    facts: dict[str, Any] = {
        "trip_id": trip.id, "origin": trip.origin, "destination": trip.destination,
        "dest_lat": trip.dest_lat, "dest_lon": trip.dest_lon, "forecast_lat": forecast.lat,
        "forecast_lon": forecast.lon, "forecast_timezone": forecast.timezone,
        "planned_date": trip.start_date.isoformat(), "flex_days": trip.flex_days,
        "range_first": outcome.range_first.isoformat() if outcome.range_first else None,
        "range_last": outcome.range_last.isoformat() if outcome.range_last else None,
        "planned_day": day_facts(outcome.planned), "severe": list(outcome.planned_verdict.severe),
        "not_good": list(outcome.planned_verdict.not_good),
        "suggested_date": best.isoformat() if best else None,
        "shift_days": (best - trip.start_date).days if best else None,
        "window": window_facts(outcome.window), "alternative_day": day_facts(outcome.alternative),
        "following_day": day_facts(outcome.next_not_good) if outcome.rule == "window" else None,
        "min_window_days": cfg.min_window_days,  # the other thresholds are config, shown by `pamd explain`
        "units": inp.profile.preferred_units,
    }
    actions = [{"action": "view_trip", "label": "View trip"}]
    if outcome.best is not None:
        actions.insert(0, {"action": "reschedule_trip", "label": f"Leave {fmt_day(outcome.best)}"})
    return pamd.AlertText(title=title, body=body, facts=facts, actions=actions)


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
        if ctx.user_id is None and not ctx.explaining and isinstance(store, WeatherCandidateSource):
            inputs = store.iter_weather_candidates(first, last, cfg.batch_size)  # only users with a trip in range
        else:
            inputs = store.iter_weather_inputs(first, last, cfg.batch_size, ctx.user_id)
        async with aclosing(inputs) as batches:
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
                        yield build_alert(inp, trip, found.forecast, outcome, now, cfg, defer=True)

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


def _zone(name: str) -> tzinfo:
    return zone(name) or UTC  # an unknown zone: the store has counted the bad profile already


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
