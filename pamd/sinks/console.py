"""Console sink: one readable line per alert on standard output (logs go to standard error)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, ClassVar, TextIO

import msgspec

from pamd.model import Alert
from pamd.sinks.base import Sink


class ConsoleOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    show_body: bool = True


class ConsoleSink(Sink):
    name: ClassVar[str] = "console"
    config_type: ClassVar[type[Any] | None] = ConsoleOptions

    def __init__(
        self, options: ConsoleOptions | dict[str, Any], state_dir: Path | None = None, stream: TextIO | None = None
    ) -> None:
        self.options = options if isinstance(options, ConsoleOptions) else ConsoleOptions()
        self.stream = stream

    async def deliver(self, alert: Alert) -> None:
        stream = self.stream or sys.stdout
        line = f"[{alert.priority.value.upper():>6}] {alert.monitor} → {alert.user_id}: {alert.title}"
        if self.options.show_body and alert.body:
            line += f" — {alert.body}"
        stream.write(line + "\n")
        stream.flush()
