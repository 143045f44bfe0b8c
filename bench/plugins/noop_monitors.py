"""Five no-op pamd monitors on a one-second cron, for ``bench/idle_footprint.py``.

Each run appends ``<monitor> <scheduled_epoch_s> <actual_epoch_s>`` to the file named by the environment
variable ``BENCH_RECORD`` (nothing is written when it is unset), and returns no alert.

Not ``PAMD_BENCH_RECORD``: ``pamd run`` treats every ``PAMD_*`` variable as a config override and refuses to
start on one that is not a config key. That name is still honoured as a fallback, for tools that run the plugin
without the config loader.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pamd

RECORD_ENV = "BENCH_RECORD"


def _record(name: str, scheduled: float, actual: float) -> None:
    path = os.environ.get(RECORD_ENV) or os.environ.get("PAMD_BENCH_RECORD")
    if path:
        # One small O_APPEND write per run: lines from concurrent runs never interleave.
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{name} {scheduled:.6f} {actual:.6f}\n")


class _Noop(pamd.Monitor):
    schedule = "* * * * * *"  # every second (cronsim: six fields, seconds last)
    run_at_startup = True
    timeout = 5.0
    retries = 0

    async def run(self, ctx: pamd.MonitorContext) -> list[pamd.Alert]:
        actual = time.time()
        _record(self.name, ctx.scheduled_at.timestamp(), actual)
        return []


class Noop1(_Noop):
    name = "noop1"


class Noop2(_Noop):
    name = "noop2"


class Noop3(_Noop):
    name = "noop3"


class Noop4(_Noop):
    name = "noop4"


class Noop5(_Noop):
    name = "noop5"


@pamd.hookimpl
def register_monitors(register: Callable[[pamd.Monitor], None]) -> None:
    for monitor_type in (Noop1, Noop2, Noop3, Noop4, Noop5):
        register(monitor_type())
