"""Baseline for ``bench/idle_footprint.py``: a bare asyncio loop, five tasks sleeping to each second
boundary.

The floor any asyncio scheduler sits on: interpreter footprint, timer wake-up error, nothing else.
Like pamd's ``run_at_startup`` monitors, each task runs once at start (scheduled = that moment),
then at every whole second.
"""

from __future__ import annotations

import asyncio
import math
import os
import time

JOBS = [f"noop{i}" for i in range(1, 6)]


def _record(name: str, scheduled: float, actual: float) -> None:
    path = os.environ.get("BENCH_RECORD")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{name} {scheduled:.6f} {actual:.6f}\n")


async def job(name: str, started: float) -> None:
    _record(name, started, time.time())
    while True:
        due = math.floor(time.time()) + 1.0
        await asyncio.sleep(due - time.time())
        _record(name, due, time.time())


async def main() -> None:
    started = time.time()
    await asyncio.gather(*(job(name, started) for name in JOBS))


if __name__ == "__main__":
    asyncio.run(main())
