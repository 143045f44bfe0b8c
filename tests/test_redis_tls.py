"""``rediss://`` with an ACL user, against redis-servers of this module's own with a throwaway CA.

The user may touch only keys and channels under its prefix (``~pamd-tls:* &pamd-tls:*``) and no dangerous command,
so these tests also show that the coordinator and the alert state stay under their prefix.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from pamd.alerts.decide import Decision
from pamd.alerts.redis_state import RedisAlertState
from pamd.coordination.redis import RedisCoordinator
from pamd.coordination.redis_client import RedisUnavailableError
from pamd.model import Alert, Priority
from tests.conftest import free_port, write_config
from tests.daemon_proc import run_cli
from tests.redis_servers import OwnRedis, TlsFiles, make_tls_files, needs_openssl, needs_redis_server

pytestmark = [needs_redis_server, needs_openssl]

PREFIX = "pamd-tls"
ACL = ("user default off", f"user pamd on >s3cret ~{PREFIX}:* &{PREFIX}:* +@all -@dangerous")
T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tls: TlsFiles) -> Iterator[OwnRedis]:
    """TLS only (no plain port), clients need no certificate, the default user is off."""
    own = OwnRedis(tmp_path_factory.mktemp("redis"), ACL, tls=tls,
                   client_options={"username": "pamd", "password": "s3cret"})
    own.start()
    yield own
    own.stop()


def url(server: OwnRedis, tls: TlsFiles, password: str = "s3cret", query: str = "") -> str:
    return f"rediss://pamd:{password}@127.0.0.1:{server.port}/0?{query or f'ssl_ca_certs={tls.ca}'}"


@pytest.mark.anyio
async def test_coordinator_leads_claims_and_hands_over_over_tls(server: OwnRedis, tls: TlsFiles) -> None:
    a = RedisCoordinator(url(server, tls), PREFIX, ttl=3.0, retry_interval=30.0)
    b = RedisCoordinator(url(server, tls), PREFIX, ttl=3.0, retry_interval=30.0)
    async with anyio.create_task_group() as tg:
        await a.start()
        tg.start_soon(a.run)
        await b.start()
        tg.start_soon(b.run)
        assert a.is_leader() and not b.is_leader()
        first = a.epoch
        assert await a.claim_tick("fuel", T) and not await a.claim_tick("fuel", T)
        assert await a.last_tick("fuel") == T
        await anyio.sleep(0.2)  # b subscribes to the release notice (a channel under the prefix)
        assert await a.release() and not a.is_leader()
        with anyio.fail_after(2):
            while not b.is_leader():  # noqa: ASYNC110 - leadership is a state: poll it
                await anyio.sleep(0.01)
        assert b.epoch == first + 1
        assert await b.claim_tick("fuel", T.replace(minute=5))
        tg.cancel_scope.cancel()
    await a.aclose()
    await b.aclose()
    with server.client() as client:
        assert client.get(f"{PREFIX}:leader") is None  # b released on cancellation
        assert all(key.startswith(f"{PREFIX}:".encode()) for key in client.scan_iter())


@pytest.mark.anyio
async def test_alert_state_works_over_tls(server: OwnRedis, tls: TlsFiles) -> None:
    state = RedisAlertState(url(server, tls), f"{PREFIX}:state")
    await state.ping()
    alert = Alert(user_id="ann", kind="fuel_low", priority=Priority.MEDIUM, title="fuel", body="b", monitor="fuel",
                  id="a1", fingerprint="fp1", epoch=1)
    assert await state.record("fuel", [Decision(alert=alert, outcome="delivered", reason="new")], T, epoch=1) == []
    loaded = await state.load(["fp1", "fp2"])
    assert list(loaded) == ["fp1"] and loaded["fp1"].last_alert_id == "a1" and loaded["fp1"].last_sent_at == T
    assert await state.record("fuel", [], T.replace(hour=13), sweep=True, epoch=1) == ["fp1"]
    await state.aclose()


@pytest.mark.anyio
async def test_a_wrong_password_is_one_clear_line_without_the_password(
        server: OwnRedis, tls: TlsFiles, caplog: pytest.LogCaptureFixture) -> None:
    wrong = RedisCoordinator(url(server, tls, password="hunter2"), PREFIX, ttl=3.0)
    safe = f"rediss://pamd:***@127.0.0.1:{server.port}/0?ssl_ca_certs={tls.ca}"
    with pytest.raises(RedisUnavailableError) as caught:
        await wrong.start()
    assert str(caught.value).startswith(f"{safe}: authentication failed (check the user and password in the URL)")
    with caplog.at_level(logging.ERROR, logger="pamd.coordination"):
        await wrong._step()
        await wrong._step()  # the same problem again: no second line
    assert [r.getMessage() for r in caplog.records] == [f"redis coordination {caught.value}"]
    assert "hunter2" not in caplog.text and "\n" not in str(caught.value) and not wrong.is_leader()
    await wrong.aclose()


@pytest.mark.anyio
async def test_a_server_certificate_that_cannot_be_verified_is_a_clear_error(server: OwnRedis,
                                                                            tls: TlsFiles) -> None:
    for query, problem in (("db=0", "TLS certificate verification failed (ssl_ca_certs must name the CA"),
                           ("ssl_ca_certs=/nonexistent/ca.pem", "cannot read a file the URL names")):
        unverified = RedisCoordinator(url(server, tls, query=query), PREFIX, ttl=3.0)
        with pytest.raises(RedisUnavailableError, match=r"^rediss://pamd:[*]{3}@") as caught:
            await unverified.ping()
        assert caught.value.problem.startswith(problem), caught.value.problem
        await unverified.aclose()
    # Verification off (ssl_cert_reqs reaches redis-py): it connects without the CA.
    unchecked = RedisCoordinator(url(server, tls, query="ssl_cert_reqs=none"), PREFIX, ttl=3.0)
    await unchecked.ping()
    await unchecked.aclose()


@pytest.mark.anyio
async def test_client_certificates_reach_the_server(tmp_path: Path, tls: TlsFiles) -> None:
    mutual = OwnRedis(tmp_path, [*tls.server_lines(auth_clients="yes")], tls=tls,
                      client_options={"ssl_certfile": str(tls.client_cert), "ssl_keyfile": str(tls.client_key)})
    mutual.start()
    try:
        base = f"rediss://127.0.0.1:{mutual.port}/0?ssl_ca_certs={tls.ca}"
        with_cert = RedisAlertState(f"{base}&ssl_certfile={tls.client_cert}&ssl_keyfile={tls.client_key}")
        await with_cert.ping()
        await with_cert.aclose()
        without = RedisAlertState(base, timeout=2.0)
        with pytest.raises(RedisUnavailableError, match=f"^rediss://127.0.0.1:{mutual.port}/0"):
            await without.ping()
        await without.aclose()
    finally:
        mutual.stop()


def test_pamd_check_prints_one_line_with_the_password_redacted(tmp_path: Path, server: OwnRedis,
                                                               tls: TlsFiles) -> None:
    for password, status in (("s3cret", 0), ("hunter2", 1)):
        directory = tmp_path / f"check{status}"
        directory.mkdir()
        extra = f'[coordination]\nurl = "{url(server, tls, password=password)}"\nprefix = "{PREFIX}"\n'
        result = run_cli("check", "--config", str(write_config(directory, free_port(), extra)), cwd=directory)
        assert result.returncode == status, result.stdout + result.stderr
        assert "s3cret" not in result.stdout + result.stderr and "hunter2" not in result.stdout + result.stderr
        lines = [line for line in result.stdout.splitlines() if "coordination" in line]
        safe = f"rediss://pamd:***@127.0.0.1:{server.port}/0?ssl_ca_certs={tls.ca}"
        if status == 0:
            assert lines == [f"ok   coordination: {safe} reachable"]
        else:
            assert len(lines) == 1 and lines[0].startswith(f"FAIL coordination: {safe}: authentication failed ("), \
                lines
