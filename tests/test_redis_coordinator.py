"""The Redis coordinator against the real Redis on 127.0.0.1:6379, each test under its own key prefix."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest
import redis.asyncio as aioredis

from pamd.coordination import open_coordinator
from pamd.coordination.redis import RedisCoordinator
from pamd.metrics import Metrics
from tests.conftest import REDIS_URL, free_port, write_config
from tests.daemon_proc import DaemonProcess, wait_for

URL = REDIS_URL
T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"



class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def coordinator(prefix: str, clock: Callable[[], float] | None = None, **kwargs: float) -> RedisCoordinator:
    options: dict[str, object] = {"ttl": 3.0, "retry_interval": 0.05, **kwargs}
    if clock is not None:
        options["clock"] = clock
    return RedisCoordinator(URL, prefix, **options)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_one_leader_with_increasing_epochs(prefix: str) -> None:
    a, b = coordinator(prefix), coordinator(prefix)
    await a.start()
    await b.start()
    assert a.is_leader() and not b.is_leader()
    assert a.epoch == 1 and b.epoch == 0
    assert await a.release() and not a.is_leader()
    await b._step()
    assert b.is_leader() and b.epoch == 2  # the fencing token only grows
    await a._step()
    assert not a.is_leader()
    await a.aclose()
    await b.aclose()


@pytest.mark.anyio
async def test_claims_run_each_tick_once_and_fence_off_a_stale_leader(prefix: str) -> None:
    old, new = coordinator(prefix), coordinator(prefix)
    await old.start()
    assert await old.claim_tick("fuel", T)
    assert not await old.claim_tick("fuel", T)  # a tick is claimed once
    assert await old.last_tick("fuel") == T
    # The old leader is paused past its lease; Redis expires it and another replica takes over.
    client = aioredis.Redis.from_url(URL)
    await client.delete(f"{prefix}:leader")
    await new.start()
    assert new.is_leader() and new.epoch == old.epoch + 1
    assert await new.claim_tick("fuel", T + timedelta(minutes=5))
    # The old one wakes up still believing it leads: its claim carries a stale epoch and is refused.
    assert old.is_leader()
    assert not await old.claim_tick("fuel", T + timedelta(minutes=10))
    assert not old.is_leader()  # and it stepped down
    assert await client.get(f"{prefix}:tick:fuel:{(T + timedelta(minutes=10)).isoformat()}") is None
    assert await new.last_tick("fuel") == T + timedelta(minutes=5)
    await client.aclose()
    await old.aclose()
    await new.aclose()


@pytest.mark.anyio
async def test_renewal_keeps_the_lease_and_a_lost_token_steps_down(prefix: str) -> None:
    clock = FakeClock()
    leader = coordinator(prefix, clock)
    await leader.start()
    client = aioredis.Redis.from_url(URL)
    assert 0 < await client.pttl(f"{prefix}:leader") <= 3000
    clock.now += 1.0
    await leader._step()  # renew
    assert leader.is_leader() and await client.pttl(f"{prefix}:leader") > 2500
    await client.set(f"{prefix}:leader", "someone else")  # token mismatch: not ours any more
    await leader._step()
    assert not leader.is_leader()
    assert await client.get(f"{prefix}:leader") == b"someone else"  # renew never touches another's lease
    assert not await leader.release()
    await client.aclose()
    await leader.aclose()


@pytest.mark.anyio
async def test_a_leader_that_cannot_renew_stops_leading_before_its_lease_ends(prefix: str) -> None:
    clock = FakeClock()
    leader = coordinator(prefix, clock)
    await leader.start()
    assert leader.is_leader()
    clock.now += leader.renew_deadline - 0.01
    assert leader.is_leader()
    clock.now += 0.02  # past the renew deadline (2 s of a 3 s lease) without a renewal: no longer leader
    assert not leader.is_leader()
    assert not await leader.claim_tick("fuel", T)
    await leader.aclose()


@pytest.mark.anyio
async def test_graceful_stop_hands_over_at_once(prefix: str) -> None:
    metrics = Metrics()
    a = coordinator(prefix, retry_interval=30.0)  # followers would otherwise wait 30 s
    b = RedisCoordinator(URL, prefix, ttl=3.0, retry_interval=30.0, metrics=metrics)
    async with anyio.create_task_group() as tg:
        await a.start()
        tg.start_soon(a.run)
        await b.start()
        tg.start_soon(b.run)
        await anyio.sleep(0.2)  # b subscribes to the release notice
        assert a.is_leader() and not b.is_leader()
        started = anyio.current_time()
        await a.release()
        with anyio.fail_after(2):
            while not b.is_leader():  # noqa: ASYNC110 - leadership is a state, not an event: poll it
                await anyio.sleep(0.01)
        handover = anyio.current_time() - started
        tg.cancel_scope.cancel()
    assert handover < 0.5
    text = metrics.render().decode()
    assert "pamd_leader 0.0" in text  # b released on cancellation
    assert "pamd_leadership_changes_total 2.0" in text
    await a.aclose()
    await b.aclose()


@pytest.mark.anyio
async def test_unreachable_redis_is_a_clear_error_and_no_leadership() -> None:
    lost = RedisCoordinator("redis://127.0.0.1:9/0", "pamd-test-none", ttl=3.0)
    with pytest.raises(Exception, match=r"Connect|refused|Error"):
        await lost.start()
    await lost._step()
    assert not lost.is_leader() and "Connect" in (lost.status()["last_error"] or "")
    assert not await lost.claim_tick("fuel", T)
    await lost.aclose()


def test_open_coordinator_by_url(tmp_path: object) -> None:
    assert isinstance(open_coordinator("redis://127.0.0.1:6379/0", "p", str(tmp_path)), RedisCoordinator)
    with pytest.raises(ValueError, match="unsupported coordination url scheme 'etcd'"):
        open_coordinator("etcd://x", "p", str(tmp_path))


def test_two_daemons_share_one_leader_and_hand_over_on_stop(tmp_path: Path, port: int, prefix: str,
                                                            daemons: list[DaemonProcess]) -> None:
    extra = f'[coordination]\nurl = "{URL}"\nprefix = "{prefix}"\n'
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir()
    second_dir.mkdir()
    first = DaemonProcess(first_dir, write_config(first_dir, port, extra), port)
    daemons.append(first)
    first.wait_ready()
    other_port = free_port()
    second = DaemonProcess(second_dir, write_config(second_dir, other_port, extra), other_port)
    daemons.append(second)
    second.wait_ready()
    a, b = first.json("/status"), second.json("/status")
    assert (a["leader"], b["leader"]) == (True, False)
    assert a["coordinator"]["backend"] == "redis" and a["epoch"] >= 1
    assert "pamd_leader 1.0" in first.get("/metrics")[1] and "pamd_leader 0.0" in second.get("/metrics")[1]
    assert first.stop() == 0  # releases the lease and tells the follower
    wait_for(lambda: second.json("/status")["leader"], 3, lambda: f"no handover: {second.json('/status')}")
    assert second.json("/status")["epoch"] == a["epoch"] + 1
    assert second.stop() == 0
