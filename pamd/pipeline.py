"""The alert pipeline: stamp each candidate and hand it to every sink.

Dedupe, preferences, quiet hours and the durable outbox extend this in later stages; monitors never deliver and
sinks never decide.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime

from pamd.metrics import Metrics
from pamd.model import Alert, new_alert_id
from pamd.sinks.base import Sink

log = logging.getLogger("pamd.pipeline")


class AlertPipeline:
    def __init__(self, sinks: dict[str, Sink], metrics: Metrics) -> None:
        self.sinks = sinks
        self.metrics = metrics

    async def submit(self, monitor: str, alerts: Iterable[Alert], *, epoch: int, dry_run: bool = False) -> list[Alert]:
        """Stamp ``alerts`` and deliver them (unless ``dry_run``); returns the stamped alerts."""
        accepted = []
        for alert in alerts:
            self._stamp(alert, monitor, epoch)
            accepted.append(alert)
            if dry_run:
                self.metrics.alerts.labels(monitor, alert.priority.value, "dry_run").inc()
                continue
            ok = await self._deliver(alert)
            self.metrics.alerts.labels(monitor, alert.priority.value, "delivered" if ok else "failed").inc()
        return accepted

    @staticmethod
    def _stamp(alert: Alert, monitor: str, epoch: int) -> None:
        alert.monitor = monitor
        alert.epoch = epoch
        alert.id = alert.id or new_alert_id()
        alert.created_at = alert.created_at or datetime.now(UTC)
        alert.fingerprint = alert.fingerprint or alert.default_fingerprint()

    async def _deliver(self, alert: Alert) -> bool:
        ok = True
        for name, sink in self.sinks.items():
            try:
                await sink.deliver(alert)
            except Exception as exc:
                ok = False
                self.metrics.deliveries.labels(name, "error").inc()
                log.error("sink %s failed to deliver alert %s: %s", name, alert.id, exc,
                          extra={"sink": name, "alert_id": alert.id, "monitor": alert.monitor})
            else:
                self.metrics.deliveries.labels(name, "success").inc()
        return ok

    async def aclose(self) -> None:
        for sink in self.sinks.values():
            try:
                await sink.aclose()
            except Exception as exc:
                log.warning("sink close failed: %s", exc)
