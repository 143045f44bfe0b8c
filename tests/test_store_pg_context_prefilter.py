"""The context monitor's Postgres candidates (pamd.store.pg_context_candidates) never drop a user who alerts.

For each data set, the alerts computed from the candidates equal those computed from the full input stream
(``iter_context_inputs``, which tests/test_store_pg_context.py compares with SQLite), with the same rows skipped and
reported; and the monitor's tick gives the same alerts on Postgres (candidates) as on SQLite (full stream). Data:
the demo set over whole UTC days (each rule firing and not, travellers in UTC-10 and UTC+13), randomized users with
bad rows, and users placed just either side of each threshold (driving limit, freshness, moving speed, evening
window and late arrival, leave-by window, look-ahead). Needs the PostgreSQL server of the ``pg_url`` fixture.
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

import pamd
from pamd.geo import EARTH_RADIUS_KM
from pamd.store.pg import PostgresStore
from pamd.store.records_context import ContextInput
from pamd.store.sqlite import SQLiteStore
from pamd.testing import run_tick
from tests.store_pairs import add

if TYPE_CHECKING:  # mypy sees the source tree; at run time the package is installed as pamd_plugins
    from plugins import context
else:
    from pamd_plugins import context

NOW = datetime(2026, 3, 16, 21, 0, tzinfo=UTC)  # 21:00 UTC: 17:00 in Santo Domingo, 22:00 in Lagos
CFG = context.ContextConfig()
KM_PER_DEG = EARTH_RADIUS_KM * math.pi / 180  # one degree of latitude on the great circle
Row = dict[str, Any]
Key = tuple[str, str, str, str]

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def stream(pg: PostgresStore, now: datetime, candidates: bool, cfg: context.ContextConfig = CFG,
           ) -> AsyncGenerator[list[ContextInput], None]:
    """The candidates (small pages and batches, to cross page boundaries) or the full stream, as the monitor asks."""
    track = {"lookahead_hours": cfg.event_lookahead_hours, "history_hours": context.HISTORY_HOURS,
             "moving_speed_kmh": cfg.moving_speed_kmh, "max_gap_minutes": cfg.max_gap_minutes}
    if candidates:
        return pg.iter_context_candidates(context.bounds(cfg), now, 7, scan_size=13, parallel=2, **track)
    return pg.iter_context_inputs(now, 7, None, **track)


async def candidate_users(pg: PostgresStore, now: datetime, cfg: context.ContextConfig = CFG) -> list[str]:
    return sorted([inp.user_id async for batch in stream(pg, now, True, cfg) for inp in batch])


async def context_alerts(pg: PostgresStore, now: datetime, candidates: bool,
                         cfg: context.ContextConfig = CFG) -> list[Key]:
    """``(user, kind, priority, subject)`` of every context alert, from the candidates or from the full stream."""
    return sorted([(a.user_id, a.kind, a.priority.value, a.subject or "")
                   async for batch in stream(pg, now, candidates, cfg) for inp in batch
                   for a in context.evaluate(inp, now, cfg)])


async def assert_same(pg: PostgresStore, now: datetime, cfg: context.ContextConfig = CFG) -> list[Key]:
    """Candidates and the full stream give the same alerts at ``now`` and skip the same rows; the full stream's
    alerts are returned."""
    pg.skipped_rows.clear()
    full = await context_alerts(pg, now, False, cfg)
    skipped = dict(pg.skipped_rows)
    pg.skipped_rows.clear()
    assert await context_alerts(pg, now, True, cfg) == full, now
    assert dict(pg.skipped_rows) == skipped, now  # every user with a row to report comes back
    return full


# -- the demo set ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("day", ["2026-01-15", "2026-03-29", "2026-07-15"])
async def test_demo_over_the_utc_day(pg: PostgresStore, day: str) -> None:
    """Seeded every 90 minutes of a UTC day (Honolulu UTC-10, Auckland UTC+13 in January; EU DST change in March),
    judged then, 70 and 115 minutes later (fixes older, confidence lower) and 3 hours later (nothing fresh)."""
    kinds_by_instant: list[set[str]] = []
    for step in range(16):
        seeded = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(minutes=90 * step + 7)
        await pg.seed_demo(seeded)
        for minutes in (0, 70, 115):
            now = seeded + timedelta(minutes=minutes)
            full = await assert_same(pg, now)
            kinds_by_instant.append({kind for _, kind, *_ in full})
            users = await candidate_users(pg, now)
            assert {u for u, *_ in full} <= set(users)
            assert "demo-u06" not in users  # no location: nothing can fire
        later = seeded + timedelta(hours=3)
        assert await assert_same(pg, later) == []
        assert await candidate_users(pg, later) == []  # no fix young enough: nobody comes back
    assert pg.skipped_rows == {}
    for kind in ("overnight_stop", "leave_by", "driving_rest"):
        assert any(kind in kinds for kinds in kinds_by_instant), kind
    assert any("overnight_stop" not in kinds for kinds in kinds_by_instant)


async def test_demo_candidates_are_few(pg: PostgresStore) -> None:
    """At 12:07 UTC in January nobody is in their evening and demo-u01 (Denver, 05:07) has not driven 6 h today:
    only demo-u02 (Brisbane, 22:07, 9 h driven) and demo-u03 (two leave-by reminders) come back."""
    now = datetime(2026, 1, 15, 12, 7, tzinfo=UTC)
    await pg.seed_demo(now)
    assert await candidate_users(pg, now) == ["demo-u02", "demo-u03"]
    assert {u for u, *_ in await assert_same(pg, now)} == {"demo-u02", "demo-u03"}


# -- randomized data ----------------------------------------------------------------------------------------------

_ZONES = ("UTC", "Europe/London", "Pacific/Honolulu", "Pacific/Auckland", "Pacific/Kiritimati", "Asia/Kathmandu",
          "America/St_Johns", "America/Santo_Domingo", "Africa/Lagos", "Australia/Brisbane", "Mars/Base", "")


def _near(rng: random.Random, lat: float, lon: float, km: float) -> tuple[float, float]:
    """A point about ``km`` from (lat, lon) in a random direction."""
    angle = rng.uniform(0, 2 * math.pi)
    dlat = km * math.cos(angle) / KM_PER_DEG
    return (max(-89.9, min(89.9, lat + dlat)),
            ((lon + km * math.sin(angle) / KM_PER_DEG / max(0.05, math.cos(math.radians(lat))) + 180) % 360) - 180)


def random_rows(rng: random.Random, users: int, now: datetime) -> dict[str, list[Row]]:
    """Users with random tracks, active trips and events around ``now``, bad rows and edge values included."""
    rows: dict[str, list[Row]] = {t: [] for t in ("profiles", "trips", "calendar_events", "user_locations")}
    for n in range(users):
        uid = f"r{n:03d}"
        rows["profiles"].append({
            "id": uid, "timezone": rng.choice(_ZONES), "status": rng.choice(["active"] * 9 + ["deleted"]),
            "max_driving_hours": rng.choice([None, None, 6.0, 2.0, 0.5, 10.0, 0.0, -1.0, math.nan, math.inf])})
        lat, lon = rng.uniform(-60, 70), rng.uniform(-180, 180)
        add_track(rng, rows["user_locations"], uid, lat, lon, now)
        for k in range(rng.choice([0, 0, 1, 1, 2])):
            dest: tuple[float | None, float | None] = _near(
                rng, lat, lon, rng.choice([0.3, 20.0, 80.0, 150.0, 400.0, 1500.0]))
            if rng.random() < 0.15:
                dest = rng.choice([(None, None), (math.nan, math.nan), (95.0, 0.0), (None, 10.0), (math.inf, 1.0)])
            rows["trips"].append({"id": f"{uid}-t{k}", "user_id": uid, "status": rng.choice(
                ["active", "active", "Active", "planned", "completed"]), "destination": rng.choice([None, "Camp"]),
                "dest_lat": dest[0], "dest_lon": dest[1]})
        for k in range(rng.choice([0, 0, 1, 2, 3])):
            place: tuple[float | None, float | None] = _near(
                rng, lat, lon, rng.choice([0.2, 5.0, 40.0, 120.0, 300.0, 2500.0]))
            if rng.random() < 0.1:
                place = rng.choice([(None, None), (math.nan, 3.0), (-91.0, 3.0), (10.0, 181.0)])
            hours = rng.choice([rng.uniform(-3, 27), 0.0, 24.0, 24.001, 3.25, 2.0])
            rows["calendar_events"].append({
                "id": f"{uid}-c{k}", "user_id": uid, "title": rng.choice([None, "Meeting"]),
                "start_at": now + timedelta(hours=hours), "location_name": None, "lat": place[0], "lon": place[1]})
    return rows


def add_track(rng: random.Random, out: list[Row], uid: str, lat: float, lon: float, now: datetime) -> None:
    """Fixes every few minutes up to a random age, driving or not, a few bad ones."""
    count = rng.choice([0, 1, 2, 3, 10, 40, 80, 150])
    step = rng.choice([2.0, 5.0, 10.0, 15.0, 29.0, 31.0, 45.0])
    age = rng.choice([-3.0, -8.0, 0.0, 5.0, 14.0, 59.0, 100.0, 119.0, 125.0, 300.0, 1500.0])
    speed = rng.choice([0.0, 3.0, 4.99, 5.01, 30.0, 85.0, 110.0])
    at = now - timedelta(minutes=age)
    for k in range(count):
        reported: float | None = speed if rng.random() > 0.3 else None
        if rng.random() < 0.05:
            reported = rng.choice([math.nan, -1.0, 450.0, 0.0, 200.0])
        bad_lat = rng.random() < 0.02
        out.append({"user_id": uid, "recorded_at": at - timedelta(minutes=k * step + rng.uniform(0, 0.01)),
                    "lat": 91.0 if bad_lat else lat, "lon": lon, "speed_kmh": reported})
        lat, lon = _near(rng, lat, lon, speed * step / 60 * rng.uniform(0.5, 1.2))


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_random_candidates_alert_the_same(pg: PostgresStore, seed: int) -> None:
    rng = random.Random(seed)
    for table, items in random_rows(rng, 150, NOW).items():
        await pg.add_rows(table, items)
    found: list[Key] = []
    for hours in (0.0, 0.05, 1.9, 7.5, -6.0, -10.0):
        found += await assert_same(pg, NOW + timedelta(hours=hours))
    found += await assert_same(pg, NOW, context.ContextConfig(min_confidence=0.3, evening_start="20:00",
                                                              evening_end="02:00", max_gap_minutes=60.0))
    assert {kind for _, kind, *_ in found} == {"overnight_stop", "leave_by", "driving_rest"}


# -- users either side of a threshold -----------------------------------------------------------------------------

LAST = NOW - timedelta(minutes=10)  # the latest fix of most edge users


def drive(uid: str, hours: float, *, last: datetime = LAST, last_speed: float | None = 85.0, every: float = 10.0,
          lat: float = 50.0, lon: float = 0.0) -> list[Row]:
    """Fixes ``every`` 10 minutes at 85 km/h going north, the latest at ``last`` (speed ``last_speed``) at
    (lat, lon), the first ``hours`` before it (an interval of ``every`` minutes or less)."""
    step = 85.0 * every / 60 / KM_PER_DEG
    count = math.ceil(hours * 60 / every - 1e-9)
    out = [{"user_id": uid, "recorded_at": last - timedelta(minutes=every * k), "lat": lat - k * step, "lon": lon,
            "speed_kmh": 85.0} for k in range(count)]
    out.append({"user_id": uid, "recorded_at": last - timedelta(hours=hours), "lat": lat - count * step,
                "lon": lon, "speed_kmh": 85.0})
    out[0]["speed_kmh"] = last_speed
    return out


def edge_rows() -> dict[str, list[Row]]:
    rows: dict[str, list[Row]] = {t: [] for t in ("profiles", "trips", "calendar_events", "user_locations")}

    def user(uid: str, track: list[Row], tz: str = "UTC", limit: float | None = None) -> None:
        rows["profiles"].append({"id": uid, "timezone": tz, "max_driving_hours": limit})
        rows["user_locations"] += track

    # Driving since local midnight around the limit (6 h by default): strictly more alerts.
    for n, (hours, limit) in enumerate([(6 - 1 / 3600, None), (6.0, None), (6 + 1 / 3600, None), (6.02, 6.0),
                                        (6.02, math.nan), (6.02, 6.1), (2.5, 2.49), (2.5, 2.5)]):
        user(f"rest{n}", drive(f"rest{n}", hours), limit=limit)
    # Fixes 45 min apart: each interval counts for 30 min (a longer gap is missing data), 12 of them make 6 h.
    for n, intervals in enumerate([12, 13]):
        user(f"gap{n}", drive(f"gap{n}", intervals * 0.75, every=45.0))
    # Auckland (UTC+13: midnight 11:00 UTC) and Honolulu (UTC-10: midnight 10:00 UTC), 12 h of driving: only the
    # part since local midnight (9 h 50 and 10 h 50 min) counts.
    for n, limit in enumerate([9.8, 9.8333, 9.834, 9.9]):
        user(f"nz{n}", drive(f"nz{n}", 12.0), "Pacific/Auckland", limit)
    for n, limit in enumerate([10.8, 10.8333, 10.834, 10.9]):
        user(f"hnl{n}", drive(f"hnl{n}", 12.0), "Pacific/Honolulu", limit)
    # Moving now: reported 5.0 is not above 5 km/h, 5.01 is; unreported, derived from the fix before (10 min).
    for n, speed in enumerate([5.0, 5.01]):
        user(f"move{n}", drive(f"move{n}", 7.0, last_speed=speed))
    for n, km in enumerate([0.83, 0.84]):
        track = drive(f"derived{n}", 7.0, last_speed=None)
        track[0]["lat"] = track[1]["lat"] + km / KM_PER_DEG
        user(f"derived{n}", track)
    # Freshness: 120 min old gives 0.75 (>= 0.7), older 0.4.
    for n, age in enumerate([119.0, 120.0, 120.01, 121.0]):
        user(f"age{n}", drive(f"age{n}", 7.0, last=NOW - timedelta(minutes=age)))
    # Evening arrival: 30 min of driving up to 10 min ago, destination north; at 21:00 UTC the evening ends in 1 h,
    # i.e. 66.67 km away at 80 km/h x 1.2 (in Santo Domingo 17:00, 5 h: 333.3 km; in Lagos 22:00, not evening).
    evenings: list[tuple[str, list[float | None]]] = [
        ("UTC", [0.5, 60.0, 66.66, 66.67, 70.0, None]), ("America/Santo_Domingo", [333.0, 334.0]),
        ("Africa/Lagos", [500.0, 60.0])]
    for tz, distances in evenings:
        for n, far in enumerate(distances):
            uid = f"eve-{tz[:4]}{n}"
            user(uid, drive(uid, 0.5), tz)
            dest = (None, None) if far is None else (50.0 + far / KM_PER_DEG, 0.0)
            rows["trips"].append({"id": f"{uid}-t", "user_id": uid, "status": "active", "destination": "Camp",
                                  "dest_lat": dest[0], "dest_lon": dest[1]})
    # Leave-by: stopped at (50, 0), three fixes in the last hour; an event 4 h away is due when it is at least 50 km
    # away (45 min of driving + 15 min buffer); the look-ahead is (now, now + 24 h].
    for n, (hours, km) in enumerate([(4.0, 48.0), (4.0, 49.0), (4.0, 49.9), (4.0, 50.0), (4.0, 51.0),
                                     (24.0, 3000.0), (24.0 + 1 / 3600, 3000.0), (1 / 3600, 3.0), (0.0, 3.0),
                                     (3.0, 0.5), (3.0, 1.5)]):
        uid = f"leave{n}"
        user(uid, [{"user_id": uid, "recorded_at": NOW - timedelta(minutes=m), "lat": 50.0, "lon": 0.0,
                    "speed_kmh": 0.0} for m in (5, 25, 45)])
        rows["calendar_events"].append({"id": f"{uid}-c", "user_id": uid, "title": "Dinner",
                                        "start_at": NOW + timedelta(hours=hours), "lat": 50.0 + km / KM_PER_DEG,
                                        "lon": 0.0})
    # Rows the full stream reports (the user comes back so that they are reported): a fix from the future, an
    # active trip's and an upcoming event's bad coordinates, an unknown time zone.
    user("bad-fix", [{"user_id": "bad-fix", "recorded_at": NOW + timedelta(minutes=10), "lat": 1.0, "lon": 1.0}])
    user("bad-trip", [])
    rows["trips"].append({"id": "bad-trip-t", "user_id": "bad-trip", "status": "active", "dest_lat": 91.0,
                          "dest_lon": 0.0})
    user("bad-event", [])
    rows["calendar_events"].append({"id": "bad-event-c", "user_id": "bad-event", "title": "x",
                                    "start_at": NOW + timedelta(hours=1), "lat": 10.0, "lon": 200.0})
    user("bad-zone", [], "Mars/Base")
    return rows


async def add_edges(pg: PostgresStore) -> None:
    for table, items in edge_rows().items():
        await pg.add_rows(table, items)


async def test_edges_candidates_alert_the_same(pg: PostgresStore) -> None:
    await add_edges(pg)
    alerts = {}
    for now in (NOW, NOW - timedelta(minutes=1), NOW + timedelta(hours=1)):
        alerts[now] = {kind: sorted(u for u, k, *_ in found if k == kind)
                       for found in [await assert_same(pg, now)]
                       for kind in ("driving_rest", "leave_by", "overnight_stop")}
        if now == NOW:
            assert pg.skipped_rows == {"user_locations": 1, "trips": 1, "calendar_events": 1, "profiles": 1}
    assert alerts[NOW] == {
        "driving_rest": ["age0", "age1", "derived1", "gap1", "hnl0", "hnl1", "move1", "nz0", "nz1", "rest2", "rest3",
                         "rest4", "rest6"],
        "leave_by": ["leave10", "leave2", "leave3", "leave4", "leave5", "leave7"],
        "overnight_stop": ["eve-Amer1", "eve-UTC3", "eve-UTC4"],  # 17:00 in Santo Domingo, 22:00 in Lagos
    }
    # 16:59 in Santo Domingo, 21:59 in Lagos (one minute to the evening's end); fixes a minute younger
    assert alerts[NOW - timedelta(minutes=1)]["overnight_stop"] == ["eve-Afri0", "eve-Afri1", "eve-UTC4"]
    assert alerts[NOW - timedelta(minutes=1)]["driving_rest"][:4] == ["age0", "age1", "age2", "age3"]
    assert alerts[NOW + timedelta(hours=1)]["overnight_stop"] == ["eve-Amer1"]  # 22:00 in UTC, 18:00 there
    users = set(await candidate_users(pg, NOW))
    assert {"bad-fix", "bad-trip", "bad-event", "bad-zone"} <= users  # so that their rows are reported
    assert not {"rest0", "nz2", "nz3", "hnl2", "hnl3", "leave0", "leave6", "leave8", "eve-UTC0", "eve-UTC1",
                "eve-UTC5", "eve-Afri0", "eve-Afri1", "derived0"} & users


# -- the monitor's tick -----------------------------------------------------------------------------------------


async def test_monitor_tick_uses_candidates_and_alerts_as_on_sqlite(
        lite: SQLiteStore, pg: PostgresStore, monkeypatch: pytest.MonkeyPatch) -> None:
    for rows in (random_rows(random.Random(7), 150, NOW), edge_rows()):
        for table, items in rows.items():
            await add((lite, pg), table, items)

    def no_full_stream(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a whole tick on Postgres reads the candidates, not every user")

    keys = []
    for store in (lite, pg):
        with monkeypatch.context() as patch:
            if store is pg:
                patch.setattr(pg, "iter_context_inputs", no_full_stream)
            result = await run_tick(context.ContextMonitor(), config=context.ContextConfig(batch_size=3),
                                    store=store, now=NOW, retries=0)
        assert result.outcome == "success", result.error
        keys.append(sorted((a.user_id, a.kind, a.priority.value, a.subject) for a in result.alerts))
    assert keys[1] == keys[0]
    assert {kind for _, kind, *_ in keys[0]} == {"overnight_stop", "leave_by", "driving_rest"}


async def test_single_user_runs_read_the_full_stream(pg: PostgresStore, monkeypatch: pytest.MonkeyPatch) -> None:
    await pg.seed_demo(NOW)

    def no_candidates(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("explain and single-user runs read the user's full inputs")

    monkeypatch.setattr(pg, "iter_context_candidates", no_candidates)
    ctx = pamd.MonitorContext(monitor="context", scheduled_at=NOW, store=pg, user_id="demo-u03", clock=lambda: NOW)
    alerts = [alert async for alert in context.ContextMonitor().run(ctx)]
    assert {a.kind for a in alerts} == {"leave_by"}
