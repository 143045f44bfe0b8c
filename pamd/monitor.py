"""The monitor API: what a plugin subclasses, and the context each run receives."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import anyio

from pamd.model import Alert

if TYPE_CHECKING:
    from pamd.store.base import Store

MonitorResult = AsyncIterator[Alert] | AsyncIterable[Alert] | Awaitable[Iterable[Alert] | None]
"""What ``Monitor.run`` may produce: an async generator of alerts, or a coroutine returning an iterable of them."""

T = TypeVar("T")
R = TypeVar("R")


class Monitor:
    """Base class for monitors. Subclass it, set ``name`` and implement :meth:`run`.

    Class attributes are defaults; the operator overrides them in ``[monitors.<name>]``. ``config_type`` is an
    optional :class:`msgspec.Struct` holding the monitor's own settings (thresholds...): the remaining keys of its
    config table are validated against it and the instance is passed as ``ctx.config``.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    schedule: ClassVar[str] = "*/5 * * * *"
    timezone: ClassVar[str] = "UTC"
    timeout: ClassVar[float] = 60.0
    retries: ClassVar[int] = 2
    run_at_startup: ClassVar[bool] = False
    concurrency: ClassVar[int] = 8
    config_type: ClassVar[type[Any] | None] = None

    def run(self, ctx: MonitorContext) -> MonitorResult:
        """Evaluate every user (or ``ctx.user_id`` only) and produce alert candidates. Never deliver."""
        raise NotImplementedError


@dataclass(slots=True)
class MonitorContext:
    """Everything one run of a monitor may use. Built by the runner, one per tick."""

    monitor: str
    scheduled_at: datetime
    config: Any = None
    store: Store | None = None
    epoch: int = 0
    user_id: str | None = None
    dry_run: bool = False
    concurrency: int = 8
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("pamd.monitor"))
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def now(self) -> datetime:
        """The current time (UTC, timezone-aware); replaceable in tests."""
        return self.clock()

    async def map_bounded(self, func: Callable[[T], Awaitable[R]], items: Iterable[T]) -> list[R]:
        """Run ``func`` over ``items`` with at most ``concurrency`` calls at once; results in input order."""
        items = list(items)
        results: list[Any] = [None] * len(items)
        limiter = anyio.CapacityLimiter(max(1, self.concurrency))

        async def one(index: int, item: T) -> None:
            async with limiter:
                results[index] = await func(item)

        async with anyio.create_task_group() as tg:
            for index, item in enumerate(items):
                tg.start_soon(one, index, item)
        return results
