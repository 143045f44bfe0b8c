"""Coordination between replicas: who schedules, and which ticks have run."""

from pamd.coordination.base import Coordinator
from pamd.coordination.local import LocalCoordinator

__all__ = ["Coordinator", "LocalCoordinator", "open_coordinator"]


def open_coordinator(url: str, prefix: str, state_dir: str) -> Coordinator:
    """The coordinator for ``[coordination] url``: empty means this single replica (local)."""
    if not url:
        return LocalCoordinator(state_dir)
    scheme = url.split("://", 1)[0]
    raise ValueError(f"unsupported coordination url scheme {scheme!r} (supported here: empty for local)")
