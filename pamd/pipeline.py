"""The alert pipeline: stamp each candidate, decide its fate, remember it, and hand it to every sink.

Monitors never deliver and sinks never decide. For each tick the pipeline, per alert: stamps id, fingerprint and
epoch; applies the user's preferences, dedupe with the monitor's cooldown (a higher priority passes at once), the
daily cap and quiet hours (:mod:`pamd.alerts.decide`); stores what it accepts before delivering anything; and after
a complete tick forgets the conditions the monitor no longer reports, so their next occurrence alerts again.
Without an alert book (no store) it only stamps and delivers.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING

from pamd.alerts.book import AlertBook, AlertContext, FencedError
from pamd.alerts.decide import Decision, decide, in_cooldown
from pamd.alerts.delivery import Deliverer
from pamd.alerts.prefs import Preferences, effective
from pamd.alerts.seen import TickFingerprints
from pamd.config import AlertsSection
from pamd.metrics import Metrics
from pamd.model import Alert, PackedAlerts, Priority, new_alert_id
from pamd.sinks.base import Sink

if TYPE_CHECKING:
    from pamd.ai.router import Phraser

log = logging.getLogger("pamd.pipeline")

BATCH = 2000  # alerts decided and recorded per store round trip (and transaction), rounded up to whole users
# Batches written (stored, then delivered) at once. A batch's write is a dozen round trips that each wait for the
# event loop, busy with the monitor; a second one in flight took a million-user budget tick's first run (212,000
# alerts, bench/pg_scale.py) from 22.5-24.0 to 20.8-22.5 s (five runs each). Batches hold different users, so
# each user's alerts stay in order and no batch's decisions depend on another's writes.
WRITES_IN_FLIGHT = 2


class AlertPipeline:
    """See the module docstring. ``book`` is usually the store (if it implements :class:`AlertBook`); ``outbox``
    (default: ``book``) remembers and retries failed deliveries (:mod:`pamd.alerts.delivery`)."""

    def __init__(
        self,
        sinks: dict[str, Sink],
        metrics: Metrics,
        book: object | None = None,
        settings: AlertsSection | None = None,
        outbox: object | None = None,
        phraser: Phraser | None = None,
    ) -> None:
        self.sinks = sinks
        self.phraser = phraser  # rewrites accepted alerts' text when a provider key is set (pamd.ai)
        self.metrics = metrics
        self.book = book if isinstance(book, AlertBook) else None
        self.deliverer = Deliverer(sinks, metrics, outbox if outbox is not None else book)
        self.settings = settings or AlertsSection()
        quiet = self.settings.quiet_start, self.settings.quiet_end
        self._default_quiet = (time.fromisoformat(quiet[0]), time.fromisoformat(quiet[1])) if all(quiet) else None

    async def submit(
        self,
        monitor: str,
        alerts: Iterable[Alert] | PackedAlerts,
        *,
        epoch: int,
        now: datetime | None = None,
        cooldown: timedelta = timedelta(0),
        dry_run: bool = False,
        complete: bool = False,
        user_id: str | None = None,
        scheduled_at: datetime | None = None,
        keep: bool = True,
        still_leading: Callable[[], bool] | None = None,
    ) -> Submitted:
        """Process one tick's alerts, a batch at a time. ``complete``: the tick evaluated every user (or
        ``user_id``) without degradation, so fingerprints it did not produce are resolved. ``dry_run`` decides but
        writes and delivers nothing. ``keep``: return every decision (else only the counts, which keeps a big
        tick's memory to one batch). ``still_leading``: asked before each alert is handed to the sinks;
        false (the lease lapsed meanwhile: a pause, a partition) raises :class:`FencedError` and delivers nothing
        more, so a leader resumed after losing its term cannot deliver with its stale epoch."""
        now = now or datetime.now(UTC)
        source = alerts if isinstance(alerts, PackedAlerts) else [stamp(a, monitor, epoch, now) for a in alerts]
        session = self.open(monitor, epoch=epoch, now=now, cooldown=cooldown, dry_run=dry_run, user_id=user_id,
                            scheduled_at=scheduled_at, keep=keep, still_leading=still_leading)
        try:
            await session.add(source, last=True, complete=complete)
            return await session.close(complete)
        finally:
            await session.abort()

    def open(
        self,
        monitor: str,
        *,
        epoch: int,
        now: datetime,
        cooldown: timedelta = timedelta(0),
        dry_run: bool = False,
        user_id: str | None = None,
        scheduled_at: datetime | None = None,
        keep: bool = True,
        still_leading: Callable[[], bool] | None = None,
    ) -> TickSubmission:
        """Start handing one tick's stamped alerts to the pipeline in parts, while the monitor is still running
        (:class:`TickSubmission`; the arguments are :meth:`submit`'s)."""
        return TickSubmission(self, monitor, epoch=epoch, now=now, cooldown=cooldown, dry_run=dry_run,
                              user_id=user_id, scheduled_at=scheduled_at, keep=keep, still_leading=still_leading)

    async def _phrase(self, decided: list[Decision]) -> None:
        """Have the AI phraser (if a provider key is set) rewrite the batch's accepted alerts. Only accepted alerts
        cost a request; they are phrased before they are stored, so what the outbox delivers later (a retry, a
        restart, a release after quiet hours) is the same text."""
        if self.phraser is not None and self.phraser.active:
            await self.phraser.phrase_all([d.alert for d in decided if d.accepted])

    async def _write(
        self, monitor: str, decided: list[Decision], now: datetime, scheduled_at: datetime | None,
        sweep: TickFingerprints | None, user_id: str | None, epoch: int, still_leading: Callable[[], bool] | None,
        phrased: Awaitable[None],
    ) -> None:
        """Store one batch's decisions once ``phrased`` (and, given ``sweep``, every fingerprint the tick decided,
        forget the conditions it did not report), then deliver what they let through."""
        await phrased
        if self.book is not None:
            resolved = await self.book.record_decisions(
                monitor, decided, now, scheduled_at=scheduled_at, sweep=sweep is not None, seen=sweep,
                sweep_user=user_id, epoch=epoch)
            if resolved:
                self.metrics.alerts_resolved.labels(monitor).inc(len(resolved))
                log.info("monitor %s: %d condition(s) resolved", monitor, len(resolved), extra={"monitor": monitor})
        ready = [d.alert for d in decided if d.outcome == "delivered"]
        left = await self.deliverer.deliver(ready, "delivered", now, still_leading=still_leading)
        if left:
            for alert in left:
                self.metrics.alerts.labels(monitor, alert.priority.value, "fenced").inc()
            raise FencedError(f"lost leadership (epoch {epoch}) after storing {len(left)} alert(s) of {monitor} and "
                              "before delivering them: they stay pending in the store, for the outbox of whoever "
                              "leads (after [alerts] resume_after)")

    async def decide(
        self, monitor: str, alerts: Sequence[Alert], now: datetime, cooldown: timedelta
    ) -> list[Decision]:
        """Decide stamped ``alerts`` of ``monitor`` without writing anything; every decided alert has its text."""
        decided = await self._decide(monitor, alerts, now, cooldown)
        for decision in decided:
            decision.alert.complete()
        return decided

    async def _decide(
        self, monitor: str, alerts: Sequence[Alert], now: datetime, cooldown: timedelta
    ) -> list[Decision]:
        """:meth:`decide`, leaving deferred texts (:meth:`pamd.Alert.deferred`) unmade."""
        if self.book is None:
            return [Decision(alert=a, outcome="delivered", reason="no store: dedupe and preferences off")
                    for a in alerts]
        if not alerts:
            return []
        states = await self.book.alert_states(sorted({a.fingerprint for a in alerts}))
        # A repeat in cooldown needs nothing about its user: the rest of the context (time zones, preferences,
        # today's counts) is read only for the other alerts, on a steady tick for none.
        fresh = [a for a in alerts if not in_cooldown(a, states.get(a.fingerprint), now, cooldown)]
        ctx = await self.book.alert_context(monitor, fresh, now) if fresh else AlertContext()
        ctx.states = states
        return self._decide_with(ctx, monitor, alerts, now, cooldown)

    def _decide_with(
        self, ctx: AlertContext, monitor: str, alerts: Sequence[Alert], now: datetime, cooldown: timedelta
    ) -> list[Decision]:
        counts = dict(ctx.sent_today)
        counts_monitor = dict(ctx.sent_today_by_monitor)
        decisions = []
        defaults: dict[str, Preferences] = {}  # by time zone: most users have no preference rows
        previous_user, prefs = None, Preferences()
        for alert in alerts:
            user = alert.user_id
            if user != previous_user:  # a batch holds each user's alerts together: computed once per user
                previous_user, rows, timezone = user, ctx.preferences.get(user), ctx.timezones.get(user, "UTC")
                if rows or timezone not in defaults:
                    prefs = effective(rows or [], monitor, timezone, default_max_per_day=self.settings.max_per_day,
                                      default_quiet=self._default_quiet)
                    if not rows:
                        defaults[timezone] = prefs
                else:
                    prefs = defaults[timezone]
            sent = counts.get(user, 0) if prefs.cap_scope == "*" else counts_monitor.get(user, 0)
            decision = decide(alert, prefs, ctx.states.get(alert.fingerprint), sent, now, cooldown)
            if decision.accepted and alert.priority.value != "urgent":
                counts[user] = counts.get(user, 0) + 1
                counts_monitor[user] = counts_monitor.get(user, 0) + 1
            decisions.append(decision)
        return decisions

    async def release_held(self, now: datetime | None = None) -> int:
        """Deliver held alerts whose quiet hours have ended (expired ones are dropped); returns how many."""
        if self.book is None:
            return 0
        now = now or datetime.now(UTC)
        released = 0
        while due := await self.book.due_held_alerts(now):
            expired = [a for a in due if a.expires_at is not None and a.expires_at <= now]
            if expired:
                await self.book.mark_alerts([a.id for a in expired], "expired", now)
                for alert in expired:
                    self.metrics.alerts.labels(alert.monitor, alert.priority.value, "expired").inc()
            ready = [a for a in due if a not in expired]
            # In the outbox now: a crash or a failing sink from here on is retried like any new alert's.
            await self.book.mark_alerts([a.id for a in ready], "pending", now)
            await self.deliverer.deliver(ready, "released", now)
            released += len(ready)
        return released

    async def aclose(self) -> None:
        if self.phraser is not None:
            await self.phraser.aclose()
        for sink in self.sinks.values():
            try:
                await sink.aclose()
            except Exception as exc:
                log.warning("sink close failed: %s", exc)


class TickSubmission:
    """One tick's alerts handed to :class:`AlertPipeline` in parts (from :meth:`AlertPipeline.open`).

    Each :meth:`add` must hold every alert of the users it holds (no user may come back in a later part): a part is
    cut into batches of whole users. Batch N+1 is decided (its context read on the store's reader) and phrased while
    batches N and N-1 (:data:`WRITES_IN_FLIGHT`) are written and delivered; :meth:`settle` waits for every write (a
    caller whose next part may hold the same users again). :meth:`close` waits for every write and, for a complete
    tick, forgets the conditions no batch reported, once every other batch is written.
    :meth:`abort` cancels what is still in flight (a failed attempt); it is a no-op after :meth:`close`.
    """

    def __init__(
        self, pipeline: AlertPipeline, monitor: str, *, epoch: int, now: datetime, cooldown: timedelta,
        dry_run: bool, user_id: str | None, scheduled_at: datetime | None, keep: bool,
        still_leading: Callable[[], bool] | None,
    ) -> None:
        self.pipeline, self.monitor, self.epoch, self.now = pipeline, monitor, epoch, now
        self.cooldown, self.dry_run, self.user_id, self.scheduled_at = cooldown, dry_run, user_id, scheduled_at
        self.keep, self.still_leading = keep, still_leading
        self.result = Submitted()
        self._seen = TickFingerprints()  # what the tick decided, for the sweep of what it no longer reports
        self._swept = False
        self._writes: deque[asyncio.Future[None]] = deque()  # oldest first
        self._phrasing: asyncio.Future[None] | None = None

    async def add(self, alerts: Sequence[Alert] | PackedAlerts, *, last: bool = False, complete: bool = False) -> None:
        """Decide, store and deliver ``alerts`` (stamped; whole users). ``last`` with ``complete``: nothing more
        comes, so the final batch's write also forgets the conditions the tick did not report."""
        self.result.produced += len(alerts)
        batches = _user_batches(alerts, _strongest_per_fingerprint(alerts), BATCH)
        for index, chunk in enumerate(batches):
            sweep = last and complete and index == len(batches) - 1
            if chunk or sweep:
                await self._batch([alerts[i] for i in chunk], sweep)

    async def _batch(self, alerts: list[Alert], sweep: bool) -> None:
        pipeline, monitor = self.pipeline, self.monitor
        decided = await pipeline._decide(monitor, alerts, self.now, self.cooldown)
        for d in decided:
            # Text only for what is stored, delivered or shown: a repeat in cooldown is dropped without it.
            if self.keep or d.accepted:
                d.alert.complete()
        # One ``inc`` per label set, not per alert: a big tick decides tens of thousands.
        counted = Counter((d.outcome, d.alert.priority.value) for d in decided)
        for (decision, priority), count in counted.items():
            self.result.outcomes[decision] += count
            outcome = "dry_run" if self.dry_run else decision
            if outcome != "delivered":  # delivered ones are counted once the sinks have them
                pipeline.metrics.alerts.labels(monitor, priority, outcome).inc(count)
        if self.keep:
            self.result.decisions += decided
        if self.dry_run:
            return
        self._seen.add([d.alert.fingerprint for d in decided])
        self._phrasing = asyncio.ensure_future(pipeline._phrase(decided))
        await self._drain(0 if sweep else WRITES_IN_FLIGHT - 1)
        self._swept = self._swept or sweep
        self._writes.append(asyncio.ensure_future(pipeline._write(
            monitor, decided, self.now, self.scheduled_at, self._seen if sweep else None, self.user_id, self.epoch,
            self.still_leading, self._phrasing)))

    async def settle(self) -> None:
        """Wait until what was added so far is stored and delivered."""
        await self._drain(0)

    async def _drain(self, keep: int) -> None:
        """Wait until at most ``keep`` writes are in flight and none has failed. Once one has failed, no new write
        starts: the others end first (a batch's failure does not cut another's transaction or deliveries short),
        then the oldest failure is raised."""
        while True:
            if any(f.done() and (f.cancelled() or f.exception() is not None) for f in self._writes):
                await asyncio.wait(self._writes)
                ended, self._writes = list(self._writes), deque()
                failed = [f for f in ended if f.cancelled() or f.exception() is not None]  # each one retrieved
                failed[0].result()
            self._writes = deque(f for f in self._writes if not f.done())
            if len(self._writes) <= keep:
                return
            await asyncio.wait(self._writes, return_when=asyncio.FIRST_COMPLETED)

    async def close(self, complete: bool) -> Submitted:
        """Wait for every write; for a ``complete`` tick, resolve what no part reported. Returns the totals."""
        if complete and not self._swept:
            await self._batch([], sweep=True)
        await self.settle()
        return self.result

    async def abort(self) -> None:
        """Cancel the phrasing and writing still in flight and wait for them to stop."""
        left = [f for f in (self._phrasing, *self._writes) if f is not None and not f.done()]
        for future in left:
            future.cancel()
        if left:
            await asyncio.wait(left)


def stamp(alert: Alert, monitor: str, epoch: int, now: datetime) -> Alert:
    """Fill in what the pipeline owns: monitor, epoch, a sortable id, creation time and (if empty) fingerprint."""
    alert.monitor = monitor
    alert.epoch = epoch
    alert.id = alert.id or new_alert_id(int(now.timestamp() * 1000))
    alert.created_at = alert.created_at or now
    alert.fingerprint = alert.fingerprint or alert.default_fingerprint()
    return alert


@dataclass
class Submitted:
    """What :meth:`AlertPipeline.submit` did: how many alerts the tick produced, what became of them, and (if
    kept) every decision."""

    produced: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    decisions: list[Decision] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        """Alerts delivered or held (stored for delivery)."""
        return self.outcomes["delivered"] + self.outcomes["held"]


def _strongest_per_fingerprint(alerts: PackedAlerts | Sequence[Alert]) -> list[int]:
    """Indices of one alert per fingerprint (the highest priority), ordered by user then priority (urgent first)."""
    best: dict[str, tuple[int, str, Priority]] = {}
    for index in range(len(alerts)):
        if isinstance(alerts, PackedAlerts):
            user, fingerprint, priority = alerts.key(index)
        else:
            alert = alerts[index]
            user, fingerprint, priority = alert.user_id, alert.fingerprint, alert.priority
        kept = best.get(fingerprint)
        if kept is None or priority > kept[2]:
            best[fingerprint] = (index, user, priority)
    ranked = sorted(best.items(), key=lambda item: (item[1][1], -item[1][2].rank, item[0]))
    return [index for _, (index, _, _) in ranked]


def _user_batches(alerts: PackedAlerts | Sequence[Alert], order: list[int], size: int) -> list[list[int]]:
    """``order`` cut into batches of at least ``size`` alerts (the last may be smaller) that never split a user's
    alerts (``order`` is grouped by user). Always at least one batch, so an empty complete tick still sweeps."""
    batches: list[list[int]] = [[]]
    previous_user = None
    for index in order:
        user = alerts.key(index)[0] if isinstance(alerts, PackedAlerts) else alerts[index].user_id
        if len(batches[-1]) >= size and user != previous_user:
            batches.append([])
        batches[-1].append(index)
        previous_user = user
    return batches
