"""The scheduler: turns each job's cron schedule into ticks, with misfire grace, coalescing and catch-up.

It sleeps on the monotonic clock in bounded chunks and re-reads the wall clock on every wake, so a wall-clock step
(NTP correction, suspend/resume) shifts nothing: ticks due in a forward step are coalesced into one run if still
within grace, and a backward step never repeats a tick (the claim of a tick is remembered).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import anyio

from pamd.coordination.base import Coordinator
from pamd.jobs import Job
from pamd.metrics import Metrics
from pamd.runner import Runner

log = logging.getLogger("pamd.scheduler")

MAX_SLEEP_SECONDS = 30.0
PRECISE_WINDOW_SECONDS = 0.002
MAX_COUNTED_MISSES = 1000


class Scheduler:
    """One task per enabled job; dispatches due ticks to the runner when this replica is the leader."""

    def __init__(
        self,
        jobs: dict[str, Job],
        runner: Runner,
        coordinator: Coordinator,
        metrics: Metrics,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_sleep: float = MAX_SLEEP_SECONDS,
        daemon_start: bool = True,
    ) -> None:
        """``daemon_start=False`` (a reload) skips ``run_at_startup``; missed ticks are still caught up."""
        self.jobs = jobs
        self.runner = runner
        self.coordinator = coordinator
        self.metrics = metrics
        self.clock = clock
        self.max_sleep = max_sleep
        self.daemon_start = daemon_start
        self.started_monotonic: float | None = None
        self._live_loops = 0

    @property
    def alive(self) -> bool:
        """True while every enabled job's loop is running."""
        enabled = sum(1 for job in self.jobs.values() if job.enabled)
        return self.started_monotonic is not None and self._live_loops == enabled

    async def run(self) -> None:
        """Schedule until cancelled."""
        self.started_monotonic = time.monotonic()
        async with anyio.create_task_group() as tg:
            for job in self.jobs.values():
                if job.enabled:
                    tg.start_soon(self._job_loop, job)
            tg.start_soon(self._follow_leadership)

    async def _job_loop(self, job: Job) -> None:
        self._live_loops += 1
        try:
            now = self.clock()
            await self._startup(job, now)
            while True:
                try:
                    await self._follow_schedule(job)
                except Exception:
                    log.exception("monitor %s: scheduler loop failed; restarting it in 1 s", job.name,
                                  extra={"monitor": job.name})
                    await anyio.sleep(1)
        finally:
            self._live_loops -= 1

    async def _startup(self, job: Job, now: datetime) -> None:
        """Catch up a tick missed while down (coalesced, within grace), else honour ``run_at_startup``."""
        if await self._catch_up(job, now, "while the daemon was down"):
            return
        if job.run_at_startup and self.daemon_start:
            await self._fire(job, now.replace(microsecond=0), on_time=False)

    async def _catch_up(self, job: Job, now: datetime, why: str) -> bool:
        """Run the newest tick since the last claimed one if it is within grace (older ones count as missed);
        True if one was due. A tick another replica already claimed is not run again."""
        last = await self.coordinator.last_tick(job.name)
        if last is None or last >= now:
            return False
        window_start = max(last, now - job.misfire_grace - job.jitter)
        recent = list(job.schedule.between(window_start, now))
        missed = self._count_missed(job, last, window_start) + max(0, len(recent) - 1)
        self._record_missed(job, missed, why)
        if recent:
            await self._fire(job, recent[-1])
        return bool(recent)

    async def _follow_leadership(self) -> None:
        """After a failover, the new leader runs each job's newest unclaimed tick that is still within grace."""
        wait = getattr(self.coordinator, "wait_new_term", None)
        if wait is None:  # a single replica leads from the start
            return
        while True:
            await wait()
            now = self.clock()
            log.info("new leadership term %d: catching up ticks missed during the handover", self.coordinator.epoch)
            for job in self.jobs.values():
                if job.enabled:
                    await self._catch_up(job, now, "during a leader handover")

    def _count_missed(self, job: Job, last: datetime, until: datetime) -> int:
        count = 0
        for _ in job.schedule.between(last, until):
            count += 1
            if count >= MAX_COUNTED_MISSES:
                break
        return count

    async def _follow_schedule(self, job: Job) -> None:
        state = self.runner.states[job.name]
        fires = job.schedule.iter_after(self.clock())
        due = next(fires)
        while True:
            state.next_run = due + job.jitter
            await self._sleep_until(due + job.jitter)
            now = self.clock()
            upcoming = next(fires)
            coalesced = 0
            while upcoming + job.jitter <= now:
                coalesced += 1
                due, upcoming = upcoming, next(fires)
            late = now - (due + job.jitter)
            if late > job.misfire_grace:
                self._record_missed(job, coalesced + 1, f"{late.total_seconds():.1f} s late, beyond grace")
            else:
                self._record_missed(job, coalesced, "coalesced into one run")
                await self._fire(job, due)
            due = upcoming

    async def _fire(self, job: Job, scheduled_at: datetime, *, on_time: bool = True) -> None:
        if self.runner.states[job.name].disabled_reason or not self.coordinator.is_leader():
            return
        if await self.coordinator.claim_tick(job.name, scheduled_at):
            self.runner.dispatch(job, scheduled_at, on_time=on_time)

    async def _sleep_until(self, target: datetime) -> None:
        while True:
            remaining = (target - self.clock()).total_seconds()
            if remaining <= 0:
                return
            if remaining <= PRECISE_WINDOW_SECONDS:
                # The loop's timers wake 1-2 ms late (epoll counts whole milliseconds), so the last moment
                # before a tick is slept precisely; it blocks the loop for at most this window per due time.
                time.sleep(remaining)  # noqa: ASYNC251
                return
            await anyio.sleep(min(remaining - PRECISE_WINDOW_SECONDS, self.max_sleep))

    def _record_missed(self, job: Job, count: int, why: str) -> None:
        if count <= 0:
            return
        self.metrics.runs.labels(job.name, "missed").inc(count)
        log.warning("monitor %s: %d tick(s) missed (%s)", job.name, count, why, extra={"monitor": job.name})
