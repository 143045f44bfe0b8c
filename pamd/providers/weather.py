"""Daily weather forecasts from Open-Meteo (https://open-meteo.com/en/docs), ``GET /v1/forecast``.

One :class:`OpenMeteoWeather` is built per tick (see :class:`pamd.providers.Providers`), so its cache lasts one
run. Coordinates are snapped to a 0.1° cell (about 11 km) and the cell centre is requested: every trip whose
destination falls in the same cell shares one request per run, and concurrent asks for one cell wait for a single
request. A failed cell is remembered for the run too (its error is raised again without a new request), and after
``breaker`` consecutive failed requests the provider stops calling out for the rest of the run, so a dead API costs
a few timeouts, not one per destination.

Replies are parsed defensively: Open-Meteo sends ``null`` inside its arrays where a model has no value (kept as
``None``), and errors as HTTP 400 ``{"error": true, "reason": "..."}``. Anything that does not have the documented
shape raises :class:`~pamd.providers.ProviderError`; nothing is guessed.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from datetime import date
from itertools import pairwise
from typing import Any

import anyio
import msgspec

from pamd.providers.http import JsonHttp, ProviderError

FORECAST_PATH = "/v1/forecast"
MAX_FORECAST_DAYS = 16
DAILY_VARIABLES = (
    "weather_code", "temperature_2m_max", "temperature_2m_min", "precipitation_sum",
    "precipitation_probability_max", "wind_speed_10m_max", "wind_gusts_10m_max",
)
# The units pamd asks for (Open-Meteo's defaults plus wind_speed_unit=kmh); a reply in other units is refused.
EXPECTED_UNITS = {
    "temperature_2m_max": "°C", "temperature_2m_min": "°C", "precipitation_sum": "mm",
    "precipitation_probability_max": "%", "wind_speed_10m_max": "km/h", "wind_gusts_10m_max": "km/h",
}

WMO_CONDITIONS: dict[int, str] = {
    0: "clear sky", 1: "mainly clear", 2: "partly cloudy", 3: "overcast", 45: "fog", 48: "freezing fog",
    51: "light drizzle", 53: "drizzle", 55: "dense drizzle", 56: "light freezing drizzle",
    57: "dense freezing drizzle", 61: "light rain", 63: "moderate rain", 65: "heavy rain",
    66: "light freezing rain", 67: "heavy freezing rain", 71: "light snow", 73: "moderate snow", 75: "heavy snow",
    77: "snow grains", 80: "light rain showers", 81: "rain showers", 82: "violent rain showers",
    85: "light snow showers", 86: "heavy snow showers", 95: "thunderstorm", 96: "thunderstorm with hail",
    99: "thunderstorm with heavy hail",
}
"""WMO weather interpretation codes (the ``weather_code`` variable) as Open-Meteo documents them."""


def describe_code(code: int | None) -> str:
    """A short English description of a WMO weather code (``"thunderstorm"``)."""
    if code is None:
        return "unknown conditions"
    return WMO_CONDITIONS.get(code, f"weather code {code}")


Cell = tuple[int, int]
"""A 0.1° cell: latitude and longitude in tenths of a degree (``(386, -1095)`` is 38.6, -109.5)."""


def cell_of(lat: float, lon: float) -> Cell:
    """The 0.1° cell of a point: coordinates rounded half away from zero to one decimal; longitude 180 is -180."""
    if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValueError(f"not a position: {lat!r}, {lon!r}")
    tenths_lat = int(math.copysign(math.floor(abs(lat) * 10 + 0.5), lat))
    tenths_lon = int(math.copysign(math.floor(abs(lon) * 10 + 0.5), lon))
    if tenths_lon == 1800:
        tenths_lon = -1800
    return tenths_lat, tenths_lon


def cell_centre(cell: Cell) -> tuple[float, float]:
    """The coordinates requested for ``cell``."""
    return cell[0] / 10, cell[1] / 10


class DailyWeather(msgspec.Struct, frozen=True, kw_only=True):
    """One day of a forecast, in the destination's local calendar. Any value may be ``None`` (no data).

    Units: °C, mm, %, km/h. ``code`` is a WMO weather code (see :data:`WMO_CONDITIONS`).
    """

    date: date
    code: int | None = None
    tmin_c: float | None = None
    tmax_c: float | None = None
    precipitation_mm: float | None = None
    precipitation_probability_pct: float | None = None
    wind_max_kmh: float | None = None
    gust_max_kmh: float | None = None

    @property
    def condition(self) -> str:
        """The WMO code described in words."""
        return describe_code(self.code)


class DailyForecast(msgspec.Struct, frozen=True, kw_only=True):
    """A daily forecast for one 0.1° cell: ``lat``/``lon`` is the cell centre requested, ``grid_lat``/``grid_lon``
    the model grid point Open-Meteo answered for, ``timezone`` the destination's (``timezone=auto``)."""

    lat: float
    lon: float
    grid_lat: float | None = None
    grid_lon: float | None = None
    timezone: str | None = None
    utc_offset_seconds: int | None = None
    elevation_m: float | None = None
    days: tuple[DailyWeather, ...] = ()

    def day(self, when: date) -> DailyWeather | None:
        """The forecast for the local date ``when``, or ``None`` when it is outside the forecast."""
        if not self.days:
            return None
        index = (when - self.days[0].date).days
        return self.days[index] if 0 <= index < len(self.days) else None

    @property
    def first(self) -> date | None:
        return self.days[0].date if self.days else None

    @property
    def last(self) -> date | None:
        return self.days[-1].date if self.days else None


class _Pending:
    """One cell's request in flight (or done): waiters block on ``done``."""

    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.result: DailyForecast | None = None
        self.error: ProviderError | None = None


class OpenMeteoWeather:
    """Open-Meteo daily forecasts through ``client`` (a :class:`~pamd.providers.JsonHttp`), cached per cell.

    ``max_cells`` bounds the cache (least recently used cells are dropped first) so a run over many distinct
    destinations keeps a bounded memory; ``breaker`` consecutive failed requests stop further requests this run.
    ``requests`` counts the HTTP requests this instance made (retries inside the client count once).
    """

    def __init__(self, client: JsonHttp, *, max_cells: int = 4096, breaker: int = 3) -> None:
        self.client = client
        self.max_cells = max(1, max_cells)
        self.breaker = max(1, breaker)
        self.requests = 0
        self._cells: OrderedDict[tuple[Cell, int], _Pending] = OrderedDict()
        self._failures_in_a_row = 0

    @property
    def provider(self) -> str:
        return self.client.provider

    async def daily_forecast(self, lat: float, lon: float, days: int = MAX_FORECAST_DAYS) -> DailyForecast:
        """The daily forecast for the 0.1° cell around ``lat``/``lon``, ``days`` days from the local today.

        Raises :class:`ProviderError` when Open-Meteo cannot answer or answers something malformed, and
        :class:`ValueError` for a position outside -90..90 / -180..180 or ``days`` outside 1..16.
        """
        if not 1 <= days <= MAX_FORECAST_DAYS:
            raise ValueError(f"days must be 1..{MAX_FORECAST_DAYS}, got {days}")
        key = (cell_of(lat, lon), days)
        while True:
            pending = self._cells.get(key)
            if pending is None:
                return await self._fetch_into(key)
            self._cells.move_to_end(key)
            await pending.done.wait()
            if pending.result is not None:
                return pending.result
            if pending.error is not None:
                raise ProviderError(self.provider, pending.error.problem)
            # The request was cancelled before it finished (its owner was cancelled): ask again.

    async def _fetch_into(self, key: tuple[Cell, int]) -> DailyForecast:
        pending = _Pending()
        self._cells[key] = pending
        while len(self._cells) > self.max_cells:
            oldest, entry = next(iter(self._cells.items()))
            if not entry.done.is_set():
                break  # never drop a request others may be waiting for
            del self._cells[oldest]
        try:
            pending.result = await self._request(*key)
            return pending.result
        except ProviderError as exc:
            pending.error = exc
            raise
        except BaseException:
            self._cells.pop(key, None)
            raise
        finally:
            pending.done.set()

    async def _request(self, cell: Cell, days: int) -> DailyForecast:
        if self._failures_in_a_row >= self.breaker:
            raise ProviderError(self.provider, f"not asked: {self._failures_in_a_row} requests failed in a row")
        lat, lon = cell_centre(cell)
        params = {
            "latitude": f"{lat:.1f}", "longitude": f"{lon:.1f}", "daily": ",".join(DAILY_VARIABLES),
            "timezone": "auto", "forecast_days": str(days), "wind_speed_unit": "kmh",
        }
        self.requests += 1
        try:
            body = await self.client.get_json(FORECAST_PATH, params)
            forecast = parse_forecast(body, lat, lon, self.provider)
        except ProviderError:
            self._failures_in_a_row += 1
            raise
        self._failures_in_a_row = 0
        return forecast


# -- parsing ------------------------------------------------------------------------------------------------


def parse_forecast(body: Any, lat: float, lon: float, provider: str = "weather") -> DailyForecast:
    """A :class:`DailyForecast` from an Open-Meteo ``/v1/forecast`` reply with :data:`DAILY_VARIABLES`.

    Raises :class:`ProviderError` for an error object, a missing or mistyped field, arrays of unequal length,
    dates that are not consecutive, values outside physical ranges, or units other than those requested.
    """

    def bad(problem: str) -> ProviderError:
        return ProviderError(provider, f"malformed forecast: {problem}")

    if not isinstance(body, dict):
        raise bad(f"expected a JSON object, got {type(body).__name__}")
    if body.get("error"):
        raise ProviderError(provider, f"Open-Meteo error: {body.get('reason') or 'no reason given'}")
    units = body.get("daily_units")
    if units is not None and not isinstance(units, dict):
        raise bad("daily_units is not an object")
    for name, unit in EXPECTED_UNITS.items():
        if units and name in units and units[name] != unit:
            raise bad(f"{name} in {units[name]!r}, expected {unit!r}")
    daily = body.get("daily")
    if not isinstance(daily, dict):
        raise bad("no daily object")
    times = daily.get("time")
    if not isinstance(times, list) or not times:
        raise bad("daily.time is missing or empty")
    try:
        dates = [date.fromisoformat(t) if isinstance(t, str) else None for t in times]
    except ValueError as exc:
        raise bad(f"daily.time: {exc}") from None
    if any(d is None for d in dates):
        raise bad("daily.time holds a non-date")
    checked = [d for d in dates if d is not None]
    if any((b - a).days != 1 for a, b in pairwise(checked)):
        raise bad("daily.time is not a run of consecutive days")
    columns = {name: _column(daily, name, len(checked), bad) for name in DAILY_VARIABLES}
    days = tuple(
        DailyWeather(
            date=when,
            code=_code(columns["weather_code"][i], bad),
            tmin_c=_number(columns["temperature_2m_min"][i], "temperature_2m_min", -100, 70, bad),
            tmax_c=_number(columns["temperature_2m_max"][i], "temperature_2m_max", -100, 70, bad),
            precipitation_mm=_number(columns["precipitation_sum"][i], "precipitation_sum", 0, 2000, bad),
            precipitation_probability_pct=_number(
                columns["precipitation_probability_max"][i], "precipitation_probability_max", 0, 100, bad),
            wind_max_kmh=_number(columns["wind_speed_10m_max"][i], "wind_speed_10m_max", 0, 500, bad),
            gust_max_kmh=_number(columns["wind_gusts_10m_max"][i], "wind_gusts_10m_max", 0, 600, bad),
        )
        for i, when in enumerate(checked)
    )
    offset = body.get("utc_offset_seconds")
    return DailyForecast(
        lat=lat, lon=lon,
        grid_lat=_meta_number(body.get("latitude")), grid_lon=_meta_number(body.get("longitude")),
        timezone=body["timezone"] if isinstance(body.get("timezone"), str) else None,
        utc_offset_seconds=offset if isinstance(offset, int) and not isinstance(offset, bool) else None,
        elevation_m=_meta_number(body.get("elevation")), days=days,
    )


def _column(daily: dict[str, Any], name: str, length: int, bad: Any) -> list[Any]:
    values = daily.get(name)
    if not isinstance(values, list):
        raise bad(f"daily.{name} is missing")
    if len(values) != length:
        raise bad(f"daily.{name} has {len(values)} values for {length} days")
    return values


def _number(value: Any, name: str, low: float, high: float, bad: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise bad(f"daily.{name} holds {value!r}")
    if not low <= value <= high:
        raise bad(f"daily.{name} value {value!r} is outside {low:g}..{high:g}")
    return float(value)


def _code(value: Any, bad: Any) -> int | None:
    number = _number(value, "weather_code", 0, 99, bad)
    if number is None:
        return None
    if not number.is_integer():
        raise bad(f"daily.weather_code holds {value!r}")
    return int(number)


def _meta_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)
