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
    from pamd.providers import Providers
    from pamd.store.base import Store

MonitorResult = AsyncIterator[Alert] | AsyncIterable[Alert] | Awaitable[Iterable[Alert] | None]
"""What ``Monitor.run`` may produce: an async generator of alerts, or a coroutine returning an iterable of them."""

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Explanation:
    """One step of a monitor's reasoning about one user (see :meth:`MonitorContext.explain`)."""

    user_id: str
    step: str
    data: dict[str, Any]


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
    cooldown: ClassVar[float] = 6 * 3600.0
    """Seconds during which an alert with the same fingerprint and no higher priority is not sent again."""
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
    providers: Providers | None = None
    explanation: list[Explanation] | None = None
    degradations: list[str] = field(default_factory=list)

    def now(self) -> datetime:
        """The current time (UTC, timezone-aware); replaceable in tests."""
        return self.clock()

    @property
    def explaining(self) -> bool:
        """True when ``pamd explain`` is running this tick: :meth:`explain` records; skip costly extras if not."""
        return self.explanation is not None

    def explain(self, user_id: str, step: str, **data: Any) -> None:
        """Record one step of the reasoning about ``user_id`` (facts computed, rule outcome, why no alert).

        A no-op unless ``pamd explain`` runs the tick, so it is cheap to call for every user. ``data`` values
        should be JSON-friendly (numbers, strings, msgspec Structs, lists, dicts).
        """
        if self.explanation is not None:
            self.explanation.append(Explanation(user_id, step, data))

    def degraded(self, reason: str) -> None:
        """Report that this tick's result is incomplete (a provider failed, say): it is logged, counted, shown
        in ``/status``, and the pipeline does not treat alerts missing from this tick as resolved conditions."""
        if reason not in self.degradations:
            self.degradations.append(reason)
            self.logger.warning("monitor %s degraded: %s", self.monitor, reason, extra={"monitor": self.monitor})

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
