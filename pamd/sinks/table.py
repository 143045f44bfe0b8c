"""Table sink: each alert becomes a row of the app's ``notifications`` table in the store, once per alert id.

``[sinks.table]`` (off unless configured). The row: ``id`` and ``alert_id`` the alert id (so a retried delivery
inserts nothing), ``user_id``, ``type`` (the alert kind), ``priority``, ``title``, ``body``, ``data`` (JSON with the
monitor, facts, actions and fingerprint), ``created_at``, ``expires_at``; ``read_at`` is the app's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import msgspec

from pamd.model import Alert
from pamd.sinks.base import Sink, SinkConfigError


@runtime_checkable
class NotificationWriter(Protocol):
    """A store that can write notification rows (:class:`pamd.store.sqlite.SQLiteStore` can)."""

    async def add_notification(self, alert: Alert, table: str) -> bool:
        """Insert ``alert`` into ``table`` unless a row for its id exists; True if it inserted one."""
        ...


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
        if self.store is None:
            raise RuntimeError("the table sink has no store (bind_store was not called)")
        await self.store.add_notification(alert, self.options.table)
