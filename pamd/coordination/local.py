"""The single-replica coordinator: always leader; claims and the fencing epoch persist in the state directory."""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pamd.metrics import Metrics

STATE_FILE = "schedule-state.json"


class LocalCoordinator:
    """Always the leader. Remembers the last claimed tick per monitor so a restart neither repeats a tick nor
    forgets the ticks it missed while down; each start begins a new epoch."""

    def __init__(self, state_dir: str | Path, metrics: Metrics | None = None) -> None:
        self.path = Path(state_dir) / STATE_FILE
        self.metrics = metrics
        self.identity = f"{socket.gethostname()}:{os.getpid()}"
        self._epoch = 0
        self._last: dict[str, datetime] = {}
        self._fd: int | None = None
        self._size = 0

    @property
    def epoch(self) -> int:
        return self._epoch

    def is_leader(self) -> bool:
        return True

    async def start(self) -> None:
        state = self._read()
        self._epoch = int(state.get("epoch", 0)) + 1
        self._last = {name: datetime.fromisoformat(ts) for name, ts in state.get("last_tick", {}).items()}
        self._write()
        if self.metrics is not None:
            self.metrics.leader.set(1)
            self.metrics.leader_epoch.set(self._epoch)

    async def run(self) -> None:
        """Nothing to campaign for: a single replica always leads."""

    async def claim_tick(self, monitor: str, scheduled_at: datetime) -> bool:
        last = self._last.get(monitor)
        if last is not None and scheduled_at <= last:
            return False
        self._last[monitor] = scheduled_at
        self._write()
        return True

    async def last_tick(self, monitor: str) -> datetime | None:
        return self._last.get(monitor)

    async def ping(self) -> None:
        if not os.access(self.path.parent, os.W_OK):
            raise OSError(f"state directory {self.path.parent} is not writable")

    async def aclose(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def status(self) -> dict[str, Any]:
        return {"backend": "local", "identity": self.identity, "leader": True, "epoch": self._epoch}

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise OSError(f"{self.path}: unreadable schedule state ({exc}); move it aside to start afresh") from exc
        return data if isinstance(data, dict) else {}

    def _write(self) -> None:
        """Rewrite the state in place with one ``pwrite`` (padded to the previous length, so no truncate).

        This runs on every tick: a write-temp-and-rename cost several times more (a rename is a directory
        update). A single write of a few hundred bytes is all or nothing when the process dies; like the rename
        it is not fsynced, so a power cut may lose the last claims, costing at most one repeated tick per monitor.
        """
        payload = {"epoch": self._epoch, "last_tick": {k: v.isoformat() for k, v in self._last.items()}}
        data = json.dumps(payload).encode()
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            self._size = os.fstat(self._fd).st_size
        padded = data.ljust(self._size)
        os.pwrite(self._fd, padded, 0)
        self._size = len(padded)
