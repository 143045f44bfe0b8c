"""Shared fixtures. Nothing is started silently: tests that need a service say so."""

from __future__ import annotations

import os
import secrets
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

pytest_plugins = (
    "tests.store_pairs",  # the lite/pg store fixtures of the SQLite-vs-Postgres tests
    "tests.fakes.anthropic_api",  # anthropic_api: a fake Messages API on 127.0.0.1
    "tests.fakes.gemini_api",  # gemini_api: a fake generateContent API on 127.0.0.1
)

if TYPE_CHECKING:  # daemon_proc imports this module
    from tests.daemon_proc import DaemonProcess

REPO = Path(__file__).resolve().parent.parent
PAMD = str(Path(sys.executable).with_name("pamd"))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The process environment without any PAMD_* variable, so a developer's shell cannot leak into tests."""
    for name in list(os.environ):
        if name.startswith("PAMD_") or name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            monkeypatch.delenv(name)
    yield dict(os.environ)


def write_config(directory: Path, port: int, extra: str = "", *, daemon: str = "", state: Path | None = None,
                 grace: float = 5.0) -> Path:
    """A config file for a test daemon: its own state dir and port, demo store, JSON logs.

    ``daemon`` holds extra lines for the ``[daemon]`` table, ``extra`` further tables.
    """
    state = state or directory / "state"
    path = directory / "config.toml"
    path.write_text(
        f"""
[daemon]
state_dir = "{state}"
shutdown_grace = {grace}
{daemon}

[log]
level = "info"
format = "json"

[http]
listen = "127.0.0.1:{port}"

# No network in tests: providers are off (and point at a closed local port) unless a test serves a fake.
[providers.weather]
enabled = false
base_url = "http://127.0.0.1:9"
retries = 0

[providers.places]
enabled = false
base_url = "http://127.0.0.1:9"
retries = 0
{extra}
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def daemons() -> Iterator[list[DaemonProcess]]:
    """Daemon subprocesses a test started; any still running are killed after it."""
    started: list[DaemonProcess] = []
    yield started
    for daemon in started:
        daemon.kill()


REDIS_URL = "redis://127.0.0.1:6379/0"
"""The shared Redis the tests use (CI starts it); tests that kill or reconfigure Redis start their own."""


@pytest.fixture
def prefix() -> Iterator[str]:
    """A Redis key prefix of this test's own; every key under it is deleted afterwards."""
    import redis

    name = f"pamd-test-{secrets.token_hex(6)}"
    yield name
    with redis.Redis.from_url(REDIS_URL) as client:
        keys = list(client.scan_iter(f"{name}:*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])


PG_URL = os.environ.get("PAMD_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
"""The shared PostgreSQL database the tests use (CI starts it); each test gets a schema of its own in it."""


@pytest.fixture
def pg_url() -> Iterator[str]:
    """``PG_URL`` with a fresh, empty schema of this test's own as its ``search_path`` (asyncpg sends unknown URL
    parameters as server settings); the schema and everything in it are dropped afterwards. (Usable from async
    fixtures too: the setup runs its own event loop in a worker thread.)"""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    import asyncpg

    schema = f"pamd_test_{secrets.token_hex(6)}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(PG_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def execute(sql: str) -> None:
        with ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, run(sql)).result()

    execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{separator}search_path={schema}"
    execute(f'DROP SCHEMA "{schema}" CASCADE')
