"""Plugin discovery: built-ins, plugin dirs, entry points of a really installed distribution, allow/block lists."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pamd.config import load_config
from pamd.jobs import resolve_jobs
from pamd.plugins import PluginDirError, load_plugins
from tests.conftest import REPO
from tests.daemon_proc import run_cli
from tests.plugin_sources import BROKEN_IMPORT, DUPLICATE_FUEL, MISSPELLED_HOOK, RECORDER, plugin_dir


def by_name(plugins: list[object]) -> dict[str, object]:
    return {p.name: p for p in plugins}  # type: ignore[attr-defined]


def test_builtins_load_through_the_same_hooks() -> None:
    result = load_plugins([], {})
    plugins = {p.name: p for p in result.plugins}
    assert plugins["fuel"].source == "built-in" and plugins["fuel"].hooks == ["register_monitors"]
    assert plugins["sinks"].hooks == ["register_sinks"]
    assert "fuel" in result.monitors and {"console", "jsonl"} <= set(result.sinks)


def test_plugin_dir_loads_py_files(tmp_path: Path) -> None:
    directory = plugin_dir(tmp_path, recorder=RECORDER)
    result = load_plugins([directory], {"TEST_PAMD_RECORD": "x"})
    info = next(p for p in result.plugins if p.name == "recorder")
    assert info.source == "plugin dir" and info.status == "loaded"
    assert info.monitors == ["every_second", "slow"]


def test_failed_import_and_misspelled_hook_fail_alone(tmp_path: Path) -> None:
    directory = plugin_dir(tmp_path, broken=BROKEN_IMPORT, typo=MISSPELLED_HOOK)
    result = load_plugins([directory], {})
    plugins = {p.name: p for p in result.plugins}
    assert plugins["broken"].status == "failed" and "boom at import" in (plugins["broken"].error or "")
    assert plugins["typo"].status == "failed"
    assert "unknown hook 'register_monitor' (did you mean 'register_monitors'?)" in (plugins["typo"].error or "")
    assert plugins["fuel"].status == "loaded" and "fuel" in result.monitors


def test_world_writable_or_missing_plugin_dir_is_refused(tmp_path: Path) -> None:
    directory = plugin_dir(tmp_path, recorder=RECORDER)
    directory.chmod(0o777)
    with pytest.raises(PluginDirError, match="world-writable"):
        load_plugins([directory], {})
    with pytest.raises(PluginDirError, match="No such file or directory"):
        load_plugins([tmp_path / "missing"], {})


def test_unreadable_plugin_dir_is_refused() -> None:
    with tempfile.TemporaryDirectory() as parent:  # /tmp/xyz, reachable by any user once chmod 755
        Path(parent).chmod(0o755)
        directory = plugin_dir(Path(parent), recorder=RECORDER)
        directory.chmod(0o300)
        _assert_unreadable_refused(directory)


def _assert_unreadable_refused(directory: Path) -> None:
    code = f"from pamd.plugins import load_plugins\nload_plugins([{str(directory)!r}], {{}})"
    # Root reads everything, so as root the check runs as 'nobody' (CI runs as root).
    prefix = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
    result = subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            check=False)
    if "PluginDirError" not in result.stderr and ("Permission denied" in result.stderr or result.returncode > 100):
        pytest.skip(f"cannot run Python as another user here: {result.stderr[-200:]}")
    assert f"PluginDirError: plugin dir {directory}: not readable by this user" in result.stderr


def test_allow_and_block_lists(tmp_path: Path) -> None:
    directory = plugin_dir(tmp_path, recorder=RECORDER, typo=MISSPELLED_HOOK)
    env = {"TEST_PAMD_RECORD": "x"}
    result = load_plugins([directory], {**env, "PAMD_LOAD_PLUGINS": "recorder"})
    builtins = {"sinks": "loaded", "fuel": "loaded", "budget": "loaded", "weather": "loaded",
                "maintenance": "loaded", "context": "loaded"}
    assert {p.name: p.status for p in result.plugins} == builtins | {"recorder": "loaded", "typo": "disabled"}
    result = load_plugins([directory], {**env, "PAMD_LOAD_PLUGINS": "", "PAMD_DISABLE_PLUGINS": "fuel"})
    assert {p.name: p.status for p in result.plugins} == builtins | {
        "fuel": "disabled", "recorder": "disabled", "typo": "disabled"}
    assert set(result.monitors) == {"budget", "weather", "maintenance", "context"}  # built-ins, fuel blocked


def test_duplicate_monitor_names_are_a_config_error(tmp_path: Path) -> None:
    directory = plugin_dir(tmp_path, dup=DUPLICATE_FUEL)
    result = load_plugins([directory], {})
    config = load_config(None, {})
    with pytest.raises(Exception, match="monitor 'fuel' is registered by both plugin 'fuel' \\(built-in\\) "
                                        "and plugin 'dup' \\(plugin dir\\)"):
        resolve_jobs(config, result)


def test_installed_distribution_is_found_through_its_entry_point(tmp_path: Path) -> None:
    """pip-installs examples/pamd-hello (a real wheel with a 'pamd' entry point) into a target dir on sys.path."""
    target = tmp_path / "site"
    source = shutil.copytree(REPO / "examples" / "pamd-hello", tmp_path / "src")  # the build writes into it
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                    "--target", str(target), str(source)], check=True,
                   capture_output=True, timeout=300)
    assert list(target.glob("pamd_hello-0.1.0.dist-info/entry_points.txt"))
    env = {"PYTHONPATH": str(target)}
    plugins = json.loads(run_cli("plugins", cwd=tmp_path, env=env).stdout)
    hello = next(p for p in plugins if p["name"] == "hello")
    assert hello == {"name": "hello", "source": "entry point", "module": "pamd_hello", "status": "loaded",
                     "version": "0.1.0", "hooks": ["register_monitors"], "monitors": ["hello"]}
    (tmp_path / "config.toml").write_text('[monitors.hello]\ngreeting = "Howdy"\nusers = ["ann"]\n')
    result = run_cli("trigger", "hello", "--dry-run", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    alert = json.loads(result.stdout.splitlines()[0])
    assert alert["title"] == "Howdy, ann" and alert["monitor"] == "hello"
    # Without the distribution on the path the same plugin is simply absent.
    assert "hello" not in run_cli("plugins", cwd=tmp_path).stdout


def test_monitor_names_must_work_as_config_and_env_keys(tmp_path: Path) -> None:
    source = DUPLICATE_FUEL.replace('name = "fuel"', 'name = "Fuel-Level"').replace(
        "    register(Fuel())", "    register(type('Ok', (Fuel,), {'name': 'ok_first'})())\n    register(Fuel())")
    result = load_plugins([plugin_dir(tmp_path, bad_name=source)], {})
    bad = next(p for p in result.plugins if p.name == "bad_name")
    assert bad.status == "failed" and "monitor name 'Fuel-Level' must match [a-z][a-z0-9_]*" in (bad.error or "")
    assert "ok_first" not in result.monitors and bad.monitors == []  # all or nothing
