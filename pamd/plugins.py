"""Plugin discovery and loading: built-ins, the ``pamd`` entry-point group and plugin directories.

Built-in plugins are registered through exactly the same hooks as third-party ones. A plugin that fails to import
or implements a hook that does not exist is recorded as failed (visible in logs, ``/status`` and ``pamd plugins``);
the others still load.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import logging
import os
import re
import stat
import sys
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import pluggy

from pamd import hookspecs
from pamd.monitor import Monitor
from pamd.sinks.base import SinkFactory

log = logging.getLogger("pamd.plugins")

ENTRY_POINT_GROUP = "pamd"
BUILTIN_PLUGINS: tuple[tuple[str, str], ...] = (
    ("sinks", "pamd.sinks.builtin"),
    ("fuel", "pamd_plugins.fuel"),
    ("budget", "pamd_plugins.budget"),
    ("weather", "pamd_plugins.weather"),
    ("maintenance", "pamd_plugins.maintenance"),
    ("context", "pamd_plugins.context"),
)

MONITOR_NAME = re.compile(r"[a-z][a-z0-9_]*")

Source = Literal["built-in", "entry point", "plugin dir"]


class PluginDirError(Exception):
    """A plugin directory that must not be loaded (missing, unreadable or world-writable)."""


@dataclass
class PluginInfo:
    """What ``pamd plugins`` reports for one plugin."""

    name: str
    source: Source
    module: str
    status: Literal["loaded", "failed", "disabled"] = "loaded"
    version: str | None = None
    path: str | None = None
    hooks: list[str] = field(default_factory=list)
    monitors: list[str] = field(default_factory=list)
    sinks: list[str] = field(default_factory=list)
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if v not in (None, [])}
        data.setdefault("hooks", [])
        return data


@dataclass
class RegisteredMonitor:
    monitor: Monitor
    plugin: PluginInfo


@dataclass
class PluginSet:
    """The result of loading: every plugin's status and what the loaded ones registered."""

    plugins: list[PluginInfo] = field(default_factory=list)
    monitors: dict[str, RegisteredMonitor] = field(default_factory=dict)
    sinks: dict[str, tuple[SinkFactory, PluginInfo]] = field(default_factory=dict)
    duplicates: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[PluginInfo]:
        return [p for p in self.plugins if p.status == "failed"]


def _name_list(environ: Mapping[str, str], key: str) -> set[str] | None:
    if key not in environ:
        return None
    return {n.strip() for n in environ[key].split(",") if n.strip()}


def load_plugins(plugin_dirs: Iterable[str | Path] = (), environ: Mapping[str, str] = os.environ) -> PluginSet:
    """Discover, import and register every plugin, then collect their monitors and sinks.

    ``PAMD_LOAD_PLUGINS`` (comma-separated names) restricts third-party plugins to those named (empty: none);
    ``PAMD_DISABLE_PLUGINS`` names plugins of any source, built-ins included, that must not load.
    Raises :class:`PluginDirError` for an unusable plugin directory.
    """
    allow = _name_list(environ, "PAMD_LOAD_PLUGINS")
    block = _name_list(environ, "PAMD_DISABLE_PLUGINS") or set()
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    result = PluginSet()

    candidates: list[tuple[PluginInfo, Any]] = [
        (PluginInfo(name, "built-in", module), lambda m=module: importlib.import_module(m))
        for name, module in BUILTIN_PLUGINS
    ]
    for ep in _entry_points():
        info = PluginInfo(ep.name, "entry point", ep.value, version=_dist_version(ep))
        candidates.append((info, ep.load))
    for directory in plugin_dirs:
        for path in _plugin_files(Path(directory)):
            info = PluginInfo(path.stem, "plugin dir", f"pamd_plugin_dir.{path.stem}", path=str(path))
            candidates.append((info, lambda p=path: _import_file(p)))

    for info, load in candidates:
        result.plugins.append(info)
        third_party = info.source != "built-in"
        if info.name in block or (third_party and allow is not None and info.name not in allow):
            info.status = "disabled"
            continue
        _register(pm, info, load)

    _collect(pm, result)
    return result


def _entry_points() -> list[EntryPoint]:
    return sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def _dist_version(ep: EntryPoint) -> str | None:
    dist = getattr(ep, "dist", None)
    return None if dist is None else str(dist.version)


def _plugin_files(directory: Path) -> list[Path]:
    try:
        mode = directory.stat().st_mode
    except OSError as exc:
        raise PluginDirError(f"plugin dir {directory}: {exc.strerror or exc}") from exc
    if not stat.S_ISDIR(mode):
        raise PluginDirError(f"plugin dir {directory}: not a directory")
    if mode & stat.S_IWOTH:
        raise PluginDirError(f"plugin dir {directory}: world-writable (anyone could inject code); chmod o-w it")
    if not os.access(directory, os.R_OK | os.X_OK):
        raise PluginDirError(f"plugin dir {directory}: not readable by this user")
    return sorted(p for p in directory.glob("*.py") if not p.name.startswith("_"))


def _import_file(path: Path) -> ModuleType:
    name = f"pamd_plugin_dir.{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # fresh module on every load, so a reload re-reads the file
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _register(pm: pluggy.PluginManager, info: PluginInfo, load: Any) -> None:
    try:
        module = load()
        unknown = _unknown_hooks(module)
        if unknown:
            raise pluggy.PluginValidationError(module, unknown)
        pm.register(module, name=f"{info.source}:{info.name}")
    except Exception as exc:
        info.status = "failed"
        info.error = _describe(exc)
        log.error("plugin %s (%s) failed to load: %s", info.name, info.source, info.error,
                  extra={"plugin": info.name, "source": info.source})
        return
    info.hooks = sorted(h.name for h in pm.get_hookcallers(module) or [])
    info.module = getattr(module, "__name__", info.module)


def _unknown_hooks(module: Any) -> str:
    """A message naming hook implementations that match no hookspec, with a did-you-mean; '' if none."""
    known = hookspecs.hook_names()
    problems = []
    for attr in dir(module):
        value = getattr(module, attr, None)
        if callable(value) and hasattr(value, f"{hookspecs.PROJECT}_impl") and attr not in known:
            hint = difflib.get_close_matches(attr, known, n=1)
            problems.append(f"unknown hook {attr!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    return "; ".join(problems)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, pluggy.PluginValidationError):
        return str(exc)
    # The innermost frame of real source (not "<frozen importlib...>"), usually the plugin's own line.
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<")]
    where = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _collect(pm: pluggy.PluginManager, result: PluginSet) -> None:
    by_plugin = {f"{p.source}:{p.name}": p for p in result.plugins}
    for impl in pm.hook.register_monitors.get_hookimpls():
        info = by_plugin[impl.plugin_name]
        _call_register(result, info, impl.function, lambda m, info=info: _add_monitor(result, m, info))
    for impl in pm.hook.register_sinks.get_hookimpls():
        info = by_plugin[impl.plugin_name]
        _call_register(result, info, impl.function, lambda n, f, info=info: _add_sink(result, n, f, info))
    pm.check_pending()


def _call_register(result: PluginSet, info: PluginInfo, hook: Any, register: Any) -> None:
    if info.status == "failed":  # an earlier hook of this plugin failed: it contributes nothing
        return
    try:
        hook(register=register)
    except Exception as exc:
        info.status = "failed"
        info.error = _describe(exc)
        log.error("plugin %s failed while registering: %s", info.name, info.error, extra={"plugin": info.name})
        # All or nothing: drop what the failed plugin registered before it raised.
        for name in info.monitors:
            result.monitors.pop(name, None)
        for name in info.sinks:
            result.sinks.pop(name, None)
        info.monitors, info.sinks = [], []


def _add_monitor(result: PluginSet, monitor: Monitor, info: PluginInfo) -> None:
    name = getattr(monitor, "name", None)
    if not isinstance(monitor, Monitor) or not isinstance(name, str):
        raise TypeError(f"register_monitors: expected a pamd.Monitor with a name, got {monitor!r}")
    if not MONITOR_NAME.fullmatch(name):
        # The name is a config table ([monitors.<name>]), an env key (PAMD_MONITORS__<NAME>__...) and a label.
        raise ValueError(f"register_monitors: monitor name {name!r} must match {MONITOR_NAME.pattern}")
    if name in result.monitors:
        other = result.monitors[name].plugin
        result.duplicates.append(
            f"monitor {name!r} is registered by both plugin {other.name!r} ({other.source}) "
            f"and plugin {info.name!r} ({info.source})"
        )
        return
    result.monitors[name] = RegisteredMonitor(monitor, info)
    info.monitors.append(name)


def _add_sink(result: PluginSet, name: str, factory: SinkFactory, info: PluginInfo) -> None:
    if name in result.sinks:
        other = result.sinks[name][1].name
        result.duplicates.append(f"sink {name!r} is registered by both plugin {other!r} and plugin {info.name!r}")
        return
    result.sinks[name] = (factory, info)
    info.sinks.append(name)
