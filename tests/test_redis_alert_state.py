"""Alert dedupe state in Redis (``[alerts] state = "redis"``) against the real Redis on 127.0.0.1:6379.

The same decision sequences run through an :class:`AlertPipeline` whose book is the SQLite store and one whose
book is :class:`RedisStateBook` (SQLite for alerts, Redis for dedupe state); everything observable must be equal:
outcomes, resolved fingerprints, deliveries, stored alerts' states and the dedupe state itself. Each test has its
own key prefix, deleted afterwards.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
import redis.asyncio as aioredis

from pamd.alerts.book import AlertBook, AlertContext, FencedError
from pamd.alerts.decide import AlertState, Decision
from pamd.alerts.redis_state import RedisAlertState
from pamd.alerts.seen import TickFingerprints
from pamd.alerts.split_book import RedisStateBook, open_alert_book
from pamd.config import AlertsSection, ConfigError, load_config
from pamd.metrics import Metrics
from pamd.model import Alert, Priority
from pamd.pipeline import AlertPipeline
from pamd.sinks.base import Sink
from pamd.store.sqlite import SQLiteStore
from tests.conftest import REDIS_URL, write_config

URL = REDIS_URL
P = Priority
T0 = datetime(2026, 1, 15, 0, 0, tzinfo=UTC)  # 13:00 in Auckland (ann), 14:00 the day before in Honolulu (bob)
NIGHT = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)  # 23:00 in Auckland
MORNING = datetime(2026, 1, 15, 18, 0, tzinfo=UTC)  # 07:00 in Auckland
COOLDOWN = timedelta(hours=6)
Mode = Literal["store", "redis"]
_STATE_COLUMNS = ("user_id", "monitor", "kind", "priority", "last_sent_at", "last_seen_at", "epoch")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"



class Recorder(Sink):
    name = "recorder"

    def __init__(self) -> None:
        self.got: list[Alert] = []

    async def deliver(self, alert: Alert) -> None:
        self.got.append(alert)


class Spy:
    """An alert book that passes everything to ``book`` and remembers what each ``record_decisions`` resolved."""

    def __init__(self, book: AlertBook) -> None:
        self.book = book
        self.resolved: list[str] = []

    async def alert_states(self, fingerprints: Sequence[str]) -> dict[str, AlertState]:
        return await self.book.alert_states(fingerprints)

    async def alert_context(self, monitor: str, alerts: Sequence[Alert], now: datetime) -> AlertContext:
        return await self.book.alert_context(monitor, alerts, now)

    async def record_decisions(self, monitor: str, decisions: Sequence[Decision], now: datetime, *,
                               scheduled_at: datetime | None = None, sweep_user: str | None = None,
                               sweep: bool = False, seen: TickFingerprints | None = None,
                               epoch: int = 0) -> list[str]:
        resolved = await self.book.record_decisions(monitor, decisions, now, scheduled_at=scheduled_at,
                                                    sweep_user=sweep_user, sweep=sweep, seen=seen, epoch=epoch)
        self.resolved += resolved
        return resolved

    async def mark_alerts(self, alert_ids: Sequence[str], state: str, now: datetime) -> None:
        await self.book.mark_alerts(alert_ids, state, now)

    async def due_held_alerts(self, now: datetime, limit: int = 500) -> list[Alert]:
        return await self.book.due_held_alerts(now, limit)


def candidate(user: str = "ann", priority: Priority = P.MEDIUM, subject: str = "v1",
              expires: datetime | None = None) -> Alert:
    return Alert(user_id=user, kind="fuel_low", priority=priority, title=f"fuel {priority}", body="b",
                 subject=subject, expires_at=expires)


@dataclass
class Replica:
    """One pipeline with its own SQLite store, its book (the store, or the store plus the Redis state) and a sink."""

    pipeline: AlertPipeline
    store: SQLiteStore
    spy: Spy
    sink: Recorder
    state: RedisAlertState | None
    transcript: list[Any] = field(default_factory=list)

    async def tick(self, now: datetime, *alerts: Alert, complete: bool = True, user: str | None = None,
                   epoch: int = 1) -> list[str]:
        submitted = await self.pipeline.submit("fuel", list(alerts), epoch=epoch, now=now, cooldown=COOLDOWN,
                                               complete=complete, user_id=user)
        outcomes: list[str] = [d.outcome for d in submitted.decisions]
        resolved, self.spy.resolved = sorted(self.spy.resolved), []
        self.transcript.append(("tick", now, outcomes, resolved, await self.dedupe_state()))
        return outcomes

    async def release(self, now: datetime) -> int:
        released = await self.pipeline.release_held(now)
        self.transcript.append(("release", now, released, await self.dedupe_state()))
        return released

    async def dedupe_state(self) -> dict[str, tuple[str, ...]]:
        """What dedupe reads in this mode: ``pam_alert_state``, or the Redis hashes."""
        if self.state is None:
            return store_state(self.store)
        return await redis_state(self.state.prefix)

    def outcome(self) -> list[Any]:
        """Everything observable, for comparing the two modes."""
        alerts = rows(self.store, "SELECT user_id, priority, fingerprint, state, deliver_after FROM pam_alerts "
                                  "ORDER BY created_at, user_id, fingerprint")
        return [*self.transcript, [(a.user_id, a.priority, a.fingerprint) for a in self.sink.got], alerts]


def rows(store: SQLiteStore, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(store.path) as conn:
        return conn.execute(sql).fetchall()


def store_state(store: SQLiteStore) -> dict[str, tuple[str, ...]]:
    sql = f"SELECT fingerprint, {', '.join(_STATE_COLUMNS)} FROM pam_alert_state"
    return {r[0]: tuple(str(v) for v in r[1:]) for r in rows(store, sql)}


async def redis_state(prefix: str) -> dict[str, tuple[str, ...]]:
    found: dict[str, tuple[str, ...]] = {}
    async with aioredis.Redis.from_url(URL, decode_responses=True) as client:
        async for key in client.scan_iter(f"{prefix}:alert:*", count=1000):
            values = await client.hmget(key, list(_STATE_COLUMNS))
            found[key.rsplit(":", 1)[1]] = tuple(str(v) for v in values)
    return found


@asynccontextmanager
async def replica(mode: Mode, directory: Path, prefix: str, chunk: int = 500, **settings: Any
                  ) -> AsyncIterator[Replica]:
    store = SQLiteStore(f"sqlite:///{directory}-pamd.db")
    await store.migrate()
    await store.add_rows("profiles", [{"id": "ann", "timezone": "Pacific/Auckland"},
                                      {"id": "bob", "timezone": "Pacific/Honolulu"}])
    state = RedisAlertState(URL, prefix, chunk=chunk) if mode == "redis" else None
    spy = Spy(RedisStateBook(store, state) if state is not None else store)
    sink = Recorder()
    try:
        yield Replica(AlertPipeline({"recorder": sink}, Metrics(), book=spy, settings=AlertsSection(**settings)),
                      store, spy, sink, state)
    finally:
        if state is not None:
            await state.aclose()
        await store.aclose()


# ---- scenarios: each runs against both books and asserts what both must do -------------------------------------

async def cooldown_and_escalation(r: Replica) -> None:
    assert await r.tick(T0, candidate()) == ["delivered"]
    assert await r.tick(T0 + timedelta(minutes=5), candidate()) == ["cooldown"]
    assert await r.tick(T0 + timedelta(minutes=10), candidate(priority=P.HIGH)) == ["delivered"]  # escalation
    assert await r.tick(T0 + timedelta(minutes=15), candidate()) == ["cooldown"]  # de-escalation
    assert await r.tick(T0 + timedelta(hours=1), candidate(priority=P.HIGH)) == ["cooldown"]
    assert await r.tick(T0 + timedelta(minutes=10) + COOLDOWN, candidate(priority=P.HIGH)) == ["delivered"]


async def sweep_resolves_and_sweep_user_is_limited(r: Replica) -> None:
    assert await r.tick(T0, candidate(), candidate(user="bob")) == ["delivered", "delivered"]
    assert await r.tick(T0 + timedelta(minutes=5), complete=False) == []  # a degraded tick forgets nothing
    assert await r.tick(T0 + timedelta(minutes=10), candidate()) == ["cooldown"]
    assert await r.tick(T0 + timedelta(minutes=15), user="bob") == []  # resolves bob's condition only
    assert [v[0] for v in (await r.dedupe_state()).values()] == ["ann"]
    assert await r.tick(T0 + timedelta(minutes=20), candidate(user="bob")) == ["delivered"]  # ann's resolved
    assert await r.tick(T0 + timedelta(minutes=25), candidate(), candidate(user="bob")) == ["delivered", "cooldown"]


async def quiet_hours_hold_release_and_resolve(r: Replica) -> None:
    await r.store.add_rows("notification_preferences", [
        {"user_id": "ann", "monitor": "*", "quiet_start": "22:00", "quiet_end": "07:00"}])
    assert await r.tick(NIGHT, candidate(), candidate(subject="v2", priority=P.URGENT)) == ["delivered", "held"]
    assert await r.tick(NIGHT + timedelta(hours=1), candidate(), candidate(subject="v2", priority=P.URGENT)) == [
        "cooldown", "cooldown"]  # held counts as sent
    assert await r.release(MORNING) == 1
    # the held alert's cooldown runs from its release, not from when it was decided
    assert await r.tick(NIGHT + COOLDOWN + timedelta(hours=1), candidate()) == ["cooldown"]
    assert await r.tick(MORNING + COOLDOWN, candidate()) == ["delivered"]
    # a held alert whose condition resolves before morning is never delivered
    night2 = NIGHT + timedelta(days=1)
    assert await r.tick(night2, candidate(subject="v3")) == ["held"]
    assert await r.tick(night2 + timedelta(hours=1)) == []
    assert await r.release(MORNING + timedelta(days=1)) == 0


SCENARIOS: list[Callable[[Replica], Awaitable[None]]] = [
    cooldown_and_escalation, sweep_resolves_and_sweep_user_is_limited, quiet_hours_hold_release_and_resolve]


@pytest.mark.anyio
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
async def test_same_outcomes_as_the_store_book(
    scenario: Callable[[Replica], Awaitable[None]], tmp_path: Path, prefix: str
) -> None:
    outcomes = {}
    for mode in ("store", "redis"):
        async with replica(mode, tmp_path / mode, prefix) as r:
            await scenario(r)
            outcomes[mode] = r.outcome()
            mirror = store_state(r.store)
    assert outcomes["redis"] == outcomes["store"]
    assert mirror == outcomes["redis"][-3][-1]  # the store's pam_alert_state, kept as a mirror, agrees


@pytest.mark.anyio
async def test_held_alert_of_a_resolved_condition_is_marked_resolved(tmp_path: Path, prefix: str) -> None:
    async with replica("redis", tmp_path, prefix) as r:
        await r.store.add_rows("notification_preferences", [
            {"user_id": "ann", "monitor": "fuel", "quiet_start": "22:00", "quiet_end": "07:00"}])
        assert await r.tick(NIGHT, candidate()) == ["held"]
        assert await r.tick(NIGHT + timedelta(hours=2)) == []
        assert r.transcript[-1][3] == [_stamped(candidate(), 1).fingerprint]
        assert rows(r.store, "SELECT state FROM pam_alerts") == [("resolved",)]
        assert await r.release(MORNING) == 0 and r.sink.got == []


@pytest.mark.anyio
async def test_two_replicas_share_the_dedupe_state(tmp_path: Path, prefix: str) -> None:
    async with replica("redis", tmp_path / "a", prefix) as a, replica("redis", tmp_path / "b", prefix) as b:
        assert await a.tick(T0, candidate(), epoch=1) == ["delivered"]
        assert await b.tick(T0 + timedelta(minutes=5), candidate(), epoch=2) == ["cooldown"]  # a failover
        assert await b.tick(T0 + timedelta(minutes=10), candidate(priority=P.HIGH), epoch=2) == ["delivered"]
        assert await a.tick(T0 + timedelta(minutes=15), candidate(priority=P.HIGH), epoch=3) == ["cooldown"]
        assert await b.tick(T0 + timedelta(minutes=20), epoch=4) == []  # resolved on b ...
        assert b.transcript[-1][3] == [_stamped(candidate(), 1).fingerprint]
        assert await a.tick(T0 + timedelta(minutes=25), candidate(), epoch=5) == ["delivered"]  # ... seen on a
    assert [x.priority for x in a.sink.got] == [P.MEDIUM, P.MEDIUM] and [x.priority for x in b.sink.got] == [P.HIGH]


@pytest.mark.anyio
async def test_a_stale_epoch_is_fenced_off_and_writes_nothing(tmp_path: Path, prefix: str) -> None:
    async with replica("redis", tmp_path, prefix) as r:
        assert await r.tick(T0, candidate(), epoch=2) == ["delivered"]
        before = await r.dedupe_state()
        async with aioredis.Redis.from_url(URL) as client:
            await client.set(f"{prefix}:epoch", 3)  # a newer leader was elected
        with pytest.raises(FencedError, match="epoch 2 is older than epoch 3"):
            await r.tick(T0 + timedelta(minutes=1), candidate(user="bob"), epoch=2)
        with pytest.raises(FencedError):  # nor does its sweep (a complete tick without ann's alert) run
            await r.tick(T0 + timedelta(minutes=2), candidate(user="bob", subject="y"), epoch=2)
        assert [x.user_id for x in r.sink.got] == ["ann"]
        assert rows(r.store, "SELECT user_id FROM pam_alerts") == [("ann",)]
        assert await r.dedupe_state() == before
        # The Lua scripts fence on their own (without the book's pre-check): the whole batch is refused, across
        # its chunks, and nothing is swept.
        assert r.state is not None
        stale = [Decision(alert=_stamped(candidate(user="bob", subject=str(n)), 2),
                          outcome="delivered" if n % 2 else "cooldown", reason="") for n in range(1200)]
        stale.append(Decision(alert=_stamped(candidate(), 2), outcome="cooldown", reason=""))  # would touch ann's
        with pytest.raises(FencedError, match="epoch 2 is older than epoch 3"):
            await r.state.record("fuel", stale, T0 + timedelta(minutes=3), sweep=True)
        assert await r.dedupe_state() == before
        # epoch 0 (pamd trigger) is not fenced; the current term writes
        assert await r.tick(T0 + timedelta(minutes=4), candidate(), candidate(user="bob"), epoch=0) == [
            "cooldown", "delivered"]
        assert await r.tick(T0 + timedelta(minutes=5), candidate(user="bob", subject="x"), epoch=3) == ["delivered"]
        assert [v[0] for v in (await r.dedupe_state()).values()] == ["bob"]  # the others were resolved


def _stamped(alert: Alert, epoch: int) -> Alert:
    alert.monitor, alert.epoch, alert.id = "fuel", epoch, f"id-{alert.user_id}-{alert.subject}"
    alert.fingerprint = alert.default_fingerprint()
    return alert


@pytest.mark.anyio
async def test_a_tick_of_5000_alerts_is_chunked(tmp_path: Path, prefix: str) -> None:
    users = [f"u{n:04d}" for n in range(5000)]
    async with replica("redis", tmp_path, prefix, chunk=300) as r:
        assert await r.tick(T0, *(candidate(user=u) for u in users)) == ["delivered"] * 5000
        assert len(await r.dedupe_state()) == 5000
        assert await r.tick(T0 + timedelta(minutes=1), *(candidate(user=u) for u in users)) == ["cooldown"] * 5000
        # all but ten resolve at once: the sweep runs in chunks of 300
        assert await r.tick(T0 + timedelta(minutes=2), *(candidate(user=u) for u in users[:10])) == ["cooldown"] * 10
        assert len(r.transcript[-1][3]) == 4990 and len(r.transcript[-1][4]) == 10
        assert await r.tick(T0 + timedelta(minutes=3), candidate(user=users[-1])) == ["delivered"]
        assert len(r.sink.got) == 5001
    async with aioredis.Redis.from_url(URL) as client:
        assert await client.zcard(f"{prefix}:alerts:seen:fuel") == 1  # the last tick resolved the other ten
        assert await client.zcard(f"{prefix}:alerts:seen:fuel:{users[-1]}") == 1
        assert await client.exists(f"{prefix}:alerts:seen:fuel:{users[0]}") == 0


# ---- configuration and wiring ----------------------------------------------------------------------------------

def test_redis_state_needs_a_coordination_url(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[alerts]\nstate = \"redis\"\n")
    with pytest.raises(ConfigError, match=r"config.toml:2: alerts.state: \"redis\" needs \[coordination\] url"):
        load_config(path, {})
    with pytest.raises(ConfigError, match=r"^env PAMD_ALERTS__STATE: alerts.state: "):
        load_config(None, {"PAMD_ALERTS__STATE": "redis"})
    with pytest.raises(ConfigError, match=r"alerts\.state"):
        load_config(None, {"PAMD_ALERTS__STATE": "memcached"})
    path.write_text(f"[coordination]\nurl = \"{URL}\"\n\n[alerts]\nstate = \"redis\"\n")
    assert load_config(path, {}).alerts.state == "redis"
    assert load_config(None, {}).alerts.state == "store"


@pytest.mark.anyio
async def test_trigger_uses_the_redis_state(tmp_path: Path, port: int, prefix: str,
                                            clean_env: dict[str, str]) -> None:
    from pamd.assemble import assemble
    from pamd.oneshot import one_shot_runner

    path = write_config(tmp_path, port, f'[coordination]\nurl = "{URL}"\nprefix = "{prefix}"\n\n'
                                        '[alerts]\nstate = "redis"\n')
    assembly = assemble(str(path), clean_env)
    now = datetime.now(UTC).replace(microsecond=0)
    outcomes = []
    for _ in range(2):
        async with one_shot_runner(assembly, deliver=False) as runner:
            assert isinstance(runner.pipeline.book, RedisStateBook)
            result = await runner.run_tick(assembly.jobs["fuel"], now, user_id="demo-u02")
            outcomes.append([d.outcome for d in result.decisions])
    assert outcomes == [["delivered"], ["cooldown"]]
    assert len(await redis_state(prefix)) == 1
    store = SQLiteStore(assembly.config.store_url)
    assert isinstance(open_alert_book(load_config(None, {}), store), SQLiteStore)
    await store.aclose()
