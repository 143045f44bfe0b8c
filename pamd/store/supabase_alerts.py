"""The alert book and the outbox on Supabase (:class:`pamd.alerts.book.AlertBook`,
:class:`pamd.alerts.outbox.OutboxBook`, :class:`pamd.sinks.table.NotificationWriter`).

Reads are the Postgres store's own (:mod:`pamd.store.pg_alerts`, through
:class:`~pamd.store.supabase_base.RpcConnection`). Each write that the Postgres store makes in a transaction is one
RPC function of ``schema_supabase.sql`` here, so it stays atomic: ``record_decisions`` checks the epoch fence and
writes alerts, dedupe state, seen marks and the sweep in one transaction, holding the fence's row lock to the end.
Alert facts travel as the JSON msgspec makes of them (as the Postgres store writes them), so an alert read back is
the alert that was stored, key order included.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from pamd.alerts.decide import Decision
from pamd.alerts.outbox import Delivery
from pamd.alerts.seen import TickFingerprints
from pamd.model import Alert
from pamd.sinks.table import notification_data
from pamd.store.pg_alerts import PostgresOutboxQueries
from pamd.store.pg_base import pg_ts
from pamd.store.supabase_base import SupabaseBase, to_json_value


def _as_json(value: object) -> Any:
    """``value`` as the JSON msgspec makes of it (what the Postgres store stores), as builtins."""
    return msgspec.json.decode(msgspec.json.encode(value))


class SupabaseOutboxQueries(PostgresOutboxQueries, SupabaseBase):
    """The alert book and outbox over PostgREST: the Postgres store's reads, and its writes as RPC functions."""

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
        """See :meth:`pamd.alerts.book.AlertBook.record_decisions` (raises :class:`~pamd.alerts.book.FencedError`
        for an older epoch, as the Postgres store does). Each call marks what it decided as seen, in the RPC
        function, so the sweep needs no ``seen``: a tick's whole set would be one request body of megabytes."""
        stamp = pg_ts(now)
        alerts: list[dict[str, Any]] = []
        states: list[dict[str, Any]] = []
        for d in decisions:
            a = d.alert
            if not d.accepted:
                continue
            alerts.append({
                "id": a.id, "user_id": a.user_id, "monitor": a.monitor, "kind": a.kind,
                "priority": a.priority.value, "title": a.title, "body": a.body, "facts": _as_json(a.facts),
                "actions": _as_json(a.actions), "fingerprint": a.fingerprint, "epoch": a.epoch,
                "state": "held" if d.outcome == "held" else "pending",
                "scheduled_at": pg_ts(scheduled_at) if scheduled_at else None,
                "created_at": pg_ts(a.created_at or now), "expires_at": pg_ts(a.expires_at) if a.expires_at else None,
                "deliver_after": pg_ts(d.release_at) if d.release_at else None,
            })
            # A held alert reaches the user when quiet hours end: its cooldown runs from then.
            states.append({
                "fingerprint": a.fingerprint, "user_id": a.user_id, "monitor": a.monitor, "kind": a.kind,
                "priority": a.priority.value, "last_alert_id": a.id,
                "last_sent_at": pg_ts(d.release_at) if d.release_at else stamp, "last_seen_at": stamp,
                "epoch": a.epoch,
            })
        marked = sorted({d.alert.fingerprint for d in decisions if not d.accepted})  # accepted ones are upserted
        epoch = max((d.alert.epoch for d in decisions), default=epoch)
        resolved = await self._rpc("pamd_record_decisions", {
            "p_alerts": alerts, "p_states": states, "p_seen": marked, "p_stamp": stamp, "p_monitor": monitor,
            "p_sweep": sweep, "p_sweep_user": sweep_user, "p_epoch": epoch,
        }, idempotent=False)
        return [str(f) for f in resolved]

    async def mark_alerts(self, alert_ids: Sequence[str], state: str, now: datetime) -> None:
        """See :meth:`pamd.alerts.book.AlertBook.mark_alerts`."""
        if alert_ids:
            await self._rpc("pamd_mark_alerts", {"p_ids": list(alert_ids), "p_state": state, "p_stamp": pg_ts(now)},
                            idempotent=True)

    async def save_deliveries(self, deliveries: Sequence[Delivery], now: datetime) -> None:
        """See :meth:`pamd.alerts.outbox.OutboxBook.save_deliveries`."""
        stamp = pg_ts(now)
        rows = [{"alert_id": d.alert_id, "sink": d.sink, "user_id": d.user_id, "state": d.state,
                 "attempts": d.attempts, "next_attempt_at": pg_ts(d.next_attempt_at), "last_error": d.last_error,
                 "updated_at": stamp} for d in deliveries]
        if rows:  # an upsert of the same values: safe to retry
            await self._rpc("pamd_save_deliveries", {"p_rows": rows}, idempotent=True)

    async def settle_alerts(self, alert_ids: Sequence[str], now: datetime) -> dict[str, str]:
        """See :meth:`pamd.alerts.outbox.OutboxBook.settle_alerts`."""
        if not alert_ids:
            return {}
        settled = await self._rpc("pamd_settle_alerts", {"p_ids": sorted(set(alert_ids)), "p_stamp": pg_ts(now)},
                                  idempotent=False)
        return {str(k): str(v) for k, v in settled.items()}

    async def add_notifications(self, alerts: Sequence[Alert], table: str = "notifications") -> int:
        """The ``table`` sink's write: a row per alert id not there yet, in one request (``POST /rest/v1/<table>``
        with a JSON array, duplicates ignored); how many were new."""
        from postgrest.types import CountMethod, ReturnMethod

        if not alerts:
            return 0
        now = pg_ts(datetime.now(UTC))
        rows = [{k: to_json_value(v) for k, v in {
                    "id": a.id, "user_id": a.user_id, "alert_id": a.id, "type": a.kind, "priority": a.priority.value,
                    "title": a.title, "body": a.body, "data": _as_json(notification_data(a)),
                    "created_at": pg_ts(a.created_at) if a.created_at else now,
                    "expires_at": pg_ts(a.expires_at) if a.expires_at else None}.items()}
                for a in alerts]
        response = await self.rest.run(
            f"insert into {table}",
            lambda c: c.table(table).upsert(rows, ignore_duplicates=True, on_conflict="id", count=CountMethod.exact,
                                            returning=ReturnMethod.minimal),
            idempotent=True)
        return int(response.count or 0)
