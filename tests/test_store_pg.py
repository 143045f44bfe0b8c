"""The Postgres store: URLs, migrations, seeding, add_rows, and the alert pipeline and outbox scenarios of
tests/test_pipeline.py and tests/test_outbox.py run against both stores, with the same expected outcomes."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest

from pamd.alerts.book import FencedError
from pamd.alerts.delivery import Deliverer
from pamd.alerts.seen import TickFingerprints
from pamd.metrics import Metrics
from pamd.model import Priority
from pamd.pipeline import AlertPipeline, stamp
from pamd.store import open_store
from pamd.store.demo import demo_rows
from pamd.store.pg import PRIMARY_KEYS, PostgresStore, split_pg_url
from pamd.store.records import parse_ts
from pamd.store.sqlite import SQLiteStore
from pamd.store.supabase import SupabaseStore
from tests.test_outbox import Flaky, Steady, alert
from tests.test_pipeline import COOLDOWN, Recorder, candidate

P = Priority
T0 = datetime(2026, 1, 15, 0, 0, tzinfo=UTC)  # 13:00 in Auckland (NZDT), 14:00 in Honolulu the day before
NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
AnyStore = SQLiteStore | PostgresStore


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[PostgresStore]:
    s = PostgresStore(pg_url)
    await s.migrate()
    yield s
    await s.aclose()


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AnyStore]:
    """An empty migrated store of each kind, with users ann (Auckland) and bob (Honolulu)."""
    s: AnyStore
    if request.param == "sqlite":
        s = SQLiteStore(f"sqlite:///{tmp_path}/p.db")
    else:
        s = PostgresStore(request.getfixturevalue("pg_url"))
    await s.migrate()
    await s.add_rows("profiles", [{"id": "ann", "timezone": "Pacific/Auckland"},
                                  {"id": "bob", "timezone": "Pacific/Honolulu"}])
    yield s
    await s.aclose()


async def rows(store: AnyStore, sql: str) -> list[tuple[Any, ...]]:
    if isinstance(store, SQLiteStore):
        with sqlite3.connect(store.path) as conn:
            return conn.execute(sql).fetchall()

    async def fetch(conn: asyncpg.Connection) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in await conn.fetch(sql)]

    return await store._call(fetch)


def pipeline(store: AnyStore, *sinks: Recorder | Flaky) -> AlertPipeline:
    return AlertPipeline({s.name: s for s in sinks}, Metrics(), book=store)


async def tick(p: AlertPipeline, now: datetime, *alerts: Any, complete: bool = True, user: str | None = None,
               cooldown: timedelta = COOLDOWN) -> list[str]:
    decisions = (await p.submit("fuel", list(alerts), epoch=1, now=now, cooldown=cooldown, complete=complete,
                                user_id=user)).decisions
    return [d.outcome for d in decisions]


# -- URLs, lifecycle, schema --------------------------------------------------------------------------------


def test_urls_and_pgbouncer() -> None:
    assert split_pg_url("postgresql://u:pw@h:6543/db?pgbouncer=true&sslmode=require") == (
        "postgresql://u:pw@h:6543/db?sslmode=require", True)
    assert split_pg_url("postgres://h/db") == ("postgres://h/db", False)
    assert split_pg_url("postgres://h/db?pgbouncer=false") == ("postgres://h/db", False)
    with pytest.raises(ValueError, match="not a postgres URL"):
        split_pg_url("sqlite:///x.db")
    bouncer = PostgresStore("postgresql://u:secret@h:6543/db?pgbouncer=true")
    kwargs = bouncer._connect_kwargs()
    assert kwargs["statement_cache_size"] == 0 and "statement_timeout" not in kwargs["server_settings"]
    assert "secret" not in repr(bouncer)
    direct = PostgresStore("postgres://h/db", statement_timeout=2.5)
    assert "statement_cache_size" not in direct._connect_kwargs()
    assert direct._connect_kwargs()["server_settings"] == {"statement_timeout": "2500"}
    for url in ("postgresql://h/db", "postgres://h/db"):
        assert isinstance(open_store(url), PostgresStore)


@pytest.mark.anyio
async def test_migrate_is_idempotent_and_creates_everything(pg_url: str) -> None:
    store = PostgresStore(pg_url)
    assert await store.is_empty()
    await store.ping()
    assert await store.migrate() == 1
    assert await store.migrate() == 0
    assert await store.is_empty()
    tables = {r[0] for r in await rows(store, "SELECT table_name FROM information_schema.tables "
                                              "WHERE table_schema = current_schema()")}
    assert tables == {*PRIMARY_KEYS, "pamd_fence", "pamd_migrations"}
    indexes = dict(await rows(store, "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema()"))
    assert "pam_alerts_fingerprint_idx" not in indexes and "pam_alerts_state_idx" not in indexes
    assert "WHERE (state = ANY (ARRAY['pending'::text, 'failed'::text]))" in indexes["pam_alerts_outbox_idx"]
    assert "WHERE (state = 'pending'::text)" in indexes["pam_deliveries_queue_idx"]
    assert "WHERE (state = 'held'::text)" in indexes["pam_alerts_held_idx"]
    await store.aclose()
    await store.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await store.ping()


@pytest.mark.anyio
async def test_concurrent_migrates_apply_once(pg_url: str) -> None:
    stores = [PostgresStore(pg_url) for _ in range(3)]
    results: list[int] = []

    async def migrate(s: PostgresStore) -> None:
        results.append(await s.migrate())

    async with anyio.create_task_group() as tg:
        for s in stores:
            tg.start_soon(migrate, s)
    assert sorted(results) == [0, 0, 1]
    assert await rows(stores[0], "SELECT version FROM pamd_migrations") == [(1,)]
    for s in stores:
        await s.aclose()


@pytest.mark.anyio
async def test_seed_demo_is_idempotent_and_matches_sqlite(pg: PostgresStore, tmp_path: Path) -> None:
    lite = SQLiteStore(f"sqlite:///{tmp_path}/s.db")
    written = await lite.seed_demo(NOW)
    assert await pg.seed_demo(NOW) == written == sum(len(r) for r in demo_rows(NOW).values())
    count = "SELECT " + ", ".join(f'(SELECT COUNT(*) FROM "{t}")' for t in PRIMARY_KEYS)
    expected = await rows(lite, count)
    assert await rows(pg, count) == expected
    assert not await pg.is_empty()
    assert await pg.seed_demo(NOW) == written
    assert await pg.seed_demo(NOW + timedelta(days=2)) == written  # a later seed refreshes, never duplicates
    assert await rows(pg, count) == expected
    assert await pg.monitored_profile("demo-u01") == await lite.monitored_profile("demo-u01")
    # The monitors' queries (pamd.store.pg_fuel and pg_budget) are part of the store and see the same users.
    for size in (3, 500):
        fuel = [[i.user_id for i in b] async for b in pg.iter_fuel_inputs(size, now=NOW)]
        assert fuel == [[i.user_id for i in b] async for b in lite.iter_fuel_inputs(size, now=NOW)]
        budget = [[i.user_id for i in b] async for b in pg.iter_budget_inputs(NOW, size)]
        assert budget == [[i.user_id for i in b] async for b in lite.iter_budget_inputs(NOW, size)]
    await lite.aclose()


@pytest.mark.anyio
async def test_add_rows_converts_and_handles_conflicts(pg: PostgresStore) -> None:
    await pg.add_rows("profiles", [{"id": "u1", "timezone": "Europe/Paris"}])
    when = datetime(2026, 3, 1, 8, 0, tzinfo=UTC) + timedelta(hours=1, microseconds=5432)
    trip = {"id": "t1", "user_id": "u1", "start_date": when.date(), "end_date": "2026-03-09",
            "route_data": {"km": [1, 2]}, "flex_days": 2}
    assert await pg.add_rows("trips", [trip]) == 1
    with pytest.raises(asyncpg.UniqueViolationError):
        await pg.add_rows("trips", [trip])
    assert await pg.add_rows("trips", [{**trip, "flex_days": 5}], on_conflict="ignore") == 0
    assert await pg.add_rows("trips", [{**trip, "flex_days": 7}], on_conflict="update") == 1
    await pg.add_rows("fuel_log", [{"id": "f1", "user_id": "u1", "logged_at": when, "is_full_tank": False},
                                   {"id": "f2", "user_id": "u1", "logged_at": "2026-03-01T10:00:00.000Z",
                                    "volume_l": 40, "is_full_tank": 1}])
    assert await rows(pg, "SELECT start_date, end_date, route_data::text, flex_days FROM trips") == [
        (date(2026, 3, 1), date(2026, 3, 9), '{"km": [1, 2]}', 7)]
    assert await rows(pg, "SELECT logged_at, volume_l, is_full_tank FROM fuel_log ORDER BY id") == [
        (datetime(2026, 3, 1, 9, 0, 0, 5000, tzinfo=UTC), None, False),  # milliseconds, like format_ts
        (datetime(2026, 3, 1, 10, 0, tzinfo=UTC), 40.0, True)]
    with pytest.raises(ValueError, match="unknown table"):
        await pg.add_rows("pg_class", [{"relname": "x"}])
    with pytest.raises(ValueError, match="unknown column"):
        await pg.add_rows("profiles", [{"id": "u2", "id; DROP TABLE profiles": 1}])
    with pytest.raises(ValueError, match="not a timestamp"):
        await pg.add_rows("fuel_log", [{"id": "f3", "user_id": "u1", "logged_at": "yesterday"}])


@pytest.mark.anyio
async def test_keyset_reads_ahead_and_stops_cleanly(pg: PostgresStore) -> None:
    await pg.add_rows("profiles", [{"id": f"u{n:02d}"} for n in range(7)] + [{"id": "gone", "status": "deleted"}])

    async def fetch(conn: asyncpg.Connection, profiles: list[Any]) -> list[str]:
        return [p.user_id for p in profiles]

    pages = [batch async for batch in pg._pages(fetch, 3, None)]
    assert pages == [["u00", "u01", "u02"], ["u03", "u04", "u05"], ["u06"]]
    assert [b async for b in pg._pages(fetch, 3, "u04")] == [["u04"]]
    stream = pg._pages(fetch, 2, None)
    assert await anext(stream) == ["u00", "u01"]
    await stream.aclose()  # the read-ahead of the next page is cancelled
    assert await pg.monitored_profile("gone") is None


# -- the alert pipeline on both stores (tests/test_pipeline.py) ----------------------------------------------


@pytest.mark.anyio
async def test_dedupe_cooldown_escalation_and_restart(store: AnyStore) -> None:
    sink = Recorder()
    p = pipeline(store, sink)
    assert await tick(p, T0, candidate()) == ["delivered"]
    assert await tick(p, T0 + timedelta(minutes=5), candidate()) == ["cooldown"]
    assert await tick(p, T0 + timedelta(minutes=10), candidate(priority=P.HIGH)) == ["delivered"]  # escalation
    assert await tick(p, T0 + timedelta(minutes=15), candidate(priority=P.MEDIUM)) == ["cooldown"]
    reopened = type(store)(store.url)  # a restarted daemon remembers
    p2 = pipeline(reopened, sink)
    assert await tick(p2, T0 + timedelta(hours=1), candidate(priority=P.HIGH)) == ["cooldown"]
    assert await tick(p2, T0 + timedelta(minutes=10) + COOLDOWN, candidate(priority=P.HIGH)) == ["delivered"]
    await reopened.aclose()
    assert [a.priority for a in sink.got] == [P.MEDIUM, P.HIGH, P.HIGH]
    assert await rows(store, "SELECT state, COUNT(*) FROM pam_alerts GROUP BY state") == [("delivered", 3)]


@pytest.mark.anyio
async def test_sweep_resolves_but_incomplete_ticks_resolve_nothing(store: AnyStore) -> None:
    sink = Recorder()
    p = pipeline(store, sink)
    assert await tick(p, T0, candidate(), candidate(user="bob")) == ["delivered", "delivered"]
    assert await tick(p, T0 + timedelta(minutes=5), complete=False) == []
    assert await tick(p, T0 + timedelta(minutes=10), candidate()) == ["cooldown"]
    assert await tick(p, T0 + timedelta(minutes=15), user="bob") == []
    assert await rows(store, "SELECT user_id FROM pam_alert_state") == [("ann",)]
    assert await tick(p, T0 + timedelta(minutes=20), candidate(user="bob")) == ["delivered"]
    assert await rows(store, "SELECT user_id FROM pam_alert_state") == [("bob",)]
    assert await tick(p, T0 + timedelta(minutes=25), candidate(), candidate(user="bob")) == ["delivered", "cooldown"]
    assert [a.user_id for a in sink.got] == ["ann", "bob", "bob", "ann"]


@pytest.mark.anyio
async def test_a_tick_in_many_batches_resolves_only_what_none_reported(
    store: AnyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweep is a set difference with every batch's fingerprints (default and custom spellings), and a steady
    tick (all in cooldown) rewrites no state row (Supabase's RPC function still marks each batch's as seen)."""
    monkeypatch.setattr("pamd.pipeline.BATCH", 2)  # 8 users: four batches a tick
    users = [f"u{i}" for i in range(8)]

    def alerts(*skip: str) -> list[Any]:
        made = [candidate(user=u) for u in users if u not in skip]
        custom = candidate(user="u3", subject="custom")
        custom.fingerprint = "Fuel:u3:Custom"  # not a default fingerprint: kept as spelled
        return [*made, custom] if "custom" not in skip else made

    p = pipeline(store, Recorder())
    assert await tick(p, T0, *alerts()) == ["delivered"] * 9
    states = "SELECT fingerprint, user_id, last_seen_at FROM pam_alert_state ORDER BY fingerprint"
    before = await rows(store, states)
    versions = "SELECT fingerprint, xmin::text FROM pam_alert_state ORDER BY fingerprint"
    marks = isinstance(store, SupabaseStore)
    if isinstance(store, PostgresStore):
        written = await rows(store, versions)
    assert await tick(p, T0 + timedelta(minutes=5), *alerts()) == ["cooldown"] * 9
    assert marks or await rows(store, states) == before
    if isinstance(store, PostgresStore) and not marks:
        assert await rows(store, versions) == written  # not one row version more
    assert await tick(p, T0 + timedelta(minutes=10), *alerts("u0", "u5", "custom")) == ["cooldown"] * 6
    assert sorted(r[1] for r in await rows(store, states)) == ["u1", "u2", "u3", "u4", "u6", "u7"]
    outcomes = await tick(p, T0 + timedelta(minutes=15), *alerts("u0", "u5"))
    assert sorted(outcomes) == ["cooldown"] * 6 + ["delivered"]  # the custom condition is new again


@pytest.mark.anyio
async def test_quiet_hours_hold_then_release(store: AnyStore) -> None:
    await store.add_rows("notification_preferences", [
        {"user_id": "ann", "monitor": "*", "enabled": True, "quiet_start": "22:00", "quiet_end": "07:00"}])
    sink = Recorder()
    p = pipeline(store, sink)
    night = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)  # 23:00 NZDT
    morning = datetime(2026, 1, 15, 18, 0, tzinfo=UTC)  # 07:00 NZDT
    quiet = candidate()
    quiet.facts = {"zeta": 1, "alpha": [1.5, "x", None], "mid": {"b": True, "a": 0.1}}
    assert await tick(p, night, quiet, candidate(kind="budget", priority=P.URGENT)) == ["delivered", "held"]
    assert await tick(p, night + timedelta(hours=1), candidate(), candidate(kind="budget", priority=P.URGENT)) == [
        "cooldown", "cooldown"]
    assert await p.release_held(morning - timedelta(seconds=1)) == 0
    assert await p.release_held(morning) == 1
    assert [a.kind for a in sink.got] == ["budget", "fuel_low"]
    assert sink.got[1].title == "fuel_low medium" and sink.got[1].created_at == night
    assert list(sink.got[1].facts) == ["zeta", "alpha", "mid"] and sink.got[1].facts == quiet.facts  # as stored
    assert await p.release_held(morning + timedelta(hours=1)) == 0
    assert await rows(store, "SELECT state FROM pam_alerts ORDER BY kind") == [("delivered",), ("delivered",)]


@pytest.mark.anyio
async def test_held_alert_dropped_when_resolved_or_expired(store: AnyStore) -> None:
    await store.add_rows("notification_preferences", [
        {"user_id": "ann", "monitor": "fuel", "quiet_start": "22:00", "quiet_end": "07:00"}])
    sink = Recorder()
    p = pipeline(store, sink)
    night = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)
    assert await tick(p, night, candidate()) == ["held"]
    assert await tick(p, night + timedelta(hours=2)) == []  # resolved while held
    assert await tick(p, night + timedelta(hours=3), candidate(subject="v2", expires=night + timedelta(hours=4))) \
        == ["held"]
    assert await p.release_held(datetime(2026, 1, 15, 18, 0, tzinfo=UTC)) == 0
    assert sink.got == []
    assert await rows(store, "SELECT state FROM pam_alerts ORDER BY created_at") == [("resolved",), ("expired",)]


@pytest.mark.anyio
async def test_daily_cap_per_local_day_urgent_exempt(store: AnyStore) -> None:
    await store.add_rows("notification_preferences", [{"user_id": "ann", "monitor": "*", "max_per_day": 2}])
    sink = Recorder()
    p = pipeline(store, sink)

    async def run(now: datetime) -> dict[str, str]:
        alerts = [candidate(subject=s) for s in ("a", "b", "c")] + [candidate(subject="d", priority=P.URGENT)]
        decisions = (await p.submit("fuel", alerts, epoch=1, now=now, cooldown=timedelta(days=1),
                                    complete=True)).decisions
        return {d.alert.subject: d.outcome for d in decisions}

    first = await run(T0)
    assert first["d"] == "delivered"
    assert sorted(first[s] for s in "abc") == ["capped", "delivered", "delivered"]
    capped = next(s for s in "abc" if first[s] == "capped")
    later = await run(T0 + timedelta(hours=2))
    assert later[capped] == "capped" and sorted(later.values()).count("cooldown") == 3
    next_day = await run(datetime(2026, 1, 15, 11, 0, tzinfo=UTC))  # ann's local midnight
    assert next_day[capped] == "delivered" and sorted(next_day.values()).count("cooldown") == 3
    assert len(sink.got) == 4


@pytest.mark.anyio
async def test_a_stale_leader_is_fenced_off_even_with_an_empty_complete_tick(store: AnyStore) -> None:
    sink = Recorder()
    p = pipeline(store, sink)
    await p.submit("fuel", [candidate()], epoch=2, now=T0, cooldown=COOLDOWN)
    with pytest.raises(FencedError, match="epoch 1 is older than epoch 2"):
        await p.submit("fuel", [candidate(user="bob")], epoch=1, now=T0, cooldown=COOLDOWN)
    assert [a.user_id for a in sink.got] == ["ann"]
    assert await rows(store, "SELECT user_id FROM pam_alerts") == [("ann",)]
    await p.submit("fuel", [candidate(user="bob")], epoch=0, now=T0, cooldown=COOLDOWN)  # a one-off trigger
    await p.submit("fuel", [candidate(user="bob", subject="x")], epoch=3, now=T0, cooldown=COOLDOWN)
    assert await rows(store, "SELECT epoch FROM pamd_fence") == [(3,)]
    with pytest.raises(FencedError, match="epoch 2 is older than epoch 3"):
        await p.submit("fuel", [], epoch=2, now=T0, cooldown=COOLDOWN, complete=True)
    assert len(await rows(store, "SELECT fingerprint FROM pam_alert_state")) == 3


@pytest.mark.anyio
async def test_opt_out_dry_run_and_failed_delivery(store: AnyStore) -> None:
    await store.add_rows("notification_preferences", [{"user_id": "bob", "monitor": "fuel", "enabled": False}])
    sink = Recorder()
    p = pipeline(store, sink)
    decisions = (await p.submit("fuel", [candidate(), candidate(user="bob")], epoch=1, now=T0, cooldown=COOLDOWN,
                                dry_run=True)).decisions
    assert [d.outcome for d in decisions] == ["delivered", "opted_out"]
    assert sink.got == [] and await rows(store, "SELECT COUNT(*) FROM pam_alerts") == [(0,)]
    sink.fail = True
    assert await tick(p, T0, candidate()) == ["delivered"]
    assert await rows(store, "SELECT state FROM pam_alerts") == [("pending",)]
    assert await rows(store, "SELECT sink, state, attempts FROM pam_deliveries") == [("recorder", "pending", 1)]


# -- the outbox on both stores (tests/test_outbox.py) --------------------------------------------------------


@pytest.mark.anyio
async def test_outbox_retries_with_backoff_in_per_user_order(store: AnyStore) -> None:
    flaky, steady = Flaky(), Steady()
    p = pipeline(store, flaky, steady)
    flaky.down = True
    await tick(p, T0, alert("a1"), alert("b1", user="bob"), cooldown=timedelta(hours=1))
    await tick(p, T0 + timedelta(minutes=1), alert("a2"), cooldown=timedelta(hours=1))
    assert steady.got == ["a1", "b1", "a2"] and flaky.got == []
    assert await rows(store, "SELECT sink, user_id, attempts FROM pam_deliveries ORDER BY alert_id") == [
        ("flaky", "ann", 1), ("flaky", "bob", 1), ("flaky", "ann", 0)]
    assert await rows(store, "SELECT COUNT(*) FROM pam_alerts WHERE state = 'pending'") == [(3,)]
    assert await store.queued_users(["flaky", "steady"], ["ann", "bob", "cy"]) == {("flaky", "ann"),
                                                                                    ("flaky", "bob")}
    deliverer = p.deliverer
    assert await deliverer.retry_due(T0) == 0
    assert await deliverer.retry_due(T0 + timedelta(minutes=2)) == 0
    assert await deliverer.retry_due(T0 + timedelta(minutes=2)) == 0
    assert await rows(store, "SELECT attempts FROM pam_deliveries WHERE user_id = 'bob'") == [(2,)]
    flaky.down = False
    assert await deliverer.retry_due(T0 + timedelta(minutes=10)) == 3
    assert sorted(flaky.got) == ["a1", "a2", "b1"] and flaky.got.index("a1") < flaky.got.index("a2")
    assert await rows(store, "SELECT DISTINCT state FROM pam_alerts") == [("delivered",)]
    assert await rows(store, "SELECT DISTINCT state FROM pam_deliveries") == [("delivered",)]
    assert await deliverer.retry_due(T0 + timedelta(minutes=20)) == 0
    assert await store.outbox_size() == 0


@pytest.mark.anyio
async def test_a_refusal_is_final_and_an_expired_alert_is_dropped(store: AnyStore) -> None:
    flaky, steady = Flaky(), Steady()
    flaky.refuse = {"bob"}
    p = pipeline(store, flaky, steady)
    await tick(p, T0, alert("b1", user="bob"), alert("a1"))
    assert flaky.got == ["a1"]
    assert await rows(store, "SELECT user_id, state FROM pam_alerts ORDER BY user_id") == [
        ("ann", "delivered"), ("bob", "failed")]
    assert await rows(store, "SELECT state, last_error FROM pam_deliveries") == [
        ("failed", "refused: 422 unknown user")]
    flaky.refuse, flaky.down = set(), True
    await tick(p, T0 + timedelta(hours=2), alert("a9", expires=T0 + timedelta(hours=2, minutes=30)))
    flaky.down = False
    assert await p.deliverer.retry_due(T0 + timedelta(hours=3)) == 0
    assert await rows(store, "SELECT state FROM pam_deliveries ORDER BY state") == [("expired",), ("failed",)]


@pytest.mark.anyio
async def test_alerts_stored_but_never_delivered_are_resumed(store: AnyStore) -> None:
    p = pipeline(store)
    stamped = [stamp(alert(f"a{n}"), "fuel", 1, T0) for n in range(3)]
    decided = await p.decide("fuel", stamped, T0, timedelta(hours=1))
    await store.record_decisions("fuel", decided, T0, epoch=1)
    assert await store.outbox_size() == 3
    sink = Flaky()
    deliverer = Deliverer({"flaky": sink}, Metrics(), store)
    assert await deliverer.resume_stuck(before=T0) == 0
    assert await deliverer.resume_stuck(before=T0 + timedelta(seconds=1)) == 3
    assert sink.got == ["a0", "a1", "a2"]
    assert await rows(store, "SELECT DISTINCT state FROM pam_alerts") == [("delivered",)]


@pytest.mark.anyio
async def test_a_notification_row_once_per_alert_id(store: AnyStore) -> None:
    a, b, c = (stamp(alert(title, expires=T0 + timedelta(days=1)), "fuel", 1, T0) for title in ("n1", "n2", "n3"))
    a.facts = {"level": 0.1}
    assert await store.add_notifications([a]) == 1
    assert await store.add_notifications([a]) == 0
    # One batch: the row already there and a repeat within the batch are skipped, the others written.
    assert await store.add_notifications([b, a, c, b]) == 2
    assert await store.add_notifications([]) == 0
    found = await rows(store, "SELECT id, user_id, alert_id, type, priority, title, data, created_at, expires_at "
                              "FROM notifications ORDER BY title")
    assert [(*row[:6], json.loads(row[6]), *(parse_ts(t) if isinstance(t, str) else t for t in row[7:]))
            for row in found] == [
        (x.id, "ann", x.id, "fuel_low", "high", x.title,
         {"monitor": "fuel", "facts": x.facts, "actions": [], "fingerprint": x.fingerprint}, T0,
         T0 + timedelta(days=1)) for x in (a, b, c)]


@pytest.mark.anyio
async def test_concurrent_terms_race_on_the_fence_and_the_newest_wins(pg: PostgresStore) -> None:
    outcomes: dict[int, str] = {}

    async def write(epoch: int) -> None:
        try:
            await pg.record_decisions("fuel", [], T0, epoch=epoch, sweep=True)
            outcomes[epoch] = "ok"
        except FencedError:
            outcomes[epoch] = "fenced"

    async with anyio.create_task_group() as tg:
        for epoch in (3, 1, 4, 2, 5):
            tg.start_soon(write, epoch)
    assert outcomes[5] == "ok" and len(outcomes) == 5
    assert await rows(pg, "SELECT name, epoch FROM pamd_fence") == [("leader", 5)]
    with pytest.raises(FencedError, match="epoch 4 is older than epoch 5"):
        await pg.record_decisions("fuel", [], T0, epoch=4, sweep=True)


@pytest.mark.anyio
async def test_staged_writes_on_reused_connections_stay_separate(pg: PostgresStore) -> None:
    """A batch's alerts and states go through the connection's staging tables (COPY, then INSERT ... SELECT): a
    later batch on the same connections writes only its own rows, also after a batch that failed half-way (its
    staging table rolled back with it), and every staging table is empty between transactions."""
    await pg.add_rows("profiles", [{"id": u, "timezone": "UTC"} for u in ("ann", "bob", "cy")])
    p = pipeline(pg, Recorder())

    async def record(*users: str, epoch: int = 1, priority: Priority = P.MEDIUM) -> None:
        stamped = [stamp(candidate(user=u, priority=priority), "fuel", epoch, T0) for u in users]
        await pg.record_decisions("fuel", await p.decide("fuel", stamped, T0, COOLDOWN), T0, epoch=epoch)

    await record("ann", "bob")
    await record("cy", priority=P.HIGH)
    real_copy = asyncpg.Connection.copy_records_to_table

    async def copy_then_fail(self: asyncpg.Connection, *args: Any, **kwargs: Any) -> Any:
        await real_copy(self, *args, **kwargs)
        raise asyncpg.DataError("the batch fails after its rows were staged")

    with pytest.MonkeyPatch.context() as patch, pytest.raises(asyncpg.DataError):
        patch.setattr(asyncpg.Connection, "copy_records_to_table", copy_then_fail)
        await record("ann", priority=P.URGENT)
    await record("bob", priority=P.HIGH)
    assert await rows(pg, "SELECT user_id, priority FROM pam_alerts ORDER BY id") == [
        ("ann", "medium"), ("bob", "medium"), ("cy", "high"), ("bob", "high")]
    assert await rows(pg, "SELECT user_id, priority FROM pam_alert_state ORDER BY user_id") == [
        ("ann", "medium"), ("bob", "high"), ("cy", "high")]

    async def staged(conn: asyncpg.Connection) -> list[int]:
        counts = []
        for table in ("pamd_stage_alerts", "pamd_stage_states"):
            if await conn.fetchval("SELECT to_regclass($1)", f"pg_temp.{table}") is not None:
                counts.append(await conn.fetchval(f"SELECT count(*) FROM pg_temp.{table}"))
        return counts

    assert await pg._call(staged) == [0, 0]  # the last write's connection: both tables there, both empty


@pytest.mark.anyio
async def test_the_sweep_stays_hashed_when_the_statistics_are_stale(pg_url: str) -> None:
    """A monitor's first big tick after the table was analysed without its states (the planner expects one row):
    the sweep's set difference with the tick's fingerprints must still be hashed. As a nested loop over both sets it
    is quadratic: 30,000 states ran into the statement timeout (10 s here) and failed the tick."""
    pg = PostgresStore(pg_url, statement_timeout=10)
    try:
        await pg.migrate()
        await pg.add_rows("profiles", [{"id": "ann", "timezone": "UTC"}])
        states = "(fingerprint, user_id, monitor, kind, priority, last_alert_id, last_sent_at, last_seen_at)"

        async def stale_statistics(conn: asyncpg.Connection) -> None:
            await conn.execute(f"INSERT INTO pam_alert_state {states} VALUES "
                               "('other', 'ann', 'fuel', 'fuel_low', 'high', 'a0', $1, $1)", T0)
            await conn.execute("ANALYZE pam_alert_state")
            await conn.execute(f"INSERT INTO pam_alert_state {states} SELECT md5(i::text), 'ann', 'budget', "
                               "'budget_pace', 'medium', 'a' || i, $1, $1 FROM generate_series(1, 30000) AS i", T0)

        await pg._call(stale_statistics)
        seen = TickFingerprints(hashlib.md5(str(i).encode()).hexdigest() for i in range(1, 29001))
        resolved = await pg.record_decisions("budget", [], NOW, sweep=True, seen=seen)
        assert sorted(resolved) == sorted(hashlib.md5(str(i).encode()).hexdigest() for i in range(29001, 30001))
        assert await rows(pg, "SELECT monitor, count(*) FROM pam_alert_state GROUP BY monitor ORDER BY 1") == [
            ("budget", 29000), ("fuel", 1)]
    finally:
        await pg.aclose()
