"""The sink protocol."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from pamd.model import Alert


class Sink:
    """Delivers alerts somewhere. Sinks never decide whether an alert should exist; they only deliver it.

    ``deliver`` must be idempotent on ``alert.id`` (delivery is at-least-once).
    """

    name: ClassVar[str] = ""
    config_type: ClassVar[type[Any] | None] = None

    async def deliver(self, alert: Alert) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release resources; called on shutdown and reload."""


SinkFactory = Callable[[Any, Path], Sink]
"""``factory(options, state_dir)`` builds a sink from its validated ``[sinks.<name>]`` options (an instance of the
factory's ``config_type``, else a dict) and the daemon's state directory (for sinks that keep files)."""
