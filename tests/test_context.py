"""The built-in context monitor: track summaries, each rule's bands and edges, the SQLite queries and the demo."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import msgspec
import pluggy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pamd
from pamd import hookspecs
from pamd.store.records import format_ts
from pamd.store.records_context import (
    ActiveTrip,
    CalendarEvent,
    ContextInput,
    Fix,
    Track,
    distance_km,
    summarize_track,
)
from pamd.store.sqlite import SQLiteStore

if TYPE_CHECKING:  # mypy sees the source tree; at run time the package is installed as pamd_plugins
    from plugins import context, context_rules
else:
    from pamd_plugins import context, context_rules

P = pamd.Priority
CFG = context.ContextConfig()
NOW = datetime(2026, 3, 16, 18, 0, tzinfo=UTC)  # a Monday, 18:00 in London (GMT)
KM_PER_DEG = 111.195  # one degree of latitude, great circle on a 6371 km sphere


def fixes(*spec: tuple[float, float, float | None], lat: float = 50.0, lon: float = 0.0,
          now: datetime = NOW) -> list[Fix]:
    """Fixes at (minutes before ``now``, km north of (lat, lon), speed)."""
    base = now.timestamp()
    return sorted((base - minutes * 60, lat + km / KM_PER_DEG, lon, speed) for minutes, km, speed in spec)


def track_of(*spec: tuple[float, float, float | None], tz: str = "UTC", now: datetime = NOW) -> Track:
    local = now.astimezone(ZoneInfo(tz))
    midnight = datetime.combine(local.date(), datetime.min.time(), tzinfo=local.tzinfo)
    result = summarize_track(fixes(*spec, now=now), midnight, now)
    assert result is not None
    return result


def user(track: Track | None = None, *, tz: str = "UTC", trips: tuple[ActiveTrip, ...] = (),
         events: tuple[CalendarEvent, ...] = (), limit: float | None = None, units: str = "metric") -> ContextInput:
    return ContextInput(user_id="u1", timezone=tz, preferred_units="imperial" if units == "imperial" else "metric",
                        max_driving_hours=limit, trips=trips, events=events, track=track)


# -- helpers ----------------------------------------------------------------------------------------------------


def test_distance_and_time_helpers() -> None:
    assert distance_km(50, 0, 51, 0) == pytest.approx(KM_PER_DEG, rel=1e-4)
    assert distance_km(39.7392, -104.9903, 40.0150, -105.2705) == pytest.approx(38.7, abs=0.5)  # Denver-Boulder
    assert context_rules.parse_hhmm("17:00") == 1020 and context_rules.parse_hhmm("24:00") == 1440
    for bad in ("17", "7:5", "25:00", "12:60", "ab:cd"):
        with pytest.raises(ValueError, match="HH:MM"):
            context_rules.parse_hhmm(bad)
    at = datetime(2026, 1, 1, 21, 59, tzinfo=UTC)
    assert context_rules.in_window(at, "17:00", "22:00")
    assert not context_rules.in_window(at + timedelta(minutes=1), "17:00", "22:00")
    assert context_rules.in_window(at + timedelta(hours=3), "20:00", "02:00")  # wraps past midnight
    assert not context_rules.in_window(at + timedelta(hours=5), "20:00", "02:00")
    assert context_rules.duration(0.75) == "45 min" and context_rules.duration(2.08) == "2 h 05 min"
    assert [context_rules.freshness(m) for m in (0, 15, 16, 45, 90, 121)] == [1.0, 1.0, 0.95, 0.85, 0.75, 0.4]
    assert [context_rules.sampling(n) for n in (0, 1, 2, 3, 10)] == [0.0, 0.85, 0.95, 1.0, 1.0]


# -- track summaries -------------------------------------------------------------------------------------------

TRACKS: list[tuple[str, list[tuple[float, float, float | None]], dict[str, Any]]] = [
    ("one fix", [(5, 0, 80.0)], {"recent_points": 1, "points_today": 1, "driving_hours": 0.0}),
    ("an hour at 80 km/h", [(60 - 10 * k, 0, 80.0) for k in range(7)],
     {"recent_points": 7, "points_today": 7, "driving_hours": 1.0}),
    ("stopped", [(30, 0, 0.0), (20, 0, 0.0), (10, 0, 0.0)], {"driving_hours": 0.0}),
    ("mean of the two speeds: 6 km/h counts", [(20, 0, 0.0), (10, 0, 12.0)], {"driving_hours": 10 / 60}),
    ("mean of the two speeds: 4 km/h does not", [(20, 0, 0.0), (10, 0, 8.0)], {"driving_hours": 0.0}),
    ("one speed reported", [(20, 0, None), (10, 0, 50.0)], {"driving_hours": 10 / 60}),
    ("no speeds: 10 km in 10 min is driving", [(20, 0, None), (10, 10, None)], {"driving_hours": 10 / 60}),
    ("no speeds: 0.5 km in 10 min is walking", [(20, 0, None), (10, 0.5, None)], {"driving_hours": 0.0}),
    ("a two-hour gap counts 30 min", [(150, 0, 80.0), (30, 0, 80.0)], {"driving_hours": 0.5}),
    ("clipped at local midnight", [(18 * 60 + 10, 0, 80.0), (17 * 60 + 55, 0, 80.0), (17 * 60 + 45, 0, 80.0)],
     {"points_today": 2, "driving_hours": 15 / 60, "recent_points": 3}),
    ("a gap is capped before clipping", [(19 * 60, 0, 80.0), (17 * 60 + 50, 0, 80.0)],
     {"points_today": 1, "driving_hours": 0.0}),
    ("yesterday only", [(20 * 60, 0, 80.0), (19 * 60, 0, 80.0)], {"points_today": 0, "driving_hours": 0.0}),
]


@pytest.mark.parametrize(("case", "spec", "expected"), TRACKS, ids=[c[0] for c in TRACKS])
def test_summarize_track(case: str, spec: list[tuple[float, float, float | None]], expected: dict[str, Any]) -> None:
    got = msgspec.to_builtins(track_of(*spec))
    for key, value in expected.items():
        assert got[key] == (pytest.approx(value) if isinstance(value, float) else value), key


def test_summarize_track_edges() -> None:
    midnight = datetime(2026, 3, 16, tzinfo=UTC)
    assert summarize_track([], midnight, NOW) is None
    ordered = fixes((30, 0, 80.0), (20, 10, 80.0), (10, 20, None))
    shuffled = [ordered[2], ordered[0], ordered[1]]
    assert summarize_track(shuffled, midnight, NOW) == summarize_track(ordered, midnight, NOW)
    track = summarize_track(ordered, midnight, NOW)
    assert track is not None and track.latest.speed_kmh is None and track.previous is not None
    assert track.latest.recorded_at == NOW - timedelta(minutes=10)
    # The spring-forward day in Paris has 23 hours: from local midnight to noon is 11 real hours.
    paris_noon = datetime(2026, 3, 29, 12, 0, tzinfo=ZoneInfo("Europe/Paris"))
    day = [(paris_noon.timestamp() - k * 600, 48.0, 2.0, 80.0) for k in range(100)]
    dst = summarize_track(sorted(day), datetime(2026, 3, 29, tzinfo=ZoneInfo("Europe/Paris")), paris_noon)
    assert dst is not None and dst.driving_hours == pytest.approx(11.0)


# -- evening arrival -------------------------------------------------------------------------------------------

FAR = ActiveTrip(id="t1", destination="Penzance", dest_lat=50.0 - 600 / KM_PER_DEG, dest_lon=0.0)  # 600 km south
DRIVING = ((30, 0, 80.0), (20, 0, 80.0), (10, 0, 80.0), (0, 0, 80.0))

EVENING: list[tuple[str, ContextInput, ActiveTrip, datetime, float, P | None]] = [
    ("18:00, 600 km to go: overnight stop", user(track_of(*DRIVING)), FAR, NOW, 1.0, P.MEDIUM),
    ("16:59 is not evening", user(track_of(*DRIVING, now=NOW - timedelta(minutes=61))), FAR,
     NOW - timedelta(minutes=61), 1.0, None),
    ("22:00 is not evening", user(track_of(*DRIVING, now=NOW + timedelta(hours=4))), FAR,
     NOW + timedelta(hours=4), 1.0, None),
    ("arrives before 22:00", user(track_of(*DRIVING)),
     ActiveTrip(id="t2", dest_lat=50.0 - 200 / KM_PER_DEG, dest_lon=0.0), NOW, 1.0, None),
    ("arrives 22:30: less than an hour late", user(track_of(*DRIVING)),
     ActiveTrip(id="t3", dest_lat=50.0 - 300 / KM_PER_DEG, dest_lon=0.0), NOW, 0.9, P.MEDIUM),
    ("parked", user(track_of((30, 0, 0.0), (20, 0, 0.0), (10, 0, 0.0))), FAR, NOW, 1.0, None),
    ("no destination coordinates", user(track_of(*DRIVING)), ActiveTrip(id="t4", destination="Somewhere"), NOW,
     0.0, None),
    ("no location", user(None), FAR, NOW, 0.0, None),
    ("location 40 min old, one fix", user(track_of((40, 0, 80.0))), FAR, NOW, 0.72, P.MEDIUM),
    ("location 3 h old: not trusted", user(track_of((180, 0, 80.0))), FAR, NOW, 0.0, None),
    ("speed derived from two fixes", user(track_of((20, -15, None), (10, -2, None), (0, 0, None))), FAR, NOW, 0.9,
     P.MEDIUM),
    ("UTC+13: 18:00 in Auckland", user(track_of(*DRIVING, tz="Pacific/Auckland", now=NOW - timedelta(hours=13)),
                                       tz="Pacific/Auckland"), FAR, NOW - timedelta(hours=13), 1.0, P.MEDIUM),
    ("UTC+13: 05:00 in Auckland", user(track_of(*DRIVING, tz="Pacific/Auckland"), tz="Pacific/Auckland"), FAR, NOW,
     1.0, None),
    ("UTC-10: 18:00 in Honolulu", user(track_of(*DRIVING, tz="Pacific/Honolulu", now=NOW + timedelta(hours=10)),
                                       tz="Pacific/Honolulu"), FAR, NOW + timedelta(hours=10), 1.0, P.MEDIUM),
]


@pytest.mark.parametrize(("case", "inp", "trip", "now", "confidence", "priority"), EVENING,
                         ids=[c[0] for c in EVENING])
def test_evening_arrival(case: str, inp: ContextInput, trip: ActiveTrip, now: datetime, confidence: float,
                         priority: P | None) -> None:
    where = context_rules.whereabouts(inp.track, now)
    outcome = context_rules.evening_arrival(inp, trip, where, now, CFG)
    if confidence == 0.0 and where is not None:
        assert outcome.confidence < CFG.min_confidence, outcome
    else:
        assert outcome.confidence == pytest.approx(confidence), outcome
    assert (outcome.alert.priority if outcome.alert else None) == priority, outcome.reason


def test_evening_arrival_alert() -> None:
    inp = user(track_of(*DRIVING))
    alert = context_rules.evening_arrival(inp, FAR, context_rules.whereabouts(inp.track, NOW), NOW, CFG).alert
    assert alert is not None
    assert (alert.kind, alert.subject) == ("overnight_stop", "overnight_stop:t1:2026-03-16")
    assert alert.title == "Arriving late: consider an overnight stop before Penzance"
    assert alert.body == (
        "Penzance is about 600 km away in a straight line: roughly 9 h 00 min more driving at an average 80 km/h, "
        "so you would arrive around 03:00 tomorrow, after 22:00. Consider stopping for the night and driving on in "
        "daylight.")
    assert alert.facts["distance_km"] == pytest.approx(600.0) and alert.facts["confidence"] == 1.0
    assert alert.facts["eta"].startswith("2026-03-17T03:00:00") and alert.facts["eta_next_day"] is True
    assert alert.expires_at == NOW + timedelta(hours=24)
    imperial = user(track_of(*DRIVING), units="imperial")
    body = context_rules.evening_arrival(imperial, FAR, context_rules.whereabouts(imperial.track, NOW), NOW,
                                         CFG).alert
    assert body is not None and "373 mi away" in body.body and "50 mph" in body.body and "km" not in body.body
    msgspec.json.encode(alert)


def test_evening_window_can_wrap_midnight() -> None:
    cfg = context.ContextConfig(evening_start="20:00", evening_end="02:00")
    late = NOW + timedelta(hours=7)  # 01:00
    inp = user(track_of(*DRIVING, now=late))
    outcome = context_rules.evening_arrival(inp, FAR, context_rules.whereabouts(inp.track, late), late, cfg)
    assert outcome.alert is not None and "after 02:00" in outcome.alert.body


# -- leave-by ---------------------------------------------------------------------------------------------------


def event(hours: float, km: float, title: str = "Dinner", place: str | None = "The Inn") -> CalendarEvent:
    return CalendarEvent(id="c1", title=title, start_at=NOW + timedelta(hours=hours), lat=50.0 + km / KM_PER_DEG,
                         lon=0.0, location_name=place)


STILL = ((30, 0, 0.0), (20, 0, 0.0), (10, 0, 0.0))
# 40 km: 36 min of driving at 80 km/h x 1.2, plus 15 min buffer = leave 51 min before the start.
LEAVE: list[tuple[str, ContextInput, CalendarEvent, float, P | None, float | None]] = [
    ("leave in 39 min: high", user(track_of(*STILL)), event(1.5, 40), 1.0, P.HIGH, 39.0),
    ("leave in 2 h 09 min: medium", user(track_of(*STILL)), event(3.0, 40), 1.0, P.MEDIUM, 129.0),
    ("leave in 61 min: medium", user(track_of(*STILL)), event(1 + 52 / 60, 40), 1.0, P.MEDIUM, 61.0),
    ("leave in 3 h 09 min: not yet", user(track_of(*STILL)), event(4.0, 40), 1.0, None, None),
    ("should have left 21 min ago: high", user(track_of(*STILL)), event(0.5, 40), 1.0, P.HIGH, -21.0),
    ("already there", user(track_of(*STILL)), event(0.5, 0.5), 1.0, None, None),
    ("already started", user(track_of(*STILL)), event(-0.1, 40), 1.0, None, None),
    ("no location", user(None), event(1.5, 40), 0.0, None, None),
    ("location 90 min old, one fix: 0.64", user(track_of((90, 0, 0.0))), event(1.5, 40), 0.64, None, None),
    ("two fixes in the last hour", user(track_of((50, 0, 0.0), (10, 0, 0.0))), event(1.5, 40), 0.95, P.HIGH, 39.0),
]


@pytest.mark.parametrize(("case", "inp", "ev", "confidence", "priority", "minutes"), LEAVE,
                         ids=[c[0] for c in LEAVE])
def test_leave_by(case: str, inp: ContextInput, ev: CalendarEvent, confidence: float, priority: P | None,
                  minutes: float | None) -> None:
    outcome = context_rules.leave_by(inp, ev, context_rules.whereabouts(inp.track, NOW), NOW, CFG)
    assert outcome.confidence == pytest.approx(confidence)
    assert (outcome.alert.priority if outcome.alert else None) == priority, outcome.reason
    if outcome.alert is not None:
        assert outcome.alert.facts["minutes_until_leave"] == pytest.approx(minutes, abs=0.1)
        assert outcome.alert.expires_at == ev.start_at


def test_leave_by_text_in_the_users_time_and_units() -> None:
    # 19:30 in Honolulu (UTC-10) is 05:30 UTC the next day: the subject carries the local date of the event.
    ev = CalendarEvent(id="c9", title="Luau", start_at=datetime(2026, 3, 17, 5, 30, tzinfo=UTC),
                       lat=50.0 + 40 / KM_PER_DEG, lon=0.0, location_name="Hilo Bayfront")
    now = datetime(2026, 3, 17, 4, 0, tzinfo=UTC)
    inp = user(track_of(*STILL, tz="Pacific/Honolulu", now=now), tz="Pacific/Honolulu", units="imperial")
    alert = context_rules.leave_by(inp, ev, context_rules.whereabouts(inp.track, now), now, CFG).alert
    assert alert is not None and alert.priority == P.HIGH
    assert alert.subject == "leave_by:c9:2026-03-16" and alert.title == "Leave by 18:39 for Luau"
    assert alert.body == (
        "Luau starts at 19:30 at Hilo Bayfront, about 25 mi away in a straight line. Allowing roughly 36 min of "
        "driving at an average 50 mph and 15 min to spare, leave by 18:39 (in 39 min).")
    late = context_rules.leave_by(inp, ev, context_rules.whereabouts(inp.track, now), now + timedelta(hours=1), CFG)
    assert late.alert is not None and "(21 min ago: leave now)" in late.alert.body


# -- driving time -----------------------------------------------------------------------------------------------

SEVEN_HOURS = tuple((7 * 60 - 10 * k, 0, 85.0) for k in range(43))  # 10-min fixes, the last one now


@pytest.mark.parametrize(
    ("case", "inp", "cfg", "confidence", "priority"),
    [
        ("7 h over the profile's 6 h", user(track_of(*SEVEN_HOURS), limit=6.0), CFG, 1.0, P.HIGH),
        ("7 h under the profile's 8 h", user(track_of(*SEVEN_HOURS), limit=8.0), CFG, 1.0, None),
        ("no profile limit: the config's 6 h", user(track_of(*SEVEN_HOURS)), CFG, 1.0, P.HIGH),
        ("no profile limit: a config of 7.5 h", user(track_of(*SEVEN_HOURS)),
         context.ContextConfig(max_driving_hours=7.5), 1.0, None),
        ("stopped now", user(track_of(*SEVEN_HOURS[:-1], (0, 0, 0.0)), limit=6.0), CFG, 1.0, None),
        ("sparse fixes, an hour old", user(track_of(*((60 + 30 * k, 0, 85.0) for k in range(15))), limit=6.0), CFG,
         0.69, None),
        ("no location", user(None, limit=6.0), CFG, 0.0, None),
    ],
)
def test_driving_rest(case: str, inp: ContextInput, cfg: context.ContextConfig, confidence: float,
                      priority: P | None) -> None:
    driving = context_rules.DrivingToday.of(inp.track)
    outcome = context_rules.driving_rest(inp, driving, context_rules.whereabouts(inp.track, NOW), NOW, cfg)
    assert outcome.confidence == pytest.approx(confidence, abs=0.01), outcome.reason
    assert (outcome.alert.priority if outcome.alert else None) == priority, outcome.reason


def test_driving_rest_alert() -> None:
    inp = user(track_of(*SEVEN_HOURS), limit=6.0)
    [alert] = context.evaluate(inp, NOW, CFG)
    assert (alert.kind, alert.subject, alert.priority) == ("driving_rest", "driving_rest:2026-03-16", P.HIGH)
    assert alert.title == "Time for a rest: 7 h 00 min driving today"
    assert "more than your profile's limit of 6 h 00 min" in alert.body
    assert alert.facts["driving_hours"] == 7.0 and alert.facts["points_today"] == 43


def test_evaluate_explains_every_rule() -> None:
    seen: list[tuple[str, dict[str, Any]]] = []
    inp = user(track_of(*DRIVING), trips=(FAR,), events=(event(1.5, 40),))
    alerts = context.evaluate(inp, NOW, CFG, lambda uid, step, **data: seen.append((step, data)))
    assert sorted(a.kind for a in alerts) == ["leave_by", "overnight_stop"]
    assert [step for step, _ in seen] == ["context", "overnight_stop t1", "leave_by c1", "driving_rest"]
    assert seen[-1][1]["outcome"] == "no alert" and "limit" in seen[-1][1]["reason"]


def test_config_validation() -> None:
    assert msgspec.convert({"evening_start": "18:30"}, context.ContextConfig).evening_start == "18:30"
    for bad in ({"evening_end": "22"}, {"min_confidence": 1.5}, {"average_speed_kmh": 0}, {"batch_size": 0},
                {"leave_by_buffer_minutes": -1}):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert(bad, context.ContextConfig)
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"evening": "17:00"}, context.ContextConfig)


def test_registered_through_the_plugin_hook() -> None:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(context)
    found: list[pamd.Monitor] = []
    pm.hook.register_monitors(register=found.append)
    assert [type(m) for m in found] == [context.ContextMonitor]
    assert (found[0].name, found[0].schedule, found[0].config_type) == ("context", "*/15 * * * *",
                                                                       context.ContextConfig)


# -- the SQLite store -------------------------------------------------------------------------------------------


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(f"sqlite:///{tmp_path}/context.db")
    await s.migrate()
    yield s
    await s.aclose()


async def inputs(s: SQLiteStore, now: datetime = NOW, batch_size: int = 2) -> dict[str, ContextInput]:
    return {inp.user_id: inp async for batch in s.iter_context_inputs(now, batch_size) for inp in batch}


async def run(s: Any, now: datetime = NOW, user_id: str | None = None) -> list[pamd.Alert]:
    ctx = pamd.MonitorContext(monitor="context", scheduled_at=now, store=s, user_id=user_id, clock=lambda: now)
    return [alert.complete() async for alert in context.ContextMonitor().run(ctx)]  # run() defers the text


@pytest.mark.anyio
async def test_bad_rows_are_skipped_and_counted(store: SQLiteStore) -> None:
    await store.add_rows("profiles", [{"id": "u1", "timezone": "Europe/London", "max_driving_hours": 6.0},
                                      {"id": "u2", "timezone": "Atlantis/Capital"}])
    await store.add_rows("trips", [
        {"id": "t1", "user_id": "u1", "status": "active", "destination": "Penzance", "dest_lat": 50.1,
         "dest_lon": -5.5},
        {"id": "t2", "user_id": "u1", "status": "Active", "destination": "Nowhere"},  # no coordinates: kept
        {"id": "t3", "user_id": "u1", "status": "active", "dest_lat": 91.0, "dest_lon": 0.0},
        {"id": "t4", "user_id": "u1", "status": "planned", "dest_lat": 51.0, "dest_lon": 0.0},
    ])
    soon = format_ts(NOW + timedelta(hours=2))
    await store.add_rows("calendar_events", [
        {"id": "c1", "user_id": "u1", "title": "Dinner", "start_at": soon, "lat": 50.3, "lon": 0.0},
        {"id": "c2", "user_id": "u1", "title": "Bad", "start_at": soon, "lat": 50.3, "lon": 200.0},
        {"id": "c3", "user_id": "u1", "title": "Bad", "start_at": "2026-03-16T19:xx", "lat": 50.3, "lon": 0.0},
        {"id": "c4", "user_id": "u1", "title": "Later", "start_at": format_ts(NOW + timedelta(hours=30)),
         "lat": 50.3, "lon": 0.0},
        {"id": "c5", "user_id": "u1", "title": "Past", "start_at": format_ts(NOW - timedelta(hours=1)),
         "lat": 50.3, "lon": 0.0},
        {"id": "c6", "user_id": "u1", "title": "Nowhere", "start_at": soon, "lat": None, "lon": None},
        {"id": "c7", "user_id": "u1", "title": "Offset", "start_at": "2026-03-16T21:00:00+02:00", "lat": 50.3,
         "lon": 0.0},
    ])
    at = [format_ts(NOW - timedelta(minutes=m)) for m in (40, 30, 20, 10, 5, 3, 2, 1)]
    await store.add_rows("user_locations", [
        {"user_id": "u1", "recorded_at": at[0], "lat": 50.0, "lon": 0.0, "speed_kmh": 80.0},
        {"user_id": "u1", "recorded_at": at[1], "lat": 50.1, "lon": 0.0, "speed_kmh": 80.0},
        {"user_id": "u1", "recorded_at": at[2], "lat": 95.0, "lon": 0.0, "speed_kmh": 80.0},
        {"user_id": "u1", "recorded_at": at[3], "lat": None, "lon": 0.0, "speed_kmh": 80.0},
        {"user_id": "u1", "recorded_at": at[4], "lat": 50.2, "lon": 0.0, "speed_kmh": -3.0},
        {"user_id": "u1", "recorded_at": at[5], "lat": 50.2, "lon": 0.0, "speed_kmh": "fast"},
        {"user_id": "u1", "recorded_at": "2026-03-16T17:59:xx", "lat": 50.2, "lon": 0.0, "speed_kmh": 1.0},
        {"user_id": "u1", "recorded_at": format_ts(NOW + timedelta(hours=1)), "lat": 50.2, "lon": 0.0},
        {"user_id": "u1", "recorded_at": format_ts(NOW + timedelta(minutes=2)), "lat": 50.25, "lon": 0.0,
         "speed_kmh": 70.0},
        {"user_id": "u2", "recorded_at": at[1], "lat": 10.0, "lon": 10.0, "speed_kmh": None},
    ])
    got = await inputs(store)
    u1 = got["u1"]
    assert [t.id for t in u1.trips] == ["t1", "t2"] and u1.trips[1].dest_lat is None
    assert [e.id for e in u1.events] == ["c1", "c7"]  # c7: 19:00 UTC, written with an offset
    assert u1.track is not None and u1.track.latest.lat == 50.25 and u1.track.latest.recorded_at == NOW
    assert u1.track.previous is not None and u1.track.previous.lat == 50.1
    assert u1.track.recent_points == 3 and u1.track.driving_hours == pytest.approx(40 / 60)
    assert got["u2"].timezone == "UTC" and got["u2"].track is not None and got["u2"].track.latest.speed_kmh is None
    assert store.skipped_rows == {"trips": 1, "calendar_events": 2, "user_locations": 6, "profiles": 1}


@pytest.mark.anyio
async def test_no_data_and_constant_queries(tmp_path: Path) -> None:
    statements: list[str] = []
    s = SQLiteStore(f"sqlite:///{tmp_path}/q.db", trace=statements.append)
    await s.migrate()
    assert await run(s) == []
    await s.add_rows("profiles", [{"id": f"u{n:02d}"} for n in range(30)])
    await s.add_rows("user_locations", [{"user_id": f"u{n:02d}", "recorded_at": format_ts(NOW - timedelta(minutes=m)),
                                         "lat": 50.0, "lon": 0.0, "speed_kmh": 0.0}
                                        for n in range(30) for m in (5, 15, 25)])
    statements.clear()
    batches = [batch async for batch in s.iter_context_inputs(NOW, 10)]
    assert [len(b) for b in batches] == [10, 10, 10]
    selects = [q for q in statements if q.lstrip().upper().startswith(("SELECT", "WITH"))]
    assert len(selects) == 3 * 5 + 1  # profiles, trips, events, fixes, fix count per page; then an empty page
    assert all(inp.track is not None and inp.track.recent_points == 3 for b in batches for inp in b)
    assert await run(s) == []
    await s.aclose()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 26 * 60), st.floats(-2, 2), st.floats(-2, 2),
                          st.none() | st.floats(0, 150)), min_size=1, max_size=30, unique_by=lambda f: f[0]),
       st.sampled_from(["UTC", "Pacific/Honolulu", "Pacific/Auckland", "Europe/Paris"]))
def test_store_track_equals_the_reference(tmp_path_factory: pytest.TempPathFactory,
                                          raw: list[tuple[int, float, float, float | None]], tz: str) -> None:
    """The track the SQLite store computes is summarize_track's, for any fixes."""
    import anyio

    async def check() -> None:
        s = SQLiteStore(f"sqlite:///{tmp_path_factory.mktemp('track')}/t.db")
        await s.migrate()
        await s.add_rows("profiles", [{"id": "u1", "timezone": tz}])
        points = sorted((NOW - timedelta(minutes=m), 45 + lat, 7 + lon, v) for m, lat, lon, v in raw)
        await s.add_rows("user_locations", [{"user_id": "u1", "recorded_at": format_ts(t), "lat": lat, "lon": lon,
                                             "speed_kmh": v} for t, lat, lon, v in points])
        track = (await inputs(s))["u1"].track
        local = NOW.astimezone(ZoneInfo(tz))
        midnight = datetime.combine(local.date(), datetime.min.time(), tzinfo=local.tzinfo)
        kept = [(t.timestamp(), lat, lon, v) for t, lat, lon, v in points if t >= NOW - timedelta(hours=27)]
        expected = summarize_track(kept, midnight, NOW)
        assert (track is None) == (expected is None)
        if track is not None and expected is not None:
            assert track.driving_hours == pytest.approx(expected.driving_hours, abs=1e-6)
            assert (track.recent_points, track.points_today) == (expected.recent_points, expected.points_today)
            assert track.latest == expected.latest and track.previous == expected.previous
        await s.aclose()

    anyio.run(check)


@pytest.mark.anyio
async def test_run_needs_a_context_capable_store() -> None:
    with pytest.raises(TypeError, match="iter_context_inputs"):
        await run(None)


# -- the demo data ----------------------------------------------------------------------------------------------

TRAVELLERS = {"demo-u01": "America/Denver", "demo-u02": "Australia/Brisbane", "demo-u04": "Pacific/Auckland",
              "demo-u05": "Europe/Paris", "demo-u07": "America/Chicago", "demo-u08": "Europe/London"}
LIMITS = {"demo-u01": (6.0, "America/Denver"), "demo-u02": (8.0, "Australia/Brisbane")}


def expected_demo(now: datetime) -> set[tuple[str, str, P]]:
    """What the demo data should produce at ``now``, from the users' local times (pamd.store.demo_context)."""
    out = {("demo-u03", "leave_by", P.HIGH), ("demo-u03", "leave_by", P.MEDIUM)}
    for uid, tz in TRAVELLERS.items():
        if 17 <= now.astimezone(ZoneInfo(tz)).hour < 22:
            out.add((uid, "overnight_stop", P.MEDIUM))
    for uid, (limit, tz) in LIMITS.items():
        local = now.astimezone(ZoneInfo(tz))
        midnight = datetime.combine(local.date(), datetime.min.time(), tzinfo=local.tzinfo)
        if (now - timedelta(minutes=10) - midnight) / timedelta(hours=1) > limit:  # the last fix is 10 min old
            out.add((uid, "driving_rest", P.HIGH))
    return out


@pytest.mark.anyio
@pytest.mark.parametrize("day", ["2026-01-15", "2026-03-08", "2026-03-29", "2026-04-05", "2026-07-15"])
async def test_demo_over_the_utc_day(tmp_path: Path, day: str) -> None:
    """Every UTC hour (and half hour) of days in winter, summer and on DST changes (US, EU, NZ)."""
    s = SQLiteStore(f"sqlite:///{tmp_path}/demo.db")
    no_evening: list[int] = []
    for half_hours in range(48):
        now = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(minutes=30 * half_hours + 7)
        await s.seed_demo(now)
        alerts = await run(s, now)
        got = {(a.user_id, a.kind, a.priority) for a in alerts}
        assert got == expected_demo(now), now
        assert len(alerts) == len(got)
        assert {kind for _, kind, _ in got} >= {"leave_by", "driving_rest"}, now
        if not any(kind == "overnight_stop" for _, kind, _ in got):
            no_evening.append(now.hour)
        assert not any(uid in ("demo-u06",) for uid, _, _ in got)
    assert s.skipped_rows == {}
    documented = {"2026-01-15": [12, 13, 14, 15, 22], "2026-07-15": [4, 12, 13, 14, 21]}
    if day in documented:
        assert sorted(set(no_evening)) == documented[day]
    await s.aclose()


@pytest.mark.anyio
async def test_demo_texts(tmp_path: Path) -> None:
    now = datetime(2026, 1, 15, 2, 0, tzinfo=UTC)  # 19:00 in Denver, 20:00 in Chicago, 12:00 in Brisbane
    s = SQLiteStore(f"sqlite:///{tmp_path}/demo.db")
    await s.seed_demo(now)
    alerts = {(a.user_id, a.kind, a.priority): a for a in await run(s, now)}
    overnight = alerts[("demo-u07", "overnight_stop", P.MEDIUM)]
    assert overnight.title == "Arriving late: consider an overnight stop before Nashville, TN"
    assert "mi away in a straight line" in overnight.body and "mph" in overnight.body
    assert alerts[("demo-u03", "leave_by", P.HIGH)].title.endswith("for Snorkel tour")
    assert alerts[("demo-u02", "driving_rest", P.HIGH)].facts["driving_hours"] == 9.0
    assert await run(s, now, user_id="demo-u06") == []
    await s.aclose()
