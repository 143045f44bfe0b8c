"""The background task that delivers alerts held for quiet hours once those hours end."""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio

from pamd.pipeline import AlertPipeline

log = logging.getLogger("pamd.pipeline")


async def release_held_forever(
    pipeline: Callable[[], AlertPipeline | None], interval: float, is_leader: Callable[[], bool]
) -> None:
    """Every ``interval`` seconds, while this replica leads, release due held alerts through the current
    ``pipeline()`` (it changes on reload). Errors are logged once per distinct message and retried next round."""
    last_error = ""
    while True:
        await anyio.sleep(interval)
        current = pipeline()
        if current is None or not is_leader():
            continue
        try:
            released = await current.release_held()
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            if message != last_error:
                log.error("releasing held alerts failed: %s", message)
            last_error = message
            continue
        last_error = ""
        if released:
            log.info("released %d alert(s) held for quiet hours", released)
