"""A tick's alerts handed to the pipeline while the monitor is still running.

A monitor that walks users in pages yields each user's alerts together. :class:`AlertStream` stamps every alert as
it comes, gathers whole users, and once :data:`~pamd.pipeline.BATCH` alerts are waiting and a new user begins,
hands them to the tick's :class:`~pamd.pipeline.TickSubmission` in the background: the pipeline decides, stores and
delivers them while the monitor reads and evaluates the next users, and nothing of the tick has to be kept until
its end. At most one part is in the pipeline while the next is gathered, so memory stays at a few batches.

Handing over a part requires that its users are finished. A user who comes back after other users (a monitor that
does not group alerts by user) is noticed (every user seen so far is remembered: one set entry per alerting user),
and from then on the rest of the tick is gathered, packed (:class:`~pamd.model.PackedAlerts`), and handed over at
the end, as a whole tick was before. That user's later alerts are then decided against what the earlier part
stored: a repeat is suppressed by its cooldown rather than merged in the tick.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime

from pamd.model import Alert, PackedAlerts
from pamd.pipeline import BATCH, Submitted, TickSubmission, stamp

log = logging.getLogger("pamd.pipeline")


class AlertStream:
    """Feeds ``session`` with the alerts of one attempt of a tick (see the module docstring). ``add`` is the sink
    for :func:`pamd.runner.collect`; :meth:`finish` hands over the rest and closes the session; after a failure,
    :meth:`settle` completes the parts already handed over; :meth:`aclose` cancels what is left and releases
    everything."""

    def __init__(
        self, session: TickSubmission, monitor: str, epoch: int, now: datetime, batch: int | None = None,
        pause: Callable[[], AbstractContextManager[object]] = nullcontext,
    ) -> None:
        self.session, self.monitor, self.epoch, self.now = session, monitor, epoch, now
        self.batch = batch or BATCH
        self.pause = pause  # entered while the monitor waits for the pipeline (the runner stops its timeout)
        self._part: list[Alert] = []
        self._user: str | None = None
        self._seen: set[str] = set()
        self._packed: PackedAlerts | None = None  # set once a user came back: the rest is handed over at the end
        self._in_pipeline: asyncio.Future[None] | None = None

    def add(self, alert: Alert) -> Awaitable[None] | None:
        """Take one alert; returns an awaitable when a part is ready to go (the caller awaits it: that waits only
        while the previous part is still in the pipeline)."""
        stamp(alert, self.monitor, self.epoch, self.now)
        if self._packed is not None:
            self._packed.append(alert)
            return None
        user = alert.user_id
        if user == self._user:
            self._part.append(alert)
            return None
        if user in self._seen:
            log.info("monitor %s: user %s came back after other users; the rest of the tick is handed to the "
                     "pipeline at its end", self.monitor, user, extra={"monitor": self.monitor})
            self._packed = PackedAlerts()
            for waiting in self._part:
                self._packed.append(waiting)
            self._packed.append(alert)
            self._part = []
            return None
        self._seen.add(user)
        self._user = user
        if len(self._part) < self.batch:
            self._part.append(alert)
            return None
        ready, self._part = self._part, [alert]
        return self._hand_over(ready)

    async def _hand_over(self, part: list[Alert]) -> None:
        if self._in_pipeline is not None:
            with self.pause():
                await self._in_pipeline  # raises what the previous part raised
        self._in_pipeline = asyncio.ensure_future(self.session.add(part))

    async def finish(self, complete: bool) -> Submitted:
        """Hand over what is left and close the session (``complete``: see :meth:`TickSubmission.close`)."""
        if self._in_pipeline is not None:
            await self._in_pipeline
        if self._packed is not None:
            await self.session.settle()  # its users may be in earlier parts: decide them on what those stored
        rest: list[Alert] | PackedAlerts = self._packed if self._packed is not None else self._part
        await self.session.add(rest, last=True, complete=complete)
        return await self.session.close(complete)

    async def settle(self) -> None:
        """After the monitor failed: let the parts already handed over be stored and delivered (their users were
        evaluated; the retry finds them in cooldown). A failure of the pipeline itself is logged, not raised."""
        try:
            if self._in_pipeline is not None:
                await self._in_pipeline
            await self.session.settle()
        except Exception as exc:
            log.warning("monitor %s: alerts of a failed attempt not all stored: %s", self.monitor, exc,
                        extra={"monitor": self.monitor})

    async def aclose(self) -> None:
        """Stop what is still in the pipeline (a failed or cancelled attempt) and drop the gathered alerts."""
        waiting = self._in_pipeline
        if waiting is not None and not waiting.done():
            waiting.cancel()
            await asyncio.wait([waiting])
        await self.session.abort()
        if self._packed is not None:
            self._packed.close()
        self._part = []
