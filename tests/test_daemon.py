"""End to end: ``pamd run`` as a subprocess, its HTTP endpoints, signals and systemd notifications."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, write_config
from tests.daemon_proc import DaemonProcess, wait_for
from tests.plugin_sources import BROKEN_IMPORT, RECORDER, plugin_dir


def test_embedded_default_shows_alerts_within_seconds(tmp_path: Path, port: int,
                                                      daemons: list[DaemonProcess]) -> None:
    # Exactly the README's demo: the repo's config.toml, a fresh directory, nothing else configured.
    shutil.copy(REPO / "config.toml", tmp_path / "config.toml")
    started = time.monotonic()
    # No network here: the providers point at a closed local port, so their lookups fail at once, not after DNS.
    daemon = DaemonProcess(tmp_path, None, port, env={
        "PAMD_HTTP__LISTEN": f"127.0.0.1:{port}", "PAMD_PROVIDERS__PLACES__BASE_URL": "http://127.0.0.1:9",
        "PAMD_PROVIDERS__WEATHER__BASE_URL": "http://127.0.0.1:9"})
    daemons.append(daemon)
    startup = ("fuel", "budget", "maintenance", "context")  # the demo config runs these at startup
    wait_for(lambda: all(f"{m} →" in daemon.stdout() for m in startup), 10,
             lambda: f"not every monitor alerted on stdout:\n{daemon.stdout()}\nstderr:\n{daemon.stderr()}")
    assert time.monotonic() - started < 10
    # The console sink writes before the jsonl sink does: wait for the file to hold every monitor too.
    jsonl = tmp_path / ".pamd" / "alerts.jsonl"

    def jsonl_alerts() -> list[dict[str, object]]:
        return [json.loads(line) for line in jsonl.read_text().splitlines()] if jsonl.exists() else []

    wait_for(lambda: {a["monitor"] for a in jsonl_alerts()} >= set(startup), 5,
             lambda: f"alerts.jsonl lacks a monitor: {sorted({str(a['monitor']) for a in jsonl_alerts()})}")
    alerts = jsonl_alerts()
    assert {a["priority"] for a in alerts if a["monitor"] == "fuel"} == {"medium", "high", "urgent"}
    assert all(a["id"] and a["fingerprint"] for a in alerts)
    assert len({a["id"] for a in alerts}) == len(alerts)
    status = daemon.json("/status")
    assert status["monitors"]["fuel"]["last_outcome"] == "success"
    assert status["leader"] is True and status["epoch"] == 1
    assert daemon.stop() == 0


def test_http_endpoints(tmp_path: Path, port: int, daemons: list[DaemonProcess]) -> None:
    config = write_config(tmp_path, port)
    daemon = DaemonProcess(tmp_path, config, port)
    daemons.append(daemon)
    daemon.wait_ready()
    wait_for(lambda: daemon.json("/status")["monitors"]["fuel"]["last_outcome"], 10)
    assert daemon.get("/livez")[0] == 200
    code, body = daemon.get("/readyz")
    assert code == 200 and json.loads(body)["checks"] == {
        "config": "ok", "plugins": "ok", "store": "ok", "coordinator": "ok", "state": "running"}
    assert daemon.get("/healthz")[0] == 200
    assert daemon.get("/nope")[0] == 404
    metrics = daemon.get("/metrics")[1]
    assert "pamd_leader 1.0" in metrics and "pamd_leader_epoch 1.0" in metrics
    for line in ('pamd_build_info{python=', 'pamd_monitor_runs_total{monitor="fuel",outcome="success"} 1.0',
                 'pamd_monitor_runs_total{monitor="fuel",outcome="timeout"} 0.0',
                 'pamd_monitor_run_duration_seconds_bucket{le="0.005",monitor="fuel"}',
                 'pamd_monitor_lateness_seconds_count{monitor="fuel"} 0.0',  # only a startup run so far
                 'pamd_monitor_last_success_timestamp_seconds{monitor="fuel"}', 'pamd_monitor_up{monitor="fuel"} 1.0',
                 'pamd_alerts_total{monitor="fuel",outcome="delivered",priority="urgent"}',
                 'pamd_alerts_total{monitor="fuel",outcome="failed",priority="low"} 0.0',
                 'pamd_event_loop_lag_seconds_bucket', 'pamd_plugin_up{plugin="fuel",source="built-in"} 1.0'):
        assert line in metrics, line
    status = daemon.json("/status")
    fuel = status["monitors"]["fuel"]
    assert fuel["schedule"] == "*/5 * * * *" and fuel["source"] == "built-in" and fuel["next_run"]
    assert status["version"] and status["state"] == "running"
    assert daemon.stop() == 0


def test_sigterm_drains_running_tick_then_exits_zero(tmp_path: Path, port: int,
                                                      daemons: list[DaemonProcess]) -> None:
    record = tmp_path / "record.txt"
    plugins = plugin_dir(tmp_path, recorder=RECORDER)
    config = write_config(tmp_path, port, "[monitors.fuel]\nenabled = false\n",
                          daemon=f'plugin_dirs = ["{plugins}"]', grace=10.0)
    daemon = DaemonProcess(tmp_path, config, port, env={"TEST_PAMD_RECORD": str(record)})
    daemons.append(daemon)
    daemon.wait_ready()
    wait_for(lambda: daemon.json("/status")["monitors"]["slow"]["running"], 5)
    daemon.signal(signal.SIGTERM)
    assert daemon.proc.wait(15) == 0
    lines = record.read_text().splitlines()
    assert any(line.startswith("slow ") for line in lines), "the running slow tick was cut off instead of drained"
    assert "draining" in daemon.stderr()


def test_failed_plugin_is_isolated_and_visible(tmp_path: Path, port: int, daemons: list[DaemonProcess]) -> None:
    plugins = plugin_dir(tmp_path, broken=BROKEN_IMPORT)
    config = write_config(tmp_path, port, daemon=f'plugin_dirs = ["{plugins}"]')
    daemon = DaemonProcess(tmp_path, config, port)
    daemons.append(daemon)
    daemon.wait_ready()
    broken = next(p for p in daemon.json("/status")["plugins"] if p["name"] == "broken")
    assert broken["status"] == "failed" and "RuntimeError: boom at import (broken.py:2)" in broken["error"]
    assert 'pamd_plugin_up{plugin="broken",source="plugin dir"} 0.0' in daemon.get("/metrics")[1]
    assert "boom at import" in daemon.stderr()
    assert daemon.stop() == 0


class NotifyListener:
    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                return self.messages

    def wait(self, needle: str, timeout: float = 10) -> str:
        def found() -> str | None:
            self.drain()
            return next((m for m in self.messages if needle in m), None)

        result: str = wait_for(found, timeout, lambda: f"no {needle!r} in {self.messages}")
        return result


def test_systemd_notify_watchdog_reload_and_stop(tmp_path: Path, port: int, daemons: list[DaemonProcess]) -> None:
    listener = NotifyListener(tmp_path / "notify.sock")
    config = write_config(tmp_path, port)
    daemon = DaemonProcess(tmp_path, config, port, env={
        "NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "400000"})
    daemons.append(daemon)
    ready = listener.wait("READY=1")
    assert "STATUS=running 5 monitors; http 127.0.0.1:" in ready
    # The startup run of fuel must have finished before the reload below, or "ran once" proves nothing.
    wait_for(lambda: daemon.json("/status")["monitors"]["fuel"]["last_outcome"] == "success", 10)
    # READY=1 is sent only once HTTP is bound: the port answers now.
    assert daemon.get("/livez")[0] == 200
    before = len([m for m in listener.drain() if "WATCHDOG=1" in m])
    time.sleep(1.0)
    pings = len([m for m in listener.drain() if "WATCHDOG=1" in m]) - before
    assert 3 <= pings <= 8, pings  # every WATCHDOG_USEC/2 = 0.2 s

    # SIGHUP with a new schedule and a new plugin dir: reloads config and plugins, keeps the port,
    # says RELOADING=1 then READY=1.
    plugins = plugin_dir(tmp_path, recorder=RECORDER)
    config.write_text(config.read_text().replace("[log]", f'plugin_dirs = ["{plugins}"]\n[log]')
                      + '\n[monitors.fuel]\nschedule = "0 0 1 1 *"\n')
    daemon.signal(signal.SIGHUP)
    listener.wait("RELOADING=1")
    wait_for(lambda: daemon.json("/status")["monitors"]["fuel"]["schedule"] == "0 0 1 1 *", 10)
    status = daemon.json("/status")
    assert status["last_reload"]["outcome"] == "success" and status["pid"] == daemon.proc.pid
    assert status["monitors"]["every_second"]["source"] == "plugin dir"
    assert "READY=1" in listener.wait("reloaded: 7 monitors")  # the 5 built-ins and the plugin dir's 2
    # run_at_startup means daemon start: a reload does not run fuel again.
    fuel_runs = [line for line in daemon.get("/metrics")[1].splitlines()
                 if line.startswith('pamd_monitor_runs_total{monitor="fuel"')]
    assert 'pamd_monitor_runs_total{monitor="fuel",outcome="success"} 1.0' in fuel_runs, fuel_runs

    # A broken config on reload keeps the running one and says why.
    good = config.read_text()
    config.write_text(good.replace('"0 0 1 1 *"', '"every tuesday"'))
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: (daemon.json("/status")["last_reload"] or {}).get("outcome") == "error", 10)
    reload_info = daemon.json("/status")["last_reload"]
    assert "monitors.fuel.schedule: bad cron expression 'every tuesday'" in reload_info["error"]
    assert daemon.json("/status")["monitors"]["fuel"]["schedule"] == "0 0 1 1 *"
    assert daemon.get("/readyz")[0] == 200
    assert "reload failed, keeping the running configuration" in daemon.stderr()
    assert 'pamd_config_reloads_total{outcome="error"} 1.0' in daemon.get("/metrics")[1]

    daemon.signal(signal.SIGTERM)
    listener.wait("STOPPING=1")
    assert daemon.proc.wait(10) == 0


@pytest.mark.parametrize("how", ["grace expires", "second signal"])
def test_stuck_tick_does_not_hold_shutdown(tmp_path: Path, port: int, daemons: list[DaemonProcess], how: str) -> None:
    plugins = plugin_dir(tmp_path, recorder=RECORDER)
    config = write_config(tmp_path, port, "[monitors.fuel]\nenabled = false\n",
                          daemon=f'plugin_dirs = ["{plugins}"]', grace=1.5 if how == "grace expires" else 60)
    daemon = DaemonProcess(tmp_path, config, port, env={"TEST_PAMD_RECORD": str(tmp_path / "r.txt"),
                                                        "TEST_PAMD_SLOW": "120"})
    daemons.append(daemon)
    daemon.wait_ready()
    wait_for(lambda: daemon.json("/status")["monitors"]["slow"]["running"], 5)
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    if how == "second signal":
        wait_for(lambda: "draining" in daemon.stderr(), 5)
        daemon.signal(signal.SIGINT)
    assert daemon.proc.wait(15) == 0
    assert time.monotonic() - started < 6
    assert ("grace period over" if how == "grace expires" else "again: cancelling running ticks") in daemon.stderr()


def test_startup_objects_are_frozen_and_later_garbage_still_collected() -> None:
    """What the daemon does once started (in a child process: freezing is process-wide): startup objects frozen,
    young collections spaced out, and cycles made later still collected without being asked for."""
    code = """
import gc, weakref
from pamd.heap import YOUNG_THRESHOLD, settle_heap
frozen = settle_heap()
assert frozen == gc.get_freeze_count() > 10_000, frozen  # pamd's modules, pluggy, msgspec, anyio...
assert gc.get_threshold()[0] == YOUNG_THRESHOLD == 50_000
class Node:
    pass
def cycle():
    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle made after the freeze
    return weakref.ref(a)
gone = cycle()
collections = gc.get_stats()[0]["collections"]
kept = [Node() for _ in range(YOUNG_THRESHOLD + 1)]  # enough new objects for a young collection
assert gone() is None and gc.get_stats()[0]["collections"] > collections
print(frozen)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) > 10_000
