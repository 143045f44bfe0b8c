"""The built-in fuel monitor: the pure estimate, the bands, the text, and a run over the demo data."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pluggy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pamd
from pamd import hookspecs
from pamd.config import PlacesProviderSection, ProvidersSection
from pamd.providers import ProviderHub
from pamd.runner import TickResult
from pamd.store.records import FuelFill, FuelInput, FuelVehicle, Position
from pamd.store.sqlite import SQLiteStore
from pamd.testing import run_tick
from tests.fakes.overpass import FakeOverpass, node, offset, places_hub, serve_overpass, way

if TYPE_CHECKING:  # mypy sees the source tree; at run time the package is installed as pamd_plugins
    from plugins import fuel
else:
    from pamd_plugins import fuel

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
_IDS = itertools.count(1)
CFG = fuel.FuelConfig()
P = pamd.Priority


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def fill(days_ago: float, litres: float, odo: float | None = None, full: bool = True,
         cost: float | None = None) -> FuelFill:
    return FuelFill(id=f"f{next(_IDS)}", logged_at=NOW - timedelta(days=days_ago), volume_l=litres, odometer_km=odo,
                    is_full_tank=full, total_cost=cost)


def user(*fills: FuelFill, capacity: float | None = 100.0, odometer: float | None = None,
         stated: float | None = None, vehicle_type: str = "campervan", units: str = "metric",
         currency: str = "EUR", vehicle: bool = True) -> FuelInput:
    v = FuelVehicle(id="v1", name="Van", vehicle_type=vehicle_type, fuel_type="diesel", fuel_capacity_l=capacity,
                    consumption_l_per_100km=stated, odometer_km=odometer)
    return FuelInput(user_id="u1", full_name="Test User", preferred_units="imperial" if units == "imperial"
                     else "metric", currency=currency, vehicle=v if vehicle else None, fills=fills)


# A history of full tanks: 500 km on 50 L (10 L/100km) every 5 days (100 km/day), last one 2 days ago at 11500 km.
HISTORY = (fill(17, 40, 10000), fill(12, 50, 10500), fill(7, 50, 11000), fill(2, 50, 11500))

# (case, input, expected: reason str, or dict of expected FuelEstimate fields)
CASES: list[tuple[str, FuelInput, str | dict[str, Any]]] = [
    ("no vehicle", user(*HISTORY, vehicle=False), "no_vehicle"),
    ("no capacity", user(*HISTORY, capacity=None), "no_capacity"),
    ("zero capacity", user(*HISTORY, capacity=0.0), "no_capacity"),
    ("no data", user(), "no_full_fill"),
    ("only partial fills", user(fill(3, 20, 100, full=False), fill(1, 20, 200, full=False)), "no_full_fill"),
    ("one fill-up: type default, default daily distance",
     user(fill(1, 52, 60000)),
     {"level_pct": 82.0, "distance_source": "days", "distance_since_fill_km": 150.0, "daily_km_source": "default",
      "consumption_l_per_100km": 12.0, "consumption_source": "type_default", "confidence": 0.36}),
    ("one fill-up: stated consumption beats type default",
     user(fill(1, 52), stated=20.0), {"litres_left": 70.0, "consumption_source": "vehicle"}),
    ("unknown vehicle type uses the fallback", user(fill(1, 52), vehicle_type="Hovercraft"),
     {"consumption_l_per_100km": 25.0}),
    ("history, odometer reading now",
     user(*HISTORY, odometer=12100),
     {"level_pct": 40.0, "distance_source": "odometer", "distance_since_fill_km": 600.0,
      "consumption_source": "history", "consumption_l_per_100km": 10.0, "range_km": 400.0, "confidence": 0.9}),
    ("history, no newer odometer: days x own average",
     user(*HISTORY, odometer=11500),
     {"level_pct": 80.0, "distance_source": "days", "daily_km": 100.0, "daily_km_source": "history"}),
    ("partial fills add their volume",
     user(*HISTORY, fill(1, 30, 11800, full=False), odometer=12300),
     {"litres_left": 100 - 80 + 30 - 0.0, "distance_since_fill_km": 800.0, "distance_source": "odometer"}),
    ("partial fill reading, then extrapolated",
     user(*HISTORY, fill(1, 10, 11700, full=False)),
     {"distance_source": "odometer+days", "distance_since_fill_km": 200 + 1700 / 16,
      "litres_left": 110 - (200 + 1700 / 16) / 10}),
    ("partials between full tanks count towards consumption",
     user(fill(10, 40, 1000), fill(8, 20, 1200, full=False), fill(6, 40, 1600), odometer=1600),
     {"consumption_l_per_100km": 10.0}),
    ("implausible pair ignored", user(fill(6, 40, 1000), fill(0.1, 2, 2000), stated=15.0, odometer=2000),
     {"consumption_source": "vehicle"}),
    ("odometer backwards after the last full tank",
     user(*HISTORY, fill(1, 10, 11000, full=False), odometer=12000), "odometer_backwards"),
    ("odometer backwards into the last full tank", user(fill(4, 50, 20000), fill(2, 50, 11500)),
     "odometer_backwards"),
    ("stale vehicle odometer is ignored, not backwards", user(*HISTORY, odometer=9000),
     {"distance_source": "days"}),
    ("stale data: weeks without a reading", user(fill(30, 50, 1000), fill(20, 50, 1500)), "stale"),
    ("more driven than a tank holds: unlogged fill-up", user(*HISTORY, odometer=13000), "unlogged_fill"),
    ("just below empty is still urgent, clamped to 0", user(*HISTORY, odometer=12510),
     {"litres_left": 0.0, "level_pct": 0.0, "range_km": 0.0}),
    ("fill-up in the future is treated as now", user(fill(-1, 50, 1000)), {"distance_since_fill_km": 0.0}),
]


@pytest.mark.parametrize(("case", "inp", "expected"), CASES, ids=[c[0] for c in CASES])
def test_estimate(case: str, inp: FuelInput, expected: str | dict[str, Any]) -> None:
    est = fuel.estimate_fuel(inp, NOW, CFG)
    if isinstance(expected, str):
        assert est == fuel.NoEstimate(expected)
        return
    assert isinstance(est, fuel.FuelEstimate), est
    got = msgspec.to_builtins(est)
    for key, value in expected.items():
        assert got[key] == (pytest.approx(value) if isinstance(value, float) else value), key


@pytest.mark.parametrize(
    ("level", "nearest", "priority"),
    [(20.0, None, None), (19.99, None, P.MEDIUM), (10.0, None, P.MEDIUM), (9.99, None, P.HIGH),
     (5.0, None, P.HIGH), (4.99, None, P.URGENT), (0.0, None, P.URGENT),
     (50.0, 300.0, None), (15.0, 200.0, P.URGENT)],
)
def test_classify(level: float, nearest: float | None, priority: pamd.Priority | None) -> None:
    base = fuel.estimate_fuel(user(*HISTORY, odometer=12100), NOW, CFG)
    assert isinstance(base, fuel.FuelEstimate)
    est = msgspec.structs.replace(base, level_pct=level, range_km=level * 10)  # 100 L tank, 10 L/100km
    assert fuel.classify(est, CFG, nearest) == priority


def test_config_validation() -> None:
    cfg = msgspec.convert({"medium_pct": 30, "consumption_l_per_100km": {"campervan": 9}}, fuel.FuelConfig)
    est = fuel.estimate_fuel(user(fill(1, 50)), NOW, cfg)
    assert isinstance(est, fuel.FuelEstimate) and est.consumption_l_per_100km == 9.0
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"medium_percent": 30}, fuel.FuelConfig)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"high_pct": 25}, fuel.FuelConfig)


def test_alert_text_imperial_usd() -> None:
    inp = user(*HISTORY[:-1], fill(2, 50, 11500, cost=65.0), odometer=12350, units="imperial", currency="USD")
    est = fuel.estimate_fuel(inp, NOW, CFG)
    assert isinstance(est, fuel.FuelEstimate)
    alert = fuel.build_alert(inp, est, P.MEDIUM, [])
    assert alert.title == "Fuel getting low: about 15% left"
    assert "4.0 gal of fuel left (15% of 26.4 gal)" in alert.body
    assert "roughly 93 mi of range" in alert.body and "528 mi driven since (odometer)" in alert.body
    assert "costs about $110.50" in alert.body  # 85 L at $1.30/L
    assert " L " not in alert.body and "km" not in alert.body
    assert alert.kind == "fuel_low" and alert.fingerprint == "" and alert.user_id == "u1"
    assert alert.facts["litres_left"] == 15.0 and alert.facts["range_km"] == 150.0
    assert alert.facts["distance_since_fill_km"] == 850.0 and alert.facts["stations"] == []
    assert alert.facts["last_full_fill_at"] == "2026-03-13T12:00:00.000Z"
    msgspec.json.encode(alert)  # facts are plain JSON


def test_alert_text_metric_and_other_currencies() -> None:
    inp = user(*HISTORY[:-1], fill(2, 50, 11500, cost=90.0), currency="CHF")
    est = fuel.estimate_fuel(inp, NOW, CFG)
    assert isinstance(est, fuel.FuelEstimate)
    _, body = fuel.render(inp, inp.vehicle or pytest.fail(), est, P.HIGH)
    assert "80 L of fuel left (80% of 100 L)" in body and "800 km of range" in body
    assert "estimated from your average 100 km a day" in body and "36.00 CHF" in body


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.floats(-2, 60), st.floats(0, 500), st.none() | st.floats(0, 1e6), st.booleans()),
             max_size=8),
    st.none() | st.floats(0, 1e6), st.none() | st.floats(0, 500), st.none() | st.floats(0, 100),
)
def test_estimate_never_crashes(rows: list[tuple[float, float, float | None, bool]], odometer: float | None,
                                capacity: float | None, stated: float | None) -> None:
    fills = sorted((fill(*row) for row in rows), key=lambda f: f.logged_at)
    est = fuel.estimate_fuel(user(*fills, capacity=capacity, odometer=odometer, stated=stated), NOW, CFG)
    if isinstance(est, fuel.FuelEstimate):
        assert 0 <= est.level_pct <= 100 and est.range_km >= 0 and 0 < est.confidence <= 1


def test_registered_through_the_plugin_hook() -> None:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(fuel)
    found: list[pamd.Monitor] = []
    pm.hook.register_monitors(register=found.append)
    assert [type(m) for m in found] == [fuel.FuelMonitor]
    monitor = found[0]
    assert (monitor.name, monitor.schedule, monitor.run_at_startup) == ("fuel", "*/5 * * * *", True)
    assert monitor.config_type is fuel.FuelConfig and monitor.description


# -- a run over the demo data -------------------------------------------------------------------------------


@pytest.fixture
async def demo_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(f"sqlite:///{tmp_path}/demo.db")
    await store.seed_demo(NOW)
    yield store
    await store.aclose()


async def run(store: Any, config: fuel.FuelConfig | None = None, user_id: str | None = None) -> list[pamd.Alert]:
    ctx = pamd.MonitorContext(monitor="fuel", scheduled_at=NOW, store=store, config=config, user_id=user_id,
                              clock=lambda: NOW)
    return [alert.complete() async for alert in fuel.FuelMonitor().run(ctx)]  # run() defers the text


@pytest.mark.anyio
async def test_demo_users_alert_as_documented(demo_store: SQLiteStore) -> None:
    alerts = await run(demo_store, fuel.FuelConfig(batch_size=3))
    assert {a.user_id: a.priority for a in alerts} == {
        "demo-u01": P.MEDIUM, "demo-u02": P.HIGH, "demo-u03": P.URGENT}
    assert len(alerts) == 3
    by_user = {a.user_id: a for a in alerts}
    assert "gal" in by_user["demo-u01"].body and "mi of range" in by_user["demo-u01"].body
    assert "16 L of fuel left" in by_user["demo-u02"].body and "A$" in by_user["demo-u02"].body
    assert by_user["demo-u03"].facts["distance_source"] == "days"
    assert by_user["demo-u01"].facts["level_pct"] == pytest.approx(14.737)
    assert all(a.kind == "fuel_low" and a.facts["stations"] == [] for a in alerts)
    assert demo_store.skipped_rows == {}


@pytest.mark.anyio
async def test_demo_run_for_one_user_and_with_other_thresholds(demo_store: SQLiteStore) -> None:
    assert [a.priority for a in await run(demo_store, user_id="demo-u02")] == [P.HIGH]
    assert await run(demo_store, user_id="demo-u04") == []
    assert await run(demo_store, user_id="demo-u06") == []  # no vehicle
    loose = fuel.FuelConfig(medium_pct=75, high_pct=3, urgent_pct=1)
    assert {a.user_id: a.priority for a in await run(demo_store, loose)} == {
        "demo-u01": P.MEDIUM, "demo-u02": P.MEDIUM, "demo-u03": P.HIGH, "demo-u04": P.MEDIUM,
        "demo-u05": P.MEDIUM, "demo-u07": P.MEDIUM, "demo-u08": P.MEDIUM}


@pytest.mark.anyio
async def test_run_needs_a_fuel_capable_store() -> None:
    with pytest.raises(TypeError, match="iter_fuel_inputs"):
        await run(None)


# -- the user's position and nearby stations (places provider against a fake Overpass) ---------------------

HOME = {"demo-u01": (39.7392, -104.9903), "demo-u02": (-27.4698, 153.0251), "demo-u03": (19.7071, -155.0885)}


def here(user_id: str, north_km: float = 0.0, east_km: float = 0.0) -> tuple[float, float]:
    """A point relative to where the demo user is now (demo_context puts them 0.05° NE of home)."""
    lat, lon = HOME[user_id]
    return offset(lat + 0.05, lon + 0.05, north_km, east_km)


STATIONS = [
    node(101, *here("demo-u01", 2), {"amenity": "fuel", "fuel:diesel": "yes"}, name="Conoco", brand="Conoco"),
    way(102, *here("demo-u01", 0, 5), {"amenity": "fuel"}, name="Kum & Go"),
    node(103, *here("demo-u01", 1), {"amenity": "fuel", "fuel:diesel": "no", "fuel:octane_87": "yes"}),
    node(104, *here("demo-u01", -8), {"amenity": "fuel", "fuel:HGV_diesel": "yes"}, name="Pilot Travel Center"),
    node(105, *here("demo-u01", -9), {"amenity": "fuel", "fuel:diesel": "yes"}, name="Fourth nearest"),
    node(201, *here("demo-u02", 80), {"amenity": "fuel", "fuel:diesel": "yes"}, name="Far away diesel"),
    node(301, *here("demo-u03", 0.3), {"amenity": "fuel", "fuel:octane_87": "yes"}, name="Minit Stop"),
]


@pytest.fixture(scope="module")
def overpass() -> Iterator[FakeOverpass]:
    with serve_overpass(STATIONS) as server:
        yield server


@pytest.fixture
async def hub(overpass: FakeOverpass) -> AsyncIterator[ProviderHub]:
    overpass.reset()
    providers = places_hub(overpass.url)
    yield providers
    await providers.aclose()


async def tick(store: Any, hub: ProviderHub | None, config: fuel.FuelConfig | None = None,
               now: datetime = NOW) -> TickResult:
    result = await run_tick(fuel.FuelMonitor(), config=config, store=store, now=now, providers=hub, retries=0)
    assert result.outcome == "success", result.error
    return result


@pytest.mark.anyio
async def test_position_from_recent_location_else_newest_fill(demo_store: SQLiteStore) -> None:
    async def positions(now: datetime = NOW, **kwargs: Any) -> dict[str, Position | None]:
        return {i.user_id: i.position async for batch in demo_store.iter_fuel_inputs(now=now, **kwargs)
                for i in batch}

    now = await positions()
    assert now["demo-u01"] == Position(lat=39.7892, lon=-104.9403, source="user_location",
                                       recorded_at=NOW - timedelta(minutes=10))
    assert now["demo-u06"] is None  # no vehicle: not looked up
    later = await positions(NOW + timedelta(hours=7))  # the locations are stale by then
    assert later["demo-u01"] == Position(lat=39.7792, lon=-105.0303, source="fuel_log",
                                         recorded_at=NOW - timedelta(days=3))
    assert (await positions(NOW + timedelta(hours=7), position_max_age=timedelta(hours=8)))["demo-u01"] == now[
        "demo-u01"]
    await demo_store.add_rows("user_locations", [
        {"user_id": "demo-u02", "recorded_at": NOW - timedelta(minutes=1), "lat": 95.0, "lon": 153.0},
        {"user_id": "demo-u03", "recorded_at": NOW + timedelta(hours=2), "lat": 19.7, "lon": -155.1},
        {"user_id": "demo-u04", "recorded_at": NOW - timedelta(minutes=1), "lat": None, "lon": None},
    ])
    bad = await positions()
    assert bad["demo-u02"] is not None and bad["demo-u02"].source == "fuel_log"  # impossible latitude: skipped
    assert bad["demo-u03"] is not None and bad["demo-u03"].source == "fuel_log"  # in the future: skipped
    assert bad["demo-u04"] is not None and bad["demo-u04"].source == "user_location"  # row without coordinates
    assert demo_store.skipped_rows["user_locations"] == 2


@pytest.mark.anyio
async def test_demo_alerts_carry_real_nearby_stations(demo_store: SQLiteStore, hub: ProviderHub,
                                                     overpass: FakeOverpass) -> None:
    result = await tick(demo_store, hub)
    by_user = {a.user_id: a for a in result.alerts}
    assert {u: a.priority for u, a in by_user.items()} == {
        "demo-u01": P.MEDIUM, "demo-u02": P.HIGH, "demo-u03": P.URGENT}
    assert len(overpass.requests) == 3  # one lookup per alerting user, none for the others
    margaret = by_user["demo-u01"]
    assert [s["name"] for s in margaret.facts["stations"]] == ["Conoco", "Kum & Go", "Pilot Travel Center"]
    assert [s["fuel_confirmed"] for s in margaret.facts["stations"]] == [True, False, True]
    assert margaret.facts["stations"][1]["osm_type"] == "way"
    assert margaret.facts["stations"][0]["distance_km"] == pytest.approx(2.0, abs=0.01)
    assert ("Nearest diesel stations to you (straight-line distance): Conoco (1.2 mi), Kum & Go (3.1 mi, diesel "
            "not confirmed in OpenStreetMap), Pilot Travel Center (5.0 mi).") in margaret.body
    assert margaret.subject == "demo-v01" and margaret.facts["position"]["source"] == "user_location"
    assert by_user["demo-u02"].facts["stations"] == [] and "station" not in by_user["demo-u02"].body
    assert "Nearest petrol station to you (straight-line distance): Minit Stop (0.2 mi)." in by_user["demo-u03"].body
    assert result.degradations == []


@pytest.mark.anyio
async def test_range_shorter_than_the_nearest_station_is_urgent(demo_store: SQLiteStore, hub: ProviderHub) -> None:
    wide = fuel.FuelConfig(station_radius_km=100)
    jack = {a.user_id: a for a in (await tick(demo_store, hub, wide)).alerts}["demo-u02"]
    assert jack.priority == P.URGENT  # 8 % left is only "high", but ~64 km of range and the station is 80 km away
    assert jack.facts["range_km"] == pytest.approx(64.0) and jack.facts["stations"][0]["name"] == "Far away diesel"
    assert "Far away diesel (80 km)" in jack.body and "range is shorter than the distance to the nearest" in jack.body


@pytest.mark.anyio
async def test_stations_near_an_old_fill_up_do_not_make_it_urgent(demo_store: SQLiteStore, hub: ProviderHub) -> None:
    # Seven hours on, the demo locations are stale: stations are searched around the newest fill-up instead.
    later = NOW + timedelta(hours=7)
    await demo_store.add_rows("fuel_log", [{
        "id": "extra", "user_id": "demo-u02", "vehicle_id": "demo-v02", "logged_at": NOW - timedelta(days=2, hours=1),
        "volume_l": 0.0, "is_full_tank": False, "lat": here("demo-u02")[0], "lon": here("demo-u02")[1]}])
    alerts = (await tick(demo_store, hub, fuel.FuelConfig(station_radius_km=100), later)).alerts
    jack = {a.user_id: a for a in alerts}["demo-u02"]
    assert jack.facts["position"]["source"] == "fuel_log" and jack.facts["stations"]
    assert jack.priority == P.HIGH
    assert "Nearest diesel station to your last fill-up" in jack.body and "range is shorter" not in jack.body


@pytest.mark.anyio
async def test_provider_failure_degrades_and_alerts_without_stations(demo_store: SQLiteStore, hub: ProviderHub,
                                                                    overpass: FakeOverpass) -> None:
    overpass.rate_limit(100)
    result = await tick(demo_store, hub)
    assert {a.user_id: a.priority for a in result.alerts} == {
        "demo-u01": P.MEDIUM, "demo-u02": P.HIGH, "demo-u03": P.URGENT}
    assert all(a.facts["stations"] == [] and "station" not in a.body for a in result.alerts)
    assert result.degradations and all(d.startswith("places provider:") for d in result.degradations)
    assert "HTTP 429" in result.degradations[0]


@pytest.mark.anyio
async def test_no_lookup_for_fuels_without_stations_or_without_providers(demo_store: SQLiteStore, hub: ProviderHub,
                                                                         overpass: FakeOverpass) -> None:
    await demo_store.add_rows("vehicles", [{"id": "demo-v03", "user_id": "demo-u03", "name": "Honu",
                                            "vehicle_type": "campervan", "fuel_type": "electric",
                                            "fuel_capacity_l": 80.0, "is_primary": True}], on_conflict="update")
    alerts = (await tick(demo_store, hub)).alerts
    leilani = {a.user_id: a for a in alerts}["demo-u03"]
    assert leilani.facts["stations"] == [] and len(overpass.requests) == 2
    assert all(a.facts["stations"] == [] for a in (await tick(demo_store, None)).alerts)
    off = ProviderHub(ProvidersSection(places=PlacesProviderSection(cache_ttl=0, base_url=overpass.url, enabled=False)))
    result = await tick(demo_store, off)  # disabled on purpose: no lookups, and not a degraded tick
    assert all(a.facts["stations"] == [] for a in result.alerts) and result.degradations == []
    assert len(overpass.requests) == 2
