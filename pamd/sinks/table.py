"""Table sink: each alert becomes a row of the app's ``notifications`` table in the store, once per alert id.

``[sinks.table]`` (off unless configured). The row: ``id`` and ``alert_id`` the alert id (so a retried delivery
inserts nothing), ``user_id``, ``type`` (the alert kind), ``priority``, ``title``, ``body``, ``data`` (JSON with the
monitor, facts, actions and fingerprint: :func:`notification_data`), ``created_at``, ``expires_at``; ``read_at`` is
the app's.

A tick's burst is written a batch at a time (:class:`pamd.sinks.base.BatchSink`): one statement for up to
:data:`pamd.alerts.delivery.BATCH` alerts. A row per alert, each with its own round trip and pooled connection,
reached 2,205 alerts/s on Postgres (50,000 alerts through the pipeline; 13,835/s batched): a first budget tick of
214,000 alerts would have spent over a minute and a half in this sink.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import msgspec

from pamd.model import Alert
from pamd.sinks.base import Sink, SinkConfigError


@runtime_checkable
class NotificationWriter(Protocol):
    """A store that can write notification rows (:class:`pamd.store.sqlite.SQLiteStore` can)."""

    async def add_notifications(self, alerts: Sequence[Alert], table: str) -> int:
        """Insert each of ``alerts`` into ``table`` unless a row for its id exists, all in one transaction; how
        many rows were inserted."""
        ...


def notification_data(alert: Alert) -> dict[str, Any]:
    """The ``data`` column of ``alert``'s notification row."""
    return {"monitor": alert.monitor, "facts": alert.facts, "actions": alert.actions, "fingerprint": alert.fingerprint}


class TableOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    table: str = "notifications"
    """The table to insert into (an existing schema may name it otherwise)."""


class TableSink(Sink):
    """Insert each alert into the store's notifications table (see the module docstring)."""

    name: ClassVar[str] = "table"
    config_type: ClassVar[type[Any] | None] = TableOptions

    def __init__(self, options: TableOptions | dict[str, Any], state_dir: Path | None = None) -> None:
        try:
            self.options = options if isinstance(options, TableOptions) else msgspec.convert(options, TableOptions)
        except msgspec.ValidationError as exc:
            raise SinkConfigError("", str(exc)) from exc
        if not self.options.table.replace("_", "").isalnum() or self.options.table[0].isdigit():
            raise SinkConfigError("table", f"not a plain table name: {self.options.table!r}")
        self.store: NotificationWriter | None = None

    def bind_store(self, store: object) -> None:
        """Keep ``store``; it must be able to write notifications."""
        if not isinstance(store, NotificationWriter):
            raise TypeError(f"the table sink needs a store that writes notifications; {type(store).__name__} "
                            "does not")
        self.store = store

    async def deliver(self, alert: Alert) -> None:
        await self.deliver_batch([alert])

    async def deliver_batch(self, alerts: Sequence[Alert]) -> None:
        """Write ``alerts`` in one statement (all or none): see :class:`pamd.sinks.base.BatchSink`."""
        if self.store is None:
            raise RuntimeError("the table sink has no store (bind_store was not called)")
        await self.store.add_notifications(alerts, self.options.table)
