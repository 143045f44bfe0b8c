"""Bad input to ``pamd run``: a clear one-line error, no traceback, a non-zero exit, nothing left running."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.conftest import write_config
from tests.daemon_proc import run_cli
from tests.plugin_sources import DUPLICATE_FUEL, RECORDER, plugin_dir

EX_CONFIG = 78


def run_bad(tmp_path: Path, config_text: str) -> tuple[int, str]:
    path = tmp_path / "config.toml"
    path.write_text(config_text, encoding="utf-8")
    result = run_cli("run", "--config", str(path), cwd=tmp_path, timeout=30)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return result.returncode, lines[0]


@pytest.mark.parametrize(
    ("config_text", "expected"),
    [
        ("[http]\nlisten = \n", "config.toml: invalid TOML: Invalid value (at line 2, column 10)"),
        ("[daemon]\nshutdown_grace = 1\nbogus = true\n", "config.toml:3: daemon.bogus: unknown key"),
        ("[daemon]\nmax_concurrent_ticks = 'four'\n",
         "config.toml:2: daemon.max_concurrent_ticks: expected `int`, got `str`"),
        ("[monitors.fuel]\nschedule = '*/5 * * *'\n",
         "config.toml:2: monitors.fuel.schedule: bad cron expression '*/5 * * *': Wrong number of fields"),
        ("[monitors.fuel]\n\ntimezone = 'Europe/Berlinn'\n",
         "config.toml:3: monitors.fuel.timezone: unknown timezone 'Europe/Berlinn'"),
        ("[monitors.fuel]\nmedium_pct = 'lots'\n", "config.toml:2: monitors.fuel.medium_pct: expected `float`"),
        ("[monitors.fule]\nenabled = false\n",
         "config.toml:1: monitors.fule: no such monitor (known: budget, context, fuel, maintenance, weather)"),
        ("[alerts]\nquiet_start = '7pm'\nquiet_end = '07:00'\n", "config.toml:2: alerts.quiet_start: expected `str` "
         "matching regex"),
        ("[monitors.fuel]\ncooldown = -5\n", "config.toml:2: monitors.fuel.cooldown: must not be negative"),
        ("[sinks.jsonl]\npaht = 'x'\n", "config.toml:2: sinks.jsonl.paht: unknown key"),
        ("[store]\nurl = 'mysql://db/pam'\n", "config.toml:2: store.url: unsupported store url scheme 'mysql'"),
    ],
)
def test_config_errors(tmp_path: Path, config_text: str, expected: str) -> None:
    code, line = run_bad(tmp_path, config_text)
    assert code == EX_CONFIG
    assert line.startswith("pamd: config error: ") and f"{tmp_path}/{expected}" in line
    assert not (tmp_path / ".pamd").exists(), "nothing may start half-way"


def test_port_in_use(tmp_path: Path, port: int) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        config = write_config(tmp_path, port)
        code, line = run_bad(tmp_path, config.read_text())
    assert code == 1
    assert line == f"pamd: error: http.listen 127.0.0.1:{port}: Address already in use"


def test_world_writable_plugin_dir(tmp_path: Path, port: int) -> None:
    directory = plugin_dir(tmp_path, recorder=RECORDER)
    directory.chmod(0o777)
    config = write_config(tmp_path, port, daemon=f'plugin_dirs = ["{directory}"]')
    code, line = run_bad(tmp_path, config.read_text())
    assert code == EX_CONFIG
    assert f"daemon.plugin_dirs: plugin dir {directory}: world-writable" in line


def test_missing_plugin_dir(tmp_path: Path, port: int) -> None:
    config = write_config(tmp_path, port, daemon=f'plugin_dirs = ["{tmp_path}/nowhere"]')
    code, line = run_bad(tmp_path, config.read_text())
    assert code == EX_CONFIG and "No such file or directory" in line


def test_duplicate_monitor_names(tmp_path: Path, port: int) -> None:
    directory = plugin_dir(tmp_path, dup=DUPLICATE_FUEL)
    config = write_config(tmp_path, port, daemon=f'plugin_dirs = ["{directory}"]')
    code, line = run_bad(tmp_path, config.read_text())
    assert code == EX_CONFIG
    assert line == ("pamd: config error: monitor 'fuel' is registered by both plugin 'fuel' (built-in) "
                    "and plugin 'dup' (plugin dir)")


def test_unusable_state_dir(tmp_path: Path, port: int) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    config = write_config(tmp_path, port, state=blocker / "state")
    code, line = run_bad(tmp_path, config.read_text())
    assert code == 1
    assert line.startswith("pamd: error: cannot open backends: ") and "Not a directory" in line
