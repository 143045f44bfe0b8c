"""Helpers for testing monitors, for pamd's own tests and plugin authors alike.

``await run_monitor(MyMonitor(), config=MyConfig(...), store=store)`` runs one tick through the same runner the
daemon uses (timeout, retries, alert stamping) and returns the alerts, delivering them nowhere.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import anyio

from pamd.coordination.local import LocalCoordinator
from pamd.jobs import Job, MonitorSettings, build_job
from pamd.metrics import Metrics
from pamd.model import Alert
from pamd.monitor import Monitor
from pamd.pipeline import AlertPipeline
from pamd.plugins import PluginInfo
from pamd.providers import ProviderHub
from pamd.runner import Runner, TickResult
from pamd.store.base import Store


def make_job(monitor: Monitor, config: object = None, **settings: Any) -> Job:
    """A :class:`pamd.jobs.Job` for ``monitor`` as the daemon would build it; ``settings`` are
    ``[monitors.<name>]`` keys (``timeout=1``, ``retries=0``...). ``config`` defaults to the monitor's
    ``config_type()``."""
    if config is None and monitor.config_type is not None:
        config = monitor.config_type()
    plugin = PluginInfo(monitor.name, "plugin dir", type(monitor).__module__)
    return build_job(monitor, plugin, MonitorSettings(**settings), config)


async def run_tick(
    monitor: Monitor,
    *,
    config: object = None,
    store: Store | None = None,
    user_id: str | None = None,
    now: datetime | None = None,
    providers: ProviderHub | None = None,
    **settings: Any,
) -> TickResult:
    """Run one tick of ``monitor`` and return the full :class:`~pamd.runner.TickResult` (outcome, error...)."""
    job = make_job(monitor, config, **settings)
    metrics = Metrics()
    with tempfile.TemporaryDirectory(prefix="pamd-test-") as state_dir:
        coordinator = LocalCoordinator(state_dir)
        await coordinator.start()
        runner = Runner({job.name: job}, AlertPipeline({}, metrics), metrics, coordinator, store,
                        clock=(lambda: now) if now else (lambda: datetime.now(UTC)), providers=providers)
        scheduled = (now or datetime.now(UTC)).replace(microsecond=0)
        return await runner.run_tick(job, scheduled, user_id=user_id, dry_run=True)


async def run_monitor(
    monitor: Monitor,
    *,
    config: object = None,
    store: Store | None = None,
    user_id: str | None = None,
    now: datetime | None = None,
    providers: ProviderHub | None = None,
) -> list[Alert]:
    """Run one tick and return its alerts; raises ``AssertionError`` with the error if the tick failed.

    ``providers``: a :class:`pamd.providers.ProviderHub` (e.g. pointed at a local fake server), else none.
    """
    result = await run_tick(monitor, config=config, store=store, user_id=user_id, now=now, providers=providers,
                            retries=0)
    if result.outcome != "success":
        raise AssertionError(f"monitor {monitor.name} tick {result.outcome}: {result.error}")
    return result.alerts


def demo_store(directory: str | os.PathLike[str], now: datetime | None = None) -> Store:
    """A SQLite store in ``directory``, migrated and seeded with the demo users (relative to ``now``)."""
    from pamd.store import prepare_store

    url = f"sqlite:///{os.path.abspath(directory)}/demo.db"
    store: Store = anyio.run(prepare_store, url, False)
    anyio.run(store.seed_demo, now or datetime.now(UTC))
    return store


try:  # the fixture exists for test suites; pamd itself never needs pytest
    import pytest
except ImportError:  # pragma: no cover
    pass
else:

    @pytest.fixture
    def pamd_demo_store(tmp_path: Any) -> Iterator[Store]:
        """A demo-seeded SQLite store for one test. Enable with ``pytest_plugins = ["pamd.testing"]``."""
        store = demo_store(tmp_path)
        yield store
        anyio.run(store.aclose)
