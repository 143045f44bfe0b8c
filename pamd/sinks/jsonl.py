"""JSONL sink: appends each alert as one JSON object per line, for tools and tests to read."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import anyio
import msgspec

from pamd.model import Alert
from pamd.sinks.base import Sink


class JsonlOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    path: str = ""
    """File to append to; empty means ``alerts.jsonl`` in the daemon's state directory."""
    fsync: bool = False


class JsonlSink(Sink):
    name: ClassVar[str] = "jsonl"
    config_type: ClassVar[type[Any] | None] = JsonlOptions

    def __init__(self, options: JsonlOptions | dict[str, Any], state_dir: Path) -> None:
        self.options = options if isinstance(options, JsonlOptions) else JsonlOptions()
        self.path = Path(self.options.path) if self.options.path else state_dir / "alerts.jsonl"
        self._encoder = msgspec.json.Encoder()
        self._lock = anyio.Lock()

    async def deliver(self, alert: Alert) -> None:
        line = self._encoder.encode(alert) + b"\n"
        async with self._lock:
            await anyio.to_thread.run_sync(self._append, line)

    def _append(self, line: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One write() of the whole line on an O_APPEND descriptor: readers never see half a record.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line)
            if self.options.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
