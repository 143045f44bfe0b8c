"""An alert book whose dedupe state lives in Redis, shared by replicas, and the rest in the store.

``[alerts] state = "redis"`` (with ``[coordination] url``): timezones, preferences, today's counts, stored alerts,
held alerts and alert states (``pam_alerts``) stay in the store's book; the per-fingerprint dedupe state that the
pipeline decides with comes from :class:`pamd.alerts.redis_state.RedisAlertState`, so a new leader knows what the
previous one sent. The semantics are the store book's (:class:`pamd.alerts.book.AlertBook`).

Writes, per batch: (1) a fence check against ``{prefix}:epoch``, so a stale leader writes nothing anywhere;
(2) the store's ``record_decisions``, unchanged: the accepted alerts, the store's own fence, and its
``pam_alert_state``, kept as a mirror that dedupe never reads in this mode, whose sweep (in the same transaction)
marks the alerts still held for resolved conditions ``resolved``, exactly as with ``state = "store"``;
(3) the Redis state and its sweep, whose resolved fingerprints are returned. The alerts are stored before the state
that suppresses their repeats: a failure between (2) and (3) can send an alert again at the next tick, never lose
one. The mirror also keeps the store's state current should the deployment switch back to ``state = "store"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from pamd.alerts.book import AlertBook, AlertContext
from pamd.alerts.decide import AlertState, Decision
from pamd.alerts.seen import TickFingerprints
from pamd.model import Alert

if TYPE_CHECKING:  # redis-py is imported only when the Redis state is configured
    from pamd.alerts.redis_state import RedisAlertState
    from pamd.config import Config
    from pamd.store.base import Store


class RedisStateBook:
    """:class:`AlertBook` over ``store`` (everything but dedupe state) and ``state`` (dedupe state in Redis)."""

    def __init__(self, store: AlertBook, state: RedisAlertState) -> None:
        self.store = store
        self.state = state

    async def alert_states(self, fingerprints: Sequence[str]) -> dict[str, AlertState]:
        """The dedupe states, from Redis."""
        return await self.state.load(list(fingerprints))

    async def alert_context(self, monitor: str, alerts: Sequence[Alert], now: datetime) -> AlertContext:
        """The store's context."""
        return await self.store.alert_context(monitor, alerts, now)

    async def record_decisions(
        self,
        monitor: str,
        decisions: Sequence[Decision],
        now: datetime,
        *,
        scheduled_at: datetime | None = None,
        sweep_user: str | None = None,
        sweep: bool = False,
        seen: TickFingerprints | None = None,
        epoch: int = 0,
    ) -> list[str]:
        """See :meth:`pamd.alerts.book.AlertBook.record_decisions` and the module docstring for the order (the
        Redis state marks what each call decided, so ``seen`` is the store's)."""
        epoch = max((d.alert.epoch for d in decisions), default=epoch)
        await self.state.check_epoch(epoch)
        await self.store.record_decisions(monitor, decisions, now, scheduled_at=scheduled_at, sweep_user=sweep_user,
                                          sweep=sweep, seen=seen, epoch=epoch)
        return await self.state.record(monitor, decisions, now, sweep=sweep, sweep_user=sweep_user, epoch=epoch)

    async def mark_alerts(self, alert_ids: Sequence[str], state: str, now: datetime) -> None:
        """See :meth:`pamd.alerts.book.AlertBook.mark_alerts` (the store's)."""
        await self.store.mark_alerts(alert_ids, state, now)

    async def due_held_alerts(self, now: datetime, limit: int = 500) -> list[Alert]:
        """See :meth:`pamd.alerts.book.AlertBook.due_held_alerts` (the store's)."""
        return await self.store.due_held_alerts(now, limit)

    async def ping(self) -> None:
        """Raise if Redis does not answer (the store is pinged on its own)."""
        await self.state.ping()

    async def aclose(self) -> None:
        """Close the Redis client; the store belongs to whoever opened it."""
        await self.state.aclose()


def open_alert_book(config: Config, store: Store) -> Store | RedisStateBook:
    """The pipeline's alert book for ``[alerts] state``: the store itself (``"store"``), or a
    :class:`RedisStateBook` over it and the ``[coordination]`` Redis (``"redis"``). Nothing connects yet; close a
    returned :class:`RedisStateBook` (not the store) with ``aclose`` on shutdown."""
    if config.alerts.state != "redis" or not isinstance(store, AlertBook):
        return store
    from pamd.alerts.redis_state import RedisAlertState

    return RedisStateBook(store, RedisAlertState(config.coordination.url, config.coordination.prefix))
