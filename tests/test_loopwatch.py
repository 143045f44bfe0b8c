"""A monitor that blocks the event loop is detected, blamed by name and line, counted and disabled."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

import pamd
from pamd.coordination.local import LocalCoordinator
from pamd.loopwatch import LoopWatch
from pamd.metrics import Metrics
from pamd.pipeline import AlertPipeline
from pamd.runner import Runner
from pamd.testing import make_job

pytestmark = pytest.mark.anyio


class Hog(pamd.Monitor):
    name = "hog"
    retries = 0

    async def run(self, ctx: pamd.MonitorContext) -> list[pamd.Alert]:
        time.sleep(1.2)  # noqa: ASYNC251 - the point: a blocking call inside async code freezes the loop
        return []


async def test_stall_is_blamed_on_the_monitor_and_disables_it(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    coordinator = LocalCoordinator(tmp_path)
    await coordinator.start()
    metrics = Metrics()
    jobs = {"hog": make_job(Hog())}
    runner = Runner(jobs, AlertPipeline({}, metrics), metrics, coordinator, None)
    disabled: list[tuple[str, float, str]] = []
    watch = LoopWatch(metrics, lambda m, s, w: disabled.append((m, s, w)), threshold=0.3, disable_after=0.8,
                      interval=0.1)
    with caplog.at_level(logging.WARNING):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch.run)
            await tg.start(runner.serve)
            await anyio.sleep(0.2)
            runner.dispatch(jobs["hog"], datetime.now(UTC))
            await runner.wait_idle()
            await anyio.sleep(0.3)
            tg.cancel_scope.cancel()
    assert metrics.registry.get_sample_value("pamd_event_loop_stalls_total", {"monitor": "hog"}) == 1
    assert [d[0] for d in disabled] == ["hog"]
    assert "test_loopwatch.py:" in disabled[0][2]
    assert watch.last_stall is not None and watch.last_stall["monitor"] == "hog"
    assert float(str(watch.last_stall["seconds"])) >= 1.0
    assert "event loop blocked" in caplog.text and "by monitor hog at" in caplog.text
    assert "event loop recovered" in caplog.text
    lag = metrics.registry.get_sample_value("pamd_event_loop_lag_seconds_bucket", {"le": "0.5"})
    count = metrics.registry.get_sample_value("pamd_event_loop_lag_seconds_count")
    assert lag is not None and count is not None and count - lag >= 1  # the stall shows in the lag histogram


async def test_quiet_loop_reports_no_stall(tmp_path: Path) -> None:
    metrics = Metrics()
    watch = LoopWatch(metrics, lambda *a: None, threshold=0.3, interval=0.05)
    async with anyio.create_task_group() as tg:
        tg.start_soon(watch.run)
        await anyio.sleep(0.5)
        assert watch.healthy()
        tg.cancel_scope.cancel()
    assert watch.last_stall is None
    assert (metrics.registry.get_sample_value("pamd_event_loop_lag_seconds_count") or 0) >= 5
