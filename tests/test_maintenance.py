"""The built-in maintenance monitor: task normalisation, bands, odometer and pace, costs, text, the SQLite
queries (bad rows, batching) and runs over the demo data with a fake Overpass for repair shops."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pluggy
import pytest

import pamd
from pamd import hookspecs
from pamd.config import PlacesProviderSection, ProvidersSection
from pamd.providers import ProviderHub
from pamd.runner import TickResult
from pamd.store.records import Position, Profile
from pamd.store.records_maintenance import MaintenanceInput, MaintenanceRecord, MaintenanceVehicle, OdometerReading
from pamd.store.sqlite import SQLiteStore
from pamd.testing import run_tick
from tests.fakes.overpass import FakeOverpass, node, offset, places_hub, serve_overpass, way

if TYPE_CHECKING:  # mypy sees the source tree; at run time the package is installed as pamd_plugins
    from plugins import maintenance as mnt
else:
    from pamd_plugins import maintenance as mnt

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
CFG = mnt.MaintenanceConfig()
P = pamd.Priority
_IDS = itertools.count(1)


def rec(task: str = "Oil change", done_days_ago: int = 100, *, due_in: int | None = None, due_km: float | None = None,
        odo: float | None = None, cost: float | None = None, vehicle: str = "v1", now: datetime = NOW,
        due_on: date | None = None) -> MaintenanceRecord:
    today = now.date()
    return MaintenanceRecord(
        id=f"r{next(_IDS):03d}", vehicle_id=vehicle, task=task, done_on=today - timedelta(days=done_days_ago),
        odometer_km=odo, cost=cost, next_due_odometer_km=due_km,
        next_due_date=due_on or (today + timedelta(days=due_in) if due_in is not None else None))


def veh(vid: str = "v1", odo: float | None = 50000.0, readings: tuple[tuple[float, float], ...] = (),
        vtype: str = "campervan") -> MaintenanceVehicle:
    return MaintenanceVehicle(id=vid, name=f"Van {vid}", vehicle_type=vtype, odometer_km=odo,
                              readings=tuple(OdometerReading(NOW - timedelta(days=d), km) for d, km in readings))


def user(*records: MaintenanceRecord, vehicles: tuple[MaintenanceVehicle, ...] = (), tz: str = "UTC",
         units: str = "metric", currency: str = "EUR", position: Position | None = None) -> MaintenanceInput:
    profile = Profile(user_id="u1", timezone=tz, preferred_units="imperial" if units == "imperial" else "metric",
                      currency=currency)
    ordered = tuple(sorted(records, key=lambda r: (r.done_on, r.id)))
    return MaintenanceInput(profile=profile, records=ordered, vehicles=vehicles or (veh(),), position=position)


# -- pure rules ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "key"),
    [("Oil and filter change", "oil change"), ("Oil & filter", "oil change"), ("  OIL CHANGE!! ", "oil change"),
     ("Engine oil service", "oil change"), ("Transmission oil change", "transmission oil change"),
     ("Generator oil change", "generator oil change"), ("Tire Rotation", "tyre rotation"),
     ("rotate tyres", "tyre rotation"), ("Brake  inspection", "brake inspection"), ("Ölwechsel", "ölwechsel")],
)
def test_task_key(task: str, key: str) -> None:
    assert mnt.task_key(task) == key


@pytest.mark.parametrize(
    ("days", "km", "expected"),
    [(None, None, (None, "date+odometer")), (15, None, (None, "date+odometer")), (14, None, (P.MEDIUM, "date")),
     (4, None, (P.MEDIUM, "date")), (3, None, (P.HIGH, "date")), (0, None, (P.HIGH, "date")),
     (-1, None, (P.URGENT, "date")), (None, 800.1, (None, "date+odometer")), (None, 800.0, (P.MEDIUM, "odometer")),
     (None, 150.1, (P.MEDIUM, "odometer")), (None, 150.0, (P.HIGH, "odometer")), (None, 0.0, (P.HIGH, "odometer")),
     (None, -0.5, (P.URGENT, "odometer")), (20, 100.0, (P.HIGH, "odometer")), (2, 700.0, (P.HIGH, "date")),
     (2, 100.0, (P.HIGH, "date+odometer")), (-3, 5000.0, (P.URGENT, "date")), (30, -10.0, (P.URGENT, "odometer"))],
)
def test_band(days: int | None, km: float | None, expected: tuple[pamd.Priority | None, str]) -> None:
    assert mnt.band(days, km, CFG) == expected


def one(inp: MaintenanceInput, now: datetime = NOW) -> mnt.Due:
    due, _ = mnt.assess(inp, now, CFG)
    assert len(due) == 1, due
    return due[0]


def reason(inp: MaintenanceInput, now: datetime = NOW) -> str:
    due, why = mnt.assess(inp, now, CFG)
    assert due == [] and len(why) == 1, (due, why)
    return next(iter(why.values()))


def test_the_latest_record_of_a_task_resolves_earlier_ones() -> None:
    overdue = rec("Oil change", 400, due_in=-200)
    done = rec("Oil & filter change", 50, due_in=130)
    assert reason(user(overdue, done)) == "not due yet"
    assert one(user(overdue)).priority == P.URGENT
    other_vehicle = rec("Oil change", 50, due_in=130, vehicle="v2")
    due = one(user(overdue, other_vehicle, vehicles=(veh(), veh("v2"))))  # another vehicle's oil change is not it
    assert due.vehicle.id == "v1" and due.task_key == "oil change"


@pytest.mark.parametrize(
    ("record", "why"),
    [(rec(due_in=None, due_km=None), "no next due date or odometer"),
     (rec(due_km=60000), "no current odometer to compare"),
     (rec(due_in=15, due_km=51000), "not due yet")],
)
def test_no_alert_reasons(record: MaintenanceRecord, why: str) -> None:
    vehicles = (veh(odo=None),) if why.startswith("no current") else (veh(),)
    assert reason(user(record, vehicles=vehicles)) == why


@pytest.mark.parametrize(
    ("vehicle", "records", "odometer", "source"),
    [(veh(odo=50000), (), 50000.0, "vehicle"),
     (veh(odo=50000, readings=((10, 49000), (2, 50600))), (), 50600.0, "fuel_log"),
     (veh(odo=None, readings=((2, 49000),)), (rec("Tyres", 1, odo=49500),), 49500.0, "maintenance_record"),
     (veh(odo=None), (), None, None)],
)
def test_current_odometer(vehicle: MaintenanceVehicle, records: tuple[MaintenanceRecord, ...],
                          odometer: float | None, source: str | None) -> None:
    got = mnt.current_odometer(vehicle, records)
    assert (got[0] if got else None, got[1] if got else None) == (odometer, source)


def test_odometer_bands_and_pace_estimate() -> None:
    # 1,000 km over 10 days (100 km/day); 400 km to the mark: reached in about 4 days (medium by odometer).
    due = one(user(rec(due_km=50400), vehicles=(veh(odo=None, readings=((12, 49000), (2, 50000))),)))
    assert (due.priority, due.by, due.km_left, due.daily_km) == (P.MEDIUM, "odometer", 400.0, 100.0)
    assert due.estimated_date == date(2026, 3, 19)
    overdue = one(user(rec(due_km=49900), vehicles=(veh(odo=None, readings=((12, 49000), (2, 50000))),)))
    assert overdue.priority == P.URGENT and overdue.km_left == -100.0 and overdue.estimated_date is None


@pytest.mark.parametrize(
    "readings",
    [((12, 49000), (2, 48000)),  # odometer going backwards
     ((3, 49000), (1, 50000)),  # less than a week apart
     ((200, 40000), (150, 45000)),  # stale: older than pace_days
     ((2, 50000),)],  # one reading
)
def test_no_pace_from_unusable_readings(readings: tuple[tuple[float, float], ...]) -> None:
    assert mnt.pace(veh(readings=readings), NOW, CFG) is None


@pytest.mark.parametrize(
    ("now", "tz", "due_on", "priority", "days_left"),
    [
        # 12:00 UTC is 02:00 on the 15th in Honolulu (UTC-10) but 01:00 on the 16th in Auckland (UTC+13).
        (NOW, "Pacific/Honolulu", date(2026, 3, 15), P.HIGH, 0),
        (NOW, "Pacific/Auckland", date(2026, 3, 15), P.URGENT, -1),
        (NOW, "Pacific/Auckland", date(2026, 3, 30), P.MEDIUM, 14),
        (NOW, "Pacific/Honolulu", date(2026, 3, 30), None, 15),
        # 23:30 UTC on the 28th is 00:30 on the 29th in Paris, the night clocks go forward.
        (datetime(2026, 3, 28, 23, 30, tzinfo=UTC), "Europe/Paris", date(2026, 3, 29), P.HIGH, 0),
        (datetime(2026, 3, 29, 1, 30, tzinfo=UTC), "Europe/Paris", date(2026, 4, 1), P.HIGH, 3),
        # month end and leap years
        (datetime(2026, 1, 31, 12, tzinfo=UTC), "UTC", date(2026, 2, 14), P.MEDIUM, 14),
        (datetime(2028, 2, 28, 12, tzinfo=UTC), "UTC", date(2028, 3, 1), P.HIGH, 2),
        (datetime(2027, 2, 28, 12, tzinfo=UTC), "UTC", date(2027, 3, 1), P.HIGH, 1),
        (datetime(2028, 2, 29, 12, tzinfo=UTC), "America/Denver", date(2028, 2, 29), P.HIGH, 0),
        (datetime(2028, 3, 1, 6, tzinfo=UTC), "America/Denver", date(2028, 2, 29), P.HIGH, 0),
        (datetime(2028, 3, 1, 8, tzinfo=UTC), "America/Denver", date(2028, 2, 29), P.URGENT, -1),
    ],
)
def test_due_dates_are_the_users_local_dates(now: datetime, tz: str, due_on: date, priority: pamd.Priority | None,
                                             days_left: int) -> None:
    inp = user(rec(due_on=due_on, now=now), tz=tz)
    due, why = mnt.assess(inp, now, CFG)
    if priority is None:
        assert due == [] and list(why.values()) == ["not due yet"]
    else:
        assert [(d.priority, d.days_left) for d in due] == [(priority, days_left)]


def test_cost_estimates() -> None:
    history = user(rec("Oil change", 500, cost=380), rec("oil & filter", 300, cost=0.0),
                   rec("Oil change", 100, cost=420), rec("Oil service", 10, cost=400, due_in=5))
    assert mnt.estimate_cost("oil change", history, CFG) == mnt.Cost(400.0, "history", 3)  # zero cost ignored
    usd = user(rec("Brake inspection", 10), currency="USD")
    assert mnt.estimate_cost("brake inspection", usd, CFG) == mnt.Cost(120.0, "table")
    assert mnt.estimate_cost("brake inspection", user(currency="EUR"), CFG) is None  # the table is in USD
    assert mnt.estimate_cost("fridge service", usd, CFG) is None
    custom = mnt.MaintenanceConfig(cost_table={"Fridge": 90}, cost_table_currency="eur")
    assert mnt.estimate_cost("fridge service", user(currency="EUR"), custom) == mnt.Cost(90.0, "table")


def test_config_validation() -> None:
    cfg = msgspec.convert({"due_soon_days": 30, "cost_table": {"oil change": 99}}, mnt.MaintenanceConfig)
    assert cfg.due_soon_days == 30 and cfg.cost_table == {"oil change": 99.0}
    for bad in ({"due_soon_dayz": 1}, {"very_soon_days": 20}, {"very_soon_km": 900}, {"cost_table": {"x": -1}},
                {"batch_size": 0}, {"shop_radius_km": 0}):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert(bad, mnt.MaintenanceConfig)


SHOPS = [{"name": "Garage du Lac", "distance_km": 0.4, "category": "car_repair"},
         {"name": "PL Services", "distance_km": 12.6, "category": "truck_repair"}]


def test_text_imperial_with_estimates_and_shops() -> None:
    inp = user(rec("Oil change", 100, odo=40000, cost=150, due_in=10, due_km=50400), currency="USD",
               units="imperial", vehicles=(veh(odo=None, readings=((12, 49000), (2, 50000))),),
               position=Position(lat=1, lon=2, source="user_location", recorded_at=NOW))
    due = one(inp)
    alert = mnt.build_alert(inp, due, mnt.estimate_cost(due.task_key, inp, CFG), SHOPS, NOW)
    assert alert.title == "Due soon: Oil change (Van v1)"
    assert ("Oil change on Van v1 is due on Wed 25 Mar (in 10 days) or at 31,317 mi (249 mi to go; odometer "
            "31,069 mi), whichever comes first.") in alert.body
    assert "about 62 mi a day) you would reach 31,317 mi around Thu 19 Mar (an estimate)" in alert.body
    assert "Estimated cost: about $150.00 (what it cost you last time)." in alert.body
    assert "Repair shops near you (straight-line distance): Garage du Lac, garage (0.2 mi), PL Services, " \
           "truck garage (7.8 mi)." in alert.body
    assert "km" not in alert.body and alert.subject == "v1:oil change" and alert.kind == "maintenance_due"
    assert alert.expires_at == NOW + timedelta(hours=24)
    assert alert.facts["km_left"] == 400.0 and alert.facts["estimated_due_date"] == "2026-03-19"
    assert alert.facts["cost_source"] == "history" and alert.facts["currency"] == "USD"
    msgspec.json.encode(alert)


def test_text_overdue_without_cost_or_shops() -> None:
    inp = user(rec("Brake inspection", 365, odo=None, due_in=-5, due_km=60000), vehicles=(veh(odo=50000),))
    due = one(inp)
    title, body = mnt.render(inp, due, None, [])
    assert title == "Overdue: Brake inspection (Van v1)"
    assert body == ("Brake inspection on Van v1 was due on Tue 10 Mar (5 days ago). By odometer it is due at "
                    "60,000 km (10,000 km to go; odometer 50,000 km). Last done on Sat 15 Mar 2025. "
                    "Book it as soon as you can.")


# -- the SQLite queries -------------------------------------------------------------------------------------


async def seeded(tmp_path: Path, trace: list[str] | None = None, now: datetime = NOW) -> SQLiteStore:
    store = SQLiteStore(f"sqlite:///{tmp_path}/demo.db", trace=trace.append if trace is not None else None)
    await store.seed_demo(now)
    return store


async def inputs(store: SQLiteStore, batch_size: int = 500, **kwargs: Any) -> dict[str, MaintenanceInput]:
    return {i.user_id: i async for batch in store.iter_maintenance_inputs(batch_size, now=NOW, **kwargs)
            for i in batch}


BAD_ROWS: list[dict[str, Any]] = [
    {"id": "bad-task", "task": None},
    {"id": "bad-empty-task", "task": "  "},
    {"id": "bad-date", "date": "15/03/2026"},
    {"id": "bad-null-date", "date": None},
    {"id": "bad-future", "date": "2026-03-20"},
    {"id": "bad-odometer", "odometer_km": -5.0},
    {"id": "bad-due-odometer", "next_due_odometer_km": -1.0},
    {"id": "bad-due-date", "next_due_date": "soon"},
    {"id": "bad-cost", "cost": -20.0},
    {"id": "bad-vehicle", "vehicle_id": "demo-v02"},
]


@pytest.mark.anyio
async def test_store_skips_and_counts_bad_rows(tmp_path: Path) -> None:
    store = await seeded(tmp_path)
    base: dict[str, Any] = {"user_id": "demo-u04", "vehicle_id": "demo-v04", "task": "Gas check", "date": "2026-03-01",
            "next_due_date": "2026-03-16"}
    good = [base | {"id": "ok-null-vehicle", "vehicle_id": None},
            base | {"id": "ok-timestamp", "date": "2026-03-02T10:00:00Z", "task": "Water pump"}]
    await store.add_rows("maintenance_records", [base | row for row in BAD_ROWS] + good)
    await store.add_rows("vehicles", [{"id": "bad-odo", "user_id": "demo-u04", "name": "Trailer",
                                       "odometer_km": -1.0}])
    await store.add_rows("profiles", [{"id": "demo-u09", "full_name": "Zed", "timezone": "Mars/Olympus_Mons"}])
    await store.add_rows("maintenance_records",
                         [{"id": "z1", "user_id": "demo-u09", "task": "x", "date": "2026-01-01"}])
    got = await inputs(store)
    aroha = got["demo-u04"]
    assert sorted(r.id for r in aroha.records) == ["demo-m04", "ok-null-vehicle", "ok-timestamp"]
    assert {r.vehicle_id for r in aroha.records} == {"demo-v04"}  # NULL vehicle: the primary
    assert store.skipped_rows["maintenance_records"] == len(BAD_ROWS) + 1  # z1: demo-u09 has no vehicle
    assert store.skipped_rows["vehicles"] == 1 and store.skipped_rows["profiles"] == 1
    assert got["demo-u09"].profile.timezone == "UTC"
    trailer = next(v for v in aroha.vehicles if v.id == "bad-odo")
    assert trailer.odometer_km is None  # kept, odometer unknown
    alerts = (await tick(store, None)).alerts
    assert {(a.user_id, a.facts["task_key"]) for a in alerts if a.user_id == "demo-u04"} == {
        ("demo-u04", "gas check"), ("demo-u04", "water pump")}
    await store.aclose()


@pytest.mark.anyio
async def test_store_readings_position_and_batching(tmp_path: Path) -> None:
    trace: list[str] = []
    store = await seeded(tmp_path, trace)
    trace.clear()
    got = await inputs(store, batch_size=3)
    selects = [s for s in trace if s.lstrip().upper().startswith(("SELECT", "WITH"))]
    assert len(selects) == 3 * 5  # 3 pages of users, 5 queries each, whatever the page size
    margaret = got["demo-u01"]
    assert [r.km for r in margaret.vehicles[0].readings] == [41200.0, 41500.0, 41800.0, 42100.0]
    assert margaret.position is not None and margaret.position.source == "user_location"
    assert got["demo-u03"].records == () and got["demo-u03"].vehicles == () and got["demo-u03"].position is None
    later = await inputs(store, user_id="demo-u01", position_max_age=timedelta(minutes=5))
    assert later["demo-u01"].position is not None and later["demo-u01"].position.source == "fuel_log"
    assert list(later) == ["demo-u01"]
    await store.aclose()


# -- runs over the demo data --------------------------------------------------------------------------------

def near(lat: float, lon: float, km: float) -> tuple[float, float]:
    return offset(lat + 0.05, lon + 0.05, km)  # the demo users are 0.05° NE of home


SHOP_ELEMENTS = [
    node(1, *near(39.7392, -104.9903, 1.5), {"shop": "car_repair"}, name="Mile High Auto"),
    way(2, *near(39.7392, -104.9903, 6), {"shop": "truck_repair"}, name="Rocky Mountain Truck & RV"),
    node(3, *near(36.6437, -93.2185, 3), {"shop": "caravan", "service:vehicle:caravan_repair": "yes"},
         name="Branson RV Center"),
]


@pytest.fixture(scope="module")
def overpass() -> Iterator[FakeOverpass]:
    with serve_overpass(SHOP_ELEMENTS) as server:
        yield server


@pytest.fixture
async def hub(overpass: FakeOverpass) -> AsyncIterator[ProviderHub]:
    overpass.reset()
    providers = places_hub(overpass.url)
    yield providers
    await providers.aclose()


async def tick(store: Any, hub: ProviderHub | None, now: datetime = NOW, **kwargs: Any) -> TickResult:
    result = await run_tick(mnt.MaintenanceMonitor(), store=store, now=now, providers=hub, retries=0, **kwargs)
    assert result.outcome == "success", result.error
    return result


EXPECTED = {"demo-u01": P.MEDIUM, "demo-u02": P.HIGH, "demo-u05": P.MEDIUM, "demo-u07": P.URGENT}


@pytest.mark.parametrize("now", [NOW, datetime(2026, 3, 29, 0, 30, tzinfo=UTC), datetime(2028, 2, 29, 23, tzinfo=UTC),
                                 datetime(2026, 12, 31, 11, tzinfo=UTC)])
@pytest.mark.anyio
async def test_demo_users_alert_as_documented(tmp_path: Path, hub: ProviderHub, now: datetime) -> None:
    store = await seeded(tmp_path, now=now)
    result = await tick(store, hub, now)
    assert {a.user_id: a.priority for a in result.alerts} == EXPECTED
    assert len(result.alerts) == 4 and store.skipped_rows == {} and result.degradations == []
    await store.aclose()


@pytest.mark.anyio
async def test_demo_alerts_details_and_shops(tmp_path: Path, hub: ProviderHub, overpass: FakeOverpass) -> None:
    store = await seeded(tmp_path)
    by_user = {a.user_id: a for a in (await tick(store, hub)).alerts}
    margaret = by_user["demo-u01"]
    assert margaret.facts["cost_estimate"] == 395.0 and margaret.facts["cost_samples"] == 3
    assert margaret.subject == "demo-v01:oil change" and margaret.facts["due_by"] == "date"
    assert [s["name"] for s in margaret.facts["shops"]] == ["Mile High Auto", "Rocky Mountain Truck & RV"]
    assert "Repair shops near you (straight-line distance): Mile High Auto, garage (0.9 mi), Rocky Mountain " \
           "Truck & RV, truck garage (3.7 mi)." in margaret.body
    assert by_user["demo-u02"].facts["km_left"] == 100.0 and "A$120.00" in by_user["demo-u02"].body
    assert by_user["demo-u05"].facts["cost_estimate"] is None and "cost" not in by_user["demo-u05"].body
    bob = by_user["demo-u07"]
    assert bob.facts["cost_source"] == "table" and bob.facts["days_left"] == -5
    assert [s["category"] for s in bob.facts["shops"]] == ["caravan_repair"]
    assert len(overpass.requests) == 4  # one per alerting user (all in different cells)
    await store.aclose()


@pytest.mark.anyio
async def test_provider_failure_degrades_and_alerts_without_shops(tmp_path: Path, hub: ProviderHub,
                                                                 overpass: FakeOverpass) -> None:
    store = await seeded(tmp_path)
    overpass.gateway_timeout(100)
    result = await tick(store, hub)
    assert {a.user_id: a.priority for a in result.alerts} == EXPECTED
    assert all(a.facts["shops"] == [] and "shop" not in a.body for a in result.alerts)
    assert result.degradations and "HTTP 504" in result.degradations[0]
    off = ProviderHub(ProvidersSection(places=PlacesProviderSection(cache_ttl=0, base_url=overpass.url, enabled=False)))
    result = await tick(store, off)  # disabled on purpose: not a degraded tick
    assert result.degradations == [] and all(a.facts["shops"] == [] for a in result.alerts)
    await store.aclose()


@pytest.mark.anyio
async def test_one_user_explained(tmp_path: Path) -> None:
    store = await seeded(tmp_path)
    explanation: list[Any] = []
    ctx = pamd.MonitorContext(monitor="maintenance", scheduled_at=NOW, store=store, user_id="demo-u04",
                              clock=lambda: NOW, explanation=explanation)
    assert [a async for a in mnt.MaintenanceMonitor().run(ctx)] == []
    assert [(e.step, e.data.get("reason")) for e in explanation] == [("assessed", None), ("outcome", "nothing due")]
    assert explanation[0].data["not_due"] == {"demo-v04:oil change": "not due yet"}
    ctx.user_id, explanation[:] = "demo-u07", []
    alerts = [a async for a in mnt.MaintenanceMonitor().run(ctx)]
    assert [a.priority for a in alerts] == [P.URGENT]
    assert [e.step for e in explanation] == ["assessed", "shops", "outcome"]
    await store.aclose()


@pytest.mark.anyio
async def test_run_needs_a_maintenance_capable_store() -> None:
    ctx = pamd.MonitorContext(monitor="maintenance", scheduled_at=NOW, clock=lambda: NOW)
    with pytest.raises(TypeError, match="iter_maintenance_inputs"):
        [a async for a in mnt.MaintenanceMonitor().run(ctx)]


def test_registered_through_the_plugin_hook() -> None:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(mnt)
    found: list[pamd.Monitor] = []
    pm.hook.register_monitors(register=found.append)
    assert [type(m) for m in found] == [mnt.MaintenanceMonitor]
    assert (found[0].name, found[0].schedule, found[0].config_type) == ("maintenance", "0 8 * * *",
                                                                         mnt.MaintenanceConfig)
