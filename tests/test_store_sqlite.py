"""The SQLite store: URLs, migrations, demo seeding, add_rows and the fuel monitor's batched reads."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from pamd.store import open_store
from pamd.store.demo import demo_rows, demo_user_ids
from pamd.store.records import FuelInput, FuelInputSource, format_ts, parse_ts
from pamd.store.sqlite import PRIMARY_KEYS, SQLiteStore, sqlite_path

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(f"sqlite:///{tmp_path}/pamd.db")
    await s.migrate()
    yield s
    await s.aclose()


async def fuel_inputs(store: SQLiteStore, **kwargs: Any) -> list[FuelInput]:
    return [inp async for batch in store.iter_fuel_inputs(**kwargs) for inp in batch]


def table_counts(path: str) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        return {t: conn.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] for t in PRIMARY_KEYS}


async def add_user(store: SQLiteStore, uid: str, **profile: Any) -> None:
    await store.add_rows("profiles", [{"id": uid, **profile}])


# -- URLs ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "path"),
    [
        ("sqlite:///data/pamd.db", "data/pamd.db"),
        ("sqlite:////var/lib/pamd/pamd.db", "/var/lib/pamd/pamd.db"),
        ("sqlite:///:memory:", ":memory:"),
        ("SQLITE:///x.db?mode=rw", "x.db"),
    ],
)
def test_sqlite_path(url: str, path: str) -> None:
    assert sqlite_path(url) == path


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite://host/x.db", "postgres:///x"])
def test_sqlite_path_rejects(url: str) -> None:
    with pytest.raises(ValueError):
        sqlite_path(url)


def test_open_store_sqlite(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/a.db")
    assert isinstance(store, SQLiteStore)
    assert store.url == f"sqlite:///{tmp_path}/a.db"
    assert isinstance(store, FuelInputSource)


@pytest.mark.parametrize(("url", "scheme"), [("mysql://u@h/db", "mysql"), ("redis://h/0", "redis")])
def test_open_store_unsupported(url: str, scheme: str) -> None:
    supported = r"sqlite, postgresql, postgres, supabase\+https, supabase\+http"
    with pytest.raises(ValueError, match=rf"^unsupported store url scheme '{scheme}' \(supported: {supported}\)$"):
        open_store(url)
    with pytest.raises(ValueError, match=r"needs \[store\] supabase_url"):  # the bare name, without its URL
        open_store("supabase")


def test_timestamps_round_trip() -> None:
    assert format_ts(datetime(2026, 1, 31, 9, 30, 0, 123456, tzinfo=UTC)) == "2026-01-31T09:30:00.123Z"
    assert format_ts(datetime(2026, 1, 31, 9, 30)) == "2026-01-31T09:30:00.000Z"  # naive is UTC
    assert parse_ts("2026-01-31T09:30:00.123Z") == datetime(2026, 1, 31, 9, 30, 0, 123000, tzinfo=UTC)
    assert parse_ts("2026-01-31 10:30:00+01:00") == datetime(2026, 1, 31, 9, 30, tzinfo=UTC)
    assert parse_ts("2026-01-31") == datetime(2026, 1, 31, tzinfo=UTC)
    for bad in ("yesterday", "", None, 12, "2026-13-01T00:00:00Z"):
        assert parse_ts(bad) is None


# -- lifecycle, schema, seeding -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_migrate_is_idempotent_and_creates_everything(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "pamd.db"
    store = SQLiteStore(f"sqlite:///{path}")
    assert await store.is_empty()  # no schema yet
    assert await store.migrate() == 5
    assert await store.migrate() == 0
    await store.ping()
    await store.aclose()
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables >= {*PRIMARY_KEYS, "pamd_migrations"}
        assert conn.execute("SELECT COUNT(*) FROM pamd_migrations").fetchone()[0] == 5
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "pam_alerts_outbox_idx" in indexes and "pam_alerts_fingerprint_idx" not in indexes  # migration 4
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        # the SQL file itself can be applied again by hand
        script = (Path(__file__).parents[1] / "pamd" / "store" / "schema_sqlite.sql").read_text()
        conn.executescript(script)


@pytest.mark.anyio
async def test_closed_store_refuses_work(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path}/c.db")
    await store.ping()
    await store.aclose()
    await store.aclose()  # twice is fine
    with pytest.raises(RuntimeError, match="closed"):
        await store.ping()


@pytest.mark.anyio
async def test_seed_demo_is_idempotent(store: SQLiteStore) -> None:
    assert await store.is_empty()
    written = await store.seed_demo(NOW)
    assert not await store.is_empty()
    first = table_counts(store.path)
    assert written == sum(first.values())
    assert await store.seed_demo(NOW) == written
    assert table_counts(store.path) == first
    assert await store.seed_demo(NOW + timedelta(days=2)) == written  # a later seed refreshes, never duplicates
    assert table_counts(store.path) == first
    assert first["profiles"] == 8
    written_by_pamd = ("pam_alerts", "pam_alert_state", "pam_deliveries", "notifications")
    assert all(first[t] > 0 for t in PRIMARY_KEYS if t not in written_by_pamd)
    logged = [inp.fills[-1].logged_at for inp in await fuel_inputs(store) if inp.fills]
    assert max(logged) <= NOW + timedelta(days=2) and max(logged) > NOW


def test_demo_rows_are_deterministic() -> None:
    assert demo_rows(NOW) == demo_rows(NOW)
    rows = demo_rows(NOW)
    assert [r["id"] for r in rows["profiles"]] == demo_user_ids()
    assert {r["timezone"] for r in rows["profiles"]} >= {"Pacific/Honolulu", "Pacific/Auckland"}
    assert {r["preferred_units"] for r in rows["profiles"]} == {"metric", "imperial"}
    assert {r["currency"] for r in rows["profiles"]} >= {"USD", "EUR", "AUD"}


# -- add_rows -----------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_add_rows_converts_and_handles_conflicts(store: SQLiteStore) -> None:
    await add_user(store, "u1", timezone="Europe/Paris")
    when = datetime(2026, 3, 1, 8, 0, tzinfo=UTC) + timedelta(hours=1, microseconds=5000)
    trip = {"id": "t1", "user_id": "u1", "start_date": when.date(), "route_data": {"km": [1, 2]}, "flex_days": 2}
    assert await store.add_rows("trips", [trip]) == 1
    with pytest.raises(sqlite3.IntegrityError):
        await store.add_rows("trips", [trip])
    assert await store.add_rows("trips", [{**trip, "flex_days": 5}], on_conflict="ignore") == 0
    assert await store.add_rows("trips", [{**trip, "flex_days": 7}], on_conflict="update") == 1
    await store.add_rows("fuel_log", [{"id": "f1", "user_id": "u1", "logged_at": when, "is_full_tank": False}])
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT start_date, route_data, flex_days FROM trips").fetchone() == (
            "2026-03-01", '{"km":[1,2]}', 7)
        assert conn.execute("SELECT logged_at, is_full_tank FROM fuel_log").fetchone() == (
            "2026-03-01T09:00:00.005Z", 0)


@pytest.mark.anyio
async def test_add_rows_rejects_unknown_names(store: SQLiteStore) -> None:
    with pytest.raises(ValueError, match="unknown table"):
        await store.add_rows("sqlite_master", [{"name": "x"}])
    with pytest.raises(ValueError, match="unknown column"):
        await store.add_rows("profiles", [{"id": "u1", "id; DROP TABLE profiles": 1}])
    assert await store.is_empty()


# -- fuel inputs --------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_batches_cover_all_users_with_one_fuel_query_each(tmp_path: Path) -> None:
    statements: list[str] = []
    store = SQLiteStore(f"sqlite:///{tmp_path}/t.db", trace=statements.append)
    await store.seed_demo(NOW)
    statements.clear()
    batches = [batch async for batch in store.iter_fuel_inputs(batch_size=2)]
    await store.aclose()
    assert [len(b) for b in batches] == [2, 2, 2, 2]
    assert [inp.user_id for b in batches for inp in b] == demo_user_ids()
    fuel_queries = [s for s in statements if "FROM fuel_log" in s]
    profile_queries = [s for s in statements if "FROM profiles" in s]
    assert len(fuel_queries) == len(batches)
    assert len(profile_queries) == len(batches) + 1  # the last, empty page ends the stream
    assert all("OFFSET" not in s.upper() for s in profile_queries)


@pytest.mark.anyio
async def test_fuel_inputs_shape(store: SQLiteStore) -> None:
    await store.seed_demo(NOW)
    by_id = {inp.user_id: inp for inp in await fuel_inputs(store, batch_size=3)}
    assert list(by_id) == demo_user_ids()
    margaret = by_id["demo-u01"]
    assert (margaret.timezone, margaret.preferred_units, margaret.currency) == ("America/Denver", "imperial", "USD")
    assert margaret.vehicle is not None and margaret.vehicle.fuel_capacity_l == 380.0
    assert [f.logged_at for f in margaret.fills] == sorted(f.logged_at for f in margaret.fills)
    assert by_id["demo-u06"].vehicle is None and by_id["demo-u06"].fills == ()
    assert len(by_id["demo-u05"].fills) == 1
    only = await fuel_inputs(store, user_id="demo-u03")
    assert [inp.user_id for inp in only] == ["demo-u03"]
    assert await fuel_inputs(store, user_id="nobody") == []
    assert store.skipped_rows == {}


@pytest.mark.anyio
async def test_primary_vehicle_history_limit_and_ordering(store: SQLiteStore) -> None:
    await add_user(store, "u1", preferred_units="furlongs", currency="nzd", timezone="")
    await add_user(store, "u2", status="deleted")
    await store.add_rows("vehicles", [
        {"id": "v-other", "user_id": "u1", "name": "Tow car", "is_primary": False},
        {"id": "v-main", "user_id": "u1", "name": "Motorhome", "is_primary": True, "fuel_capacity_l": 100},
        {"id": "v-u2", "user_id": "u2", "name": "Gone", "is_primary": True},
    ])
    base = NOW - timedelta(days=10)
    await store.add_rows("fuel_log", [
        {"id": f"f{i}", "user_id": "u1", "vehicle_id": "v-main", "volume_l": 10.0 + i,
         "logged_at": format_ts(base + timedelta(days=i)) if i % 2 else (base + timedelta(days=i)).isoformat()}
        for i in (5, 1, 3, 2, 4)
    ] + [
        {"id": "f-none", "user_id": "u1", "vehicle_id": None, "volume_l": 9.0, "logged_at": base},
        {"id": "f-other", "user_id": "u1", "vehicle_id": "v-other", "volume_l": 30.0, "logged_at": base},
    ])
    [inp] = await fuel_inputs(store)
    assert inp.user_id == "u1"  # the deleted profile is not monitored
    assert (inp.preferred_units, inp.currency, inp.timezone) == ("metric", "NZD", "UTC")
    assert inp.vehicle is not None and inp.vehicle.id == "v-main"
    assert [f.id for f in inp.fills] == ["f-none", "f1", "f2", "f3", "f4", "f5"]  # no tow-car fills
    [limited] = await fuel_inputs(store, max_fills=2)
    assert [f.id for f in limited.fills] == ["f4", "f5"]


@pytest.mark.anyio
async def test_bad_rows_are_skipped_counted_and_logged(
    store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    await add_user(store, "u1")
    await add_user(store, "u2")
    await store.add_rows("vehicles", [
        {"id": "v1", "user_id": "u1", "name": "Van", "fuel_capacity_l": 80.0, "is_primary": True},
        {"id": "v2", "user_id": "u2", "name": "Bad", "fuel_capacity_l": -5.0, "is_primary": True},
    ])
    good = {"user_id": "u1", "vehicle_id": "v1", "volume_l": 40.0, "logged_at": NOW, "is_full_tank": True}
    await store.add_rows("fuel_log", [
        {**good, "id": "ok"},
        {**good, "id": "null-volume", "volume_l": None},
        {**good, "id": "negative-volume", "volume_l": -3.0},
        {**good, "id": "bad-time", "logged_at": "last tuesday"},
        {**good, "id": "null-time", "logged_at": None},
        {**good, "id": "null-full", "is_full_tank": None},
        {**good, "id": "negative-odo", "odometer_km": -1.0},
        {**good, "id": "text-volume", "volume_l": "lots"},
        {**good, "id": "bad-cost", "total_cost": -10.0},  # cost is not needed: kept, cost dropped
        {"id": "v2-fill", "user_id": "u2", "vehicle_id": "v2", "volume_l": 40.0, "logged_at": NOW},
    ])
    with caplog.at_level(logging.WARNING, logger="pamd.store.sqlite"):
        inputs = {inp.user_id: inp for inp in await fuel_inputs(store)}
    assert [f.id for f in inputs["u1"].fills] == ["bad-cost", "ok"]
    assert inputs["u1"].fills[0].total_cost is None
    assert inputs["u2"].vehicle is None and inputs["u2"].fills == ()
    assert store.skipped_rows == {"fuel_log": 7, "vehicles": 1}
    messages = [r.getMessage() for r in caplog.records]
    assert any("fuel_log" in m and "negative-volume" in m for m in messages)
    assert any("vehicles" in m and "v2" in m for m in messages)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pamd.store.sqlite"):
        await fuel_inputs(store)
    assert caplog.records == []  # warned once per row; still counted
    assert store.skipped_rows == {"fuel_log": 14, "vehicles": 2}


@pytest.mark.anyio
async def test_concurrent_calls_share_one_connection(store: SQLiteStore) -> None:
    await store.seed_demo(NOW)
    results: list[int] = []

    async def read() -> None:
        results.append(len(await fuel_inputs(store, batch_size=3)))

    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(read)
        tg.start_soon(store.ping)
    assert results == [8] * 10
