"""A tick's alerts reach the pipeline while the monitor runs (pamd.alerts.stream), with the same outcome as a
whole-tick submission: parts hold whole users, a user who comes back switches to gathering, a failed attempt's
retry finds what was already stored in cooldown, and a complete tick still resolves what it did not report."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

import pamd
from pamd.alerts.stream import AlertStream
from pamd.coordination.local import LocalCoordinator
from pamd.metrics import Metrics
from pamd.model import Alert, Priority
from pamd.pipeline import AlertPipeline
from pamd.runner import Runner
from pamd.store.sqlite import SQLiteStore
from pamd.testing import make_job
from tests.test_pipeline import Recorder

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
USERS = [f"u{n:02d}" for n in range(12)]

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(f"sqlite:///{tmp_path}/s.db")
    await s.migrate()
    await s.add_rows("profiles", [{"id": u, "timezone": "UTC"} for u in USERS])
    yield s
    await s.aclose()


def alert(user: str, subject: str = "v1", priority: Priority = Priority.MEDIUM) -> Alert:
    return Alert(user_id=user, kind="thing", priority=priority, title="t", body="b", subject=subject)


async def feed(stream: AlertStream, alerts: list[Alert], log: list[str]) -> None:
    for a in alerts:
        log.append(f"yield {a.user_id}")
        if (waiting := stream.add(a)) is not None:
            await waiting


async def test_parts_of_whole_users_go_to_the_pipeline_while_the_monitor_runs(store: SQLiteStore) -> None:
    sink = Recorder()
    pipeline = AlertPipeline({"recorder": sink}, Metrics(), book=store)
    session = pipeline.open("m", epoch=1, now=NOW)
    parts: list[list[str]] = []
    add = session.add

    async def spy(alerts: list[Alert], **kwargs: bool) -> None:
        parts.append([a.user_id for a in alerts])
        await add(alerts, **kwargs)

    session.add = spy  # type: ignore[method-assign,assignment]
    stream = AlertStream(session, "m", 1, NOW, batch=3)
    # Two alerts per user: a part is handed over once 3 are waiting and a new user begins.
    alerts = [alert(u, s) for u in USERS[:7] for s in ("v1", "v2")]
    log: list[str] = []
    await feed(stream, alerts, log)
    assert parts[:2] == [["u00", "u00", "u01", "u01"], ["u02", "u02", "u03", "u03"]]  # before the monitor ended
    submitted = await stream.finish(complete=True)
    await stream.aclose()
    assert submitted.produced == 14 and submitted.accepted == 14
    assert [[u for u in part] for part in parts][-1] == ["u06", "u06"]
    assert sorted(a.user_id for a in sink.got) == sorted(a.user_id for a in alerts)
    assert all(a.id and a.fingerprint and a.monitor == "m" for a in sink.got)  # stamped by the stream


async def test_a_user_who_comes_back_switches_to_gathering_and_nothing_is_sent_twice(store: SQLiteStore) -> None:
    sink = Recorder()
    pipeline = AlertPipeline({"recorder": sink}, Metrics(), book=store)
    stream = AlertStream(pipeline.open("m", epoch=1, now=NOW, cooldown=timedelta(hours=1)), "m", 1, NOW, batch=2)
    alerts = [alert("u00"), alert("u01"), alert("u02"), alert("u03"),
              alert("u00", priority=Priority.MEDIUM),  # the same condition again, after others: already sent
              alert("u04"), alert("u01", subject="v2")]
    await feed(stream, alerts, [])
    assert stream._packed is not None  # the rest of the tick was gathered
    submitted = await stream.finish(complete=True)
    await stream.aclose()
    assert submitted.produced == 7
    assert sorted((a.user_id, a.subject) for a in sink.got) == [
        ("u00", "v1"), ("u01", "v1"), ("u01", "v2"), ("u02", "v1"), ("u03", "v1"), ("u04", "v1")]
    assert submitted.outcomes["cooldown"] == 1


class Flaky(pamd.Monitor):
    """Yields one alert per user; its first run fails after ``fail_after`` users."""

    name = "flaky"
    schedule = "* * * * *"

    def __init__(self, fail_after: int) -> None:
        self.fail_after = fail_after
        self.runs = 0

    async def run(self, ctx: pamd.MonitorContext) -> AsyncIterator[pamd.Alert]:
        self.runs += 1
        for n, user in enumerate(USERS):
            if self.runs == 1 and n == self.fail_after:
                raise ConnectionError("store went away")
            yield alert(user)


async def test_a_retried_tick_delivers_each_alert_once(
    store: SQLiteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pamd.alerts.stream.BATCH", 2)
    sink = Recorder()
    monitor = Flaky(fail_after=7)
    job = make_job(monitor, None, retries=1)
    metrics = Metrics()
    coordinator = LocalCoordinator(str(tmp_path))
    await coordinator.start()
    runner = Runner({job.name: job}, AlertPipeline({"recorder": sink}, metrics, book=store), metrics, coordinator,
                    store, clock=lambda: NOW, retry_base_seconds=0.01)
    result = await runner.run_tick(job, NOW)
    assert result.outcome == "success" and result.attempts == 2 and monitor.runs == 2
    assert sorted(a.user_id for a in sink.got) == USERS  # the first attempt's parts were not sent again
    # The failed attempt stored and delivered its three parts (u00-u05); the retry found them in cooldown.
    assert result.accepted == len(USERS) - 6 and result.produced == len(USERS)


async def test_a_complete_streamed_tick_resolves_what_it_did_not_report(store: SQLiteStore) -> None:
    pipeline = AlertPipeline({}, Metrics(), book=store)
    first = AlertStream(pipeline.open("m", epoch=1, now=NOW), "m", 1, NOW, batch=2)
    await feed(first, [alert(u) for u in USERS], [])
    await first.finish(complete=True)
    later = NOW + timedelta(minutes=5)
    second = AlertStream(pipeline.open("m", epoch=1, now=later), "m", 1, later, batch=2)
    await feed(second, [alert(u) for u in USERS[:5]], [])
    await second.finish(complete=True)
    states = await store._call(lambda c: [r[0] for r in c.execute("SELECT user_id FROM pam_alert_state")])
    assert sorted(states) == USERS[:5]


class SlowSink(Recorder):
    async def deliver(self, alert: Alert) -> None:
        await anyio.sleep(0.1)
        await super().deliver(alert)


async def test_the_tick_timeout_is_the_monitors_not_the_pipelines(
    store: SQLiteStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pamd.alerts.stream.BATCH", 2)
    sink = SlowSink()
    job = make_job(Flaky(fail_after=-1), None, retries=0, timeout=0.4)
    metrics = Metrics()
    coordinator = LocalCoordinator(str(tmp_path))
    await coordinator.start()
    runner = Runner({job.name: job}, AlertPipeline({"recorder": sink}, metrics, book=store), metrics, coordinator,
                    store, clock=lambda: NOW)
    result = await runner.run_tick(job, NOW)
    # 12 deliveries of 0.1 s, two batches written at once (WRITES_IN_FLIGHT): at least 0.6 s, half as long again
    # as the timeout, spent waiting for the pipeline or after the monitor ended.
    assert result.outcome == "success", result.error
    assert result.duration_seconds > 0.55 and len(sink.got) == len(USERS)
