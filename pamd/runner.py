"""Runs ticks: timeout, retries with backoff, no overlap, bounded concurrency, and failure isolation.

A monitor that raises or hangs fails its own tick only; the error is logged, counted and shown in ``/status``.
A monitor whose ``run`` is a plain (non-async) function runs in a worker thread so it cannot block the loop.
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from pamd.alerts.book import FencedError
from pamd.alerts.decide import Decision
from pamd.alerts.stream import AlertStream
from pamd.backoff import RETRY_BASE_SECONDS, backoff
from pamd.coordination.base import Coordinator
from pamd.jobs import Job
from pamd.metrics import Metrics
from pamd.model import Alert
from pamd.monitor import Explanation, MonitorContext
from pamd.pipeline import AlertPipeline
from pamd.store.base import Store

if TYPE_CHECKING:
    from pamd.providers import ProviderHub

__all__ = ["RETRY_BASE_SECONDS", "Runner", "TickResult", "backoff", "collect"]

log = logging.getLogger("pamd.runner")

CLOSE_TIMEOUT_SECONDS = 10.0  # the longest a monitor's generator may take to close after its tick ended


@dataclass
class JobState:
    """What ``/status`` shows about a monitor."""

    running: bool = False
    queued: datetime | None = None
    next_run: datetime | None = None
    last_scheduled_at: datetime | None = None
    last_started_at: datetime | None = None
    last_finished_at: datetime | None = None
    last_outcome: str | None = None
    last_error: str | None = None
    last_duration_seconds: float | None = None
    last_alerts: int = 0
    last_degradations: list[str] = field(default_factory=list)
    stalls: int = 0
    disabled_reason: str | None = None


@dataclass
class TickResult:
    monitor: str
    scheduled_at: datetime
    outcome: str
    alerts: list[Alert] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    produced: int = 0
    accepted: int = 0
    explanation: list[Explanation] | None = None
    degradations: list[str] = field(default_factory=list)
    error: str | None = None
    attempts: int = 0
    duration_seconds: float = 0.0


class Runner:
    """Executes ticks for a set of jobs. ``serve`` hosts background ticks; ``run_tick`` runs one and waits."""

    def __init__(
        self,
        jobs: dict[str, Job],
        pipeline: AlertPipeline,
        metrics: Metrics,
        coordinator: Coordinator,
        store: Store | None,
        max_concurrent_ticks: int = 8,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        retry_base_seconds: float = RETRY_BASE_SECONDS,
        providers: ProviderHub | None = None,
        keep_decisions: bool = True,
    ) -> None:
        self.jobs = jobs
        self.pipeline = pipeline
        self.metrics = metrics
        self.coordinator = coordinator
        self.store = store
        self.clock = clock
        self.retry_base_seconds = retry_base_seconds
        self.providers = providers
        self.keep_decisions = keep_decisions  # False in the daemon: a big tick's alerts are not kept after it
        self.states: dict[str, JobState] = {name: JobState() for name in jobs}
        self._limiter = anyio.CapacityLimiter(max(1, max_concurrent_ticks))
        self._tg: anyio.abc.TaskGroup | None = None
        self._idle = anyio.Event()
        self._idle.set()
        self._running = 0
        self._metrics = {name: metrics.for_monitor(name) for name in jobs}
        self._loggers = {name: logging.getLogger(f"pamd.monitor.{name}") for name in jobs}
        self._is_async = {name: is_async_monitor(job) for name, job in jobs.items()}
        for name, job in jobs.items():
            self._metrics[name].up.set(1 if job.enabled else 0)

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Host background ticks until cancelled."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            task_status.started()
            await anyio.sleep_forever()

    def dispatch(self, job: Job, scheduled_at: datetime, *, on_time: bool = True) -> bool:
        """Start a tick in the background unless the previous one is still running (then skip or queue one).

        ``on_time=False`` (a ``run_at_startup`` tick, stamped with the start second) keeps it out of the
        lateness histogram, which measures the scheduler against cron times.
        """
        state = self.states[job.name]
        lateness = (self.clock() - scheduled_at - job.jitter).total_seconds()
        if state.running:
            if job.overlap == "queue" and state.queued is None:
                state.queued = scheduled_at
                return True
            self._metrics[job.name].runs["skipped"].inc()
            log.warning("monitor %s: tick %s skipped, previous run still going", job.name,
                        scheduled_at.isoformat(), extra={"monitor": job.name})
            return False
        assert self._tg is not None, "Runner.serve() is not running"
        if on_time:
            self._metrics[job.name].lateness.observe(max(0.0, lateness))
        state.running = True
        self._running += 1
        self._idle = anyio.Event() if self._idle.is_set() else self._idle
        self._tg.start_soon(self._background_tick, job, scheduled_at)
        return True

    async def _background_tick(self, job: Job, scheduled_at: datetime) -> None:
        state = self.states[job.name]
        try:
            while True:
                await self.run_tick(job, scheduled_at)
                if state.queued is None:
                    break
                scheduled_at, state.queued = state.queued, None
        finally:
            state.running = False
            self._running -= 1
            if self._running == 0:
                self._idle.set()

    async def wait_idle(self) -> None:
        """Return when no tick is running."""
        await self._idle.wait()

    @property
    def running_count(self) -> int:
        return self._running

    async def aclose(self) -> None:
        """Close what this runner owns: the pipeline's sinks and the provider connections."""
        await self.pipeline.aclose()
        if self.providers is not None:
            await self.providers.aclose()

    def cancel_all(self) -> None:
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    async def run_tick(
        self,
        job: Job,
        scheduled_at: datetime,
        *,
        user_id: str | None = None,
        dry_run: bool = False,
        explain: bool = False,
    ) -> TickResult:
        """Run one tick now (with timeout and retries) and hand its alerts to the pipeline.

        ``explain`` records the monitor's reasoning (:meth:`MonitorContext.explain`) in ``result.explanation``.
        """
        state = self.states[job.name]
        result = TickResult(job.name, scheduled_at, "success", explanation=[] if explain else None)
        started = time.monotonic()
        state.last_scheduled_at, state.last_started_at = scheduled_at, self.clock()
        async with self._limiter:
            try:
                await self._attempts(job, scheduled_at, user_id, dry_run, result)
            except TimeoutError:
                result.outcome, result.error = "timeout", f"timed out after {job.timeout:g} s"
            except Exception as exc:
                result.outcome, result.error = "error", f"{type(exc).__name__}: {exc}"
        result.duration_seconds = time.monotonic() - started
        self._record(job, state, result)
        return result

    async def _attempts(
        self, job: Job, scheduled_at: datetime, user_id: str | None, dry_run: bool, result: TickResult
    ) -> None:
        # A plain loop rather than a retry library: this is the per-tick hot path, and tenacity's per-call
        # set-up (coroutine checks, state objects) cost more than the rest of an idle tick together.
        while True:
            result.attempts += 1
            ctx = MonitorContext(
                monitor=job.name, scheduled_at=scheduled_at, config=job.config, store=self.store,
                epoch=self.coordinator.epoch, user_id=user_id, dry_run=dry_run, concurrency=job.concurrency,
                logger=self._loggers[job.name], clock=self.clock,
                providers=self.providers.for_tick() if self.providers is not None else None,
                explanation=[] if result.explanation is not None else None,
            )
            now = self.clock()
            session = self.pipeline.open(
                job.name, epoch=ctx.epoch, now=now, cooldown=job.cooldown, dry_run=dry_run, user_id=user_id,
                scheduled_at=scheduled_at, keep=self.keep_decisions, still_leading=self._still_leading(ctx.epoch))
            # The pipeline takes the alerts of finished users while the monitor goes on (pamd.alerts.stream). A
            # failed attempt keeps what it already stored and delivered; its retry finds those in cooldown.
            stream = AlertStream(session, job.name, ctx.epoch, now)
            try:
                # The timeout is the monitor's: it stops while the monitor waits for the pipeline, and the rest of
                # the pipeline's work (AI phrasing included) runs after it.
                with anyio.fail_after(job.timeout) as scope:
                    stream.pause = functools.partial(_paused, scope)
                    await collect(job, ctx, self._is_async[job.name], stream.add)
                submitted = await stream.finish(complete=not ctx.degradations)
                break
            except FencedError:
                raise  # the term is over: retrying cannot help, and must not deliver
            except Exception as exc:
                with anyio.move_on_after(job.timeout):
                    await stream.settle()
                if result.attempts > job.retries:
                    raise
                delay = backoff(result.attempts, self.retry_base_seconds)
                self._metrics[job.name].retries.inc()
                log.warning("monitor %s: attempt %d failed (%s); retrying in %.1f s", job.name, result.attempts,
                            _describe(exc), delay, extra={"monitor": job.name})
                await anyio.sleep(delay)
            finally:
                await stream.aclose()
        result.explanation = ctx.explanation
        result.degradations = ctx.degradations
        result.produced, result.accepted = submitted.produced, submitted.accepted
        result.decisions = submitted.decisions
        result.alerts = [d.alert for d in result.decisions]

    def _still_leading(self, epoch: int) -> Callable[[], bool] | None:
        """For the pipeline: is the term that ran the tick still this replica's? (``None`` outside any term, as
        for ``pamd trigger``.) A local check of the lease's renew deadline, no round trip."""
        if epoch == 0:
            return None
        coordinator = self.coordinator
        return lambda: coordinator.is_leader() and coordinator.epoch == epoch

    def _record(self, job: Job, state: JobState, result: TickResult) -> None:
        now = self.clock()
        state.last_finished_at = now
        state.last_outcome = result.outcome
        state.last_error = result.error
        state.last_duration_seconds = round(result.duration_seconds, 6)
        state.last_alerts = result.accepted
        state.last_degradations = result.degradations
        metrics = self._metrics[job.name]
        metrics.runs[result.outcome].inc()
        metrics.duration.observe(result.duration_seconds)
        extra = {"monitor": job.name, "scheduled_at": result.scheduled_at.isoformat(), "outcome": result.outcome,
                 "duration_seconds": state.last_duration_seconds, "alerts": result.produced,
                 "accepted": result.accepted}
        if result.degradations:
            metrics.degraded.inc()
            extra["degraded"] = result.degradations
        if result.outcome == "success":
            metrics.last_success.set(now.timestamp())
            metrics.up.set(1)
            log.info("monitor %s: tick done, %d alert(s), %d accepted", job.name, result.produced, result.accepted,
                     extra=extra)
        else:
            metrics.up.set(0)
            log.error("monitor %s: tick failed after %d attempt(s): %s", job.name, result.attempts,
                      result.error, extra=extra)


def is_async_monitor(job: Job) -> bool:
    run = job.monitor.run
    return inspect.iscoroutinefunction(run) or inspect.isasyncgenfunction(run)


async def collect(
    job: Job, ctx: MonitorContext, is_async: bool | None = None,
    sink: Callable[[Alert], Awaitable[None] | None] | None = None,
) -> list[Alert]:
    """Call the monitor and gather its alerts, whatever shape ``run`` returns. With ``sink``, each alert is handed
    to it as it is produced instead (and the returned list is empty); an awaitable it returns is awaited before
    the monitor goes on."""
    pamd_running_monitor = job.name  # noqa: F841 - read by pamd.loopwatch to blame a loop stall
    gathered: list[Alert] = []
    add: Callable[[Alert], Awaitable[None] | None] = sink or gathered.append
    run = job.monitor.run
    if is_async if is_async is not None else is_async_monitor(job):
        produced: Any = run(ctx)
    else:
        produced = await anyio.to_thread.run_sync(run, ctx, abandon_on_cancel=True)
    if inspect.isawaitable(produced):
        produced = await produced
    if produced is None:
        return gathered
    if hasattr(produced, "__aiter__"):
        try:
            async for item in produced:
                if (waiting := add(_check(job, item))) is not None:
                    await waiting
        finally:
            await _close(job, produced)
    else:
        for item in produced:
            if (waiting := add(_check(job, item))) is not None:
                await waiting
    return gathered


async def _close(job: Job, produced: Any) -> None:
    """Close a monitor's async generator left at a ``yield`` (the pipeline failed, or the tick was cancelled while
    the pipeline made it wait): its ``finally`` and ``async with`` blocks (a store's stream, with its reads in
    flight) run now, in the tick's task. Left to the garbage collector, a failed tick's generators were closed in
    any order, each in a task of its own (one closing another that was already closing), or only at exit.
    Shielded, for at most :data:`CLOSE_TIMEOUT_SECONDS`: a cancelled tick still cleans up, a plugin whose cleanup
    hangs cannot hold the tick. (A cancellation that reaches the monitor inside its own ``await``, a timeout, ends
    the generator there: its cleanup is its own.) A cleanup that fails is logged: the tick's own error, if any,
    is the one it reports."""
    aclose = getattr(produced, "aclose", None)
    if aclose is None:
        return
    try:
        with anyio.move_on_after(CLOSE_TIMEOUT_SECONDS, shield=True) as scope:
            await aclose()
    except Exception as exc:
        log.warning("monitor %s: closing its generator failed: %s: %s", job.name, type(exc).__name__, exc,
                    extra={"monitor": job.name})
        return
    if scope.cancelled_caught:
        log.warning("monitor %s: closing its generator took more than %g s; abandoned", job.name,
                    CLOSE_TIMEOUT_SECONDS, extra={"monitor": job.name})


@contextmanager
def _paused(scope: anyio.CancelScope) -> Iterator[None]:
    """Stop ``scope``'s clock for the duration: its deadline moves on by the time spent inside."""
    deadline, started = scope.deadline, anyio.current_time()
    scope.deadline = math.inf
    try:
        yield
    finally:
        scope.deadline = deadline + (anyio.current_time() - started)


def _check(job: Job, item: object) -> Alert:
    if not isinstance(item, Alert):
        raise TypeError(f"monitor {job.name} produced {type(item).__name__}, expected pamd.Alert")
    return item


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"
