"""The coordinator protocol."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol


class Coordinator(Protocol):
    """Decides whether this replica schedules, and claims each tick so it runs at most once."""

    identity: str

    @property
    def epoch(self) -> int:
        """Fencing token of the current leadership term (monotonic)."""

    def is_leader(self) -> bool: ...

    async def start(self) -> None:
        """Load persisted state / begin campaigning."""

    async def run(self) -> None:
        """Campaign for leadership and keep it (runs in the daemon's task group until cancelled)."""

    async def claim_tick(self, monitor: str, scheduled_at: datetime) -> bool:
        """True if this replica may run ``(monitor, scheduled_at)``; False if it ran or was claimed already."""

    async def last_tick(self, monitor: str) -> datetime | None:
        """The latest claimed scheduled time of ``monitor``, for catching up after downtime."""

    async def ping(self) -> None:
        """Raise if the coordination backend is unreachable."""

    async def aclose(self) -> None: ...

    def status(self) -> dict[str, Any]: ...
