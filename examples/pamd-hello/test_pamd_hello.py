"""How a plugin author tests a monitor: ``pamd.testing.run_monitor`` runs it exactly as the daemon would."""

from __future__ import annotations

import pytest
from pamd_hello import HelloConfig, HelloMonitor

from pamd.testing import run_monitor


@pytest.mark.anyio
async def test_greets_each_configured_user() -> None:
    alerts = await run_monitor(HelloMonitor(), config=HelloConfig(greeting="Hi", users=["a", "b"]))
    assert [a.title for a in alerts] == ["Hi, a", "Hi, b"]
    assert all(a.monitor == "hello" and a.id for a in alerts)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
