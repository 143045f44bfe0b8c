"""Keyed work in lanes: each key's items one after another, in order; different keys side by side.

The delivery worker (:mod:`pamd.alerts.delivery`) sends each user's alerts to a sink in order, and a slow receiver
(a webhook 20 ms away) then caps a sink at 1 / latency alerts a second (44/s measured) unless users go side by side.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import TypeVar

T = TypeVar("T")


async def in_lanes(
    items: Iterable[T], key: Callable[[T], Hashable], limit: int, work: Callable[[T], Awaitable[bool]]
) -> None:
    """``await work(item)`` for each of ``items``: those of one key in their order, one at a time, and those of
    different keys concurrently, at most ``limit`` keys at once. ``work`` returning False ends its key's lane (the
    key's later items are skipped). With ``limit`` 1 the items go strictly in their given order.

    The first exception ``work`` raises ends every lane and is raised."""
    if limit <= 1:
        ended: set[Hashable] = set()
        for item in items:
            k = key(item)
            if k not in ended and not await work(item):
                ended.add(k)
        return
    lanes: dict[Hashable, list[T]] = {}
    for item in items:
        lanes.setdefault(key(item), []).append(item)
    waiting = iter(lanes.values())  # shared by the workers: each lane is taken by one of them

    async def worker() -> None:
        for lane in waiting:
            for item in lane:
                if not await work(item):
                    break

    tasks = [asyncio.ensure_future(worker()) for _ in range(min(limit, len(lanes)))]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
