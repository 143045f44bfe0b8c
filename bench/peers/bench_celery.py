"""Celery peer for ``bench/idle_footprint.py``: five no-op tasks sent by beat every second over Redis.

Run from this directory by the benchmark (``celery -A bench_celery worker|beat``), never imported by
pamd.

What "scheduled" means here: celery beat has no sub-minute cron, so each job is an interval entry
(``schedule=timedelta(seconds=1)``). Beat's own idea of when an entry is due is ``entry.last_run_at
+ run_every``, where ``last_run_at`` is the moment beat sent the previous run (beat does not keep a
fixed grid; intervals drift by however late each send was). :class:`BenchScheduler` stamps exactly
that due time on each message, so "lateness" is measured against the time beat itself was aiming at:
beat's wake-up error plus the Redis hop plus the prefork pool's dispatch. The drift is visible
separately as runs per job per second.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from typing import Any

from celery import Celery  # type: ignore[import-not-found, unused-ignore]
from celery.beat import PersistentScheduler  # type: ignore[import-not-found, unused-ignore]
from celery.schedules import schedule as interval_schedule  # type: ignore[import-not-found, unused-ignore]

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
JOBS = [f"noop{i}" for i in range(1, 6)]

app = Celery("bench_celery", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    beat_schedule={
        name: {"task": "bench_celery.noop", "schedule": timedelta(seconds=1), "kwargs": {"name": name}} for name in JOBS
    },
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


def _record(name: str, scheduled: float, actual: float) -> None:
    path = os.environ.get("BENCH_RECORD")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{name} {scheduled:.6f} {actual:.6f}\n")


def noop(name: str, scheduled: float = 0.0) -> None:
    """The job: record when it started against when beat meant it to start."""
    _record(name, scheduled, time.time())


app.task(name="bench_celery.noop")(noop)


class BenchScheduler(PersistentScheduler):  # type: ignore[misc, unused-ignore]
    """The default (shelve) scheduler, stamping each message with the due time beat was aiming at."""

    def apply_entry(self, entry: Any, producer: Any = None) -> None:
        # ``tick`` has already swapped in the successor entry (``reserve``); ``entry`` still holds the
        # previous send time, so its due time is last_run_at + run_every.
        if isinstance(entry.schedule, interval_schedule):
            due = entry.schedule.maybe_make_aware(entry.last_run_at) + entry.schedule.run_every
            entry.kwargs = {**entry.kwargs, "scheduled": due.timestamp()}
        super().apply_entry(entry, producer=producer)
