"""The command line, run as users run it (a subprocess of the installed ``pamd`` script)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import write_config
from tests.daemon_proc import DaemonProcess, run_cli

COMMANDS = [["run"], ["check"], ["monitors"], ["plugins"], ["trigger"], ["explain"], ["config", "show"],
            ["demo", "seed"], ["db", "migrate"]]


@pytest.fixture
def workdir(tmp_path: Path, port: int) -> Iterator[Path]:
    write_config(tmp_path, port)
    yield tmp_path


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(tmp_path: Path, command: list[str]) -> None:
    result = run_cli(*command, "--help", cwd=tmp_path)
    assert result.returncode == 0 and "usage: pamd" in result.stdout and "--config" in result.stdout


def test_monitors_lists_next_three_fire_times(workdir: Path) -> None:
    (workdir / "config.toml").write_text((workdir / "config.toml").read_text()
                                         + '\n[monitors.fuel]\nschedule = "30 2 * * *"\ntimezone = "Europe/Berlin"\n')
    rows = json.loads(run_cli("monitors", "--json", cwd=workdir).stdout)
    fuel = next(r for r in rows if r["name"] == "fuel")
    assert (fuel["plugin"], fuel["source"], fuel["schedule"], fuel["timezone"]) == (
        "fuel", "built-in", "30 2 * * *", "Europe/Berlin")
    fires = [datetime.fromisoformat(f) for f in fuel["next"]]
    assert len(fires) == 3 and all(f.strftime("%H:%M") in ("02:30", "03:00") for f in fires)
    text = run_cli("monitors", cwd=workdir).stdout
    assert "fuel\n  plugin:   fuel (built-in)\n  schedule: 30 2 * * *  [Europe/Berlin]\n  next:" in text


def test_plugins_prints_json(workdir: Path) -> None:
    plugins = json.loads(run_cli("plugins", cwd=workdir).stdout)
    assert {"name": "fuel", "source": "built-in", "module": "pamd_plugins.fuel", "status": "loaded",
            "hooks": ["register_monitors"], "monitors": ["fuel"]} in plugins


def test_trigger_dry_run_delivers_nothing(workdir: Path) -> None:
    result = run_cli("trigger", "fuel", "--dry-run", cwd=workdir)
    assert result.returncode == 0, result.stderr
    alerts = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(a["priority"] for a in alerts) == ["high", "medium", "urgent"]
    assert "would deliver" in result.stderr
    assert not (workdir / "state" / "alerts.jsonl").exists()


def test_trigger_one_user_delivers_to_sinks(workdir: Path) -> None:
    result = run_cli("trigger", "fuel", "--user", "demo-u02", cwd=workdir)
    assert result.returncode == 0, result.stderr
    delivered = [json.loads(line) for line in (workdir / "state" / "alerts.jsonl").read_text().splitlines()]
    assert [a["user_id"] for a in delivered] == ["demo-u02"]
    assert run_cli("trigger", "nope", cwd=workdir).returncode == 2


def test_explain_says_why_before_and_after_delivery(workdir: Path) -> None:
    before = run_cli("explain", "demo-u02", "--monitor", "fuel", cwd=workdir)
    assert before.returncode == 0, before.stderr
    assert "alert fuel_low [high]: Fuel low" in before.stdout
    assert "-> would be delivered: new condition" in before.stdout
    assert "level_pct=" in before.stdout  # the facts the monitor computed
    assert run_cli("trigger", "fuel", "--user", "demo-u02", cwd=workdir).returncode == 0
    after = json.loads(run_cli("explain", "demo-u02", "--monitor", "fuel", "--json", cwd=workdir).stdout)
    [report] = after["monitors"]
    [alert] = report["alerts"]
    assert (alert["decision"], alert["priority"]) == ("cooldown", "high")
    assert "cooldown until" in alert["reason"]
    # nothing was delivered by explain itself
    delivered = (workdir / "state" / "alerts.jsonl").read_text().splitlines()
    assert len(delivered) == 1
    healthy = run_cli("explain", "demo-u04", "--monitor", "fuel", cwd=workdir)
    assert "no alert" in healthy.stdout and "above thresholds" in healthy.stdout
    assert run_cli("explain", "demo-u04", "--monitor", "nope", cwd=workdir).returncode == 2
    unknown = run_cli("explain", "nobody", cwd=workdir)
    assert unknown.returncode == 1 and "no monitored user 'nobody'" in unknown.stderr


def test_config_show_redacts_secrets(workdir: Path) -> None:
    result = run_cli("config", "show", cwd=workdir, env={"PAMD_STORE__URL": "sqlite:///x.db",
                                                          "PAMD_COORDINATION__URL": "redis://:s3cret@r:6379/0"})
    shown = json.loads(result.stdout)
    assert shown["store"]["url"] == "sqlite:///x.db"
    assert shown["coordination"]["url"] == "redis://:***@r:6379/0" and "s3cret" not in result.stdout


def test_demo_seed_and_migrate_are_idempotent(workdir: Path) -> None:
    assert run_cli("db", "migrate", cwd=workdir).returncode == 0
    first = run_cli("demo", "seed", cwd=workdir)
    second = run_cli("demo", "seed", cwd=workdir)
    assert first.returncode == second.returncode == 0 and first.stdout == second.stdout
    assert "seeded" in first.stdout


def test_demo_seed_migrate_check_and_trigger_on_postgres(workdir: Path, pg_url: str) -> None:
    env = {"PAMD_STORE__URL": pg_url}
    assert run_cli("db", "migrate", cwd=workdir, env=env).returncode == 0
    first = run_cli("demo", "seed", cwd=workdir, env=env)
    second = run_cli("demo", "seed", cwd=workdir, env=env)
    assert first.returncode == second.returncode == 0 and first.stdout == second.stdout
    assert "seeded" in first.stdout
    check = run_cli("check", cwd=workdir, env=env)
    assert "ok   store: postgresql://" in check.stdout, check.stdout
    for monitor in ("fuel", "budget", "maintenance", "context"):
        result = run_cli("trigger", monitor, "--dry-run", cwd=workdir, env=env)
        assert result.returncode == 0 and f"{monitor}: success" in result.stderr, result.stdout + result.stderr


def test_check_passes_before_start_and_against_a_running_daemon(workdir: Path, port: int) -> None:
    result = run_cli("check", cwd=workdir)
    assert result.returncode == 0, result.stdout
    assert f"ok   http: 127.0.0.1:{port} free to bind" in result.stdout
    assert "ok   store:" in result.stdout and "ok   coordination: local reachable" in result.stdout
    daemon = DaemonProcess(workdir, workdir / "config.toml", port)
    try:
        daemon.wait_ready()
        result = run_cli("check", cwd=workdir)
        assert result.returncode == 0, result.stdout
        assert f"ok   http: 127.0.0.1:{port} in use by a ready pamd (ready)" in result.stdout
    finally:
        daemon.stop()


def test_check_fails_on_foreign_port_and_bad_config(workdir: Path, port: int) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        result = run_cli("check", cwd=workdir)
    assert result.returncode == 1 and "FAIL http" in result.stdout
    (workdir / "config.toml").write_text("[http]\nlisten = 'nowhere'\n")
    result = run_cli("check", cwd=workdir)
    assert result.returncode == 1
    assert result.stdout.startswith("FAIL config: ") and "http.listen: expected HOST:PORT" in result.stdout


def test_plugins_shows_a_failed_plugin(workdir: Path) -> None:
    from tests.plugin_sources import BROKEN_IMPORT, plugin_dir

    directory = plugin_dir(workdir, broken=BROKEN_IMPORT)
    env = {"PAMD_DAEMON__PLUGIN_DIRS": f'["{directory}"]'}
    result = run_cli("plugins", cwd=workdir, env=env)
    broken = next(p for p in json.loads(result.stdout) if p["name"] == "broken")
    assert broken["status"] == "failed" and broken["error"] == "RuntimeError: boom at import (broken.py:2)"
    assert broken["source"] == "plugin dir" and broken["path"] == str(directory / "broken.py")
    assert "plugin broken (plugin dir) failed to load" in result.stderr
    check = run_cli("check", cwd=workdir, env=env)
    # A failed plugin is a warning, not a failure: the daemon starts without it (ExecStartPre must pass).
    assert check.returncode == 0, check.stdout
    assert "WARN plugin broken: failed, the daemon runs without it: RuntimeError: boom at import" in check.stdout
