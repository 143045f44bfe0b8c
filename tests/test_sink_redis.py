"""The Redis sink against the real Redis on 127.0.0.1:6379 (each test under a key prefix of its own, deleted
afterwards), and against a closed port."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from pamd.config import ConfigError, load_config
from pamd.jobs import resolve_sinks
from pamd.model import Alert, Priority, new_alert_id
from pamd.plugins import load_plugins
from pamd.sinks.base import SinkConfigError, TransientDeliveryError
from pamd.sinks.payload import PAYLOAD_FIELDS
from pamd.sinks.redis import RedisSink, RedisSinkOptions
from tests.conftest import REDIS_URL, free_port

URL = REDIS_URL



@pytest.fixture
async def plain(prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(URL)
    yield client
    await client.aclose()


def make_alert(user_id: str = "u1", **changes: Any) -> Alert:
    alert = Alert(user_id=user_id, kind="budget_high", priority=Priority.HIGH, title="Monthly budget: 85% spent",
                  body="You've spent A$2,550.00 of A$3,000.00", facts={"pct": 85}, monitor="budget",
                  id=new_alert_id(), fingerprint="b" * 32, created_at=datetime(2026, 1, 15, tzinfo=UTC), epoch=2)
    for name, value in changes.items():
        setattr(alert, name, value)
    return alert


@asynccontextmanager
async def redis_sink(prefix: str, **options: Any) -> AsyncIterator[RedisSink]:
    sink = RedisSink({"url": URL, "prefix": prefix, "timeout": 2.0, **options})
    try:
        yield sink
    finally:
        await sink.aclose()


async def messages(pubsub: Any, wait: float) -> list[dict[str, Any]]:
    """Every message received on ``pubsub`` within ``wait`` seconds."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
        if message is not None:
            got.append(message)
    return got


@pytest.mark.anyio
async def test_publishes_and_appends_once_per_alert_id(prefix: str, plain: aioredis.Redis) -> None:
    alert, other_user = make_alert("u1"), make_alert("u2")
    async with plain.pubsub() as pubsub:
        await pubsub.subscribe(f"{prefix}:alerts:u1")
        subscribed = await pubsub.get_message(timeout=2)
        assert subscribed is not None and subscribed["type"] == "subscribe"
        async with redis_sink(prefix) as sink:
            assert await sink.deliver_once(alert) is True
            await sink.deliver(alert)  # a retried delivery: nothing more
            assert await sink.deliver_once(alert) is False
            await sink.deliver(other_user)
        got = await messages(pubsub, 0.5)

    assert [m["channel"] for m in got] == [f"{prefix}:alerts:u1".encode()]  # once, and not u2's
    payload = json.loads(got[0]["data"])
    assert tuple(payload) == PAYLOAD_FIELDS
    assert (payload["id"], payload["user_id"], payload["priority"], payload["facts"], payload["created_at"]) == (
        alert.id, "u1", "high", {"pct": 85}, "2026-01-15T00:00:00Z")

    entries: Any = await plain.xrange(f"{prefix}:alerts")
    assert [fields[b"id"].decode() for _entry, fields in entries] == [alert.id, other_user.id]
    entry_id, fields = entries[0]
    assert set(fields) == {b"id", b"user_id", b"alert"} and fields[b"user_id"] == b"u1"
    assert fields[b"alert"] == got[0]["data"]  # the same JSON on the channel and in the stream
    # The guard remembers the stream entry, for a day.
    guard = f"{prefix}:alerts:sent:{alert.id}"
    assert await plain.get(guard) == entry_id
    assert 86000 < await plain.ttl(guard) <= 86400


@pytest.mark.anyio
async def test_stream_is_capped_approximately(prefix: str, plain: aioredis.Redis) -> None:
    async with redis_sink(prefix, stream_maxlen=100, dedupe_ttl=60) as sink:
        alerts = [make_alert(f"u{i % 7}") for i in range(1000)]
        for alert in alerts:
            await sink.deliver(alert)
    length = await plain.xlen(f"{prefix}:alerts")
    assert 100 <= length < 300  # MAXLEN ~ trims whole radix-tree nodes (100 entries each by default)
    newest: Any = await plain.xrevrange(f"{prefix}:alerts", count=1)
    assert newest[0][1][b"id"] == alerts[-1].id.encode()
    assert 0 < await plain.ttl(f"{prefix}:alerts:sent:{alerts[0].id}") <= 60


@pytest.mark.anyio
async def test_unreachable_redis_is_transient_and_quick() -> None:
    sink = RedisSink(RedisSinkOptions(url=f"redis://:hunter2@127.0.0.1:{free_port()}/0", timeout=3.0))
    try:
        started = time.monotonic()
        with pytest.raises(TransientDeliveryError, match=r"redis redis://:\*\*\*@127\.0\.0\.1:\d+/0: ") as caught:
            await sink.deliver(make_alert())
        assert time.monotonic() - started < 1.5
        assert "hunter2" not in str(caught.value)
    finally:
        await sink.aclose()


@pytest.mark.anyio
async def test_a_redis_error_is_transient(prefix: str, plain: aioredis.Redis) -> None:
    await plain.set(f"{prefix}:alerts", "not a stream")
    async with redis_sink(prefix) as sink:
        with pytest.raises(TransientDeliveryError, match="WRONGTYPE"):
            await sink.deliver(make_alert())
        await plain.delete(f"{prefix}:alerts")
        await sink.deliver(make_alert())  # recovers once the key is fixed
    assert await plain.xlen(f"{prefix}:alerts") == 1


@pytest.mark.anyio
async def test_reconnects_after_aclose_and_after_the_server_drops_it(prefix: str, plain: aioredis.Redis) -> None:
    async with redis_sink(prefix) as sink:
        await sink.deliver(make_alert())
        await sink.aclose()
        await sink.deliver(make_alert())
        name = f"{prefix}-sink"
        client, _script = sink._redis()
        await client.client_setname(name)
        killed = [await plain.client_kill_filter(_id=info["id"])
                  for info in await plain.client_list() if info.get("name") == name]
        assert killed == [1]
        await sink.deliver(make_alert())  # the broken connection is replaced within the call
    assert await plain.xlen(f"{prefix}:alerts") == 3


@pytest.mark.parametrize(("options", "key", "problem"), [
    ({}, "url", "required"),
    ({"url": "http://127.0.0.1:6379"}, "url", "unsupported Redis URL scheme"),
    ({"url": URL, "prefix": ""}, "prefix", "cannot be empty"),
    ({"url": URL, "stream_maxlen": 0}, "stream_maxlen", "more than 0"),
    ({"url": URL, "timeout": -1}, "timeout", "more than 0"),
])
def test_bad_options(options: dict[str, Any], key: str, problem: str) -> None:
    with pytest.raises(SinkConfigError, match=problem) as caught:
        RedisSink(options)
    assert caught.value.key == key


def test_config_tables(tmp_path: Path) -> None:
    plugins = load_plugins([], {})
    path = tmp_path / "config.toml"
    path.write_text("[sinks.console]\nenabled = false\n")
    assert "redis" not in resolve_sinks(load_config(path, {}), plugins)  # not on by default
    path.write_text(f'[sinks.redis]\nurl = "{URL}"\nprefix = "p"\nstream_maxlen = 50\n')
    sink = resolve_sinks(load_config(path, {}), plugins)["redis"]
    assert isinstance(sink, RedisSink)
    assert sink.options == RedisSinkOptions(url=URL, prefix="p", stream_maxlen=50)
    assert (sink.stream, sink.channel("u 1"), sink.sent_key("01J")) == ("p:alerts", "p:alerts:u 1",
                                                                       "p:alerts:sent:01J")
    path.write_text('[sinks.redis]\nurl = "redis://:pw@127.0.0.1:6379/x"\n')
    with pytest.raises(ConfigError, match=r"config.toml:2: sinks\.redis\.url: .*database number") as caught:
        resolve_sinks(load_config(path, {}), plugins)
    assert ":pw@" not in str(caught.value)
