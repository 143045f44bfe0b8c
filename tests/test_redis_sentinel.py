"""``redis+sentinel://`` against a master, a replica and a sentinel of this module's own: leadership follows a
failover, planned (``SENTINEL FAILOVER``) or not (the master is killed); and ``rediss+sentinel://`` with passwords."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from pamd.alerts.decide import Decision
from pamd.alerts.redis_state import RedisAlertState
from pamd.checks import run_checks
from pamd.coordination.redis import RedisCoordinator
from pamd.model import Alert, Priority
from tests.conftest import free_port, write_config
from tests.daemon_proc import wait_for
from tests.redis_servers import PERSISTENT, OwnRedis, TlsFiles, make_tls_files, needs_openssl, needs_redis_server

pytestmark = needs_redis_server

SERVICE = "pamdsvc"
PREFIX = "pamd-sentinel"
T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


REPLICATION = (*PERSISTENT, "repl-diskless-sync-delay 0")  # a replica syncs at once, not after 5 s


class Topology:
    """A master, a replica of it and one sentinel (quorum 1) that fails over fast."""

    def __init__(self, directory: Path) -> None:
        self.master = OwnRedis(directory, REPLICATION)
        self.master.start()
        self.replica = OwnRedis(directory, [*REPLICATION, f"replicaof 127.0.0.1 {self.master.port}"])
        self.replica.start()
        self.sentinel = OwnRedis(directory, [
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.master.port} 1",
            f"sentinel known-replica {SERVICE} 127.0.0.1 {self.replica.port}",  # no wait for its discovery
            f"sentinel down-after-milliseconds {SERVICE} 500",
            f"sentinel failover-timeout {SERVICE} 5000",
        ], sentinel=True)
        self.sentinel.start()
        self.url = f"redis+sentinel://127.0.0.1:{free_port()},127.0.0.1:{self.sentinel.port}/{SERVICE}"
        """Two sentinels, the first one down: the client asks the next."""
        wait_for(self.replica_in_sync, 10, "the sentinel does not see the replica in sync")

    def master_port(self) -> int:
        with self.sentinel.client() as client:
            return int(client.sentinel_get_master_addr_by_name(SERVICE)[1])

    def server(self, port: int) -> OwnRedis:
        return self.master if port == self.master.port else self.replica

    def replica_in_sync(self) -> bool:
        """The sentinel knows the replica is healthy, and its copy has every write the master has acknowledged."""
        with self.sentinel.client() as client:
            replicas = client.sentinel_slaves(SERVICE)
        if not any(r["master-link-status"] == "ok" and not r["is_sdown"] for r in replicas):
            return False
        with self.server(self.master_port()).client() as master:
            return int(master.wait(1, 1000)) >= 1

    def failover_done(self, old_port: int) -> bool:
        """The sentinel names another master, which has taken the role."""
        if self.master_port() == old_port:
            return False
        with self.server(self.master_port()).client() as client:
            return bool(client.info("replication")["role"] == "master")

    async def wait(self, condition: Callable[[], bool], seconds: float, message: str) -> None:
        await anyio.to_thread.run_sync(wait_for, condition, seconds, message)

    async def wait_async(self, condition: Callable[[], bool], seconds: float) -> bool:
        """Poll ``condition`` without blocking the event loop; False if it is still false after ``seconds``."""
        with anyio.move_on_after(seconds):
            while not condition():  # noqa: ASYNC110 - polling a server's state
                await anyio.sleep(0.05)
            return True
        return False

    def stop(self) -> None:
        for server in (self.sentinel, self.replica, self.master):
            server.stop()


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    own = Topology(tmp_path)
    yield own
    own.stop()


async def lead_again(*candidates: RedisCoordinator, seconds: float) -> tuple[RedisCoordinator, datetime]:
    """Wait until one of ``candidates`` leads and claims a tick (AssertionError after ``seconds``): which, and
    that tick."""
    with anyio.fail_after(seconds):
        while True:
            tick = datetime.now(UTC)
            for coordinator in candidates:
                if coordinator.is_leader() and await coordinator.claim_tick("fuel", tick):
                    return coordinator, tick
            await anyio.sleep(0.05)


def coordinators(topology: Topology) -> tuple[RedisCoordinator, RedisCoordinator]:
    a, b = (RedisCoordinator(topology.url, PREFIX, ttl=3.0, retry_interval=0.2) for _ in "ab")
    return a, b


async def campaign(coordinator: RedisCoordinator, scope: anyio.CancelScope) -> None:
    """``coordinator.run()`` until ``scope`` is cancelled (a graceful stop: it releases its lease)."""
    with scope:
        await coordinator.run()


@pytest.mark.anyio
async def test_a_planned_failover_keeps_the_leader_and_the_epoch_goes_on(topology: Topology) -> None:
    a, b = coordinators(topology)
    state = RedisAlertState(topology.url, PREFIX, timeout=1.0)
    alert = Alert(user_id="ann", kind="fuel_low", priority=Priority.MEDIUM, title="fuel", body="b", monitor="fuel",
                  id="a1", fingerprint="fp1", epoch=1)
    stop_a = anyio.CancelScope()
    async with anyio.create_task_group() as tg:
        await a.start()
        tg.start_soon(campaign, a, stop_a)
        await b.start()
        tg.start_soon(b.run)
        assert a.is_leader() and not b.is_leader() and a.epoch == 1
        assert await a.claim_tick("fuel", T)
        await state.record("fuel", [Decision(alert=alert, outcome="delivered", reason="new")], T, epoch=a.epoch)
        old = topology.master_port()
        await topology.wait(topology.replica_in_sync, 5, "the replica is not in sync")
        with topology.sentinel.client() as sentinel:
            sentinel.execute_command("SENTINEL", "FAILOVER", SERVICE)
        await topology.wait(lambda: topology.failover_done(old), 10, "no failover")
        # The lease, the epoch and the claims moved with the data: the same leader goes on, in the same term. It
        # notices the new master within lease_ttl/6 (0.5 s here) and renews there at once, well before the copy
        # replication carried over runs out; the old master, which takes writes for about ten seconds until the
        # sentinel turns it into a replica, gets none after that.
        new = topology.master_port()
        await anyio.sleep(1.2)  # the copy of the lease that replication carried over is below 1.8 s by now
        with topology.server(new).client() as client:
            renewed = await topology.wait_async(lambda: client.pttl(f"{PREFIX}:leader") > 2000, 2.5)
            assert renewed and client.get(f"{PREFIX}:leader") == a.identity.encode()
            _, tick = await lead_again(a, seconds=1)
            assert a.is_leader() and a.epoch == 1 and not b.is_leader()
            assert client.get(f"{PREFIX}:tick:fuel:{tick.isoformat()}") == b"1"
            assert client.get(f"{PREFIX}:tick:fuel:{T.isoformat()}") == b"1"  # claimed before the failover
        with topology.server(old).client() as client:
            assert client.get(f"{PREFIX}:tick:fuel:{tick.isoformat()}") is None
        assert list(await state.load(["fp1"])) == ["fp1"]  # the alert state followed too
        await state.record("fuel", [], T + timedelta(hours=1), epoch=a.epoch)
        # A handover on the new master (b hears of it there): the epoch goes on from where it was, not from 1.
        released = anyio.current_time()
        stop_a.cancel()
        await lead_again(b, seconds=3)
        assert b.epoch == 2 and anyio.current_time() - released < 0.5
        tg.cancel_scope.cancel()
    await state.aclose()
    await a.aclose()
    await b.aclose()


@pytest.mark.anyio
async def test_the_master_dies_and_a_replica_leads_again_on_the_new_one(topology: Topology) -> None:
    a, b = coordinators(topology)
    async with anyio.create_task_group() as tg:
        for coordinator in (a, b):
            await coordinator.start()
            tg.start_soon(coordinator.run)
        assert a.is_leader() and a.epoch == 1
        old = topology.master_port()
        await topology.wait(topology.replica_in_sync, 5, "the replica is not in sync")
        topology.server(old).stop()
        killed = anyio.current_time()
        await topology.wait(lambda: topology.failover_done(old), 10, "no failover")
        leader, _ = await lead_again(a, b, seconds=8)
        # a keeps its term if it could renew on the new master before its renew deadline; otherwise the lease
        # expires there and a replica takes a new term (which needs the epoch to have reached the replica).
        assert leader.epoch >= 1 and (leader is a or leader.epoch == 2)
        assert anyio.current_time() - killed < 10
        tg.cancel_scope.cancel()
    await a.aclose()
    await b.aclose()


@pytest.mark.anyio
async def test_pamd_check_reaches_the_master_through_sentinel(tmp_path: Path, topology: Topology,
                                                              clean_env: dict[str, str]) -> None:
    path = write_config(tmp_path, free_port(), f'[coordination]\nurl = "{topology.url}"\n')
    results = {name: (status, detail) for status, name, detail in await run_checks(str(path))}
    assert results["coordination"] == ("ok", f"{topology.url} reachable")
    topology.sentinel.stop()
    results = {name: (status, detail) for status, name, detail in await run_checks(str(path))}
    status, detail = results["coordination"]
    assert status == "fail" and detail.startswith(f"{topology.url}: no sentinel named a healthy master"), detail


@needs_openssl
@pytest.mark.anyio
async def test_tls_and_passwords_for_the_master_and_the_sentinel(tmp_path: Path) -> None:
    """``rediss+sentinel://``: TLS to the sentinel and to the master, an ACL user on the master (the URL's user
    and password), a password on the sentinel (``sentinel_password``)."""
    tls: TlsFiles = make_tls_files(tmp_path / "tls")
    tls_client: dict[str, Any] = {"username": "pamd", "password": "s3cret"}
    master = OwnRedis(tmp_path, ["user default off", f"user pamd on >s3cret ~{PREFIX}:* &{PREFIX}:* +@all",
                                 "user sentinel on >sentinel-pw allchannels +multi +slaveof +ping +exec "
                                 "+subscribe +config|rewrite +role +publish +info +client|setname +client|kill "
                                 "+script|kill"], tls=tls, client_options=tls_client)
    master.start()
    sentinel = OwnRedis(tmp_path, [
        "tls-replication yes", "requirepass watch-pw",
        f"sentinel monitor {SERVICE} 127.0.0.1 {master.port} 1",
        f"sentinel auth-user {SERVICE} sentinel", f"sentinel auth-pass {SERVICE} sentinel-pw",
    ], tls=tls, sentinel=True, client_options={"password": "watch-pw"})
    sentinel.start()
    try:
        url = (f"rediss+sentinel://pamd:s3cret@127.0.0.1:{sentinel.port}/{SERVICE}?ssl_ca_certs={tls.ca}"
               "&sentinel_password=watch-pw")
        coordinator = RedisCoordinator(url, PREFIX, ttl=3.0)
        await coordinator.start()
        assert coordinator.is_leader() and await coordinator.claim_tick("fuel", T)
        await coordinator.aclose()
        with master.client() as client:
            assert client.get(f"{PREFIX}:tick:fuel:{T.isoformat()}") == b"1"
        wrong = RedisCoordinator(url.replace("watch-pw", "nope"), PREFIX, ttl=3.0)
        with pytest.raises(Exception, match="no sentinel named a healthy master") as caught:
            await wrong.ping()
        assert "nope" not in str(caught.value) and "s3cret" not in str(caught.value)
        await wrong.aclose()
    finally:
        sentinel.stop()
        master.stop()
