"""The outbox: failed deliveries retried with backoff in per-user order, refusals final, expiry, crash resume."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from pamd.alerts.delivery import BATCH, Deliverer
from pamd.metrics import Metrics
from pamd.model import Alert, Priority
from pamd.pipeline import AlertPipeline, stamp
from pamd.sinks.base import PermanentDeliveryError, Sink
from pamd.store.sqlite import SQLiteStore

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Flaky(Sink):
    """Records what it got; ``down`` raises a transient error, ``refuse`` (a set of users) a final one."""

    name = "flaky"

    def __init__(self) -> None:
        self.got: list[str] = []
        self.down = False
        self.refuse: set[str] = set()

    async def deliver(self, alert: Alert) -> None:
        if alert.user_id in self.refuse:
            raise PermanentDeliveryError("422 unknown user")
        if self.down:
            raise ConnectionError("receiver down")
        self.got.append(alert.title)


class Steady(Flaky):
    name = "steady"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(f"sqlite:///{tmp_path}/o.db")
    await s.migrate()
    await s.add_rows("profiles", [{"id": "ann", "timezone": "UTC"}, {"id": "bob", "timezone": "UTC"}])
    yield s
    await s.aclose()


def rows(store: SQLiteStore, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(store.path) as conn:
        return conn.execute(sql).fetchall()


def alert(title: str, user: str = "ann", subject: str = "", expires: datetime | None = None) -> Alert:
    return Alert(user_id=user, kind="fuel_low", priority=Priority.HIGH, title=title, body="b",
                 subject=subject or title, expires_at=expires)


async def tick(p: AlertPipeline, now: datetime, *alerts: Alert) -> None:
    await p.submit("fuel", list(alerts), epoch=1, now=now, cooldown=timedelta(hours=1))


def pipeline(store: SQLiteStore, *sinks: Flaky) -> AlertPipeline:
    return AlertPipeline({s.name: s for s in sinks}, Metrics(), book=store)


@pytest.mark.anyio
async def test_a_failed_delivery_is_retried_with_backoff_and_order_per_user_is_kept(store: SQLiteStore) -> None:
    flaky, steady = Flaky(), Steady()
    p = pipeline(store, flaky, steady)
    flaky.down = True
    await tick(p, T0, alert("a1"), alert("b1", user="bob"))
    await tick(p, T0 + timedelta(minutes=1), alert("a2"))
    assert steady.got == ["a1", "b1", "a2"]  # the healthy sink is not held back
    assert flaky.got == []
    # a2 waits behind a1 for the flaky sink: it was not even tried.
    assert rows(store, "SELECT sink, user_id, attempts FROM pam_deliveries ORDER BY alert_id") == [
        ("flaky", "ann", 1), ("flaky", "bob", 1), ("flaky", "ann", 0)]
    assert rows(store, "SELECT COUNT(*) FROM pam_alerts WHERE state = 'pending'") == [(3,)]

    deliverer = p.deliverer
    assert await deliverer.retry_due(T0) == 0  # not due yet: the first backoff is 1-2 s
    assert rows(store, "SELECT attempts FROM pam_deliveries WHERE user_id = 'bob'") == [(1,)]
    assert await deliverer.retry_due(T0 + timedelta(minutes=2)) == 0  # due, but still down: attempt 2
    assert await deliverer.retry_due(T0 + timedelta(minutes=2)) == 0  # and now 2-4 s away again
    assert rows(store, "SELECT attempts FROM pam_deliveries WHERE user_id = 'bob'") == [(2,)]
    flaky.down = False
    assert await deliverer.retry_due(T0 + timedelta(minutes=10)) == 3
    assert sorted(flaky.got) == ["a1", "a2", "b1"] and flaky.got.index("a1") < flaky.got.index("a2")
    assert rows(store, "SELECT DISTINCT state FROM pam_alerts") == [("delivered",)]
    assert rows(store, "SELECT DISTINCT state FROM pam_deliveries") == [("delivered",)]
    assert await deliverer.retry_due(T0 + timedelta(minutes=20)) == 0  # nothing delivered twice
    assert flaky.got.count("a1") == 1 and steady.got.count("a1") == 1
    metric = p.metrics.registry.get_sample_value
    assert metric("pamd_alerts_total", {"monitor": "fuel", "priority": "high", "outcome": "delivered"}) == 3
    assert metric("pamd_deliveries_total", {"sink": "flaky", "outcome": "queued"}) == 1
    assert metric("pamd_delivery_latency_seconds_count", {"sink": "flaky"}) == 3
    await deliverer.update_gauge()
    status = deliverer.status()
    assert status["pending"] == 0
    sinks = status["sinks"]
    assert isinstance(sinks, dict) and sinks["steady"] is None
    assert sinks["flaky"]["at"] == "2026-03-02T12:02:00+00:00"  # the last failure is kept
    assert sinks["flaky"]["error"] == "ConnectionError: receiver down"


@pytest.mark.anyio
async def test_a_refusal_is_final_and_other_sinks_still_deliver(store: SQLiteStore) -> None:
    flaky, steady = Flaky(), Steady()
    flaky.refuse = {"bob"}
    p = pipeline(store, flaky, steady)
    await tick(p, T0, alert("b1", user="bob"), alert("a1"))
    assert sorted(steady.got) == ["a1", "b1"]
    assert flaky.got == ["a1"]
    assert rows(store, "SELECT user_id, state FROM pam_alerts ORDER BY user_id") == [("ann", "delivered"),
                                                                                    ("bob", "failed")]
    assert rows(store, "SELECT state, last_error FROM pam_deliveries") == [("failed", "refused: 422 unknown user")]
    assert await p.deliverer.retry_due(T0 + timedelta(hours=1)) == 0
    assert p.metrics.registry.get_sample_value(
        "pamd_alerts_total", {"monitor": "fuel", "priority": "high", "outcome": "failed"}) == 1


@pytest.mark.anyio
async def test_an_alert_that_expires_before_a_retry_gets_through_is_dropped(store: SQLiteStore) -> None:
    flaky = Flaky()
    p = pipeline(store, flaky)
    flaky.down = True
    await tick(p, T0, alert("a1", expires=T0 + timedelta(minutes=30)))
    flaky.down = False
    assert await p.deliverer.retry_due(T0 + timedelta(hours=1)) == 0
    assert flaky.got == []
    assert rows(store, "SELECT state FROM pam_deliveries") == [("expired",)]
    assert rows(store, "SELECT state FROM pam_alerts") == [("failed",)]


@pytest.mark.anyio
async def test_alerts_stored_but_never_delivered_are_resumed(store: SQLiteStore) -> None:
    # What a crash between storing and delivering leaves: pending alerts with no delivery record.
    p = pipeline(store)
    stamped = [stamp(alert(f"a{n}"), "fuel", 1, T0) for n in range(3)]
    decided = await p.decide("fuel", stamped, T0, timedelta(hours=1))
    await store.record_decisions("fuel", decided, T0, epoch=1)
    assert rows(store, "SELECT COUNT(*) FROM pam_alerts WHERE state = 'pending'") == [(3,)]

    sink = Flaky()
    deliverer = Deliverer({"flaky": sink}, Metrics(), store)
    assert await deliverer.resume_stuck(before=T0) == 0  # stored at T0: not before it
    assert await deliverer.resume_stuck(before=T0 + timedelta(seconds=1)) == 3
    assert sink.got == ["a0", "a1", "a2"]
    assert rows(store, "SELECT DISTINCT state FROM pam_alerts") == [("delivered",)]
    await deliverer.update_gauge()
    assert deliverer.metrics.registry.get_sample_value("pamd_outbox_pending") == 0


@pytest.mark.anyio
async def test_a_released_alert_whose_sink_fails_is_retried_not_released_again(store: SQLiteStore) -> None:
    await store.add_rows("notification_preferences", [{"user_id": "ann", "monitor": "*", "quiet_start": "11:00",
                                                       "quiet_end": "13:00"}])
    flaky = Flaky()
    p = pipeline(store, flaky)
    await tick(p, T0, alert("a1"))  # 12:00 UTC: held until 13:00
    assert rows(store, "SELECT state FROM pam_alerts") == [("held",)]
    flaky.down = True
    assert await p.release_held(T0 + timedelta(hours=1, minutes=1)) == 1
    assert await p.release_held(T0 + timedelta(hours=1, minutes=2)) == 0  # in the outbox now, not held
    flaky.down = False
    assert await p.deliverer.retry_due(T0 + timedelta(hours=2)) == 1
    assert flaky.got == ["a1"]
    assert rows(store, "SELECT state FROM pam_alerts") == [("delivered",)]


@pytest.mark.anyio
async def test_a_receiver_asking_to_wait_is_not_retried_sooner(store: SQLiteStore) -> None:
    from pamd.sinks.base import TransientDeliveryError

    class Busy(Flaky):
        name = "busy"

        async def deliver(self, alert: Alert) -> None:
            raise TransientDeliveryError("429 Too Many Requests", retry_after=600)

    p = pipeline(store, Busy())
    await tick(p, T0, alert("a1"))
    (next_attempt,) = rows(store, "SELECT next_attempt_at FROM pam_deliveries")[0]
    assert datetime.fromisoformat(next_attempt) >= T0 + timedelta(seconds=600)


class Slow(Flaky):
    """A receiver a round trip away, taking ``concurrency`` deliveries at once; notes the most in flight."""

    name = "slow"

    def __init__(self, concurrency: int) -> None:
        super().__init__()
        self.concurrency = concurrency
        self.in_flight = self.most = 0

    async def deliver(self, alert: Alert) -> None:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await anyio.sleep(0.002)
            await super().deliver(alert)
        finally:
            self.in_flight -= 1


class Batched(Flaky):
    """A BatchSink (as Redis and table are): notes each batch's size."""

    name = "batched"

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    async def deliver_batch(self, alerts: Sequence[Alert]) -> None:
        self.batches.append(len(alerts))
        for alert in alerts:
            await self.deliver(alert)


def burst(users: int, each: int) -> list[Alert]:
    """``each`` alerts per user, interleaved as a tick stores them; titles ``<user>#<n>``, ids in that order."""
    alerts = [alert(f"u{u:02}#{n}", user=f"u{u:02}") for n in range(each) for u in range(users)]
    for number, a in enumerate(alerts):
        a.id, a.monitor, a.fingerprint = f"{number:026d}", "fuel", f"{number:032x}"
    return alerts


def per_user(titles: list[str]) -> dict[str, list[int]]:
    seen: dict[str, list[int]] = {}
    for title in titles:
        user, n = title.split("#")
        seen.setdefault(user, []).append(int(n))
    return seen


@pytest.mark.anyio
async def test_a_concurrent_sink_takes_several_users_at_once_each_in_order() -> None:
    slow, batched = Slow(8), Batched()
    deliverer = Deliverer({"slow": slow, "batched": batched}, Metrics())
    alerts = burst(users=60, each=4)  # 240: two windows, the second with the last alert of 40 users
    assert await deliverer.deliver(alerts, now=T0) == []
    assert 1 < slow.most <= 8
    assert per_user(slow.got) == per_user(batched.got) == {f"u{u:02}": [0, 1, 2, 3] for u in range(60)}
    assert batched.batches == [BATCH, len(alerts) - BATCH]
    one_at_a_time = Slow(1)
    await Deliverer({"slow": one_at_a_time}, Metrics()).deliver(alerts, now=T0)
    assert one_at_a_time.most == 1 and one_at_a_time.got == [a.title for a in alerts]  # the stored order


@pytest.mark.anyio
async def test_a_lost_term_mid_burst_hands_each_user_a_prefix_to_every_sink(store: SQLiteStore) -> None:
    slow, batched = Slow(4), Batched()
    deliverer = Deliverer({"slow": slow, "batched": batched}, Metrics(), store)
    alerts = burst(users=6, each=5)
    left = await deliverer.deliver(alerts, now=T0, still_leading=lambda: len(slow.got) < 11)
    handed = [a for a in alerts if a not in left]
    assert len(slow.got) >= 11 and len(left) == len(alerts) - len(handed) > 0
    # every handed alert reached both sinks; of each user, the handed ones come first, the ones left after
    assert sorted(slow.got) == sorted(batched.got) == sorted(a.title for a in handed)
    for user, got in per_user(slow.got).items():
        assert got == list(range(len(got)))
        assert [int(a.title.split("#")[1]) for a in left if a.user_id == user] == list(range(len(got), 5))
