"""The sink protocol."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from pamd.model import Alert


class PermanentDeliveryError(Exception):
    """Raised by a sink when retrying cannot help (the receiver refused the alert: an HTTP 4xx other than 408/429,
    a payload it rejects). Any other exception from :meth:`Sink.deliver` is taken as transient and retried."""


class TransientDeliveryError(Exception):
    """A delivery attempt failed in a way that may succeed later (receiver down, overloaded, timed out,
    unreachable). Raising it is optional (any exception other than :class:`PermanentDeliveryError` is transient);
    it carries ``retry_after``, the seconds the receiver asked to wait (HTTP ``Retry-After``), or ``None``."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SinkConfigError(ValueError):
    """A sink's options cannot be used (raised by its factory); ``key`` names the offending key of its
    ``[sinks.<name>]`` table, ``""`` the table as a whole."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = key


class Sink:
    """Delivers alerts somewhere. Sinks never decide whether an alert should exist; they only deliver it.

    ``deliver`` must be idempotent on ``alert.id`` (delivery is at-least-once). It raises
    :class:`PermanentDeliveryError` for a final refusal and any other exception for a transient failure.
    """

    name: ClassVar[str] = ""
    config_type: ClassVar[type[Any] | None] = None
    concurrency: int = 1
    """Deliveries a delivery round has in flight at once, each for another user (a user's alerts always go one
    after another, in order). 1: one at a time, in the order the alerts were stored. A sink whose receiver is a
    round trip away (``webhook``) sets more. ``deliver`` may be called concurrently whatever this says: a tick's
    two batches in flight are two rounds (of different users)."""

    async def deliver(self, alert: Alert) -> None:
        raise NotImplementedError

    def bind_store(self, store: object) -> None:
        """Called with the daemon's store before the first delivery. Sinks that write to it (``table``) keep it and
        raise :class:`TypeError` if it cannot do what they need; others ignore it."""

    async def aclose(self) -> None:
        """Release resources; called on shutdown and reload."""


@runtime_checkable
class BatchSink(Protocol):
    """A sink that can also deliver many alerts in one round trip (the Redis and table sinks). The delivery worker
    hands it up to a few hundred alerts at once, in order; it succeeds for all of them or raises (for all of them),
    with :meth:`Sink.deliver`'s idempotency and exceptions."""

    async def deliver_batch(self, alerts: Sequence[Alert]) -> None:
        """Deliver ``alerts`` in order, all of them or (raising) none that was not delivered before."""


SinkFactory = Callable[[Any, Path], Sink]
"""``factory(options, state_dir)`` builds a sink from its validated ``[sinks.<name>]`` options (an instance of the
factory's ``config_type``, else a dict) and the daemon's state directory (for sinks that keep files)."""
