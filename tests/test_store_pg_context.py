"""The context monitor's queries on Postgres give the same records, skips and alerts as on SQLite.

Needs the PostgreSQL server of the ``pg_url`` fixture (tests/conftest.py); every test gets a schema of its own.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

import pamd
from pamd.store.pg import PostgresStore
from pamd.store.records_context import ContextInput
from pamd.store.sqlite import SQLiteStore
from pamd.testing import run_tick
from tests.store_pairs import Stores, add

if TYPE_CHECKING:  # mypy sees the source tree; at run time the package is installed as pamd_plugins
    from plugins import context
else:
    from pamd_plugins import context

NOW = datetime(2026, 1, 15, 2, 0, tzinfo=UTC)  # 19:00 in Denver, 20:00 in Chicago, 12:00 in Brisbane

pytestmark = pytest.mark.anyio


_Store = PostgresStore  # it includes the context queries


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def both(lite: SQLiteStore, pg: _Store) -> Stores:
    """Both stores with the demo data at ``NOW``."""
    await lite.seed_demo(NOW)
    await pg.seed_demo(NOW)
    return lite, pg


async def batches(store: SQLiteStore | _Store, batch_size: int, user_id: str | None = None, now: datetime = NOW,
                  **kwargs: Any) -> list[list[ContextInput]]:
    return [batch async for batch in store.iter_context_inputs(now, batch_size, user_id, **kwargs)]


def rounded(value: Any) -> Any:
    """``value`` as builtins with floats rounded to 9 significant digits (driving time sums)."""
    if isinstance(value, float):
        return float(f"{value:.9g}") if math.isfinite(value) else value
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v) for v in value]
    if isinstance(value, msgspec.Struct):
        return rounded(msgspec.to_builtins(value))
    return value


def _ts(minutes: float = 0.0) -> datetime:
    return NOW - timedelta(minutes=minutes)


# -- the same records -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 3, 500])
async def test_context_inputs_are_the_same(both: Stores, batch_size: int) -> None:
    lite, pg = both
    expected = await batches(lite, batch_size)
    assert [len(b) for b in expected] == ([1] * 8 if batch_size == 1 else [3, 3, 2] if batch_size == 3 else [8])
    got = await batches(pg, batch_size)
    assert rounded(got) == rounded(expected)
    users = {i.user_id: i for b in got for i in b}
    assert users["demo-u01"].trips and users["demo-u03"].events and users["demo-u06"].track is None
    assert users["demo-u02"].track is not None and users["demo-u02"].track.driving_hours > 8
    options: list[dict[str, Any]] = [{"lookahead_hours": 2.25}, {"history_hours": 1.0}, {"moving_speed_kmh": 90.0},
                                     {"max_gap_minutes": 5.0}, {"lookahead_hours": 0.0, "history_hours": 0.0}]
    for kwargs in options:
        assert rounded(await batches(pg, batch_size, **kwargs)) == rounded(await batches(lite, batch_size, **kwargs))
    later = NOW + timedelta(hours=2, minutes=10)  # the snorkel tour is still ahead, the oldest fixes out of reach
    assert rounded(await batches(pg, batch_size, now=later)) == rounded(await batches(lite, batch_size, now=later))
    assert pg.skipped_rows == lite.skipped_rows == {}


@pytest.mark.parametrize("user_id", ["demo-u01", "demo-u03", "demo-u06", "demo-u08", "nobody"])
async def test_context_inputs_of_one_user_are_the_same(both: Stores, user_id: str) -> None:
    lite, pg = both
    expected = await batches(lite, 3, user_id)
    assert [i.user_id for b in expected for i in b] == ([] if user_id == "nobody" else [user_id])
    assert rounded(await batches(pg, 3, user_id)) == rounded(expected)


async def test_tracks_are_the_same_for_any_fixes(lite: SQLiteStore, pg: _Store) -> None:
    """Random fixes (millisecond times, unknown speeds, a few bad ones) in several timezones."""
    stores = (lite, pg)
    rng = random.Random(20260115)
    zones = ["UTC", "Pacific/Honolulu", "Pacific/Auckland", "Europe/Paris", "America/Denver"]
    await add(stores, "profiles", [{"id": f"r{n:02d}", "timezone": zones[n % len(zones)]} for n in range(20)])
    rows = []
    for n in range(20):
        for minutes in rng.sample(range(-10, 29 * 60), rng.randint(0, 40)):
            speed = rng.choice([None, rng.uniform(0, 150), rng.uniform(0, 4), 450.0, math.nan])
            rows.append({"user_id": f"r{n:02d}", "recorded_at": _ts(minutes - rng.randint(0, 59_999) / 60_000),
                         "lat": rng.uniform(-89, 89) if rng.random() > 0.03 else 91.0,
                         "lon": rng.uniform(-179, 179), "speed_kmh": speed})
    await add(stores, "user_locations", rows)
    for batch_size in (1, 7, 500):
        expected = await batches(lite, batch_size)
        assert rounded(await batches(pg, batch_size)) == rounded(expected)
    assert pg.skipped_rows == lite.skipped_rows
    assert lite.skipped_rows["user_locations"] > 0


# -- bad rows, skipped and counted the same way -------------------------------------------------------------------


async def test_bad_context_rows_are_skipped_and_counted_the_same(lite: SQLiteStore, pg: _Store) -> None:
    stores = (lite, pg)
    await add(stores, "profiles", [
        {"id": "u1", "timezone": "Europe/London", "max_driving_hours": 6.0},
        {"id": "u2", "timezone": "Atlantis/Capital"},
        {"id": "u3", "timezone": "Pacific/Auckland"},
        {"id": "u9", "status": "deleted"},
    ])
    await add(stores, "trips", [
        {"id": "t1", "user_id": "u1", "status": "active", "destination": "Penzance", "dest_lat": 50.1,
         "dest_lon": -5.5, "start_date": "2026-01-14", "end_date": "2026-01-20"},
        {"id": "t2", "user_id": "u1", "status": "Active", "destination": "Nowhere"},  # no coordinates: kept
        {"id": "t3", "user_id": "u1", "status": "active", "dest_lat": 91.0, "dest_lon": 0.0},
        {"id": "t4", "user_id": "u1", "status": "planned", "dest_lat": 51.0, "dest_lon": 0.0},
        {"id": "t5", "user_id": "u1", "status": "active", "dest_lat": math.nan, "dest_lon": math.nan},  # unknown
        {"id": "t6", "user_id": "u1", "status": "active", "dest_lat": math.nan, "dest_lon": 5.0},
        {"id": "t7", "user_id": "u3", "status": "ACTIVE", "origin": "  ", "destination": " Wellington ",
         "dest_lat": -41.3, "dest_lon": 174.8},
        {"id": "t9", "user_id": "u9", "status": "active", "dest_lat": 51.0, "dest_lon": 0.0},
    ])
    soon = _ts(-120)
    await add(stores, "calendar_events", [
        {"id": "c1", "user_id": "u1", "title": "Dinner", "start_at": soon, "lat": 50.3, "lon": 0.0},
        {"id": "c2", "user_id": "u1", "title": "Bad", "start_at": soon, "lat": 50.3, "lon": 200.0},
        {"id": "c3", "user_id": "u1", "title": "Inf", "start_at": soon, "lat": math.inf, "lon": 0.0},
        {"id": "c4", "user_id": "u1", "title": "Later", "start_at": _ts(-30 * 60), "lat": 50.3, "lon": 0.0},
        {"id": "c5", "user_id": "u1", "title": "Past", "start_at": _ts(60), "lat": 50.3, "lon": 0.0},
        {"id": "c6", "user_id": "u1", "title": "Nowhere", "start_at": soon, "lat": None, "lon": None},
        {"id": "c7", "user_id": "u1", "title": " ", "start_at": _ts(-30), "lat": 50.2, "lon": 0.1,
         "location_name": " Pub "},
        {"id": "c8", "user_id": "u1", "title": "NaN", "start_at": soon, "lat": math.nan, "lon": 0.0},
        {"id": "c9", "user_id": "u1", "title": "Now", "start_at": NOW, "lat": 50.3, "lon": 0.0},  # not after now
        {"id": "c10", "user_id": "u1", "title": "Edge", "start_at": _ts(-24 * 60), "lat": 50.3, "lon": 0.0},
        {"id": "c11", "user_id": "u1", "title": "No time", "start_at": None, "lat": 50.3, "lon": 0.0},
        {"id": "c12", "user_id": "u2", "title": "Elsewhere", "start_at": _ts(-1.5), "lat": -20.0, "lon": 30.0},
        {"id": "c19", "user_id": "u9", "title": "Deleted", "start_at": soon, "lat": 50.3, "lon": 0.0},
    ])
    await add(stores, "user_locations", [
        {"user_id": "u1", "recorded_at": _ts(28 * 60), "lat": 50.0, "lon": 0.0, "speed_kmh": 80.0},  # too old
        {"user_id": "u1", "recorded_at": _ts(40), "lat": 50.0, "lon": 0.0, "speed_kmh": 80.0},
        {"user_id": "u1", "recorded_at": _ts(30.5), "lat": 50.1, "lon": 0.0, "speed_kmh": math.nan},
        {"user_id": "u1", "recorded_at": _ts(20), "lat": 95.0, "lon": 0.0, "speed_kmh": 80.0},
        {"user_id": "u1", "recorded_at": _ts(10), "lat": None, "lon": 0.0, "speed_kmh": 80.0},
        {"user_id": "u1", "recorded_at": _ts(5), "lat": 50.2, "lon": 0.0, "speed_kmh": -3.0},
        {"user_id": "u1", "recorded_at": _ts(4), "lat": 50.2, "lon": 0.0, "speed_kmh": 401.0},
        {"user_id": "u1", "recorded_at": _ts(3), "lat": math.inf, "lon": 0.0, "speed_kmh": 1.0},
        {"user_id": "u1", "recorded_at": _ts(2), "lat": 50.2, "lon": math.nan, "speed_kmh": 1.0},
        {"user_id": "u1", "recorded_at": _ts(-60), "lat": 50.2, "lon": 0.0},  # in the future
        {"user_id": "u1", "recorded_at": _ts(-2), "lat": 50.25, "lon": 0.0, "speed_kmh": 70.0},  # clock skew
        {"user_id": "u2", "recorded_at": _ts(30), "lat": 10.0, "lon": 10.0, "speed_kmh": None},
        {"user_id": "u3", "recorded_at": _ts(1.2345), "lat": -38.1, "lon": 176.2, "speed_kmh": 400.0},
        {"user_id": "u9", "recorded_at": _ts(1), "lat": 95.0, "lon": 10.0},  # deleted: unread
    ])
    for batch_size in (1, 2, 500):
        expected = await batches(lite, batch_size)
        assert rounded(await batches(pg, batch_size)) == rounded(expected)
        for user_id in ("u1", "u2", "u9"):
            assert rounded(await batches(pg, batch_size, user_id)) == rounded(await batches(lite, batch_size, user_id))
    assert pg.skipped_rows == lite.skipped_rows
    # per run of the three users: t3 and t6; c2, c3; 7 fixes of u1; u2's timezone
    assert lite.skipped_rows == {"trips": 2 * 6, "calendar_events": 2 * 6, "user_locations": 7 * 6,
                                 "profiles": 1 * 6}

    [users] = await batches(pg, 500)
    u1, u2, u3 = users
    assert [t.id for t in u1.trips] == ["t1", "t2", "t5"] and u1.trips[2].dest_lat is None
    assert u1.trips[0].start_date is not None and u1.trips[0].start_date.isoformat() == "2026-01-14"
    assert [e.id for e in u1.events] == ["c7", "c1", "c10"]
    assert (u1.events[0].title, u1.events[0].location_name) == ("your event", "Pub")
    assert u1.track is not None and u1.track.latest.lat == 50.25 and u1.track.latest.recorded_at == NOW
    assert u1.track.previous is not None and u1.track.previous.speed_kmh is None
    assert u1.track.recent_points == 3 and u1.track.driving_hours == pytest.approx(39.5 / 60)
    assert u2.timezone == "UTC" and [e.id for e in u2.events] == ["c12"]
    assert u2.track is not None and u2.track.latest.speed_kmh is None
    assert [t.origin for t in u3.trips] == [None] and u3.trips[0].destination == "Wellington"
    assert u3.track is not None and u3.track.latest.recorded_at == _ts(1.2345)
    assert await batches(pg, 500, "u9") == await batches(lite, 500, "u9") == []


async def test_arguments_are_checked(pg: _Store) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        await batches(pg, 0)
    with pytest.raises(ValueError, match="lookahead_hours"):
        await batches(pg, 10, lookahead_hours=-1.0)


# -- the monitor gives the same alerts ----------------------------------------------------------------------------


def _alerts(alerts: Sequence[pamd.Alert]) -> list[tuple[Any, ...]]:
    return sorted((a.user_id, a.kind, a.priority, a.title, a.body, rounded(dict(a.facts))) for a in alerts)


@pytest.mark.parametrize("batch_size", [1, 3, 500])
async def test_context_monitor_alerts_the_same(both: Stores, batch_size: int) -> None:
    lite, pg = both
    monitor, config = context.ContextMonitor(), context.ContextConfig(batch_size=batch_size)
    for minutes in (0, 20, 450):  # 7 h 30 min later the events have started and the tracks are old: no alerts
        now = NOW + timedelta(minutes=minutes)
        results = [await run_tick(monitor, config=config, store=store, now=now, retries=0) for store in both]
        assert [r.outcome for r in results] == ["success", "success"], [r.error for r in results]
        expected = _alerts(results[0].alerts)
        assert _alerts(results[1].alerts) == expected
        assert bool(expected) == (minutes < 450)
    first = [await run_tick(monitor, config=config, store=store, now=NOW, retries=0) for store in both]
    kinds = {a.kind for a in first[1].alerts}
    assert kinds >= {"overnight_stop", "leave_by", "driving_rest"}
    for user_id in ("demo-u02", "demo-u03", "demo-u06"):
        one = [await run_tick(monitor, config=config, store=store, now=NOW, user_id=user_id, retries=0)
               for store in both]
        assert _alerts(one[1].alerts) == _alerts(one[0].alerts)
        assert (one[1].alerts == []) == (user_id == "demo-u06")
    assert pg.skipped_rows == lite.skipped_rows == {}
