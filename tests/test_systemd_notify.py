"""sd_notify against real AF_UNIX datagram sockets."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pamd.systemd import Notifier


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    try:
        yield sock, str(path)
    finally:
        sock.close()


def recv(sock: socket.socket) -> list[str]:
    data = sock.recv(4096).decode()
    assert data.endswith("\n")
    return data[:-1].split("\n")


def assert_nothing_pending(sock: socket.socket) -> None:
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(4096)


def test_disabled_when_notify_socket_unset() -> None:
    n = Notifier.from_env({"WATCHDOG_USEC": "30000000"})
    assert not n.enabled
    assert n.watchdog_interval is None
    n.ready("up")
    n.status("x")
    n.watchdog()
    n.reloading()
    n.stopping()
    n.notify(foo="bar")
    n.close()


def test_empty_notify_socket_is_disabled() -> None:
    assert not Notifier.from_env({"NOTIFY_SOCKET": ""}).enabled


def test_ready_status_watchdog_stopping_payloads(server: tuple[socket.socket, str]) -> None:
    sock, path = server
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    n = Notifier.from_env(env)
    assert n.enabled
    try:
        n.ready("listening on 127.0.0.1:8650")
        assert recv(sock) == ["READY=1", "STATUS=listening on 127.0.0.1:8650", f"MAINPID={os.getpid()}"]
        n.ready()
        assert recv(sock) == ["READY=1", f"MAINPID={os.getpid()}"]
        n.status("3 monitors\nleader")
        assert recv(sock) == ["STATUS=3 monitors leader"]
        n.watchdog()
        assert recv(sock) == ["WATCHDOG=1"]
        n.stopping("draining")
        assert recv(sock) == ["STOPPING=1", "STATUS=draining"]
        n.stopping()
        assert recv(sock) == ["STOPPING=1"]
        n.notify(errno=5, extend_timeout_usec=1_000_000, flag=True)
        assert recv(sock) == ["ERRNO=5", "EXTEND_TIMEOUT_USEC=1000000", "FLAG=1"]
        assert_nothing_pending(sock)
    finally:
        n.close()
    assert not n.enabled
    n.status("after close")
    assert_nothing_pending(sock)


def test_reloading_sends_monotonic_usec(server: tuple[socket.socket, str]) -> None:
    sock, path = server
    n = Notifier.from_env({"NOTIFY_SOCKET": path})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    n.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    n.close()
    lines = recv(sock)
    assert lines[0] == "RELOADING=1"
    key, _, value = lines[1].partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_abstract_namespace_socket() -> None:
    name = f"pamd-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2.0)
    try:
        n = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert n.enabled
        n.ready("ok")
        n.close()
        assert recv(sock) == ["READY=1", "STATUS=ok", f"MAINPID={os.getpid()}"]
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("usec", "expected"),
    [("30000000", 15.0), ("1000000", 0.5), ("0", None), ("not-a-number", None), ("", None)],
)
def test_watchdog_interval(server: tuple[socket.socket, str], usec: str, expected: float | None) -> None:
    _, path = server
    n = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": usec})
    assert n.watchdog_interval == expected
    n.close()


def test_watchdog_interval_needs_notify_socket() -> None:
    assert Notifier.from_env({"WATCHDOG_USEC": "30000000"}).watchdog_interval is None


def test_watchdog_pid_mismatch_disables_watchdog(server: tuple[socket.socket, str]) -> None:
    sock, path = server
    n = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"})
    assert n.enabled
    assert n.watchdog_interval is None
    n.watchdog()
    n.status("still notifies")
    n.close()
    assert recv(sock) == ["STATUS=still notifies"]  # and no WATCHDOG=1 before it


def test_vanished_socket_does_not_raise(
    server: tuple[socket.socket, str], caplog: pytest.LogCaptureFixture
) -> None:
    sock, path = server
    n = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"})
    n.status("before")
    assert recv(sock) == ["STATUS=before"]
    sock.close()
    os.unlink(path)
    with caplog.at_level(logging.DEBUG, logger="pamd.systemd"):
        n.watchdog()  # connected peer is gone
        n.status("x")  # reconnect fails: no such file
        n.stopping()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    n.close()


def test_missing_socket_from_the_start_does_not_raise(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "absent.sock")})
    assert n.enabled
    with caplog.at_level(logging.WARNING, logger="pamd.systemd"):
        n.ready()
        n.ready()
    assert len(caplog.records) == 1
    n.close()


def test_socket_recreated_after_failure_is_reconnected(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    n = Notifier.from_env({"NOTIFY_SOCKET": str(path)})
    n.status("lost")  # nobody listening yet
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    try:
        n.status("found")
        assert recv(sock) == ["STATUS=found"]
    finally:
        n.close()
        sock.close()


def test_unsupported_address_is_disabled() -> None:
    assert not Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled
