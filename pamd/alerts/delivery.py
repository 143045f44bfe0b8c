"""Delivery: hand stored alerts to every sink, in order per user, and retry what did not go through.

At-least-once, with the alert id as idempotency key. A delivery that succeeds at once leaves no trace but the alert's
``delivered`` state. One that fails transiently is remembered (:class:`pamd.alerts.outbox.Delivery`) and retried with
exponential backoff until it succeeds or the alert expires; the user's later alerts for that sink queue behind it, so
they arrive in order. A sink's final refusal (:class:`pamd.sinks.base.PermanentDeliveryError`) is logged and not
retried. Alerts a crash left between storing and delivering are resumed by :meth:`Deliverer.resume_stuck`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

from pamd.alerts.lanes import in_lanes
from pamd.alerts.outbox import Delivery, OutboxBook
from pamd.backoff import backoff
from pamd.metrics import Metrics
from pamd.model import Alert
from pamd.sinks.base import BatchSink, PermanentDeliveryError, Sink, TransientDeliveryError

log = logging.getLogger("pamd.delivery")

BATCH = 200  # alerts per window: per call to a BatchSink (one Redis round trip or one INSERT)


class Deliverer:
    """Delivers alerts to ``sinks``; with an :class:`OutboxBook` (``book``), failures are remembered and retried,
    without one (no store) each delivery is tried once. ``retry_base``/``retry_cap``: the backoff, in seconds."""

    def __init__(
        self, sinks: dict[str, Sink], metrics: Metrics, book: object | None = None, *,
        retry_base: float = 2.0, retry_cap: float = 300.0,
    ) -> None:
        self.sinks = sinks
        self.metrics = metrics
        self.book = book if isinstance(book, OutboxBook) else None
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self.pending: int | None = None  # stored alerts not yet delivered everywhere, as last counted
        self.last_errors: dict[str, dict[str, str]] = {}  # per sink: its latest failure, for /status

    async def deliver(
        self, alerts: Sequence[Alert], outcome: str = "delivered", now: datetime | None = None, *,
        still_leading: Callable[[], bool] | None = None,
    ) -> list[Alert]:
        """Deliver stored ``alerts`` to every sink, each user's in order; ``outcome`` labels the fully delivered
        ones in ``pamd_alerts_total`` (``delivered``, or ``released`` for alerts held for quiet hours).

        They go a window of :data:`BATCH` at a time: a :class:`BatchSink` gets a window's alerts in one call; any
        other sink one alert at a time, or up to its ``concurrency`` users' alerts at once. ``still_leading`` is
        asked before each alert is handed to the sinks: once it says no (the lease lapsed: a pause, a partition),
        no more alert is handed to any sink (those of the window already handed still reach the other sinks), and
        the alerts not handed are returned (they stay pending): of each user, the later ones."""
        if not alerts:
            return []
        now = now or datetime.now(UTC)
        queued: set[tuple[str, str]] = set()
        if self.book is not None and self.sinks:
            queued = await self.book.queued_users(list(self.sinks), sorted({a.user_id for a in alerts}))
        run = _Round(self, alerts, queued, now, still_leading)
        singles = [(name, sink) for name, sink in self.sinks.items() if not isinstance(sink, BatchSink)]
        batches = [(name, sink) for name, sink in self.sinks.items() if isinstance(sink, BatchSink)]
        for start in range(0, len(alerts), BATCH):
            window = range(start, min(start + BATCH, len(alerts)))
            for n, (name, sink) in enumerate(singles):  # the first one hands the alerts out
                await in_lanes(window, lambda i: alerts[i].user_id, _concurrency(sink), run.sender(name, sink, n == 0))
            if not singles:  # no one-at-a-time sink handed them out
                for index in window:
                    if not run.hand(index):
                        break
            for name, batch_sink in batches:
                await run.send_batch(name, batch_sink, [i for i in window if i in run.handed])
            if run.stopped:
                break
        handed = [i for i in range(len(alerts)) if i in run.handed]
        await self._conclude([alerts[i] for i in handed if run.complete[i]],
                             [alerts[i] for i in handed if not run.complete[i]], run.records, outcome, now)
        return [alert for i, alert in enumerate(alerts) if i not in run.handed]

    async def retry_due(self, now: datetime | None = None) -> int:
        """Retry the deliveries due at ``now`` (each user's queue per sink in order; a failure stops that queue
        until its next attempt). Returns how many went through."""
        if self.book is None:
            return 0
        now = now or datetime.now(UTC)
        due = await self.book.due_deliveries(now)
        changed: list[Delivery] = []
        touched: dict[str, Alert] = {}
        sent = 0

        def retry(sink: Sink) -> Callable[[tuple[Delivery, Alert]], Awaitable[bool]]:
            async def attempt(item: tuple[Delivery, Alert]) -> bool:
                """One queued delivery; False stops its queue (a failure: the rest wait for the next attempt)."""
                nonlocal sent
                record, alert = item
                touched[alert.id] = alert
                changed.append(record)
                if alert.expires_at is not None and alert.expires_at <= now:
                    record.state, record.last_error = "expired", "the alert expired before it could be delivered"
                    self.metrics.deliveries.labels(record.sink, "expired").inc()
                    return True
                error = await self._attempt(record.sink, sink, alert, now)
                record.attempts += 1
                if error is None:
                    record.state, record.last_error = "delivered", None
                    sent += 1
                elif error[0]:
                    record.next_attempt_at = now + self._delay(record.attempts, error[2])
                    record.last_error = error[1]
                    return False
                else:
                    record.state, record.last_error = "failed", error[1]
                return True

            return attempt

        # Each user's queue per sink in order; a sink no longer configured keeps its records until it returns.
        for name, sink in self.sinks.items():
            await in_lanes([item for item in due if item[0].sink == name], lambda item: item[0].user_id,
                           _concurrency(sink), retry(sink))
        await self.book.save_deliveries(changed, now)
        settled = await self.book.settle_alerts(list(touched), now)
        for alert_id, state in settled.items():
            alert = touched[alert_id]
            self.metrics.alerts.labels(alert.monitor, alert.priority.value, state).inc()
        return sent

    async def resume_stuck(self, before: datetime, now: datetime | None = None) -> int:
        """Deliver alerts stored before ``before`` that were never handed to the sinks (the process died, or lost
        its leadership, in between). Returns how many."""
        if self.book is None:
            return 0
        now = now or datetime.now(UTC)
        resumed = 0
        while stuck := await self.book.stuck_alerts(before):
            log.warning("resuming %d stored alert(s) that were never delivered", len(stuck))
            await self.deliver(stuck, "delivered", now)
            resumed += len(stuck)
        return resumed

    async def update_gauge(self) -> None:
        """Refresh ``pamd_outbox_pending``."""
        if self.book is not None:
            self.pending = await self.book.outbox_size()
            self.metrics.outbox_pending.set(self.pending)

    def status(self) -> dict[str, object]:
        """For ``/status``: the outbox's size as last counted and each sink's latest failure."""
        return {"pending": self.pending, "sinks": {name: self.last_errors.get(name) for name in self.sinks}}

    async def _attempt(self, name: str, sink: Sink, alert: Alert, now: datetime) -> tuple[bool, str, float] | None:
        """One delivery: ``None`` if it went through, else ``(retry?, why, seconds the receiver asked to wait)``."""
        return await self._try(name, lambda: sink.deliver(alert), [alert], now)

    async def _try(
        self, name: str, deliver: Callable[[], Awaitable[None]], alerts: Sequence[Alert], now: datetime
    ) -> tuple[bool, str, float] | None:
        """Run ``deliver()`` (of ``alerts``, all or none): ``None`` if it went through, else ``(retry?, why,
        seconds the receiver asked to wait)``; metrics and logs per alert."""
        first = alerts[0]
        try:
            await deliver()
        except PermanentDeliveryError as exc:
            self.metrics.deliveries.labels(name, "rejected").inc(len(alerts))
            self.last_errors[name] = {"at": now.isoformat(), "alert_id": first.id, "error": f"refused: {exc}"}
            log.error("sink %s refused alert %s for good: %s", name, first.id, exc,
                      extra={"sink": name, "alert_id": first.id, "monitor": first.monitor})
            return False, f"refused: {exc}", 0.0
        except Exception as exc:
            self.metrics.deliveries.labels(name, "error").inc(len(alerts))
            self.last_errors[name] = {"at": now.isoformat(), "alert_id": first.id,
                                      "error": f"{type(exc).__name__}: {exc}"}
            log.warning("sink %s failed to deliver alert %s (will retry): %s", name, first.id, exc,
                        extra={"sink": name, "alert_id": first.id, "monitor": first.monitor})
            wait = exc.retry_after if isinstance(exc, TransientDeliveryError) and exc.retry_after else 0.0
            return True, f"{type(exc).__name__}: {exc}", wait
        self.metrics.deliveries.labels(name, "success").inc(len(alerts))
        # The wall clock, not ``now``: inline deliveries pass the tick's time, and a big tick delivers for seconds.
        wall = datetime.now(UTC)
        for alert in alerts:
            if alert.created_at is not None:
                self.metrics.delivery_latency.labels(name).observe(max(0.0, (wall - alert.created_at).total_seconds()))
        return None

    async def _conclude(
        self, done: list[Alert], unsettled: list[Alert], records: list[Delivery], outcome: str, now: datetime
    ) -> None:
        self._count(done, outcome)
        if self.book is None:
            for alert in unsettled:
                self.metrics.alerts.labels(alert.monitor, alert.priority.value, "failed").inc()
            return
        await self.book.save_deliveries(records, now)
        if done:
            await self.book.mark_alerts([a.id for a in done], "delivered", now)
        if unsettled:
            by_id = {a.id: a for a in unsettled}
            for alert_id, state in (await self.book.settle_alerts(list(by_id), now)).items():
                alert = by_id[alert_id]
                self.metrics.alerts.labels(alert.monitor, alert.priority.value, state).inc()

    def _count(self, alerts: Sequence[Alert], outcome: str) -> None:
        """``pamd_alerts_total`` += 1 per alert, one ``inc`` per label set (a big tick delivers tens of thousands)."""
        for (monitor, priority), count in Counter((a.monitor, a.priority.value) for a in alerts).items():
            self.metrics.alerts.labels(monitor, priority, outcome).inc(count)

    def _delay(self, attempts: int, asked: float = 0.0) -> timedelta:
        """The wait before the next attempt: half the exponential step plus jitter up to the other half (retries of
        many alerts spread out), and never less than what the receiver asked for (``Retry-After``)."""
        step = min(self.retry_cap, self.retry_base * 2 ** (attempts - 1))
        jittered = step / 2 + backoff(attempts, self.retry_base / 2, self.retry_cap / 2)
        return timedelta(seconds=max(jittered, min(asked, self.retry_cap * 12)))


class _Round:
    """One :meth:`Deliverer.deliver` call's state: which alerts were handed to the sinks, which every sink has, and
    the delivery records of those some sink does not have."""

    def __init__(
        self, deliverer: Deliverer, alerts: Sequence[Alert], queued: set[tuple[str, str]], now: datetime,
        still_leading: Callable[[], bool] | None,
    ) -> None:
        self.deliverer = deliverer
        self.alerts = alerts
        self.queued = queued  # (sink, user): an earlier alert waits for a retry, so the later ones queue behind it
        self.now = now
        self.still_leading = still_leading
        self.records: list[Delivery] = []
        self.handed: set[int] = set()  # indexes of the alerts handed to the sinks
        self.complete = [True] * len(alerts)  # every sink has it
        self.stopped = False  # still_leading said no

    def hand(self, index: int) -> bool:
        """Whether alert ``index`` goes to the sinks: asks ``still_leading`` the first time."""
        if index not in self.handed:
            if self.stopped or (self.still_leading is not None and not self.still_leading()):
                self.stopped = True
                return False
            self.handed.add(index)
        return True

    def sender(self, name: str, sink: Sink, first: bool) -> Callable[[int], Awaitable[bool]]:
        """The lane work delivering alert ``index`` to a one-at-a-time sink (``first``: it hands alerts out);
        False when the alert is not handed (nor, then, the user's later ones)."""

        async def send(index: int) -> bool:
            if not (self.hand(index) if first else index in self.handed):
                return False
            if (name, self.alerts[index].user_id) in self.queued:
                self.missed(name, index, None)
            else:
                error = await self.deliverer._attempt(name, sink, self.alerts[index], self.now)
                if error is not None:
                    self.missed(name, index, error)
            return True

        return send

    async def send_batch(self, name: str, sink: BatchSink, indexes: list[int]) -> None:
        """Handed alerts (``indexes``) to a :class:`BatchSink` in one call, but those queued behind an earlier
        failure of their user. One round trip per window instead of per alert is what lets a tick's burst reach
        Redis at thousands a second."""
        ready = []
        for index in indexes:
            if (name, self.alerts[index].user_id) in self.queued:
                self.missed(name, index, None)
            else:
                ready.append(index)
        if ready:
            batch = [self.alerts[index] for index in ready]
            error = await self.deliverer._try(name, lambda: sink.deliver_batch(batch), batch, self.now)
            if error is not None:
                for index in ready:
                    self.missed(name, index, error)

    def missed(self, name: str, index: int, error: tuple[bool, str, float] | None) -> None:
        """Sink ``name`` does not have alert ``index``: queued behind an earlier failure (``error`` None) or failed
        (retried later if the failure is transient and there is a book to remember it)."""
        alert, now = self.alerts[index], self.now
        self.complete[index] = False
        if error is None:
            self.records.append(_record(alert, name, "pending", 0, now, "waiting behind an earlier alert"))
            self.deliverer.metrics.deliveries.labels(name, "queued").inc()
            return
        retry, message, wait = error
        if retry and self.deliverer.book is not None:
            self.records.append(_record(alert, name, "pending", 1, now + self.deliverer._delay(1, wait), message))
            self.queued.add((name, alert.user_id))
        else:
            self.records.append(_record(alert, name, "failed", 1, now, message))


def _concurrency(sink: Sink) -> int:
    """The sink's :attr:`Sink.concurrency`; 1 for a sink that does not say (one not derived from :class:`Sink`)."""
    value = getattr(sink, "concurrency", 1)
    return value if isinstance(value, int) and value > 1 else 1


def _record(alert: Alert, sink: str, state: str, attempts: int, at: datetime, error: str | None) -> Delivery:
    return Delivery(alert_id=alert.id, sink=sink, user_id=alert.user_id, state=state,  # type: ignore[arg-type]
                    attempts=attempts, next_attempt_at=at, last_error=error)
