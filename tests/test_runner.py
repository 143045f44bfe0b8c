"""The runner: failures stay inside their tick; timeouts, retries, overlap and concurrency limits hold."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

import pamd
from pamd.coordination.local import LocalCoordinator
from pamd.metrics import Metrics
from pamd.pipeline import AlertPipeline
from pamd.runner import Runner
from pamd.testing import make_job, run_tick

pytestmark = pytest.mark.anyio


def alert(user: str = "u1", priority: pamd.Priority = pamd.Priority.MEDIUM) -> pamd.Alert:
    return pamd.Alert(user_id=user, kind="k", priority=priority, title="t", body="b")


class Raises(pamd.Monitor):
    name = "raises"
    retries = 0

    async def run(self, ctx: pamd.MonitorContext) -> list[pamd.Alert]:
        raise ValueError("bad row")


class Hangs(pamd.Monitor):
    name = "hangs"
    timeout = 0.2
    retries = 0

    async def run(self, ctx: pamd.MonitorContext) -> list[pamd.Alert]:
        await anyio.sleep_forever()
        return []


class Flaky(pamd.Monitor):
    """Yields an alert, then fails, on the first two attempts; succeeds with two alerts on the third."""

    name = "flaky"
    retries = 2

    def __init__(self) -> None:
        self.calls = 0

    async def run(self, ctx: pamd.MonitorContext) -> AsyncIterator[pamd.Alert]:
        self.calls += 1
        yield alert("partial")
        if self.calls < 3:
            raise ConnectionError("store went away")
        yield alert("second")


class Blocking(pamd.Monitor):
    name = "blocking_sync"

    def run(self, ctx: pamd.MonitorContext) -> list[pamd.Alert]:  # type: ignore[override]
        time.sleep(0.3)  # plain def: the runner puts it on a worker thread
        return [alert(str(threading.get_ident()))]


async def make_runner(tmp_path: Path, *monitors: pamd.Monitor, max_concurrent: int = 8,
                      **settings: object) -> tuple[Runner, Metrics]:
    coordinator = LocalCoordinator(tmp_path)
    await coordinator.start()
    metrics = Metrics()
    jobs = {m.name: make_job(m, **settings) for m in monitors}
    return Runner(jobs, AlertPipeline({}, metrics), metrics, coordinator, None, max_concurrent,
                  retry_base_seconds=0.01), metrics


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_raising_monitor_fails_its_tick_only() -> None:
    result = await run_tick(Raises())
    assert (result.outcome, result.error, result.attempts) == ("error", "ValueError: bad row", 1)


async def test_hanging_monitor_times_out() -> None:
    started = time.monotonic()
    result = await run_tick(Hangs())
    assert result.outcome == "timeout" and result.error == "timed out after 0.2 s"
    assert time.monotonic() - started < 2


async def test_retries_with_backoff_and_no_partial_alerts(tmp_path: Path) -> None:
    flaky = Flaky()
    runner, metrics = await make_runner(tmp_path, flaky)
    result = await runner.run_tick(runner.jobs["flaky"], datetime.now(UTC))
    assert result.outcome == "success" and result.attempts == 3 and flaky.calls == 3
    # Only the successful attempt's alerts reach the pipeline: nothing half-delivered from failed attempts.
    assert [a.user_id for a in result.alerts] == ["partial", "second"]
    assert sample(metrics, "pamd_monitor_retries_total", monitor="flaky") == 2
    assert sample(metrics, "pamd_monitor_runs_total", monitor="flaky", outcome="success") == 1


async def test_retries_exhausted_is_an_error(tmp_path: Path) -> None:
    flaky = Flaky()
    runner, metrics = await make_runner(tmp_path, flaky, retries=1)
    result = await runner.run_tick(runner.jobs["flaky"], datetime.now(UTC))
    assert result.outcome == "error" and result.attempts == 2 and "store went away" in (result.error or "")
    assert sample(metrics, "pamd_monitor_up", monitor="flaky") == 0


async def test_sync_monitor_runs_on_a_worker_thread_without_blocking_the_loop() -> None:
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.02)
            ticks += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(heartbeat)
        result = await run_tick(Blocking())
        tg.cancel_scope.cancel()
    assert result.outcome == "success"
    assert result.alerts[0].user_id != str(threading.get_ident())
    assert ticks >= 8  # the loop kept running during the 0.3 s blocking call


class Sleeps(pamd.Monitor):
    retries = 0
    active = 0
    peak = 0

    async def run(self, ctx: pamd.MonitorContext) -> list[pamd.Alert]:
        Sleeps.active += 1
        Sleeps.peak = max(Sleeps.peak, Sleeps.active)
        await anyio.sleep(0.2)
        Sleeps.active -= 1
        return []


def sleeper(name: str) -> pamd.Monitor:
    monitor: pamd.Monitor = type(name, (Sleeps,), {"name": name})()
    return monitor


async def test_no_overlap_skips_and_queue_runs_once_more(tmp_path: Path) -> None:
    runner, metrics = await make_runner(tmp_path, sleeper("s1"))
    job = runner.jobs["s1"]
    async with anyio.create_task_group() as tg:
        await tg.start(runner.serve)
        now = datetime.now(UTC)
        assert runner.dispatch(job, now)
        assert not runner.dispatch(job, now)  # still running: skipped and counted
        assert sample(metrics, "pamd_monitor_runs_total", monitor="s1", outcome="skipped") == 1
        job.overlap = "queue"
        assert runner.dispatch(job, now) and runner.dispatch(job, now) is False  # one queued, the next skipped
        await runner.wait_idle()
        tg.cancel_scope.cancel()
    assert sample(metrics, "pamd_monitor_runs_total", monitor="s1", outcome="success") == 2


async def test_concurrent_ticks_are_bounded(tmp_path: Path) -> None:
    Sleeps.active = Sleeps.peak = 0
    monitors = [sleeper(f"c{i}") for i in range(5)]
    runner, _ = await make_runner(tmp_path, *monitors, max_concurrent=2)
    async with anyio.create_task_group() as tg:
        await tg.start(runner.serve)
        for job in runner.jobs.values():
            runner.dispatch(job, datetime.now(UTC))
        await runner.wait_idle()
        tg.cancel_scope.cancel()
    assert Sleeps.peak == 2


async def test_wrong_item_type_is_a_clear_error() -> None:
    class Wrong(pamd.Monitor):
        name = "wrong"
        retries = 0

        async def run(self, ctx: pamd.MonitorContext) -> list[object]:  # type: ignore[override]
            return [{"user_id": "u"}]

    result = await run_tick(Wrong())
    assert result.error == "TypeError: monitor wrong produced dict, expected pamd.Alert"


async def test_a_tick_whose_term_lapsed_while_running_delivers_nothing(tmp_path: Path) -> None:
    class LosesLease(pamd.Monitor):
        name = "loses_lease"

        async def run(self, ctx: pamd.MonitorContext) -> AsyncIterator[pamd.Alert]:
            yield alert()
            coordinator.is_leader = lambda: False  # type: ignore[method-assign]  # paused past the lease meanwhile

    runner, metrics = await make_runner(tmp_path, LosesLease())
    coordinator = runner.coordinator
    result = await runner.run_tick(runner.jobs["loses_lease"], datetime.now(UTC))
    assert result.outcome == "error" and "lost leadership (epoch 1)" in (result.error or "")
    assert sample(metrics, "pamd_alerts_total", monitor="loses_lease", priority="medium", outcome="fenced") == 1
    assert sample(metrics, "pamd_alerts_total", monitor="loses_lease", priority="medium", outcome="delivered") == 0


class HoldsAStream(pamd.Monitor):
    """Yields alerts from inside a resource (as the built-ins read a store's stream) whose close awaits."""

    name = "holds_a_stream"
    retries = 0

    def __init__(self) -> None:
        self.closed = False

    async def run(self, ctx: pamd.MonitorContext) -> AsyncIterator[pamd.Alert]:
        try:
            yield alert("u1")
            yield alert("u2")
        finally:
            await anyio.sleep(0.05)  # closing the stream: its reads in flight end
            self.closed = True


async def test_a_failed_tick_closes_the_monitor_s_generator_before_it_returns() -> None:
    """The pipeline refused the first alert: the monitor stays at its ``yield``, and is closed (its ``finally``
    awaited) in the tick, not left to the garbage collector."""
    from pamd.monitor import MonitorContext
    from pamd.runner import collect

    monitor = HoldsAStream()

    async def refuse(_: pamd.Alert) -> None:
        raise RuntimeError("the pipeline failed")

    with pytest.raises(RuntimeError, match="pipeline failed"):
        await collect(make_job(monitor), MonitorContext(monitor="holds_a_stream", scheduled_at=datetime.now(UTC)),
                      sink=refuse)
    assert monitor.closed


async def test_a_tick_cancelled_while_the_pipeline_waits_still_closes_the_monitor_s_generator() -> None:
    """The daemon stops while the monitor waits for the pipeline: the generator is closed, its cleanup's awaits
    shielded from the cancellation."""
    from pamd.monitor import MonitorContext
    from pamd.runner import collect

    monitor = HoldsAStream()

    async def slow_pipeline(_: pamd.Alert) -> None:
        await anyio.sleep_forever()

    with anyio.move_on_after(0.1):
        await collect(make_job(monitor), MonitorContext(monitor="holds_a_stream", scheduled_at=datetime.now(UTC)),
                      sink=slow_pipeline)
    assert monitor.closed


async def test_a_failing_cleanup_is_logged_and_the_tick_keeps_its_own_error(caplog: pytest.LogCaptureFixture) -> None:
    from pamd.monitor import MonitorContext
    from pamd.runner import collect

    class BadCleanup(HoldsAStream):
        async def run(self, ctx: pamd.MonitorContext) -> AsyncIterator[pamd.Alert]:
            try:
                yield alert("u1")
            finally:
                raise OSError("the stream's connection is gone")

    async def refuse(_: pamd.Alert) -> None:
        raise RuntimeError("the pipeline failed")

    with pytest.raises(RuntimeError, match="pipeline failed"):
        await collect(make_job(BadCleanup()), MonitorContext(monitor="holds_a_stream", scheduled_at=datetime.now(UTC)),
                      sink=refuse)
    assert "closing its generator failed: OSError: the stream's connection is gone" in caplog.text
