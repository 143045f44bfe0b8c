"""The Postgres store's maintenance candidates (filtered in SQL) never drop a user who alerts.

For each data set the due tasks computed from the candidates equal those computed from the full input stream
(``iter_maintenance_inputs``, which tests/test_store_pg_maintenance.py compares with SQLite), with the same skipped
rows; and the monitor's tick gives the same alerts on Postgres (candidates) and SQLite (full stream). Data: the
demo set at several instants, the bad rows of tests/test_store_pg_maintenance.py, randomized users (task synonyms,
NULL vehicles, time zones from UTC-10 to UTC+14, odometers from every source, bad rows), and users placed just either
side of each band. Needs the PostgreSQL server of the ``pg_url`` fixture (tests/conftest.py).
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from pamd.store.pg import PostgresStore
from pamd.store.records_maintenance import MaintenanceBands, MaintenanceCandidateSource, MaintenanceInput
from pamd.store.sqlite import SQLiteStore
from pamd.testing import run_tick
from tests.store_pairs import add
from tests.test_store_pg_maintenance import _bad_data

if TYPE_CHECKING:  # mypy sees the source tree; at run time the package is installed as pamd_plugins
    from plugins import maintenance as mnt
else:
    from pamd_plugins import maintenance as mnt

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
CFG = mnt.MaintenanceConfig()
BANDS = MaintenanceBands(due_soon_days=CFG.due_soon_days, due_soon_km=CFG.due_soon_km, task_key=mnt.task_key)
Row = dict[str, Any]

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def stream(pg: PostgresStore, now: datetime, candidates: bool) -> AsyncGenerator[list[MaintenanceInput], None]:
    if candidates:
        return pg.iter_maintenance_candidates(BANDS, 7, now=now, scan_size=13)
    return pg.iter_maintenance_inputs(7, now=now)


async def due_tasks(pg: PostgresStore, now: datetime, candidates: bool) -> list[tuple[Any, ...]]:
    """``(user, vehicle, task, priority, days left, km left)`` of every due task."""
    found = []
    async for batch in stream(pg, now, candidates):
        for inp in batch:
            due, _ = mnt.assess(inp, now, CFG)
            found += [(inp.user_id, d.vehicle.id, d.task_key, d.priority.value, d.days_left, d.km_left) for d in due]
    return sorted(found, key=repr)


async def candidates(pg: PostgresStore, now: datetime) -> set[str]:
    return {inp.user_id async for batch in stream(pg, now, True) for inp in batch}


async def assert_same(pg: PostgresStore, now: datetime, expect_due: bool = True) -> None:
    """Candidates and the full stream give the same due tasks at ``now``, and skip the same rows."""
    full = await due_tasks(pg, now, False)
    skipped = dict(pg.skipped_rows)
    pg.skipped_rows.clear()
    assert await due_tasks(pg, now, True) == full
    assert pg.skipped_rows == skipped  # a user whose rows the full stream skips comes back to have them counted
    pg.skipped_rows.clear()
    if expect_due:
        assert full


def test_the_store_is_a_maintenance_candidate_source() -> None:
    assert issubclass(PostgresStore, MaintenanceCandidateSource)
    assert not issubclass(SQLiteStore, MaintenanceCandidateSource)


# -- the demo set and its bad rows --------------------------------------------------------------------------------


@pytest.mark.parametrize("days", [0, 1, 4, 20, 60, 150, 400])
async def test_demo_candidates_alert_the_same(pg: PostgresStore, days: int) -> None:
    await pg.seed_demo(NOW)
    await assert_same(pg, NOW + timedelta(days=days))


async def test_demo_candidates_leave_out_users_with_nothing_due(pg: PostgresStore) -> None:
    await pg.seed_demo(NOW)
    # demo-u04 is due in 150 days, demo-u08 in 60; demo-u03 has no records
    assert await candidates(pg, NOW) == {u for u, *_ in await due_tasks(pg, NOW, False)} == {
        "demo-u01", "demo-u02", "demo-u05", "demo-u07"}


async def test_bad_rows_bring_their_users_back(lite: SQLiteStore, pg: PostgresStore) -> None:
    await pg.seed_demo(NOW)
    await lite.seed_demo(NOW)
    await _bad_data((lite, pg))
    await assert_same(pg, NOW)
    assert {"demo-u04", "demo-u09", "x1", "x2", "x8"} <= await candidates(pg, NOW)  # x8: no records, unknown zone
    assert "x9" not in await candidates(pg, NOW)  # deleted


# -- randomized data ----------------------------------------------------------------------------------------------

_TASKS = ("Oil change", "oil Change", "Engine oil & filter", "Tire rotation", "tyre rotation", "Brakes", "brakes ",
          "Roof reseal", "Wheel bearings")
_ZONES = ("UTC", "Pacific/Honolulu", "Pacific/Kiritimati", "Pacific/Auckland", "America/Denver", "Mars/Base", "")


def _maybe(rng: random.Random, value: Any, p: float = 0.15) -> Any:
    return None if rng.random() < p else value


def random_rows(rng: random.Random, users: int, bad: float, nan: bool = True) -> dict[str, list[Row]]:
    """Users with vehicles, odometer readings from every source, a position and maintenance records due around
    ``NOW`` (by date and by odometer); a share ``bad`` of the rows is bad (``nan``: NaN among the bad numbers,
    which SQLite reads as NULL and Postgres skips)."""
    tables = ("profiles", "vehicles", "fuel_log", "user_locations", "maintenance_records")
    rows: dict[str, list[Row]] = {t: [] for t in tables}
    others: list[str] = []

    def odd(good: float | None) -> float | None:
        return rng.choice([-1.0, math.inf, *([math.nan] if nan else [])]) if rng.random() < bad else good

    for n in range(users):
        uid = f"r{n:03d}"
        zones = _ZONES if rng.random() < bad * 4 else _ZONES[:5]
        rows["profiles"].append({"id": uid, "timezone": rng.choice(zones),
                                 "status": rng.choice(["active"] * 9 + ["deleted"])})
        vehicles = [f"{uid}-v{k}" for k in range(rng.choice([0, 1, 1, 1, 2]))]
        odometer = rng.uniform(1000, 90000)
        for k, vid in enumerate(vehicles):
            rows["vehicles"].append({"id": vid, "user_id": uid, "is_primary": k == 0,
                                     "odometer_km": odd(_maybe(rng, odometer + rng.uniform(-300, 300), 0.5))})
        for k in range(rng.choice([0, 1, 3])):
            rows["fuel_log"].append({
                "id": f"{uid}-f{k}", "user_id": uid, "vehicle_id": rng.choice([*vehicles, None]),
                "logged_at": None if rng.random() < bad else NOW - timedelta(days=rng.uniform(0, 60)),
                "volume_l": 40.0, "odometer_km": odd(_maybe(rng, odometer + rng.uniform(-900, 600), 0.3))})
        if rng.random() < 0.5:
            lat = 95.0 if rng.random() < bad else rng.uniform(-60, 60)
            rows["user_locations"].append({"user_id": uid, "lat": lat, "lon": rng.uniform(-170, 170),
                                           "recorded_at": NOW - timedelta(hours=rng.uniform(-bad * 20, 5))})
        for k in range(rng.choice([0, 1, 2, 4]) if vehicles or rng.random() < bad * 4 else 0):
            done = NOW.date() - timedelta(days=rng.randint(-2 if rng.random() < bad else 0, 400))
            rows["maintenance_records"].append({
                "id": f"{uid}-m{k}", "user_id": uid, "task": None if rng.random() < bad else rng.choice(_TASKS),
                "vehicle_id": rng.choice([*vehicles, None, *others[-1:]] if rng.random() < bad else [*vehicles, None]),
                "date": done, "odometer_km": odd(_maybe(rng, odometer * rng.uniform(0.5, 1), 0.5)),
                "cost": odd(_maybe(rng, rng.uniform(50, 500), 0.4)),
                "next_due_date": _maybe(rng, NOW.date() + timedelta(days=rng.randint(-30, 40)), 0.4),
                "next_due_odometer_km": odd(_maybe(rng, odometer + rng.uniform(-1500, 2500), 0.4))})
        others += vehicles  # a record naming another user's vehicle is a bad row
    return rows


@pytest.mark.parametrize(("seed", "bad"), [(1, 0.0), (2, 0.0), (3, 0.05)])
async def test_random_candidates_alert_the_same(pg: PostgresStore, seed: int, bad: float) -> None:
    for table, items in random_rows(random.Random(seed), 150, bad).items():
        await pg.add_rows(table, items)
    for days in (0.0, 0.45, 3.7, 16.2, 45.0):
        await assert_same(pg, NOW + timedelta(days=days))
    if not bad:  # clean data: the scan leaves out a good part of the users
        users = [inp.user_id async for batch in stream(pg, NOW, False) for inp in batch]
        assert len(await candidates(pg, NOW)) < 0.8 * len(users)
        assert pg.skipped_rows == {}


# -- users either side of a band ----------------------------------------------------------------------------------


def edge_rows() -> dict[str, list[Row]]:
    """One task each, due by date 14 / 15 days ahead in the users' local dates (UTC-10, UTC, UTC+14, at an hour
    when UTC+14 is already on the next day), or by odometer 799.99 / 800 / 800.01 km ahead of the odometer, which
    comes from the vehicle, a fill-up or a record."""
    rows: dict[str, list[Row]] = {"profiles": [], "vehicles": [], "fuel_log": [], "maintenance_records": []}
    cases: list[tuple[str, Row, str | None]] = []
    for zone in ("Pacific/Honolulu", "UTC", "Pacific/Kiritimati"):
        for days in (13, 14, 15, 16):
            cases.append((zone, {"next_due_date": (NOW + timedelta(days=days)).date()}, None))
    for origin in ("vehicle", "fuel_log", "record"):
        for km in (799.99, 800.0, 800.01, 5000.0):
            cases.append(("UTC", {"next_due_odometer_km": 50000.0 + km, "odometer_km":
                                  50000.0 if origin == "record" else 10.0}, origin))
    for n, (zone, record, source) in enumerate(cases):
        uid = f"edge{n:02d}"
        rows["profiles"].append({"id": uid, "timezone": zone})
        rows["vehicles"].append({"id": f"{uid}-v", "user_id": uid, "is_primary": True,
                                 "odometer_km": 50000.0 if source == "vehicle" else None})
        if source == "fuel_log":
            rows["fuel_log"].append({"id": f"{uid}-f", "user_id": uid, "vehicle_id": f"{uid}-v", "volume_l": 50.0,
                                     "logged_at": NOW - timedelta(days=2), "odometer_km": 50000.0})
        rows["maintenance_records"].append({"id": f"{uid}-m", "user_id": uid, "vehicle_id": f"{uid}-v",
                                            "task": "Oil change", "date": (NOW - timedelta(days=90)).date(),
                                            **record})
    return rows


@pytest.mark.parametrize("hours", [0, 11, 23])
async def test_edges_candidates_alert_the_same(pg: PostgresStore, hours: int) -> None:
    for table, items in edge_rows().items():
        await pg.add_rows(table, items)
    now = NOW + timedelta(hours=hours)
    await assert_same(pg, now)
    due = {u for u, *_ in await due_tasks(pg, now, False)}
    found = await candidates(pg, now)
    assert due <= found
    assert {"edge04", "edge05"} <= due  # UTC: 13 and 14 days ahead are in the band
    if hours < 12:  # (later, 16 days from NOW is 15 from the UTC date: within the scan's one-day margin)
        assert "edge07" not in found  # 16 days ahead is outside it, even at UTC+14
    odometer = [f"edge{n:02d}" for n in range(12, 24)]
    assert [u in due for u in odometer] == [True, True, False, False] * 3  # 800 km to go is in the band


# -- the monitor's tick -------------------------------------------------------------------------------------------


async def test_monitor_tick_uses_candidates_and_alerts_as_on_sqlite(lite: SQLiteStore, pg: PostgresStore) -> None:
    rows = random_rows(random.Random(11), 120, 0.03, nan=False)
    for table, items in rows.items():
        await add((lite, pg), table, items)
    calls = []
    scan = pg.iter_maintenance_candidates

    def spy(*args: Any, **kwargs: Any) -> AsyncGenerator[list[MaintenanceInput], None]:
        calls.append(args)
        return scan(*args, **kwargs)

    pg.iter_maintenance_candidates = spy  # type: ignore[method-assign]
    config = mnt.MaintenanceConfig(batch_size=3)
    results = [await run_tick(mnt.MaintenanceMonitor(), config=config, store=store, now=NOW, retries=0)
               for store in (lite, pg)]
    assert [r.outcome for r in results] == ["success", "success"], [r.error for r in results]
    keys = [sorted((a.user_id, a.subject, a.priority.value, a.title, a.body) for a in r.alerts) for r in results]
    assert keys[1] == keys[0] != []
    assert len(calls) == 1
    single = await run_tick(mnt.MaintenanceMonitor(), config=config, store=pg, now=NOW, retries=0,
                            user_id=keys[0][0][0])
    assert single.outcome == "success" and single.alerts and len(calls) == 1  # one user: the full stream


async def test_records_are_grouped_as_the_monitor_groups_them(pg: PostgresStore) -> None:
    """An old record overdue, then a newer one of the same task under another name (or with the vehicle left out,
    which is the primary one) not due for months: the task is not due, and the user is left out when the scan
    knows the monitor's task keys (without them each text is its own task: the user comes back)."""
    await pg.add_rows("profiles", [{"id": "syn"}, {"id": "nullv"}])
    await pg.add_rows("vehicles", [{"id": "syn-v", "user_id": "syn", "is_primary": True},
                                   {"id": "nullv-a", "user_id": "nullv", "is_primary": False},
                                   {"id": "nullv-b", "user_id": "nullv", "is_primary": True}])
    old = {"date": "2025-06-01", "next_due_date": "2026-01-01"}
    new = {"date": "2026-03-01", "next_due_date": "2026-09-01"}
    await pg.add_rows("maintenance_records", [
        {"id": "s1", "user_id": "syn", "vehicle_id": "syn-v", "task": "Oil change", **old},
        {"id": "s2", "user_id": "syn", "vehicle_id": "syn-v", "task": "Engine oil & filter", **new},
        {"id": "n1", "user_id": "nullv", "vehicle_id": "nullv-b", "task": "Brakes", **old},
        {"id": "n2", "user_id": "nullv", "vehicle_id": None, "task": "Brakes", **new},
    ])
    await assert_same(pg, NOW, expect_due=False)
    assert await due_tasks(pg, NOW, False) == []
    assert await candidates(pg, NOW) == set()
    raw = MaintenanceBands(due_soon_days=CFG.due_soon_days, due_soon_km=CFG.due_soon_km)
    assert {i.user_id async for b in pg.iter_maintenance_candidates(raw, now=NOW) for i in b} == {"syn"}
