"""The hooks a pamd plugin may implement.

Each hook receives a ``register`` callback (the style of Simon Willison's ``llm``): a plugin calls it once per thing
it contributes. Built-in plugins use exactly these hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from pamd.monitor import Monitor
    from pamd.sinks.base import SinkFactory

PROJECT = "pamd"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_monitors(register: Callable[[Monitor], None]) -> None:
    """Register monitors: call ``register(monitor)`` for each :class:`pamd.Monitor` instance."""


@hookspec
def register_sinks(register: Callable[[str, SinkFactory], None]) -> None:
    """Register alert sinks: call ``register(name, factory)``; ``factory(options, state_dir)`` returns a
    :class:`pamd.Sink`. ``options`` is the validated ``[sinks.<name>]`` table (an instance of the factory's
    ``config_type`` if it has one, else a dict).
    """


def hook_names() -> frozenset[str]:
    """Names of every hook defined here (used to reject misspelled hook implementations)."""
    return frozenset(name for name, value in globals().items() if _is_hookspec(value))


def _is_hookspec(value: Any) -> bool:
    return callable(value) and hasattr(value, f"{PROJECT}_spec")
