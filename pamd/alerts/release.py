"""The leader's background delivery: retry failed deliveries, resume alerts a crash left undelivered, and release
alerts held for quiet hours once those hours end."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial

import anyio

from pamd.config import AlertsSection
from pamd.pipeline import AlertPipeline

log = logging.getLogger("pamd.pipeline")


async def deliver_in_background(
    pipeline: Callable[[], AlertPipeline | None], settings: AlertsSection, is_leader: Callable[[], bool],
    started_at: datetime,
) -> None:
    """Every ``retry_interval`` seconds while this replica leads: retry the outbox's due deliveries and resume
    stored alerts nobody delivered (in the first round, everything stored before this process started at
    ``started_at``: a crash left it; later, what is older than ``resume_after``, which a crashed or deposed leader
    left); every ``release_interval`` seconds, release held alerts. ``pipeline()`` is the current pipeline (it
    changes on reload). Errors are logged once per distinct message and retried next round."""
    errors: dict[str, str] = {}
    first_round = True
    next_release = time.monotonic() + settings.release_interval
    while True:
        await anyio.sleep(settings.retry_interval)
        current = pipeline()
        if current is None or not is_leader():
            continue
        now = datetime.now(UTC)
        # Never "now": this replica's own ticks may be between storing and delivering a batch.
        before = started_at if first_round else now - timedelta(seconds=settings.resume_after)
        first_round = False
        deliverer = current.deliverer
        await _guarded("resuming undelivered alerts", partial(deliverer.resume_stuck, before, now), errors)
        await _guarded("retrying deliveries", partial(deliverer.retry_due, now), errors)
        if time.monotonic() >= next_release:
            next_release = time.monotonic() + settings.release_interval
            released = await _guarded("releasing held alerts", current.release_held, errors)
            if released:
                log.info("released %d alert(s) held for quiet hours", released)
        await _guarded("counting the outbox", deliverer.update_gauge, errors)


async def _guarded(what: str, step: Callable[[], Awaitable[int | None]], errors: dict[str, str]) -> int:
    """Run ``step``; on an error, log it (once while it repeats) and return 0."""
    try:
        result = await step()
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}"
        if errors.get(what) != message:
            log.error("%s failed: %s", what, message)
        errors[what] = message
        return 0
    errors.pop(what, None)
    return result or 0
