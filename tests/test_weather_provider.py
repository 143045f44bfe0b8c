"""The Open-Meteo provider, through the real HTTP client, against a fake Open-Meteo on 127.0.0.1."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import anyio
import httpx
import pytest

from pamd.providers import JsonHttp, ProviderError
from pamd.providers.weather import DailyWeather, OpenMeteoWeather, cell_of, describe_code, parse_forecast
from pamd.store.demo_weather import CLEAR, RAIN, DemoDay, DemoForecast
from tests.fakes.openmeteo import OpenMeteoFake, serve_openmeteo

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
MOAB = (38.5733, -109.5498)
NULLS = DemoDay(None, None, None, None, None, None, None)


FORECASTS = [
    DemoForecast(*MOAB, "America/Denver", {date(2026, 3, 16): RAIN, date(2026, 3, 17): NULLS}, CLEAR),
    DemoForecast(-44.7, 169.1, "Pacific/Auckland", {}, RAIN),
]


@pytest.fixture(scope="module")
def server() -> Iterator[OpenMeteoFake]:
    with serve_openmeteo(NOW, FORECASTS) as running:
        yield running


@pytest.fixture
def fake(server: OpenMeteoFake) -> OpenMeteoFake:
    server.reset(NOW, FORECASTS)
    return server


@pytest.fixture
async def client(fake: OpenMeteoFake) -> AsyncIterator[JsonHttp]:
    http = JsonHttp("weather", fake.url, timeout=2.0, retries=2, retry_base_seconds=0.01)
    yield http
    await http.aclose()


# -- cells and parsing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("lat", "lon", "cell"), [
    (38.5733, -109.5498, (386, -1095)), (38.55, -109.55, (386, -1096)), (38.549, 0.04, (385, 0)),
    (-44.7032, 169.1320, (-447, 1691)), (0.0, -0.05, (0, -1)), (90.0, 180.0, (900, -1800)),
    (-89.99, 179.96, (-900, -1800)), (12.25, -179.96, (123, -1800)),
])
def test_cells(lat: float, lon: float, cell: tuple[int, int]) -> None:
    assert cell_of(lat, lon) == cell


@pytest.mark.parametrize(("lat", "lon"), [(90.1, 0.0), (0.0, -180.5), (float("nan"), 0.0), (0.0, float("inf"))])
def test_cells_reject_non_positions(lat: float, lon: float) -> None:
    with pytest.raises(ValueError, match="not a position"):
        cell_of(lat, lon)


def reply(days: int = 3, **daily: list[Any]) -> dict[str, Any]:
    """A real-shaped /v1/forecast reply (as the fake serves it), with ``daily`` arrays overridden."""
    body: dict[str, Any] = {
        "latitude": 38.6, "longitude": -109.5, "generationtime_ms": 0.1, "utc_offset_seconds": -21600,
        "timezone": "America/Denver", "timezone_abbreviation": "MDT", "elevation": 1220.0,
        "daily_units": {"time": "iso8601", "weather_code": "wmo code", "temperature_2m_max": "°C",
                        "temperature_2m_min": "°C", "precipitation_sum": "mm",
                        "precipitation_probability_max": "%", "wind_speed_10m_max": "km/h",
                        "wind_gusts_10m_max": "km/h"},
        "daily": {"time": [(date(2026, 3, 15) + timedelta(days=i)).isoformat() for i in range(days)],
                  "weather_code": [1] * days, "temperature_2m_max": [20.5] * days,
                  "temperature_2m_min": [5] * days, "precipitation_sum": [0.0] * days,
                  "precipitation_probability_max": [5] * days, "wind_speed_10m_max": [12.0] * days,
                  "wind_gusts_10m_max": [25.0] * days},
    }
    body["daily"].update(daily)
    return body


def test_parse_a_real_shaped_reply_with_nulls() -> None:
    forecast = parse_forecast(reply(weather_code=[1, None, 95.0], wind_gusts_10m_max=[25, 30, None]), 38.6, -109.5)
    assert (forecast.lat, forecast.lon, forecast.grid_lat, forecast.timezone) == (38.6, -109.5, 38.6, "America/Denver")
    assert forecast.utc_offset_seconds == -21600 and forecast.elevation_m == 1220.0
    assert [d.code for d in forecast.days] == [1, None, 95]
    assert forecast.days[0] == DailyWeather(date=date(2026, 3, 15), code=1, tmin_c=5.0, tmax_c=20.5,
                                            precipitation_mm=0.0, precipitation_probability_pct=5.0,
                                            wind_max_kmh=12.0, gust_max_kmh=25.0)
    assert forecast.days[2].gust_max_kmh is None and forecast.days[2].condition == "thunderstorm"
    assert forecast.day(date(2026, 3, 17)) == forecast.days[2]
    assert forecast.day(date(2026, 3, 18)) is None and forecast.day(date(2026, 3, 14)) is None
    assert (forecast.first, forecast.last) == (date(2026, 3, 15), date(2026, 3, 17))


def test_parse_tolerates_missing_metadata() -> None:
    body = reply()
    for key in ("latitude", "longitude", "timezone", "utc_offset_seconds", "elevation", "daily_units"):
        del body[key]
    forecast = parse_forecast(body, 1.0, 2.0)
    assert forecast.grid_lat is None and forecast.timezone is None and len(forecast.days) == 3


def _without(key: str) -> dict[str, Any]:
    body = reply()
    del body["daily"][key]
    return body


def _units(**units: str) -> dict[str, Any]:
    body = reply()
    body["daily_units"].update(units)
    return body


MALFORMED: list[tuple[str, Any, str]] = [
    ("not an object", [1, 2], "expected a JSON object"),
    ("error object", {"error": True, "reason": "Latitude must be in range of -90 to 90°. Given: 91.0."},
     "Open-Meteo error: Latitude must be"),
    ("no daily", {"latitude": 1.0}, "no daily object"),
    ("no time", _without("time"), "daily.time is missing"),
    ("empty time", reply(0), "daily.time is missing or empty"),
    ("bad date", reply(time=["2026-03-15", "2026-02-30", "2026-03-17"]), "daily.time"),
    ("date not text", reply(time=["2026-03-15", 1773619200, "2026-03-17"]), "non-date"),
    ("gap in dates", reply(time=["2026-03-15", "2026-03-16", "2026-03-18"]), "consecutive"),
    ("missing variable", _without("wind_gusts_10m_max"), "wind_gusts_10m_max is missing"),
    ("short array", reply(precipitation_sum=[0.0, 1.0]), "2 values for 3 days"),
    ("text value", reply(temperature_2m_max=[1, "warm", 3]), "holds 'warm'"),
    ("boolean value", reply(precipitation_sum=[0, True, 0]), "holds True"),
    ("negative rain", reply(precipitation_sum=[0, -1, 0]), "outside"),
    ("probability > 100", reply(precipitation_probability_max=[0, 101, 0]), "outside"),
    ("fractional code", reply(weather_code=[1, 2.5, 3]), "weather_code holds 2.5"),
    ("code > 99", reply(weather_code=[1, 100, 3]), "outside"),
    ("fahrenheit", _units(temperature_2m_max="°F"), "expected '°C'"),
    ("mph", _units(wind_gusts_10m_max="mp/h"), "expected 'km/h'"),
    ("units not an object", {**reply(), "daily_units": "metric"}, "daily_units is not an object"),
]


@pytest.mark.parametrize(("case", "body", "problem"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_parse_refuses_malformed_replies(case: str, body: Any, problem: str) -> None:
    with pytest.raises(ProviderError, match="weather: ") as caught:
        parse_forecast(copy.deepcopy(body), 1.0, 2.0)
    assert problem in caught.value.problem


def test_codes_are_described() -> None:
    assert describe_code(0) == "clear sky" and describe_code(99) == "thunderstorm with heavy hail"
    assert describe_code(42) == "weather code 42" and describe_code(None) == "unknown conditions"


# -- through HTTP ---------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_happy_path_asks_for_the_cell_centre_in_the_documented_shape(
    fake: OpenMeteoFake, client: JsonHttp
) -> None:
    weather = OpenMeteoWeather(client)
    forecast = await weather.daily_forecast(*MOAB)
    [request] = fake.requests()
    assert request.method == "GET" and {k: v[0] for k, v in request.query.items()} == {
        "latitude": "38.6", "longitude": "-109.5", "timezone": "auto", "forecast_days": "16",
        "wind_speed_unit": "kmh", "daily": "weather_code,temperature_2m_max,temperature_2m_min,precipitation_sum,"
        "precipitation_probability_max,wind_speed_10m_max,wind_gusts_10m_max"}
    assert (forecast.lat, forecast.lon, forecast.timezone) == (38.6, -109.5, "America/Denver")
    assert forecast.grid_lat == pytest.approx(38.6042) and forecast.utc_offset_seconds == -6 * 3600
    assert len(forecast.days) == 16 and forecast.first == date(2026, 3, 15)  # 06:00 in Denver
    assert forecast.day(date(2026, 3, 15)) == DailyWeather(
        date=date(2026, 3, 15), code=0, tmin_c=9.0, tmax_c=24.0, precipitation_mm=0.0,
        precipitation_probability_pct=0.0, wind_max_kmh=14.0, gust_max_kmh=25.0)
    rainy = forecast.day(date(2026, 3, 16))
    assert rainy is not None and (rainy.code, rainy.precipitation_mm) == (63, 9.0)
    assert forecast.day(date(2026, 3, 17)) == DailyWeather(date=date(2026, 3, 17))  # nulls kept as None
    assert weather.requests == 1


@pytest.mark.anyio
async def test_local_days_at_the_destination(fake: OpenMeteoFake, client: JsonHttp) -> None:
    forecast = await OpenMeteoWeather(client).daily_forecast(-44.7032, 169.132, days=3)
    assert forecast.first == date(2026, 3, 16) and len(forecast.days) == 3  # 01:00 next day in New Zealand
    assert forecast.utc_offset_seconds == 13 * 3600 and forecast.timezone == "Pacific/Auckland"


@pytest.mark.anyio
async def test_one_request_per_cell_and_run(fake: OpenMeteoFake, client: JsonHttp) -> None:
    weather = OpenMeteoWeather(client)
    first = await weather.daily_forecast(38.5733, -109.5498)
    again = await weather.daily_forecast(38.6249, -109.4501)  # same 0.1° cell
    assert again is first and len(fake.requests()) == 1
    await weather.daily_forecast(38.66, -109.5)  # the next cell north
    assert len(fake.requests()) == 2
    await OpenMeteoWeather(client).daily_forecast(*MOAB)  # a new run has a new cache
    assert len(fake.requests()) == 3


@pytest.mark.anyio
async def test_concurrent_asks_for_one_cell_share_one_request(fake: OpenMeteoFake, client: JsonHttp) -> None:
    weather = OpenMeteoWeather(client)
    fake.server.delay = 0.2
    results: list[object] = []

    async def ask(offset: float) -> None:
        results.append(await weather.daily_forecast(38.57 + offset, -109.55))

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(ask, i * 0.001)
    assert len(fake.requests()) == 1 and len(results) == 20 and all(r is results[0] for r in results)


@pytest.mark.anyio
async def test_retries_503_and_429_then_succeeds(fake: OpenMeteoFake, client: JsonHttp) -> None:
    fake.server.fail_next(1, 503)
    fake.server.fail_next(1, 429, {"error": True, "reason": "Too many concurrent requests"}, **{"Retry-After": "0"})
    forecast = await OpenMeteoWeather(client).daily_forecast(*MOAB)
    assert len(fake.requests()) == 3 and len(forecast.days) == 16


@pytest.mark.anyio
async def test_persistent_failure_is_a_provider_error_remembered_for_the_run(
    fake: OpenMeteoFake, client: JsonHttp
) -> None:
    weather = OpenMeteoWeather(client)
    fake.server.fail_next(10, 503)
    with pytest.raises(ProviderError, match=r"weather: GET /v1/forecast: HTTP 503 \(after 3 attempts\)"):
        await weather.daily_forecast(*MOAB)
    assert len(fake.requests()) == 3
    with pytest.raises(ProviderError, match="HTTP 503"):
        await weather.daily_forecast(*MOAB)  # same cell, same run: not asked again
    assert len(fake.requests()) == 3


@pytest.mark.anyio
async def test_an_error_reply_is_not_retried(fake: OpenMeteoFake, client: JsonHttp) -> None:
    fake.server.fail_next(1, 400, {"error": True, "reason": "Cannot initialize ForecastVariableDaily"})
    with pytest.raises(ProviderError, match="HTTP 400: Cannot initialize ForecastVariableDaily"):
        await OpenMeteoWeather(client).daily_forecast(*MOAB)
    assert len(fake.requests()) == 1


@pytest.mark.anyio
async def test_timeout(fake: OpenMeteoFake) -> None:
    fake.server.delay = 0.5
    http = JsonHttp("weather", fake.url, timeout=0.1, retries=1, retry_base_seconds=0.01)
    try:
        with pytest.raises(ProviderError, match=r"timed out after 0.1 s \(after 2 attempts\)"):
            await OpenMeteoWeather(http).daily_forecast(*MOAB)
    finally:
        await http.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize(("body", "problem"), [
    ("<html>Bad gateway</html>", "reply is not JSON"),
    ({"latitude": 38.6, "daily": {"time": ["2026-03-15"], "weather_code": [1]}}, "malformed forecast"),
    ({"error": True, "reason": "Data corrupted at path ''"}, "Open-Meteo error: Data corrupted"),
])
async def test_malformed_replies(fake: OpenMeteoFake, client: JsonHttp, body: Any, problem: str) -> None:
    fake.server.fail_next(1, 200, body)
    with pytest.raises(ProviderError, match=problem):
        await OpenMeteoWeather(client).daily_forecast(*MOAB)


@pytest.mark.anyio
async def test_breaker_stops_asking_after_consecutive_failures(fake: OpenMeteoFake, client: JsonHttp) -> None:
    weather = OpenMeteoWeather(client, breaker=2)
    fake.server.fail_next(100, 500)
    for lat in (10.0, 11.0):
        with pytest.raises(ProviderError, match="HTTP 500"):
            await weather.daily_forecast(lat, 0.0)
    asked = len(fake.requests())
    with pytest.raises(ProviderError, match="not asked: 2 requests failed in a row"):
        await weather.daily_forecast(12.0, 0.0)
    assert len(fake.requests()) == asked == 6 and weather.requests == 2


@pytest.mark.anyio
async def test_a_success_resets_the_breaker(fake: OpenMeteoFake, client: JsonHttp) -> None:
    weather = OpenMeteoWeather(client, breaker=2)
    fake.server.fail_next(3, 500)
    with pytest.raises(ProviderError):
        await weather.daily_forecast(10.0, 0.0)
    await weather.daily_forecast(11.0, 0.0)
    for lat in (12.0, 13.0):  # without the reset, 13 would not be asked
        fake.server.fail_next(3, 500)
        with pytest.raises(ProviderError, match="HTTP 500"):
            await weather.daily_forecast(lat, 0.0)


@pytest.mark.anyio
async def test_cache_is_bounded(fake: OpenMeteoFake, client: JsonHttp) -> None:
    weather = OpenMeteoWeather(client, max_cells=2)
    for lat in (10.0, 11.0, 10.0, 12.0, 11.0):  # 10 is used again before 12 arrives, so 11 is dropped
        await weather.daily_forecast(lat, 0.0)
    assert [r.query["latitude"][0] for r in fake.requests()] == ["10.0", "11.0", "12.0", "11.0"]


@pytest.mark.anyio
async def test_a_cancelled_request_does_not_strand_its_waiters(fake: OpenMeteoFake, client: JsonHttp) -> None:
    weather = OpenMeteoWeather(client)
    fake.server.delay = 0.3
    got: list[object] = []
    owner = anyio.CancelScope()

    async def impatient() -> None:
        with owner:
            await weather.daily_forecast(*MOAB)

    async def patient() -> None:
        got.append(await weather.daily_forecast(*MOAB))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(impatient)
            while not fake.requests():  # noqa: ASYNC110 - the server thread records it: poll until it has
                await anyio.sleep(0.01)
            tg.start_soon(patient)
            await anyio.sleep(0.05)  # the patient one now waits for the owner's request
            owner.cancel()
    assert len(got) == 1 and len(fake.requests()) == 2 and owner.cancelled_caught


@pytest.mark.anyio
@pytest.mark.parametrize(("days", "lat"), [(0, 1.0), (17, 1.0), (16, 95.0)])
async def test_bad_arguments(client: JsonHttp, days: int, lat: float) -> None:
    with pytest.raises(ValueError, match=r"days must be|not a position"):
        await OpenMeteoWeather(client).daily_forecast(lat, 0.0, days=days)


@pytest.mark.parametrize(("query", "reason"), [
    ("latitude=91&longitude=0&daily=weather_code", "Latitude must be in range of -90 to 90°. Given: 91.0."),
    ("latitude=1&longitude=0&forecast_days=17", "Forecast days is invalid. Allowed range 0 to 16."),
    ("latitude=1&longitude=0&daily=sunshine", "invalid String value sunshine for key daily"),
    ("latitude=1&longitude=0&timezone=Mars/Olympus", "Invalid timezone"),
])
def test_the_fake_answers_errors_as_open_meteo_does(fake: OpenMeteoFake, query: str, reason: str) -> None:
    response = httpx.get(f"{fake.url}/v1/forecast?{query}")
    assert response.status_code == 400
    body = response.json()
    assert body["error"] is True and reason in body["reason"]
