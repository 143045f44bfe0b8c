"""How a plugin author tests a monitor: ``pamd.testing.run_monitor`` runs it exactly as the daemon would."""

from __future__ import annotations

import pytest
from pamd_hello import HelloConfig, HelloMonitor

import pamd
from pamd.testing import run_monitor


@pytest.mark.anyio
async def test_greets_each_configured_user() -> None:
    alerts = await run_monitor(HelloMonitor(), config=HelloConfig(greeting="Hi", users=["a", "b"]))
    assert [a.title for a in alerts] == ["Hi, a", "Hi, b"]
    assert all(a.monitor == "hello" and a.id for a in alerts)


@pytest.mark.anyio
async def test_runs_against_the_demo_store(pamd_demo_store: pamd.Store) -> None:
    # ctx.store is the demo store; this monitor ignores it, a real one would query it.
    alerts = await run_monitor(HelloMonitor(), store=pamd_demo_store, user_id="demo-user")
    assert [a.user_id for a in alerts] == ["demo-user"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
