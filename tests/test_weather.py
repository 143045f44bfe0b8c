"""The built-in weather monitor: day judgement, the two rules, the text, the query module, and runs over the demo
store against the fake Open-Meteo (no network)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pluggy
import pytest

import pamd
from pamd import hookspecs
from pamd.config import ProvidersSection, WeatherProviderSection
from pamd.providers import ProviderHub
from pamd.providers.weather import DailyForecast, DailyWeather
from pamd.store.demo_weather import CLEAR, RAIN, THUNDERSTORM, DemoDay, DemoForecast
from pamd.store.records import Profile
from pamd.store.records_weather import PlannedTrip, WeatherInput
from pamd.store.sqlite import SQLiteStore
from pamd.testing import run_monitor, run_tick
from tests.fakes.openmeteo import OpenMeteoFake, serve_openmeteo
from tests.fakes.server import Reply, Request

if TYPE_CHECKING:  # mypy sees the source tree; at run time the package is installed as pamd_plugins
    from plugins import weather
else:
    from pamd_plugins import weather

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
TODAY = date(2026, 3, 15)
CFG = weather.WeatherConfig()
P = pamd.Priority

# One letter per forecast day: G good, C good but cloudy (code 3), R rain (not good), W windy (gusts 65: not
# good, not severe), S thunderstorm (severe), X gusts 80 on a clear day (severe by wind), ? no data.
DAYS = {
    "G": DailyWeather(date=TODAY, code=1, tmin_c=8, tmax_c=20, precipitation_mm=0.0,
                      precipitation_probability_pct=5, wind_max_kmh=15, gust_max_kmh=25),
    "C": DailyWeather(date=TODAY, code=3, tmin_c=6, tmax_c=15, precipitation_mm=0.4,
                      precipitation_probability_pct=30, wind_max_kmh=20, gust_max_kmh=35),
    "R": DailyWeather(date=TODAY, code=63, tmin_c=5, tmax_c=11, precipitation_mm=12.5,
                      precipitation_probability_pct=85, wind_max_kmh=25, gust_max_kmh=45),
    "W": DailyWeather(date=TODAY, code=2, tmin_c=5, tmax_c=11, precipitation_mm=0.0,
                      precipitation_probability_pct=10, wind_max_kmh=35, gust_max_kmh=65),
    "S": DailyWeather(date=TODAY, code=95, tmin_c=10, tmax_c=18, precipitation_mm=30,
                      precipitation_probability_pct=95, wind_max_kmh=40, gust_max_kmh=70),
    "X": DailyWeather(date=TODAY, code=0, tmin_c=2, tmax_c=9, precipitation_mm=0.0,
                      precipitation_probability_pct=0, wind_max_kmh=55, gust_max_kmh=80),
    "?": DailyWeather(date=TODAY),
}


def forecast(pattern: str, first: date = TODAY) -> DailyForecast:
    days = tuple(msgspec.structs.replace(DAYS[c], date=first + timedelta(days=i)) for i, c in enumerate(pattern))
    return DailyForecast(lat=38.6, lon=-109.5, timezone="America/Denver", days=days)


def trip(start_in: int, flex: int = 2, *, start: date | None = None, dest: str | None = "Moab, UT") -> PlannedTrip:
    return PlannedTrip(id="trip-1", start_date=start or TODAY + timedelta(days=start_in), flex_days=flex,
                       origin="Denver, CO", destination=dest, dest_lat=38.5733, dest_lon=-109.5498)


def d(offset: int) -> date:
    return TODAY + timedelta(days=offset)


# -- judging days ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("letter", "good", "severe", "not_good"), [
    ("G", True, (), ()), ("C", True, (), ()), ("R", False, (), ("code", "precipitation", "probability")),
    ("W", False, (), ("gust",)), ("S", False, ("code",), ("code", "precipitation", "gust", "probability")),
    ("X", False, ("gust",), ("wind", "gust")),
    ("?", False, (), ("missing_code", "missing_precipitation", "missing_wind", "missing_gust")),
])
def test_assess(letter: str, good: bool, severe: tuple[str, ...], not_good: tuple[str, ...]) -> None:
    assert weather.assess(DAYS[letter], CFG) == weather.DayVerdict(good, severe, not_good)


@pytest.mark.parametrize(("changes", "good"), [
    ({"precipitation_mm": 1.0}, True), ({"precipitation_mm": 1.01}, False),
    ({"wind_max_kmh": 40.0}, True), ({"wind_max_kmh": 40.1}, False),
    ({"gust_max_kmh": 60.0}, True), ({"gust_max_kmh": 60.5}, False),
    ({"precipitation_probability_pct": 60.0}, True), ({"precipitation_probability_pct": 61.0}, False),
    ({"precipitation_probability_pct": None}, True),  # unknown probability: judged on the amount
    ({"code": 45}, False), ({"precipitation_mm": None}, False), ({"gust_max_kmh": None}, False),
])
def test_good_day_thresholds_are_inclusive(changes: dict[str, Any], good: bool) -> None:
    assert weather.assess(msgspec.structs.replace(DAYS["G"], **changes), CFG).good is good


@pytest.mark.parametrize(("gust", "code", "severe"), [
    (74.9, 1, ()), (75.0, 1, ("gust",)), (None, 75, ("code",)), (90.0, 99, ("code", "gust")), (30.0, 82, ("code",)),
    (30.0, 57, ("code",)), (30.0, 56, ()), (30.0, 73, ()),
])
def test_severe_days(gust: float | None, code: int, severe: tuple[str, ...]) -> None:
    day = msgspec.structs.replace(DAYS["G"], gust_max_kmh=gust, code=code)
    assert weather.assess(day, CFG).severe == severe


# -- the rules ------------------------------------------------------------------------------------------------

# (case, forecast pattern from today, trip, expected: rule, reason, priority, best day offset or None)
RULES: list[tuple[str, str, PlannedTrip, tuple[str, str, pamd.Priority | None, int | None]]] = [
    ("planned day starts a window: nothing", "RRRGGGGRRR", trip(3), ("none", "planned_day_starts_window", None, None)),
    ("rain on the planned day, window 2 days later", "GRRRRGGGRR", trip(3), ("window", "better_departure_day",
                                                                             P.MEDIUM, 5)),
    ("window may run past the flexible range", "RRRRGGGRRR", trip(3, flex=1), ("window", "better_departure_day",
                                                                               P.MEDIUM, 4)),
    ("window earlier than planned", "RGGGRRRR", trip(4, flex=3), ("window", "better_departure_day", P.MEDIUM, 1)),
    ("planned day dry but rain follows: low", "RGGGRRRR", trip(2, flex=1), ("window", "better_departure_day",
                                                                            P.LOW, 1)),
    ("planned day without data: low", "RRG?GGGRR", trip(3), ("window", "better_departure_day", P.LOW, 4)),
    ("no window in range", "GGRGGRGGRGGR", trip(4, flex=3), ("none", "no_window", None, None)),
    ("window only outside the flexible range", "RRRRRRGGGG", trip(3, flex=2), ("none", "no_window", None, None)),
    ("no flexibility: only the planned day counts", "RRRRGGGG", trip(3, flex=0), ("none", "no_window", None, None)),
    ("windy is not good", "RRRWGGRR", trip(3, flex=0), ("none", "no_window", None, None)),
    ("closest qualifying day wins", "GGGGRRRGGGGGGG", trip(5, flex=3), ("window", "better_departure_day",
                                                                        P.MEDIUM, 7)),
    ("equal distance: the longer run wins", "RGGGRRRGGGGR", trip(4, flex=3), ("window", "better_departure_day",
                                                                              P.MEDIUM, 7)),
    ("equal distance and run: the earlier day", "RGGGRRRGGGR", trip(4, flex=3), ("window", "better_departure_day",
                                                                                 P.MEDIUM, 1)),
    ("a window cut by the end of the forecast does not count", "RRRRGG", trip(3, flex=2),
     ("none", "no_window", None, None)),
    ("nulls end a window", "RRRRG?GGG", trip(3, flex=1), ("none", "no_window", None, None)),
    ("severe on the planned day, window in range", "RRRSRGGG", trip(3, flex=2), ("severe", "severe_on_planned_day",
                                                                                 P.HIGH, 5)),
    ("severe by wind alone", "GGGXGGG", trip(3, flex=0), ("severe", "severe_on_planned_day", P.HIGH, None)),
    ("severe, no window", "RRRSRRR", trip(3, flex=2), ("severe", "severe_on_planned_day", P.HIGH, None)),
    ("severe today, departing today", "SGGGR", trip(0, flex=2), ("severe", "severe_on_planned_day", P.HIGH, 1)),
    ("planned day beyond the forecast", "GGGG", trip(5), ("none", "planned_day_outside_forecast", None, None)),
]


@pytest.mark.parametrize(("case", "pattern", "planned", "expected"), RULES, ids=[r[0] for r in RULES])
def test_rules(case: str, pattern: str, planned: PlannedTrip,
               expected: tuple[str, str, pamd.Priority | None, int | None]) -> None:
    outcome = weather.evaluate_trip(planned, forecast(pattern), TODAY, CFG)
    rule, reason, priority, best = expected
    assert (outcome.rule, outcome.reason, outcome.priority) == (rule, reason, priority)
    assert outcome.best == (d(best) if best is not None else None)
    if best is not None:
        assert len(outcome.window) >= CFG.min_window_days and outcome.window[0].date == d(best)


def test_days_before_today_are_never_suggested() -> None:
    # The destination's forecast can start on the user's yesterday (Auckland user, Hawaii destination).
    outcome = weather.evaluate_trip(trip(1), forecast("GGGRRRR", first=d(-1)), TODAY, CFG)
    assert (outcome.rule, outcome.range_first) == ("none", TODAY) and outcome.best is None
    outcome = weather.evaluate_trip(trip(1), forecast("GGGGRRR", first=d(-1)), TODAY, CFG)
    assert outcome.best == d(0) and outcome.priority == P.LOW


def test_severe_without_window_names_the_closest_calm_day() -> None:
    outcome = weather.evaluate_trip(trip(3), forecast("RRSSSRR"), TODAY, CFG)
    assert outcome.alternative is not None and outcome.alternative.date == d(1)  # as close as d(5), earlier
    assert (outcome.range_first, outcome.range_last) == (d(1), d(5))
    assert weather.evaluate_trip(trip(3), forecast("RSSSSSR"), TODAY, CFG).alternative is None
    assert weather.evaluate_trip(trip(3), forecast("R?SSS?R"), TODAY, CFG).alternative is None  # unknown != calm


def test_leap_day_and_month_end() -> None:
    first = date(2028, 2, 26)
    outcome = weather.evaluate_trip(trip(0, flex=2, start=date(2028, 2, 28)), forecast("RRRGGGR", first), first, CFG)
    assert outcome.best == date(2028, 2, 29) and [d.date.day for d in outcome.window] == [29, 1, 2]
    assert weather.fmt_day(date(2028, 2, 29)) == "Tue 29 Feb"


# -- text -----------------------------------------------------------------------------------------------------


def alert_for(pattern: str, planned: PlannedTrip, *, units: str = "metric", tz: str = "America/Denver",
              now: datetime = NOW, today: date = TODAY) -> pamd.Alert:
    inp = WeatherInput(profile=Profile(user_id="u1", timezone=tz, preferred_units="imperial" if units == "imperial"
                                       else "metric"), trips=(planned,))
    fc = forecast(pattern, today)
    outcome = weather.evaluate_trip(planned, fc, today, CFG)
    return weather.build_alert(inp, planned, fc, outcome, now, CFG)


def test_window_text_metric() -> None:
    alert = alert_for("GRRRRGGGRR", trip(3))
    assert alert.kind == "weather_window" and alert.priority == P.MEDIUM
    assert alert.title == "Better travel weather to Moab, UT if you leave Fri 20 Mar"
    assert alert.body == (
        "Your trip to Moab, UT is planned to leave Wed 18 Mar. The forecast there that day: moderate rain (12 mm, "
        "85% chance), wind to 25 km/h, gusts to 45 km/h, 5°C to 11°C. Leaving Fri 20 Mar instead (2 days later, "
        "within your 2 flexible days either side) starts 3 good days in a row at Moab, UT: mainly clear every day, "
        "dry, gusts at most 25 km/h, 8°C to 20°C. Of the days in your flexible range that start at least 3 good "
        "days, it is the closest to your plan.")
    assert alert.subject == "trip:trip-1:2026-03-18"
    assert alert.actions == [{"action": "reschedule_trip", "label": "Leave Fri 20 Mar"},
                             {"action": "view_trip", "label": "View trip"}]
    facts = alert.facts
    assert facts["suggested_date"] == "2026-03-20" and facts["shift_days"] == 2
    assert facts["planned_day"]["precipitation_mm"] == 12.5 and facts["planned_day"]["condition"] == "moderate rain"
    assert facts["not_good"] == ["code", "precipitation", "probability"] and facts["severe"] == []
    assert facts["window"] == {"first": "2026-03-20", "last": "2026-03-22", "days": 3, "codes": [1],
                               "max_precipitation_mm": 0.0, "max_gust_kmh": 25.0, "min_tmin_c": 8.0,
                               "max_tmax_c": 20.0}
    assert facts["min_window_days"] == 3 and facts["following_day"] is None
    assert (facts["range_first"], facts["range_last"]) == ("2026-03-16", "2026-03-20")
    msgspec.json.encode(alert)


def test_window_text_imperial_low() -> None:
    alert = alert_for("RGCGRRRR", trip(2, flex=1), units="imperial")
    assert alert.priority == P.LOW and alert.title == "Weather window for Moab, UT: consider leaving Mon 16 Mar"
    assert "That day looks fine (overcast), but Thu 19 Mar brings moderate rain (0.5 in, 85% chance), wind to " \
           "16 mph, gusts to 28 mph, 41°F to 52°F." in alert.body
    assert "(1 day earlier, within your 1 flexible day either side)" in alert.body
    assert "mainly clear to overcast, under 0.1 in of precipitation a day, gusts at most 22 mph, 43°F to 68°F" \
        in alert.body
    assert "km" not in alert.body and "°C" not in alert.body and " mm" not in alert.body
    assert alert.facts["following_day"]["date"] == "2026-03-19" and alert.facts["following_day"]["code"] == 63
    assert alert.facts["window"]["codes"] == [1, 3] and alert.facts["window"]["max_precipitation_mm"] == 0.4


def test_window_text_when_the_planned_day_has_no_data() -> None:
    alert = alert_for("RRG?GGGRR", trip(3))
    assert "planned to leave Wed 18 Mar. The forecast for that day is incomplete. Leaving Thu 19 Mar" in alert.body
    alert = alert_for("RGGG?G", trip(2, flex=1))
    assert "That day looks fine, but the forecast for Thu 19 Mar is incomplete." in alert.body


@pytest.mark.parametrize(("pattern", "flex", "expected"), [
    ("RRRSRGGG", 2, "Thunderstorm forecast at Moab, UT on Wed 18 Mar, your planned departure day: 30 mm of "
     "precipitation (95% chance), wind to 40 km/h, gusts to 70 km/h, 10°C to 18°C. Leaving Fri 20 Mar instead "
     "(2 days later, within your 2 flexible days either side) starts 3 good days in a row"),
    ("RRSXSRR", 2, "Gusts to 80 km/h forecast at Moab, UT on Wed 18 Mar, your planned departure day: dry, wind to "
     "55 km/h, gusts to 80 km/h, 2°C to 9°C. Mon 16 Mar (2 days earlier) has no severe weather in the forecast: "
     "moderate rain (12 mm, 85% chance)"),
    ("RSSSSSR", 2, "No other day from Mon 16 Mar to Fri 20 Mar (within your 2 flexible days either side, in the "
     "forecast) is free of severe weather."),
    ("RRRSRRR", 0, "The trip has no flexible days set."),
])
def test_severe_text(pattern: str, flex: int, expected: str) -> None:
    alert = alert_for(pattern, trip(3, flex=flex))
    assert alert.kind == "weather_severe" and alert.priority == P.HIGH
    assert alert.title == "Severe weather for your departure to Moab, UT on Wed 18 Mar"
    assert expected in alert.body
    assert alert.subject == "trip:trip-1:2026-03-18" and alert.facts["severe"]


def test_thunderstorm_with_gusts_and_a_nameless_destination() -> None:
    planned = msgspec.structs.replace(trip(0, flex=0), destination=None)
    stormy = forecast("S")
    day = msgspec.structs.replace(stormy.days[0], gust_max_kmh=90.0)
    alert = alert_for("S", planned)
    assert alert.body.startswith("Thunderstorm forecast at 38.57, -109.55 on Sun 15 Mar")
    outcome = weather.evaluate_trip(planned, msgspec.structs.replace(stormy, days=(day,)), TODAY, CFG)
    _, body = weather.render(planned, outcome, True, CFG)
    assert body.startswith("Thunderstorm with gusts to 56 mph forecast at")


@pytest.mark.parametrize(("tz", "now", "start", "expires"), [
    # 24 h from now comes first
    ("America/Denver", NOW, date(2026, 3, 18), datetime(2026, 3, 16, 12, 0, tzinfo=UTC)),
    # departing today in Denver (UTC-6): the day ends at 06:00 UTC
    ("America/Denver", NOW, date(2026, 3, 15), datetime(2026, 3, 16, 6, 0, tzinfo=UTC)),
    # Auckland (UTC+13): local 16 Mar ends at 11:00 UTC
    ("Pacific/Auckland", NOW, date(2026, 3, 16), datetime(2026, 3, 16, 11, 0, tzinfo=UTC)),
    # Honolulu (UTC-10): local 15 Mar ends at 10:00 UTC on the 16th
    ("Pacific/Honolulu", NOW, date(2026, 3, 15), datetime(2026, 3, 16, 10, 0, tzinfo=UTC)),
    # Paris, spring forward on 29 Mar: the 23-hour day ends at 22:00 UTC
    ("Europe/Paris", datetime(2026, 3, 29, 8, 0, tzinfo=UTC), date(2026, 3, 29),
     datetime(2026, 3, 29, 22, 0, tzinfo=UTC)),
    # Paris, fall back on 25 Oct: the 25-hour day ends at 23:00 UTC
    ("Europe/Paris", datetime(2026, 10, 24, 23, 0, tzinfo=UTC), date(2026, 10, 25),
     datetime(2026, 10, 25, 23, 0, tzinfo=UTC)),
])
def test_expiry(tz: str, now: datetime, start: date, expires: datetime) -> None:
    today = now.astimezone(weather._zone(tz)).date()
    alert = alert_for("S", trip(0, flex=0, start=start), tz=tz, now=now, today=start)
    assert start >= today and alert.expires_at == expires


# -- config and registration ----------------------------------------------------------------------------------


def test_config_validation() -> None:
    cfg = msgspec.convert({"horizon_days": 7, "good_codes": [0, 1, 2, 3, 51]}, weather.WeatherConfig)
    assert cfg.horizon_days == 7 and 51 in cfg.good_codes
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"horizon": 7}, weather.WeatherConfig)
    for bad in ({"horizon_days": 17}, {"horizon_days": 0}, {"min_window_days": 0}, {"good_codes": [95]},
                {"severe_codes": [100]}, {"good_max_gust_kmh": 80}, {"good_max_wind_kmh": -1},
                {"good_max_precipitation_probability_pct": 101}, {"batch_size": 0}):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert(bad, weather.WeatherConfig)


def test_registered_through_the_plugin_hook() -> None:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(weather)
    found: list[pamd.Monitor] = []
    pm.hook.register_monitors(register=found.append)
    assert [type(m) for m in found] == [weather.WeatherMonitor]
    monitor = found[0]
    assert (monitor.name, monitor.schedule, monitor.config_type) == ("weather", "*/30 * * * *", weather.WeatherConfig)
    assert monitor.description


# -- runs over a store, against the fake Open-Meteo ----------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[OpenMeteoFake]:
    with serve_openmeteo(NOW) as running:
        yield running


@pytest.fixture
def fake(server: OpenMeteoFake) -> OpenMeteoFake:
    server.reset(NOW)
    return server


@pytest.fixture
async def hub(fake: OpenMeteoFake) -> AsyncIterator[ProviderHub]:
    providers = ProviderHub(ProvidersSection(weather=WeatherProviderSection(base_url=fake.url, timeout=2.0, retries=1)))
    yield providers
    await providers.aclose()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    statements: list[str] = []
    db = SQLiteStore(f"sqlite:///{tmp_path}/demo.db", trace=statements.append)
    await db.seed_demo(NOW)
    db.statements = statements  # type: ignore[attr-defined]
    yield db
    await db.aclose()


async def run(store: SQLiteStore, hub: ProviderHub | None, **kwargs: Any) -> list[pamd.Alert]:
    return await run_monitor(weather.WeatherMonitor(), store=store, now=NOW, providers=hub, **kwargs)


@pytest.mark.anyio
async def test_demo_users_alert_as_documented(store: SQLiteStore, hub: ProviderHub, fake: OpenMeteoFake) -> None:
    alerts = await run(store, hub, config=weather.WeatherConfig(batch_size=3))
    assert {a.user_id: (a.kind, a.priority) for a in alerts} == {
        "demo-u01": ("weather_window", P.MEDIUM), "demo-u04": ("weather_severe", P.HIGH),
        "demo-u07": ("weather_window", P.LOW)}
    assert len(alerts) == 3 and store.skipped_rows == {}
    by_user = {a.user_id: a for a in alerts}
    assert by_user["demo-u01"].facts["suggested_date"] == "2026-03-20"  # planned 18 Mar, +2 days
    assert "0.4 in, 80% chance" in by_user["demo-u01"].body and "mph" in by_user["demo-u01"].body
    assert by_user["demo-u04"].body.startswith("Thunderstorm with gusts to 85 km/h forecast at Wanaka on Fri 20 Mar")
    assert by_user["demo-u04"].facts["suggested_date"] == "2026-03-22"
    assert by_user["demo-u07"].facts["shift_days"] == -2
    assert all(a.fingerprint and a.monitor == "weather" and a.expires_at for a in alerts)
    # Moab, Wanaka, Riva del Garda, Gatlinburg: one request per destination cell
    assert len(fake.requests()) == 4


@pytest.mark.anyio
@pytest.mark.parametrize("hours", [0, 5, 11, 13, 17, 23])
async def test_demo_outcomes_hold_at_any_time_of_day(tmp_path: Path, fake: OpenMeteoFake, hours: int) -> None:
    now = datetime(2026, 10, 24, 0, 30, tzinfo=UTC) + timedelta(hours=hours)  # across the October DST change
    fake.reset(now)
    db = SQLiteStore(f"sqlite:///{tmp_path}/demo.db")
    await db.seed_demo(now)
    hub = ProviderHub(ProvidersSection(weather=WeatherProviderSection(base_url=fake.url, timeout=2.0, retries=0)))
    try:
        alerts = await run_monitor(weather.WeatherMonitor(), store=db, now=now, providers=hub)
    finally:
        await hub.aclose()
        await db.aclose()
    assert {a.user_id: a.priority for a in alerts} == {
        "demo-u01": P.MEDIUM, "demo-u04": P.HIGH, "demo-u07": P.LOW}


@pytest.mark.anyio
async def test_users_sharing_a_cell_share_a_request(store: SQLiteStore, hub: ProviderHub,
                                                    fake: OpenMeteoFake) -> None:
    await store.add_rows("trips", [
        {"id": f"share-{key}", "user_id": f"demo-{key}", "destination": "Arches NP", "dest_lat": 38.61,
         "dest_lon": -109.52, "start_date": "2026-03-18", "flex_days": 2, "status": "planned"}
        for key in ("u02", "u03", "u05", "u08")])
    alerts = await run(store, hub, config=weather.WeatherConfig(batch_size=2))
    assert len(fake.requests()) == 4  # still one per cell, across four batches
    assert {a.user_id for a in alerts} == {"demo-u01", "demo-u02", "demo-u03", "demo-u04", "demo-u05", "demo-u07",
                                           "demo-u08"}


@pytest.mark.anyio
async def test_one_user(store: SQLiteStore, hub: ProviderHub, fake: OpenMeteoFake) -> None:
    assert [a.priority for a in await run(store, hub, user_id="demo-u04")] == [P.HIGH]
    assert await run(store, hub, user_id="demo-u06") == []  # planned day already starts a good window
    assert await run(store, hub, user_id="demo-u08") == []  # no coordinates
    assert await run(store, hub, user_id="demo-u02") == []  # no trips
    assert len(fake.requests()) == 2  # u04's and u06's destinations; u08 has none


@pytest.mark.anyio
async def test_provider_failure_degrades_the_tick_and_other_trips_go_on(
    store: SQLiteStore, hub: ProviderHub, fake: OpenMeteoFake
) -> None:
    def wanaka_down(request: Request) -> Reply:
        if request.query.get("latitude") == ["-44.7"]:
            return Reply(503, b"")
        return fake.handle(request)

    fake.server.handler = wanaka_down
    try:
        result = await run_tick(weather.WeatherMonitor(), store=store, now=NOW, providers=hub, retries=0)
    finally:
        fake.server.handler = fake.handle
    assert result.outcome == "success"
    assert result.degradations == ["weather provider: GET /v1/forecast: HTTP 503 (after 2 attempts)"]
    assert {a.user_id for a in result.alerts} == {"demo-u01", "demo-u07"}  # demo-u04's Wanaka is unknown


@pytest.mark.anyio
async def test_provider_down_or_missing(store: SQLiteStore, hub: ProviderHub, fake: OpenMeteoFake) -> None:
    fake.server.fail_next(100, 503)
    result = await run_tick(weather.WeatherMonitor(), store=store, now=NOW, providers=hub, retries=0)
    assert (result.outcome, result.alerts) == ("success", [])
    assert any("HTTP 503" in d for d in result.degradations)
    assert len(fake.requests()) == 4 * 2  # four cells, two attempts each, never more
    result = await run_tick(weather.WeatherMonitor(), store=store, now=NOW, providers=None, retries=0)
    assert (result.outcome, result.alerts, result.degradations) == (
        "success", [], ["weather provider: no providers configured"])
    disabled = ProviderHub(ProvidersSection(weather=WeatherProviderSection(base_url=fake.url, enabled=False)))
    result = await run_tick(weather.WeatherMonitor(), store=store, now=NOW, providers=disabled, retries=0)
    assert result.degradations == ["weather provider: disabled in [providers]"]


@pytest.mark.anyio
async def test_explain(store: SQLiteStore, hub: ProviderHub) -> None:
    explained: list[pamd.monitor.Explanation] = []
    ctx = pamd.MonitorContext(monitor="weather", scheduled_at=NOW, store=store, clock=lambda: NOW,
                              providers=hub.for_tick(), explanation=explained)
    alerts = [a.complete() async for a in weather.WeatherMonitor().run(ctx)]  # run() defers the text
    assert len(alerts) == 3
    steps = {(e.user_id, e.step): e.data for e in explained}
    assert steps[("demo-u02", "trips")] == {"reason": "no planned trip departs within the horizon"}
    assert steps[("demo-u03", "trips")]["reason"] == "no planned trip departs within the horizon"
    assert steps[("demo-u08", "trips")]["without_coordinates"] == ["demo-tw08"]
    assert steps[("demo-u06", "outcome")]["outcome"].reason == "planned_day_starts_window"
    assert steps[("demo-u04", "outcome")]["outcome"].rule == "severe"
    assert steps[("demo-u01", "trips")]["today"] == date(2026, 3, 15)


@pytest.mark.anyio
async def test_horizon_in_the_users_timezone(tmp_path: Path, fake: OpenMeteoFake) -> None:
    # 11:30 UTC on 15 Mar: already 16 Mar in Auckland (UTC+13), still 15 Mar in Honolulu (UTC-10).
    now = datetime(2026, 3, 15, 11, 30, tzinfo=UTC)
    fake.reset(now, [DemoForecast(20.0, -156.0, "Pacific/Honolulu", {}, THUNDERSTORM),
                     DemoForecast(-37.0, 175.0, "Pacific/Auckland", {}, THUNDERSTORM)])
    db = SQLiteStore(f"sqlite:///{tmp_path}/tz.db")
    await db.migrate()
    await db.add_rows("profiles", [{"id": "akl", "timezone": "Pacific/Auckland"},
                                   {"id": "hnl", "timezone": "Pacific/Honolulu"}])
    rows = [{"id": f"{user}-{start}", "user_id": user, "destination": "X", "dest_lat": lat, "dest_lon": lon,
             "start_date": start, "status": "planned"}
            for user, lat, lon in (("akl", -37.0, 175.0), ("hnl", 20.0, -156.0))
            for start in ("2026-03-15", "2026-03-29", "2026-03-30")]
    await db.add_rows("trips", rows)
    hub = ProviderHub(ProvidersSection(weather=WeatherProviderSection(base_url=fake.url, timeout=2.0, retries=0)))
    try:
        alerts = await run_monitor(weather.WeatherMonitor(), store=db, now=now, providers=hub)
    finally:
        await hub.aclose()
        await db.aclose()
    # horizon 14 days: Auckland today..28 Mar is 16..29 Mar; Honolulu 15..28 Mar
    assert sorted(a.facts["trip_id"] for a in alerts) == ["akl-2026-03-29", "hnl-2026-03-15"]


BAD_TRIPS: list[tuple[str, dict[str, Any], str | None]] = [
    ("unparsable start", {"start_date": "next week"}, "trips"),
    ("impossible start", {"start_date": "2026-02-30"}, "trips"),
    ("start with trailing junk", {"start_date": "2026-03-18 or so"}, "trips"),
    ("unparsable end", {"end_date": "soon"}, "trips"),
    ("end before start", {"end_date": "2026-03-10"}, "trips"),
    ("negative flex", {"flex_days": -1}, "trips"),
    ("fractional flex", {"flex_days": 1.5}, "trips"),
    ("latitude out of range", {"dest_lat": 123.0}, "trips"),
    ("longitude text", {"dest_lon": "east"}, "trips"),
    ("null coordinates are fine", {"dest_lat": None, "dest_lon": None}, None),
    ("one null coordinate is no coordinates", {"dest_lon": None}, None),
    ("a timestamp start is its date", {"start_date": "2026-03-18T09:00:00+01:00"}, None),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("case", "changes", "table"), BAD_TRIPS, ids=[b[0] for b in BAD_TRIPS])
async def test_bad_trip_rows_are_skipped_and_counted(store: SQLiteStore, case: str, changes: dict[str, Any],
                                                     table: str | None) -> None:
    row = {"id": "odd", "user_id": "demo-u02", "destination": "Noosa", "dest_lat": -26.39, "dest_lon": 153.09,
           "start_date": "2026-03-18", "end_date": "2026-03-20", "flex_days": 1, "status": "planned"} | changes
    await store.add_rows("trips", [row])
    batches = [b async for b in store.iter_weather_inputs(date(2026, 2, 14), date(2026, 3, 30), 3)]
    inputs = {i.user_id: i for batch in batches for i in batch}
    assert len(inputs) == 8 and len(inputs["demo-u01"].trips) == 1  # other users are unaffected
    if table is None:
        assert store.skipped_rows == {}
        [odd] = inputs["demo-u02"].trips
        assert odd.start_date == date(2026, 3, 18)
        assert odd.has_coordinates is (changes.get("dest_lat", 0) is not None and changes.get("dest_lon", 0)
                                        is not None)
    else:
        assert inputs["demo-u02"].trips == () and store.skipped_rows == {table: 1}


@pytest.mark.anyio
async def test_bad_timezone_is_utc_and_counted(store: SQLiteStore) -> None:
    def corrupt(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE profiles SET timezone = 'Mars/Olympus' WHERE id = 'demo-u01'")
        conn.execute("UPDATE profiles SET timezone = 'Nowhere/Else' WHERE id = 'demo-u02'")  # no trips: not read

    await store._call(corrupt)
    [batch] = [b async for b in store.iter_weather_inputs(date(2026, 3, 14), date(2026, 3, 30), 500)]
    assert {i.user_id: i.profile.timezone for i in batch}["demo-u01"] == "UTC"
    assert store.skipped_rows == {"profiles": 1}


@pytest.mark.anyio
async def test_queries_are_batched(store: SQLiteStore) -> None:
    statements: list[str] = store.statements  # type: ignore[attr-defined]
    statements.clear()
    batches = [b async for b in store.iter_weather_inputs(date(2026, 3, 14), date(2026, 3, 30), batch_size=3)]
    assert [len(b) for b in batches] == [3, 3, 2]
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 6  # one profile page and one trips query per batch
    planned = {i.user_id: [t.id for t in i.trips] for b in batches for i in b if i.trips}
    assert planned == {"demo-u01": ["demo-t01"], "demo-u04": ["demo-t04"], "demo-u06": ["demo-tw06"],
                       "demo-u07": ["demo-tw07"], "demo-u08": ["demo-tw08"]}  # completed and far trips left out


@pytest.mark.anyio
async def test_run_needs_a_weather_capable_store() -> None:
    ctx = pamd.MonitorContext(monitor="weather", scheduled_at=NOW, store=None, clock=lambda: NOW)
    with pytest.raises(TypeError, match="iter_weather_inputs"):
        [a async for a in weather.WeatherMonitor().run(ctx)]


def test_demo_forecast_days_are_scripted_relative_to_the_trips() -> None:
    from pamd.store import demo_weather

    moab = next(f for f in demo_weather.demo_forecasts(NOW) if f.timezone == "America/Denver")
    assert moab.days[date(2026, 3, 18)] == RAIN and moab.days[date(2026, 3, 21)] == CLEAR
    assert isinstance(moab.default, DemoDay)
