"""The interface between the alert pipeline and where its memory lives (the Store; Redis later).

An "alert book" remembers, per fingerprint, the last alert sent for a condition (dedupe and cooldown survive
restarts), keeps every accepted alert with its state (``pam_alerts``), and answers what the pipeline needs to decide:
users' timezones and preferences and how many alerts each already got today.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

import msgspec

from pamd.alerts.decide import AlertState, Decision
from pamd.alerts.prefs import PreferenceRow
from pamd.alerts.seen import TickFingerprints
from pamd.model import Alert


class FencedError(Exception):
    """A write carried the epoch of a leadership term older than one that already wrote: its leader lost the lease
    (a pause, a partition) and must not deliver anything."""


class AlertContext(msgspec.Struct, kw_only=True):
    """What the pipeline needs to decide a batch of one monitor's alerts.

    ``sent_today[user]`` and ``sent_today_by_monitor[user]`` count the user's accepted non-urgent alerts since
    their local midnight: of every monitor, and of this monitor.
    """

    timezones: dict[str, str] = msgspec.field(default_factory=dict)
    preferences: dict[str, list[PreferenceRow]] = msgspec.field(default_factory=dict)
    states: dict[str, AlertState] = msgspec.field(default_factory=dict)
    sent_today: dict[str, int] = msgspec.field(default_factory=dict)
    sent_today_by_monitor: dict[str, int] = msgspec.field(default_factory=dict)


@runtime_checkable
class AlertBook(Protocol):
    """Storage for the alert pipeline. :class:`pamd.store.sqlite.SQLiteStore` implements it."""

    async def alert_states(self, fingerprints: Sequence[str]) -> dict[str, AlertState]:
        """The dedupe states of those of ``fingerprints`` that have one."""
        ...

    async def alert_context(self, monitor: str, alerts: Sequence[Alert], now: datetime) -> AlertContext:
        """Load timezones, preferences and today's counts for ``alerts``' users (``states`` is left empty: the
        pipeline reads them first, with :meth:`alert_states`, and asks for the rest only for alerts not in
        cooldown)."""
        ...

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
        """In one transaction: store accepted alerts (``pending`` or ``held``), remember their fingerprints,
        and, if ``sweep``, forget this monitor's fingerprints (of ``sweep_user`` only, if given) that the tick did
        not decide: those conditions are resolved, and alerts still held for them are dropped. Returns the
        resolved fingerprints.

        What the tick decided: ``seen``, given with the sweep, holds every fingerprint of the tick's calls (this
        one's included); without it, this call's decisions are the whole tick. A book may instead mark each
        decided fingerprint as seen at ``now``, call by call, and sweep those not seen at ``now`` (the Supabase
        and Redis books do); either way, a state written after ``now`` (by a later run) survives the sweep.

        Fencing: the tick's ``epoch`` (a leadership term, >= 1; the decisions' own epochs count too, so an empty
        sweep is fenced as well) must not be older than the newest epoch that already wrote, else
        :class:`FencedError` is raised and nothing is written. Epoch 0 (a one-off
        ``pamd trigger`` outside any term) is not fenced."""
        ...

    async def mark_alerts(self, alert_ids: Sequence[str], state: str, now: datetime) -> None:
        """Set the state of stored alerts (``delivered``, ``failed``, ``expired``)."""
        ...

    async def due_held_alerts(self, now: datetime, limit: int = 500) -> list[Alert]:
        """Held alerts whose quiet hours ended by ``now`` (expired ones included: the caller drops them)."""
        ...
