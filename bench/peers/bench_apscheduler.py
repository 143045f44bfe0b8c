"""APScheduler 4 peer for ``bench/idle_footprint.py``: five no-op jobs on ``CronTrigger(second="*")``.

``AsyncScheduler`` with its default in-memory data store and local event broker. Each job is its own
task (the default ``max_running_jobs=1`` is per task, so one shared task would serialise the five).
The scheduled time is the job's ``scheduled_fire_time`` (the cron fire time; no jitter is
configured), read from ``current_job``.
"""

from __future__ import annotations

import asyncio
import os
import time

from apscheduler import AsyncScheduler, current_job  # type: ignore[import-not-found, unused-ignore]
from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-not-found, unused-ignore]

JOBS = [f"noop{i}" for i in range(1, 6)]


def _record(name: str, scheduled: float, actual: float) -> None:
    path = os.environ.get("BENCH_RECORD")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{name} {scheduled:.6f} {actual:.6f}\n")


async def noop(name: str) -> None:
    actual = time.time()
    fire_time = current_job.get().scheduled_fire_time
    _record(name, fire_time.timestamp() if fire_time is not None else 0.0, actual)


async def main() -> None:
    async with AsyncScheduler() as scheduler:
        for name in JOBS:
            await scheduler.configure_task(name, func=noop)
            await scheduler.add_schedule(name, CronTrigger(second="*"), id=name, kwargs={"name": name})
        await scheduler.run_until_stopped()


if __name__ == "__main__":
    asyncio.run(main())
