"""A traveller's week, hour by hour: the exact alerts she receives from the fuel monitor through the pipeline.

Sam (Auckland, UTC+13 in January, quiet hours 22:00-07:00 = 09:00-18:00 UTC) fills her 100 L van on 10 January at
00:00 UTC. It burns a stated 10 L/100km and there is no odometer, so the monitor extrapolates the default 150 km a
day: 15 % of the tank a day. Below 20 % (after 5 d 8 h) is medium, below 10 % (6 d) high, below 5 % (6 d 8 h)
urgent. She fills up again on 17 January at 00:00 and the cycle restarts. Ticks run every hour; held alerts are
released every hour.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pamd.coordination.local import LocalCoordinator
from pamd.metrics import Metrics
from pamd.model import Alert, Priority
from pamd.pipeline import AlertPipeline
from pamd.runner import Runner
from pamd.sinks.base import Sink
from pamd.store.sqlite import SQLiteStore
from pamd.testing import make_job

if TYPE_CHECKING:  # mypy sees the source tree; at run time the package is installed as pamd_plugins
    from plugins import fuel
else:
    from pamd_plugins import fuel

P = Priority
FILL_1 = datetime(2026, 1, 10, 0, 0, tzinfo=UTC)
FILL_2 = datetime(2026, 1, 17, 0, 0, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Inbox(Sink):
    name = "inbox"

    def __init__(self, clock: list[datetime]) -> None:
        self.clock = clock
        self.received: list[tuple[str, Priority]] = []

    async def deliver(self, alert: Alert) -> None:
        self.received.append((self.clock[0].strftime("%d %H:%M"), alert.priority))


@pytest.mark.anyio
async def test_a_week_of_fuel_alerts(tmp_path: Path) -> None:
    store = SQLiteStore(f"sqlite:///{tmp_path}/s.db")
    await store.migrate()
    await store.add_rows("profiles", [{"id": "sam", "timezone": "Pacific/Auckland", "full_name": "Sam"}])
    await store.add_rows("vehicles", [{"id": "van", "user_id": "sam", "name": "Van", "vehicle_type": "campervan",
                                       "fuel_type": "diesel", "fuel_capacity_l": 100.0,
                                       "consumption_l_per_100km": 10.0, "is_primary": True}])
    await store.add_rows("notification_preferences", [
        {"user_id": "sam", "monitor": "*", "enabled": True, "quiet_start": "22:00", "quiet_end": "07:00"}])
    await store.add_rows("fuel_log", [{"id": "f1", "user_id": "sam", "vehicle_id": "van", "logged_at": FILL_1,
                                       "volume_l": 90.0, "is_full_tank": True}])
    clock = [FILL_1]
    inbox = Inbox(clock)
    metrics = Metrics()
    coordinator = LocalCoordinator(str(tmp_path))
    await coordinator.start()
    job = make_job(fuel.FuelMonitor(), cooldown=6 * 3600, retries=0)
    runner = Runner({"fuel": job}, AlertPipeline({"inbox": inbox}, metrics, book=store), metrics, coordinator, store,
                    clock=lambda: clock[0])
    now = datetime(2026, 1, 15, 0, 0, tzinfo=UTC)
    while now <= datetime(2026, 1, 22, 19, 0, tzinfo=UTC):
        clock[0] = now
        if now == FILL_2:
            await store.add_rows("fuel_log", [{"id": "f2", "user_id": "sam", "vehicle_id": "van", "logged_at": now,
                                               "volume_l": 100.0, "is_full_tank": True}])
        result = await runner.run_tick(job, now)
        assert result.outcome == "success", result.error
        await runner.pipeline.release_held(now)
        now += timedelta(hours=1)
    await store.aclose()
    assert inbox.received == [
        ("15 18:00", P.MEDIUM),  # fell below 20 % at 09:00 UTC, 22:00 her time: held until 07:00
        ("16 00:00", P.MEDIUM),  # still medium 6 h after she got it (the cooldown runs from the release)
        ("16 01:00", P.HIGH),  # below 10 %: an escalation passes the cooldown at once
        ("16 07:00", P.HIGH),  # still high after the 6 h cooldown: one reminder (20:00 her time, not quiet)
        ("16 09:00", P.URGENT),  # below 5 %: escalation; urgent ignores her quiet hours
        ("16 15:00", P.URGENT),  # reminders every 6 h while urgent
        ("16 21:00", P.URGENT),
        # 17 00:00 she fills up: the condition resolves; the next low tank alerts again
        ("22 18:00", P.MEDIUM),  # below 20 % again at 09:00 UTC on the 22nd, held through quiet hours
    ]
