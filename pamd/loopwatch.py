"""Event-loop health: lag sampling in the loop, and a watchdog thread that notices when the loop is blocked.

A blocked loop cannot report on itself, so a thread checks the loop's heartbeat. When the loop has been stuck for
longer than the stall threshold, the thread reads the main thread's stack to name the monitor whose code is running
(see ``pamd.runner.collect``), logs where it is stuck, and counts the stall. A monitor that keeps the loop blocked
longer than ``disable_after`` is disabled until the next reload, so it cannot stall the daemon again.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType

import anyio

from pamd.metrics import Metrics

log = logging.getLogger("pamd.loopwatch")

BLAME_LOCAL = "pamd_running_monitor"


def blame(thread_id: int) -> tuple[str | None, str]:
    """The monitor running on ``thread_id`` (or None) and the innermost ``file:line`` it is executing."""
    frame: FrameType | None = sys._current_frames().get(thread_id)
    where = f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame else "unknown"
    while frame is not None:
        monitor = frame.f_locals.get(BLAME_LOCAL) if frame.f_code.co_name == "collect" else None
        if isinstance(monitor, str):
            return monitor, where
        frame = frame.f_back
    return None, where


class LoopWatch:
    """Samples loop lag (``pamd_event_loop_lag_seconds``) and detects stalls (``pamd_event_loop_stalls_total``)."""

    def __init__(
        self,
        metrics: Metrics,
        on_stall: Callable[[str, float, str], None],
        threshold: float = 1.0,
        disable_after: float = 5.0,
        interval: float = 1.0,
    ) -> None:
        self.metrics = metrics
        self.on_stall = on_stall
        self.threshold = threshold
        self.disable_after = disable_after
        self.interval = interval
        self.last_beat = time.monotonic()
        self.last_stall: dict[str, object] | None = None
        self._stop = threading.Event()
        self._loop_thread = threading.get_ident()

    def healthy(self) -> bool:
        """False when the loop has been late by more than the stall threshold (only visible after it recovers)."""
        return time.monotonic() - self.last_beat < self.interval + self.threshold + 1.0

    async def run(self) -> None:
        """Sample lag until cancelled; the watchdog thread lives as long as this task."""
        self._loop_thread = threading.get_ident()
        self._stop.clear()
        thread = threading.Thread(target=self._watch, name="pamd-loopwatch", daemon=True)
        thread.start()
        try:
            while True:
                before = time.monotonic()
                await anyio.sleep(self.interval)
                self.last_beat = time.monotonic()
                self.metrics.loop_lag.observe(max(0.0, self.last_beat - before - self.interval))
        finally:
            self._stop.set()

    def _watch(self) -> None:
        stalled_since: float | None = None
        culprit: str | None = None
        disabled = False
        # Every wake-up costs CPU even when idle (about 0.1 ms each on a VM), so the thread checks once per interval.
        while not self._stop.wait(self.interval):
            blocked = time.monotonic() - self.last_beat - self.interval
            if blocked > self.threshold:
                if stalled_since is None:
                    stalled_since = self.last_beat
                    culprit, where = blame(self._loop_thread)
                    self.metrics.loop_stalls.labels(culprit or "unknown").inc()
                    self.last_stall = {"monitor": culprit, "where": where, "at": time.time()}
                    log.error("event loop blocked for %.1f s by %s at %s", blocked,
                              f"monitor {culprit}" if culprit else "non-monitor code", where,
                              extra={"monitor": culprit, "where": where})
                if culprit and not disabled and blocked > self.disable_after:
                    disabled = True
                    self.on_stall(culprit, blocked, where)
            elif stalled_since is not None:
                duration = time.monotonic() - stalled_since
                if self.last_stall is not None:
                    self.last_stall["seconds"] = round(duration, 3)
                log.warning("event loop recovered after %.1f s", duration, extra={"monitor": culprit})
                stalled_since, culprit, disabled = None, None, False
