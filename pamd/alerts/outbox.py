"""The outbox's interface to storage: per-sink delivery attempts that did not succeed at once.

An accepted alert is stored (``pam_alerts``, state ``pending``) before any sink sees it. Deliveries that succeed at
the first attempt leave no trace here; one that fails is remembered as a :class:`Delivery` (``pending`` with a next
attempt time, or ``failed`` when the sink refused it for good, or ``expired``), and later alerts of the same user for
that sink queue behind it, so each user's alerts reach each sink in order. The delivery worker
(:mod:`pamd.alerts.delivery`) retries them and resumes alerts a crash left ``pending``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

import msgspec

from pamd.model import Alert

DeliveryState = Literal["pending", "delivered", "failed", "expired"]


class Delivery(msgspec.Struct, kw_only=True):
    """One (alert, sink) delivery that is not simply done."""

    alert_id: str
    sink: str
    user_id: str
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime
    last_error: str | None = None


@runtime_checkable
class OutboxBook(Protocol):
    """What the delivery worker needs from the store. :class:`pamd.store.sqlite.SQLiteStore` implements it."""

    async def queued_users(self, sinks: Sequence[str], users: Sequence[str]) -> set[tuple[str, str]]:
        """The ``(sink, user)`` pairs among ``sinks`` x ``users`` with a pending delivery (new alerts wait behind)."""
        ...

    async def save_deliveries(self, deliveries: Sequence[Delivery], now: datetime) -> None:
        """Insert or replace these deliveries (keyed by alert id and sink)."""
        ...

    async def due_deliveries(self, now: datetime, limit: int = 500) -> list[tuple[Delivery, Alert]]:
        """Pending deliveries that may be tried at ``now``: for each (sink, user) its oldest pending one if due, and
        the ones queued behind it, oldest first; with their alerts."""
        ...

    async def stuck_alerts(self, before: datetime, limit: int = 500) -> list[Alert]:
        """Alerts still ``pending`` that were stored before ``before`` and have no delivery record: a crash (or a
        lost leadership) came between storing and delivering them."""
        ...

    async def settle_alerts(self, alert_ids: Sequence[str], now: datetime) -> dict[str, str]:
        """Set each alert's state from its deliveries: ``delivered`` when none is pending or failed, ``failed`` when
        one was refused or expired and none is pending; unchanged while one is pending. Returns the new states."""
        ...

    async def mark_alerts(self, alert_ids: Sequence[str], state: str, now: datetime) -> None:
        """Set the state of stored alerts (as :meth:`pamd.alerts.book.AlertBook.mark_alerts`)."""
        ...

    async def outbox_size(self) -> int:
        """Stored alerts not yet delivered to every sink (state ``pending``)."""
        ...
