"""Coordination between replicas: who schedules, and which ticks have run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pamd.coordination.base import Coordinator
from pamd.coordination.local import LocalCoordinator

if TYPE_CHECKING:
    from pamd.metrics import Metrics

__all__ = ["Coordinator", "LocalCoordinator", "open_coordinator"]


def open_coordinator(
    url: str, prefix: str, state_dir: str, metrics: Metrics | None = None, lease_ttl: float = 10.0
) -> Coordinator:
    """The coordinator for ``[coordination] url``: empty means this single replica (local); ``redis://``,
    ``rediss://`` (TLS), ``unix://``, ``redis+sentinel://`` or ``rediss+sentinel://`` (the master that Redis
    Sentinel names) elect a leader among replicas sharing that Redis and ``prefix``. Nothing connects until the
    coordinator starts; a bad URL raises ValueError (one line, password redacted)."""
    if not url:
        return LocalCoordinator(state_dir, metrics)
    from pamd.coordination.redis_url import SCHEMES, url_scheme

    scheme = url_scheme(url)
    if not scheme:  # not echoed: it may hold a password
        raise ValueError(f"not a URL (expected e.g. redis://host:6379/0; supported schemes: "
                         f"{', '.join(s + '://' for s in SCHEMES)})")
    if scheme in SCHEMES:
        from pamd.coordination.redis import RedisCoordinator

        return RedisCoordinator(url, prefix, ttl=lease_ttl, metrics=metrics)
    raise ValueError(f"unsupported coordination url scheme {scheme!r} (supported: empty for local, "
                     f"{', '.join(s + '://' for s in SCHEMES)})")
