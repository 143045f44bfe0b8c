"""A fake Open-Meteo forecast API on 127.0.0.1, answering ``GET /v1/forecast`` in the real JSON shape.

Reply shape (https://open-meteo.com/en/docs)::

    {"latitude": 38.58, "longitude": -109.54, "generationtime_ms": 0.2, "utc_offset_seconds": -21600,
     "timezone": "America/Denver", "timezone_abbreviation": "MDT", "elevation": 1220.0,
     "daily_units": {"time": "iso8601", "weather_code": "wmo code", "temperature_2m_max": "°C", ...},
     "daily": {"time": ["2026-03-15", ...], "weather_code": [63, ...], "temperature_2m_max": [13.0, ...], ...}}

and errors as HTTP 400 ``{"error": true, "reason": "..."}``. Forecasts are scripted per 0.1° cell
(:class:`pamd.store.demo_weather.DemoForecast`: a day table plus a default day); the demo destinations are scripted
by default, any other cell gets light showers every day. ``timezone=auto`` uses the cell's timezone, and the days
start at the local "today" of the fake's ``now``, as Open-Meteo's do.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pamd.providers.weather import Cell, cell_of
from pamd.store.demo_weather import SHOWERS, DemoDay, DemoForecast, demo_forecasts
from tests.fakes.server import FakeServer, Reply, Request

UNITS = {
    "weather_code": "wmo code", "temperature_2m_max": "°C", "temperature_2m_min": "°C", "precipitation_sum": "mm",
    "precipitation_probability_max": "%", "wind_speed_10m_max": "km/h", "wind_gusts_10m_max": "km/h",
}
_FIELD = {
    "weather_code": "code", "temperature_2m_max": "tmax_c", "temperature_2m_min": "tmin_c",
    "precipitation_sum": "precipitation_mm", "precipitation_probability_max": "precipitation_probability_pct",
    "wind_speed_10m_max": "wind_max_kmh", "wind_gusts_10m_max": "gust_max_kmh",
}
_WIND_UNITS = {"kmh": ("km/h", 1.0), "ms": ("m/s", 1 / 3.6), "mph": ("mp/h", 1 / 1.609344), "kn": ("kn", 1 / 1.852)}


def _error(reason: str) -> Reply:
    return Reply(400, {"error": True, "reason": reason})


class OpenMeteoFake:
    """See the module docstring. ``requests()`` lists the forecast requests received."""

    def __init__(self, now: datetime, forecasts: Iterable[DemoForecast] | None = None) -> None:
        self.server = FakeServer(self.handle)
        self.reset(now, forecasts)

    def reset(self, now: datetime, forecasts: Iterable[DemoForecast] | None = None) -> None:
        """Serve ``forecasts`` (default: the demo destinations' for ``now``) and forget past requests, queued
        failures and delays: one server can serve many tests."""
        self.now = now
        self.cells: dict[Cell, DemoForecast] = {}
        for forecast in demo_forecasts(now) if forecasts is None else forecasts:
            self.script(forecast)
        with self.server._lock:
            self.server.requests.clear()
            self.server.failures.clear()
        self.server.delay = 0.0

    @property
    def url(self) -> str:
        return self.server.url

    def script(self, forecast: DemoForecast) -> None:
        """Serve ``forecast`` for its cell from now on."""
        self.cells[cell_of(forecast.lat, forecast.lon)] = forecast

    def requests(self) -> list[Request]:
        return [r for r in self.server.requests if r.path == "/v1/forecast"]

    def handle(self, request: Request) -> Reply:
        if request.path != "/v1/forecast":
            return Reply(404, {"error": True, "reason": "Not Found"})
        query = {name: values[-1] for name, values in request.query.items()}
        try:
            lat, lon = float(query.get("latitude", "")), float(query.get("longitude", ""))
        except ValueError:
            return _error("Parameter 'latitude' and 'longitude' must be floating point numbers")
        if not -90 <= lat <= 90:
            return _error(f"Latitude must be in range of -90 to 90°. Given: {lat}.")
        if not -180 <= lon <= 180:
            return _error(f"Longitude must be in range of -180 to 180°. Given: {lon}.")
        days_text = query.get("forecast_days", "7")
        if not days_text.isdigit() or not 0 <= int(days_text) <= 16:
            return _error("Forecast days is invalid. Allowed range 0 to 16.")
        variables = [v for v in query.get("daily", "").split(",") if v]
        for name in variables:
            if name not in UNITS:
                return _error(f"Cannot initialize ForecastVariableDaily from invalid String value {name} for key daily")
        wind_label, wind_factor = _WIND_UNITS.get(query.get("wind_speed_unit", "kmh"), ("", 0.0))
        if not wind_label:
            return _error("Cannot initialize WindspeedUnit from invalid String value for key wind_speed_unit")
        forecast = self.cells.get(cell_of(lat, lon)) or DemoForecast(lat, lon, "GMT", {}, SHOWERS)
        tz_name = query.get("timezone", "GMT")
        tz_name = forecast.timezone if tz_name == "auto" else tz_name
        try:
            tz = ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError):
            return _error(f"Invalid timezone '{tz_name}'")
        local = self.now.astimezone(tz)
        dates = [local.date() + timedelta(days=i) for i in range(int(days_text))]
        daily: dict[str, list[object]] = {"time": [d.isoformat() for d in dates]}
        units = {"time": "iso8601"}
        for name in variables:
            units[name] = wind_label if name.startswith("wind_") else UNITS[name]
            daily[name] = [self._value(forecast, d, name, wind_factor) for d in dates]
        return Reply(200, {
            "latitude": round(lat + 0.0042, 6), "longitude": round(lon - 0.0031, 6), "generationtime_ms": 0.21,
            "utc_offset_seconds": int((local.utcoffset() or timedelta()).total_seconds()), "timezone": tz_name,
            "timezone_abbreviation": local.tzname() or "", "elevation": 1220.0,
            "daily_units": units, "daily": daily,
        })

    @staticmethod
    def _value(forecast: DemoForecast, when: date, name: str, wind_factor: float) -> object:
        weather: DemoDay = forecast.days.get(when, forecast.default)
        value = getattr(weather, _FIELD[name])
        if value is None:
            return None
        if name == "weather_code":
            return int(value)
        if name.startswith("wind_"):
            return round(value * wind_factor, 1)
        return value


@contextmanager
def serve_openmeteo(now: datetime, forecasts: Iterable[DemoForecast] | None = None) -> Iterator[OpenMeteoFake]:
    """Run an :class:`OpenMeteoFake` for the duration of a ``with`` block."""
    fake = OpenMeteoFake(now, forecasts)
    fake.server.start()
    try:
        yield fake
    finally:
        fake.server.stop()
