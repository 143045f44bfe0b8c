"""The alert pipeline over a real SQLite store: dedupe, cooldown, escalation, resolution, quiet hours, caps."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pamd.alerts.book import AlertContext
from pamd.config import AlertsSection
from pamd.metrics import Metrics
from pamd.model import Alert, AlertText, Priority
from pamd.pipeline import AlertPipeline
from pamd.sinks.base import Sink
from pamd.store.sqlite import SQLiteStore

P = Priority
T0 = datetime(2026, 1, 15, 0, 0, tzinfo=UTC)  # 13:00 in Auckland (NZDT, UTC+13), 14:00 in Honolulu the day before
COOLDOWN = timedelta(hours=6)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Recorder(Sink):
    """A sink that remembers what it got; ``fail`` makes it raise."""

    name = "recorder"

    def __init__(self) -> None:
        self.got: list[Alert] = []
        self.fail = False

    async def deliver(self, alert: Alert) -> None:
        if self.fail:
            raise ConnectionError("receiver down")
        self.got.append(alert)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(f"sqlite:///{tmp_path}/p.db")
    await s.migrate()
    await s.add_rows("profiles", [{"id": "ann", "timezone": "Pacific/Auckland"},
                                  {"id": "bob", "timezone": "Pacific/Honolulu"}])
    yield s
    await s.aclose()


def pipeline(store: SQLiteStore, sink: Recorder, **settings: Any) -> AlertPipeline:
    return AlertPipeline({"recorder": sink}, Metrics(), book=store, settings=AlertsSection(**settings))


def candidate(user: str = "ann", priority: Priority = P.MEDIUM, kind: str = "fuel_low", subject: str = "v1",
              expires: datetime | None = None) -> Alert:
    return Alert(user_id=user, kind=kind, priority=priority, title=f"{kind} {priority}", body="b", subject=subject,
                 expires_at=expires)


async def tick(p: AlertPipeline, now: datetime, *alerts: Alert, complete: bool = True,
               user: str | None = None) -> list[str]:
    decisions = (await p.submit("fuel", list(alerts), epoch=1, now=now, cooldown=COOLDOWN, complete=complete,
                                user_id=user)).decisions
    return [d.outcome for d in decisions]


def rows(store: SQLiteStore, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(store.path) as conn:
        return conn.execute(sql).fetchall()


@pytest.mark.anyio
async def test_dedupe_cooldown_escalation_and_restart(store: SQLiteStore) -> None:
    sink = Recorder()
    p = pipeline(store, sink)
    assert await tick(p, T0, candidate()) == ["delivered"]
    assert await tick(p, T0 + timedelta(minutes=5), candidate()) == ["cooldown"]
    assert await tick(p, T0 + timedelta(minutes=10), candidate(priority=P.HIGH)) == ["delivered"]  # escalation
    assert await tick(p, T0 + timedelta(minutes=15), candidate(priority=P.MEDIUM)) == ["cooldown"]  # de-escalation
    # a restarted daemon (new pipeline, store reopened) remembers
    reopened = SQLiteStore(store.url)
    p2 = pipeline(reopened, sink)
    assert await tick(p2, T0 + timedelta(hours=1), candidate(priority=P.HIGH)) == ["cooldown"]
    assert await tick(p2, T0 + timedelta(minutes=10) + COOLDOWN, candidate(priority=P.HIGH)) == ["delivered"]
    await reopened.aclose()
    assert [a.priority for a in sink.got] == [P.MEDIUM, P.HIGH, P.HIGH]
    assert rows(store, "SELECT state, COUNT(*) FROM pam_alerts GROUP BY state") == [("delivered", 3)]


@pytest.mark.anyio
async def test_repeats_in_cooldown_need_no_user_context(store: SQLiteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Time zones, preferences and today's counts are read only for alerts not in cooldown; dedupe comes before the
    opt-out, so a user who turned alerts off after one was sent sees "cooldown" until it ends."""
    asked: list[list[str]] = []
    context = store.alert_context

    async def counted(monitor: str, alerts: Sequence[Alert], now: datetime) -> AlertContext:
        asked.append(sorted(a.user_id for a in alerts))
        return await context(monitor, alerts, now)

    monkeypatch.setattr(store, "alert_context", counted)
    p = pipeline(store, Recorder())
    assert await tick(p, T0, candidate(), candidate(user="bob")) == ["delivered", "delivered"]
    await store.add_rows("notification_preferences", [{"user_id": "bob", "monitor": "*", "enabled": False}])
    assert await tick(p, T0 + timedelta(minutes=5), candidate(), candidate(user="bob")) == ["cooldown", "cooldown"]
    assert await tick(p, T0 + timedelta(minutes=10), candidate(priority=P.HIGH),
                      candidate(user="bob", priority=P.HIGH)) == ["delivered", "opted_out"]  # escalations
    assert asked == [["ann", "bob"], ["ann", "bob"]]  # not for the steady tick


@pytest.mark.anyio
async def test_deferred_text_is_made_only_for_what_is_stored_delivered_or_kept(store: SQLiteStore) -> None:
    made: list[str] = []

    def deferred(user: str, priority: Priority = P.MEDIUM) -> Alert:
        def compose() -> AlertText:
            made.append(user)
            return AlertText(title=f"low fuel {user}", body="b", facts={"litres": 12.5},
                             actions=[{"action": "find_fuel"}])
        return Alert.deferred(compose, user_id=user, kind="fuel_low", priority=priority, subject="v1")

    sink = Recorder()
    p = pipeline(store, sink)
    first = await p.submit("fuel", [deferred("ann"), deferred("bob")], epoch=1, now=T0, cooldown=COOLDOWN,
                           complete=True, keep=False)
    assert (first.accepted, sorted(made)) == (2, ["ann", "bob"])
    assert [(a.title, a.facts, a.actions) for a in sink.got] == [
        ("low fuel ann", {"litres": 12.5}, [{"action": "find_fuel"}]),
        ("low fuel bob", {"litres": 12.5}, [{"action": "find_fuel"}])]
    assert rows(store, "SELECT user_id, title, facts FROM pam_alerts ORDER BY user_id") == [
        ("ann", "low fuel ann", '{"litres":12.5}'), ("bob", "low fuel bob", '{"litres":12.5}')]
    made.clear()
    # The steady tick: both repeats in cooldown, an escalation for ann; only the escalation's text is made.
    again = await p.submit("fuel", [deferred("ann", P.HIGH), deferred("bob")], epoch=1, now=T0 + timedelta(minutes=5),
                           cooldown=COOLDOWN, complete=True, keep=False)
    assert (again.outcomes["delivered"], again.outcomes["cooldown"], made) == (1, 1, ["ann"])
    # Kept decisions (pamd trigger, pamd explain) are shown: every one has its text.
    kept = await p.submit("fuel", [deferred("ann", P.HIGH), deferred("bob")], epoch=1,
                          now=T0 + timedelta(minutes=10), cooldown=COOLDOWN, dry_run=True)
    assert [(d.outcome, d.alert.title) for d in kept.decisions] == [("cooldown", "low fuel ann"),
                                                                     ("cooldown", "low fuel bob")]


@pytest.mark.anyio
async def test_resolved_condition_alerts_again_but_incomplete_ticks_resolve_nothing(store: SQLiteStore) -> None:
    sink = Recorder()
    p = pipeline(store, sink)
    assert await tick(p, T0, candidate(), candidate(user="bob")) == ["delivered", "delivered"]
    # a degraded (incomplete) tick that reports nothing must not forget anything
    assert await tick(p, T0 + timedelta(minutes=5), complete=False) == []
    assert await tick(p, T0 + timedelta(minutes=10), candidate()) == ["cooldown"]
    # a complete tick for bob alone resolves bob's condition only
    assert await tick(p, T0 + timedelta(minutes=15), user="bob") == []
    assert rows(store, "SELECT user_id FROM pam_alert_state") == [("ann",)]
    # ann's fuel is fine again (a fill-up): the complete tick without her alert resolves it ...
    assert await tick(p, T0 + timedelta(minutes=20), candidate(user="bob")) == ["delivered"]
    assert rows(store, "SELECT user_id FROM pam_alert_state") == [("bob",)]
    # ... so the next low fuel alerts at once, inside what would have been the cooldown
    assert await tick(p, T0 + timedelta(minutes=25), candidate(), candidate(user="bob")) == ["delivered", "cooldown"]
    assert [a.user_id for a in sink.got] == ["ann", "bob", "bob", "ann"]


@pytest.mark.anyio
async def test_quiet_hours_hold_then_release(store: SQLiteStore) -> None:
    await store.add_rows("notification_preferences", [
        {"user_id": "ann", "monitor": "*", "enabled": True, "quiet_start": "22:00", "quiet_end": "07:00"}])
    sink = Recorder()
    p = pipeline(store, sink)
    night = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)  # 23:00 NZDT
    morning = datetime(2026, 1, 15, 18, 0, tzinfo=UTC)  # 07:00 NZDT
    assert await tick(p, night, candidate(), candidate(kind="budget", priority=P.URGENT)) == ["delivered", "held"]
    assert [a.kind for a in sink.got] == ["budget"]  # urgent is exempt
    assert await tick(p, night + timedelta(hours=1), candidate(), candidate(kind="budget", priority=P.URGENT)) == [
        "cooldown", "cooldown"]  # held counts as sent: no second copy queued
    assert await p.release_held(morning - timedelta(seconds=1)) == 0
    assert await p.release_held(morning) == 1
    assert [a.kind for a in sink.got] == ["budget", "fuel_low"]
    assert sink.got[1].title == "fuel_low medium"  # the stored alert, intact
    assert await p.release_held(morning + timedelta(hours=1)) == 0  # released once
    assert rows(store, "SELECT state FROM pam_alerts ORDER BY kind") == [("delivered",), ("delivered",)]


@pytest.mark.anyio
async def test_held_alert_dropped_when_resolved_or_expired(store: SQLiteStore) -> None:
    await store.add_rows("notification_preferences", [
        {"user_id": "ann", "monitor": "fuel", "quiet_start": "22:00", "quiet_end": "07:00"}])
    sink = Recorder()
    p = pipeline(store, sink)
    night = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)
    morning = datetime(2026, 1, 15, 18, 0, tzinfo=UTC)
    assert await tick(p, night, candidate()) == ["held"]
    assert await tick(p, night + timedelta(hours=2)) == []  # she filled up at 01:00: resolved while held
    assert await tick(p, night + timedelta(hours=3), candidate(subject="v2", expires=night + timedelta(hours=4))) \
        == ["held"]
    assert await p.release_held(morning) == 0
    assert sink.got == []
    assert rows(store, "SELECT subject_state FROM (SELECT state AS subject_state, created_at FROM pam_alerts) "
                       "ORDER BY created_at") == [("resolved",), ("expired",)]


@pytest.mark.anyio
async def test_daily_cap_per_local_day_urgent_exempt(store: SQLiteStore) -> None:
    await store.add_rows("notification_preferences", [{"user_id": "ann", "monitor": "*", "max_per_day": 2}])
    sink = Recorder()
    p = pipeline(store, sink)

    async def run(now: datetime) -> dict[str, str]:
        alerts = [candidate(subject=s) for s in ("a", "b", "c")] + [candidate(subject="d", priority=P.URGENT)]
        decisions = (await p.submit("fuel", alerts, epoch=1, now=now, cooldown=timedelta(days=1),
                                    complete=True)).decisions
        return {d.alert.subject: d.outcome for d in decisions}

    first = await run(T0)
    assert first["d"] == "delivered"  # urgent: exempt, and not counted
    assert sorted(first[s] for s in "abc") == ["capped", "delivered", "delivered"]
    capped = next(s for s in "abc" if first[s] == "capped")
    later = await run(T0 + timedelta(hours=2))
    assert later[capped] == "capped" and sorted(later.values()).count("cooldown") == 3
    # ann's local day ends at 11:00 UTC (midnight NZDT): a new day, a fresh cap
    next_day = await run(datetime(2026, 1, 15, 11, 0, tzinfo=UTC))
    assert next_day[capped] == "delivered" and sorted(next_day.values()).count("cooldown") == 3
    assert len(sink.got) == 4


@pytest.mark.anyio
async def test_opt_out_dry_run_and_failed_delivery(store: SQLiteStore) -> None:
    await store.add_rows("notification_preferences", [{"user_id": "bob", "monitor": "fuel", "enabled": False}])
    sink = Recorder()
    p = pipeline(store, sink)
    decisions = (await p.submit("fuel", [candidate(), candidate(user="bob")], epoch=1, now=T0, cooldown=COOLDOWN,
                                dry_run=True)).decisions
    assert [d.outcome for d in decisions] == ["delivered", "opted_out"]
    assert sink.got == [] and rows(store, "SELECT COUNT(*) FROM pam_alerts") == [(0,)]
    assert rows(store, "SELECT COUNT(*) FROM pam_alert_state") == [(0,)]
    sink.fail = True
    assert await tick(p, T0, candidate()) == ["delivered"]
    # A transient failure leaves the alert in the outbox, to be retried (tests/test_outbox.py).
    assert rows(store, "SELECT state FROM pam_alerts") == [("pending",)]
    assert rows(store, "SELECT sink, state, attempts FROM pam_deliveries") == [("recorder", "pending", 1)]
    text = p.metrics.render().decode()
    assert 'pamd_deliveries_total{outcome="error",sink="recorder"} 1.0' in text


@pytest.mark.anyio
async def test_duplicate_fingerprints_in_one_tick_keep_the_strongest(store: SQLiteStore) -> None:
    sink = Recorder()
    p = pipeline(store, sink)
    assert await tick(p, T0, candidate(), candidate(priority=P.HIGH), candidate()) == ["delivered"]
    assert [a.priority for a in sink.got] == [P.HIGH]


@pytest.mark.anyio
async def test_packed_alerts_spill_to_disk_and_go_through_the_pipeline(store: SQLiteStore) -> None:
    from pamd.model import PackedAlerts
    from pamd.pipeline import stamp

    packed = PackedAlerts(memory_limit=600)  # a few alerts in memory, the rest in the spill file
    originals = [stamp(candidate(user=u, subject=str(n), priority=p), "fuel", 1, T0)
                 for n, (u, p) in enumerate([("ann", P.MEDIUM), ("bob", P.HIGH), ("ann", P.URGENT)] * 4)]
    for alert in originals:
        packed.append(alert)
    assert packed._file is not None and len(packed) == 12
    assert [packed[i] for i in range(12)] == originals
    assert packed.key(11) == ("ann", originals[11].fingerprint, P.URGENT)
    late = stamp(Alert.deferred(lambda: AlertText(title="made when packed", body="b"), user_id="bob",
                                kind="fuel_low", priority=P.LOW), "fuel", 1, T0)
    packed.append(late)
    assert late.composed and packed[12].title == "made when packed"
    packed.close()
    packed = PackedAlerts(memory_limit=600)
    for alert in originals:
        packed.append(alert)
    sink = Recorder()
    submitted = await pipeline(store, sink).submit("fuel", packed, epoch=1, now=T0, cooldown=COOLDOWN, keep=False)
    assert (submitted.produced, submitted.accepted, submitted.decisions) == (12, 12, [])
    assert sorted(a.id for a in sink.got) == sorted(a.id for a in originals)
    assert [a.user_id for a in sink.got] == ["ann"] * 8 + ["bob"] * 4  # per user, urgent first
    assert [a.priority for a in sink.got[:4]] == [P.URGENT] * 4
    packed.close()


@pytest.mark.anyio
async def test_a_stale_leader_is_fenced_off_and_delivers_nothing(store: SQLiteStore) -> None:
    from pamd.alerts.book import FencedError

    sink = Recorder()
    p = pipeline(store, sink)
    await p.submit("fuel", [candidate()], epoch=2, now=T0, cooldown=COOLDOWN)  # the new leader wrote
    with pytest.raises(FencedError, match="epoch 1 is older than epoch 2"):
        await p.submit("fuel", [candidate(user="bob")], epoch=1, now=T0, cooldown=COOLDOWN)
    assert [a.user_id for a in sink.got] == ["ann"]
    assert rows(store, "SELECT user_id FROM pam_alerts") == [("ann",)]
    await p.submit("fuel", [candidate(user="bob")], epoch=0, now=T0, cooldown=COOLDOWN)  # a one-off trigger
    await p.submit("fuel", [candidate(user="bob", subject="x")], epoch=3, now=T0, cooldown=COOLDOWN)
    assert rows(store, "SELECT epoch FROM pamd_fence") == [(3,)]
    # A stale leader's complete tick with no alerts would resolve every condition: it is refused too.
    with pytest.raises(FencedError, match="epoch 2 is older than epoch 3"):
        await p.submit("fuel", [], epoch=2, now=T0, cooldown=COOLDOWN, complete=True)
    assert len(rows(store, "SELECT fingerprint FROM pam_alert_state")) == 3


@pytest.mark.anyio
async def test_default_quiet_hours_from_config_apply_without_a_preference_row(store: SQLiteStore) -> None:
    p = pipeline(store, Recorder(), quiet_start="22:00", quiet_end="07:00")
    dawn = datetime(2026, 1, 15, 17, 30, tzinfo=UTC)  # 06:30 for ann (NZDT, still quiet), 07:30 for bob (HST)
    assert await tick(p, dawn, candidate(), candidate(user="bob")) == ["held", "delivered"]


def test_batches_end_at_user_boundaries() -> None:
    from pamd.model import PackedAlerts
    from pamd.pipeline import _user_batches

    packed = PackedAlerts()
    users = ["a"] * 3 + ["b"] * 4 + ["c"] + ["d"] * 2
    for n, user in enumerate(users):
        alert = candidate(user=user, subject=str(n))
        alert.fingerprint = f"fp{n}"
        packed.append(alert)
    batches = _user_batches(packed, list(range(len(users))), 3)
    assert [[users[i] for i in b] for b in batches] == [["a"] * 3, ["b"] * 4, ["c", "d", "d"]]
    assert _user_batches(packed, [], 3) == [[]]  # an empty tick still gets its (sweeping) batch
    packed.close()


@pytest.mark.anyio
async def test_a_leader_that_lost_its_term_after_storing_delivers_nothing(store: SQLiteStore) -> None:
    from pamd.alerts.book import FencedError

    sink = Recorder()
    p = pipeline(store, sink)
    alerts = [candidate(user=f"u{n:04d}") for n in range(2500)]  # batches of 2000 and 500
    # The lease lapses (a SIGSTOP past the ttl) in the middle of delivering the first batch.
    with pytest.raises(FencedError, match=r"lost leadership \(epoch 4\) after storing 500 alert"):
        await p.submit("fuel", alerts, epoch=4, now=T0, cooldown=COOLDOWN, still_leading=lambda: len(sink.got) < 1500)
    assert len(sink.got) == 1500
    # The second batch, written alongside the first (WRITES_IN_FLIGHT), is stored and not delivered either: the
    # first batch's error is raised once it has ended.
    states = dict(rows(store, "SELECT state, COUNT(*) FROM pam_alerts GROUP BY state"))
    assert states == {"delivered": 1500, "pending": 1000}  # stored, never delivered by the stale leader
    fenced = p.metrics.registry.get_sample_value(
        "pamd_alerts_total", {"monitor": "fuel", "priority": "medium", "outcome": "fenced"})
    assert fenced == 1000


@pytest.mark.anyio
async def test_two_batches_are_written_at_once_and_the_sweep_waits_for_both(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of different users are stored side by side (WRITES_IN_FLIGHT), never more; the complete tick's
    sweep starts only once every other batch is stored, so it cannot forget a condition a batch is writing."""
    from pamd import pipeline as pipeline_module

    monkeypatch.setattr(pipeline_module, "BATCH", 2)
    record = store.record_decisions
    writing: list[bool] = []  # one entry per write in progress: True for the sweep
    seen: list[tuple[int, bool]] = []  # (writes in progress when one started, sweep?)

    async def slow_record(*args: Any, **kwargs: Any) -> list[str]:
        seen.append((len(writing), kwargs["sweep"]))
        writing.append(kwargs["sweep"])
        await asyncio.sleep(0.05)
        try:
            return await record(*args, **kwargs)
        finally:
            writing.pop()

    monkeypatch.setattr(store, "record_decisions", slow_record)
    sink = Recorder()
    alerts = [candidate(user=f"u{n}") for n in range(12)]  # six batches of two users
    result = await pipeline(store, sink).submit("fuel", alerts, epoch=1, now=T0, cooldown=COOLDOWN, complete=True)
    assert result.outcomes["delivered"] == 12 and len(sink.got) == 12
    assert max(n for n, _ in seen) == pipeline_module.WRITES_IN_FLIGHT - 1 == 1  # two at once, never three
    assert seen[-1] == (0, True)  # the sweep, alone
    assert rows(store, "SELECT COUNT(*) FROM pam_alert_state") == [(12,)]


@pytest.mark.anyio
async def test_a_failed_write_lets_the_other_end_and_stops_the_next(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second batch's write fails while the first is still storing: the first ends (stored and delivered), no
    third batch is written, and the failure is what the submission raises."""
    from pamd import pipeline as pipeline_module

    monkeypatch.setattr(pipeline_module, "BATCH", 2)
    record = store.record_decisions
    calls: list[int] = []

    async def record_or_fail(*args: Any, **kwargs: Any) -> list[str]:
        calls.append(len(calls) + 1)
        if len(calls) == 2:
            raise RuntimeError("the second batch's transaction failed")
        await asyncio.sleep(0.1)
        return await record(*args, **kwargs)

    monkeypatch.setattr(store, "record_decisions", record_or_fail)
    sink = Recorder()
    alerts = [candidate(user=f"u{n}") for n in range(6)]  # three batches of two users
    with pytest.raises(RuntimeError, match="second batch"):
        await pipeline(store, sink).submit("fuel", alerts, epoch=1, now=T0, cooldown=COOLDOWN)  # no sweep batch
    assert calls == [1, 2]
    assert rows(store, "SELECT user_id, state FROM pam_alerts ORDER BY user_id") == [
        ("u0", "delivered"), ("u1", "delivered")]
    assert [a.user_id for a in sink.got] == ["u0", "u1"]
