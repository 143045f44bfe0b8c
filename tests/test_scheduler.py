"""The scheduler against the real clock (1-second cron), with wall-clock steps simulated by a shifted clock."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

import pamd
from pamd.coordination.local import LocalCoordinator
from pamd.jobs import _jitter
from pamd.metrics import Metrics
from pamd.pipeline import AlertPipeline
from pamd.runner import Runner
from pamd.scheduler import Scheduler
from pamd.testing import make_job

pytestmark = pytest.mark.anyio


class Clock:
    """The real wall clock plus an offset that a test can step, like NTP or a suspend would."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


class Recorder(pamd.Monitor):
    name = "rec"
    schedule = "* * * * * *"
    retries = 0

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.runs: list[tuple[datetime, datetime]] = []

    async def run(self, ctx: pamd.MonitorContext) -> list[pamd.Alert]:
        self.runs.append((ctx.scheduled_at, self.clock()))
        return []


async def scheduling(tmp_path: Path, monitor: Recorder, seconds: float, clock: Clock,
                     coordinator: LocalCoordinator | None = None, during: object = None,
                     **settings: object) -> Metrics:
    if coordinator is None:
        coordinator = LocalCoordinator(tmp_path)
        await coordinator.start()
    metrics = Metrics()
    jobs = {monitor.name: make_job(monitor, **settings)}
    runner = Runner(jobs, AlertPipeline({}, metrics), metrics, coordinator, None, clock=clock)
    scheduler = Scheduler(jobs, runner, coordinator, metrics, clock=clock, max_sleep=0.25)
    async with anyio.create_task_group() as tg:
        await tg.start(runner.serve)
        tg.start_soon(scheduler.run)
        if callable(during):
            await during()
        await anyio.sleep(seconds)
        assert scheduler.alive
        tg.cancel_scope.cancel()
    return metrics


def missed(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("pamd_monitor_runs_total", {"monitor": "rec", "outcome": "missed"}) or 0


async def test_ticks_at_cron_times_with_low_lateness(tmp_path: Path) -> None:
    clock = Clock()
    monitor = Recorder(clock)
    await scheduling(tmp_path, monitor, 3.2, clock)
    scheduled = [s for s, _ in monitor.runs]
    assert 3 <= len(scheduled) <= 4
    assert all(s.microsecond == 0 for s in scheduled)
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(scheduled))
    assert max((started - s).total_seconds() for s, started in monitor.runs) < 0.1


async def test_run_at_startup_runs_immediately(tmp_path: Path) -> None:
    clock = Clock()
    monitor = Recorder(clock)
    monitor.schedule = "0 0 1 1 *"  # type: ignore[misc]
    await scheduling(tmp_path, monitor, 0.3, clock, run_at_startup=True)
    assert len(monitor.runs) == 1


async def test_missed_ticks_while_down_run_once_within_grace(tmp_path: Path) -> None:
    clock = Clock()
    coordinator = LocalCoordinator(tmp_path)
    await coordinator.start()
    await coordinator.claim_tick("rec", clock().replace(microsecond=0) - timedelta(seconds=8))
    monitor = Recorder(clock)
    start = clock()
    metrics = await scheduling(tmp_path, monitor, 0.3, clock, coordinator=coordinator, misfire_grace=3)
    # 8 ticks were missed while "down": the newest (within 3 s grace) runs at once, the others count as missed.
    catch_up = [(s, started) for s, started in monitor.runs if s <= start]
    assert len(catch_up) == 1
    assert start - catch_up[0][0] < timedelta(seconds=1)
    assert catch_up[0][1] - start < timedelta(seconds=0.2)
    assert missed(metrics) == 7


async def test_forward_clock_step_coalesces_instead_of_storming(tmp_path: Path) -> None:
    clock = Clock()
    monitor = Recorder(clock)

    async def step() -> None:
        await anyio.sleep(1.5)
        clock.offset += timedelta(hours=1)

    metrics = await scheduling(tmp_path, monitor, 1.6, clock, during=step)
    after = [s for s, _ in monitor.runs if s > datetime.now(UTC) + timedelta(minutes=30)]
    assert 1 <= len(after) <= 3  # one coalesced run, then the schedule continues: no storm of 3600 runs
    assert missed(metrics) >= 3590


async def test_backward_clock_step_never_repeats_a_tick(tmp_path: Path) -> None:
    clock = Clock()
    monitor = Recorder(clock)

    async def step() -> None:
        await anyio.sleep(1.5)
        clock.offset -= timedelta(seconds=2)

    await scheduling(tmp_path, monitor, 3.5, clock, during=step)
    scheduled = [s for s, _ in monitor.runs]
    assert len(scheduled) == len(set(scheduled)) >= 3
    assert scheduled == sorted(scheduled)


async def test_skips_ticks_when_follower(tmp_path: Path) -> None:
    class Follower(LocalCoordinator):
        def is_leader(self) -> bool:
            return False

    clock = Clock()
    coordinator = Follower(tmp_path)
    await coordinator.start()
    monitor = Recorder(clock)
    await scheduling(tmp_path, monitor, 1.5, clock, coordinator=coordinator, run_at_startup=True)
    assert monitor.runs == []


def test_jitter_is_deterministic_and_bounded() -> None:
    minute = timedelta(minutes=1)
    assert _jitter("fuel", 30, minute) == _jitter("fuel", 30, minute)
    assert _jitter("fuel", 30, minute) != _jitter("budget", 30, minute)
    assert timedelta(0) <= _jitter("fuel", 300, minute) <= minute / 2
    assert _jitter("fuel", 0, minute) == timedelta(0)


async def test_jitter_delays_the_start_not_the_tick_identity(tmp_path: Path) -> None:
    clock = Clock()
    monitor = Recorder(clock)
    job = make_job(monitor, jitter=0.8)
    await scheduling(tmp_path, monitor, 2.5, clock, jitter=0.8)
    assert monitor.runs
    for scheduled_at, started in monitor.runs:
        assert scheduled_at.microsecond == 0
        assert (started - scheduled_at) >= job.jitter - timedelta(milliseconds=5)


class FailoverCoordinator(LocalCoordinator):
    """A follower until ``promote()``: then a new term starts, as after the old leader died."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self.leading = False
        self.term = anyio.Event()

    def is_leader(self) -> bool:
        return self.leading

    async def wait_new_term(self) -> None:
        await self.term.wait()
        self.term = anyio.Event()

    def promote(self) -> None:
        self.leading = True
        self.term.set()


async def test_a_new_leader_runs_the_tick_the_old_one_left_unclaimed(tmp_path: Path) -> None:
    clock = Clock()
    monitor = Recorder(clock)
    monitor_every_10s = "*/10 * * * * *"
    coordinator = FailoverCoordinator(tmp_path)
    await coordinator.start()
    now = clock()
    boundary = now.replace(microsecond=0) - timedelta(seconds=now.second % 10)
    # The old leader ran the tick before the newest 10-second boundary, then died.
    await coordinator.claim_tick("rec", boundary - timedelta(seconds=10))
    promoted_at: list[datetime] = []

    async def fail_over() -> None:
        await anyio.sleep(0.3)
        promoted_at.append(clock())
        coordinator.promote()

    await scheduling(tmp_path, monitor, 0.6, clock, coordinator=coordinator, during=fail_over,
                     schedule=monitor_every_10s, misfire_grace=15)
    assert monitor.runs, "the unclaimed tick was not caught up"
    scheduled, ran_at = monitor.runs[0]
    # The newest due tick at promotion (a 10-second boundary may have passed since the test began).
    newest = promoted_at[0].replace(microsecond=0) - timedelta(seconds=promoted_at[0].second % 10)
    assert newest >= boundary
    assert scheduled == newest and ran_at - promoted_at[0] < timedelta(seconds=0.5)
    assert not await coordinator.claim_tick("rec", newest)  # claimed: nobody runs it again
