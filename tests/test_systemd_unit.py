"""The shipped systemd unit: `systemd-analyze verify` is clean and `security` exposure stays <= 2.0.

Needs `systemd-analyze` (Debian/Ubuntu package `systemd`). Missing it is a failure, not a skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "pamd.service"
ENV_EXAMPLE = ROOT / "systemd" / "pamd.env.example"
INSTALLED_BIN = "/usr/local/bin/pamd"
MAX_EXPOSURE = 2.0


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze") or (
        "/usr/bin/systemd-analyze" if os.access("/usr/bin/systemd-analyze", os.X_OK) else None
    )
    if found is None:
        pytest.fail("systemd-analyze not found: install the `systemd` package (apt-get install systemd)")
    return found


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "", "SYSTEMD_LOG_COLOR": "0"}
    return subprocess.run(
        [systemd_analyze(), *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


def existing_pamd() -> str:
    """An executable standing in for /usr/local/bin/pamd: the venv's console script, else the interpreter."""
    script = Path(sys.executable).parent / "pamd"
    candidate = str(script) if os.access(script, os.X_OK) else sys.executable
    assert " " not in candidate, f"cannot substitute a path with spaces into the unit: {candidate}"
    return candidate


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_verify_is_clean(tmp_path: Path) -> None:
    text = UNIT.read_text()
    assert text.count(INSTALLED_BIN) == 2, "expected ExecStartPre and ExecStart to use " + INSTALLED_BIN
    # verify rejects commands that do not exist on this machine; point them at a real executable so
    # everything else in the unit is still checked.
    unit = tmp_path / "pamd.service"
    unit.write_text(text.replace(INSTALLED_BIN, existing_pamd()))
    result = run("verify", "--man=no", str(unit))
    output = (result.stdout + result.stderr).strip()
    print(output or "systemd-analyze verify: no output")
    ours = [line for line in output.splitlines() if str(tmp_path) in line or "pamd.service" in line]
    assert result.returncode == 0, output
    assert not ours, "systemd-analyze verify warned about the unit:\n" + "\n".join(ours)


def test_verify_shipped_unit_only_misses_the_binary() -> None:
    """The unmodified unit: the only acceptable complaint is that /usr/local/bin/pamd is absent here."""
    result = run("verify", "--man=no", str(UNIT))
    output = (result.stdout + result.stderr).strip()
    print(output or "systemd-analyze verify: no output")
    if os.access(INSTALLED_BIN, os.X_OK):
        assert result.returncode == 0, output
        assert not output.strip(), output
        return
    other = [
        line
        for line in output.splitlines()
        if "pamd.service" in line and f"Command {INSTALLED_BIN} is not executable" not in line
    ]
    assert not other, "unexpected verify complaints:\n" + "\n".join(other)


def test_security_exposure() -> None:
    result = run("security", "--offline=yes", "--no-pager", str(UNIT))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    match = re.search(r"Overall exposure level for pamd\.service:\s*(\d+(?:\.\d+)?)", output)
    assert match, "could not find the overall exposure in:\n" + output
    exposure = float(match.group(1))
    print(f"systemd-analyze security: overall exposure {exposure}")
    failed = [line for line in output.splitlines() if line.startswith("✗")]
    print("\n".join(failed))
    assert exposure <= MAX_EXPOSURE, output


def test_unit_contract() -> None:
    s = unit_settings()
    assert s["Type"] == ["notify"]
    assert s["NotifyAccess"] == ["main"]
    assert s["ExecStart"] == [f"{INSTALLED_BIN} run --config /etc/pamd/config.toml"]
    assert s["ExecStartPre"] == [f"{INSTALLED_BIN} check --config /etc/pamd/config.toml"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["DynamicUser"] == ["yes"]
    assert s["StateDirectory"] == ["pamd"]
    assert s["ConfigurationDirectory"] == ["pamd"]
    assert s["EnvironmentFile"] == ["-/etc/pamd/pamd.env"]
    assert s["Restart"] == ["on-failure"]
    assert s["MemoryDenyWriteExecute"] == ["yes"]
    assert set(s["RestrictAddressFamilies"][0].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert int(s["WatchdogSec"][0]) == 30
    # The daemon drains ticks for up to 20 s after SIGTERM; systemd must not SIGKILL it first.
    assert int(s["TimeoutStopSec"][0]) > 20


def test_env_example_is_all_comments() -> None:
    lines = [line.strip() for line in ENV_EXAMPLE.read_text().splitlines() if line.strip()]
    assert all(line.startswith("#") for line in lines)
    text = ENV_EXAMPLE.read_text()
    for key in ("PAMD_HTTP__LISTEN", "PAMD_STORE__URL", "PAMD_COORDINATION__URL", "ANTHROPIC_API_KEY"):
        assert f"#{key}=" in text or f"# {key}=" in text, key
