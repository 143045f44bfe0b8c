"""The built-in maintenance monitor (DESIGN.md section 7)."""

from __future__ import annotations

from collections.abc import Callable

import pamd


@pamd.hookimpl
def register_monitors(register: Callable[[pamd.Monitor], None]) -> None:
    """Register the maintenance monitor."""
