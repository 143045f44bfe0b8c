"""Bind registered monitors and sinks to their config tables: the validated, runnable set."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import msgspec

from pamd.config import Config, ConfigError
from pamd.monitor import Monitor
from pamd.plugins import PluginInfo, PluginSet
from pamd.schedule import CronSchedule, ScheduleError
from pamd.sinks.base import Sink, SinkConfigError

log = logging.getLogger("pamd.jobs")

DEFAULT_MAX_GRACE = timedelta(minutes=5)
# Sinks enabled unless configured otherwise: the embedded default prints alerts and keeps a JSONL log.
DEFAULT_SINKS = frozenset({"console", "jsonl"})


class MonitorSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Keys every ``[monitors.<name>]`` table accepts; ``None`` keeps the plugin's default."""

    enabled: bool = True
    schedule: str | None = None
    timezone: str | None = None
    run_at_startup: bool | None = None
    timeout: float | None = None
    retries: int | None = None
    misfire_grace: float | None = None
    jitter: float = 0.0
    overlap: Literal["skip", "queue"] = "skip"
    concurrency: int | None = None
    cooldown: float | None = None  # seconds; the plugin's Monitor.cooldown when unset


_SETTING_KEYS = frozenset(MonitorSettings.__struct_fields__)


@dataclass
class Job:
    """A monitor ready to schedule."""

    name: str
    monitor: Monitor
    plugin: PluginInfo
    enabled: bool
    schedule: CronSchedule
    timeout: float
    retries: int
    run_at_startup: bool
    misfire_grace: timedelta
    jitter: timedelta
    overlap: Literal["skip", "queue"]
    concurrency: int
    config: Any
    cooldown: timedelta = timedelta(0)


def resolve_jobs(config: Config, plugins: PluginSet, now: datetime | None = None) -> dict[str, Job]:
    """Validate ``[monitors.*]`` against the registered monitors; raise :class:`ConfigError` on any problem."""
    if plugins.duplicates:
        raise ConfigError(plugins.duplicates[0])
    now = now or datetime.now(UTC)
    unknown = sorted(set(config.monitors) - set(plugins.monitors))
    not_loaded = [p.name for p in plugins.plugins if p.status != "loaded"]
    if unknown and not not_loaded:
        known = ", ".join(sorted(plugins.monitors)) or "none"
        raise ConfigError(config.source.located(("monitors", unknown[0]), f"no such monitor (known: {known})"))
    for name in unknown:  # probably a monitor of a disabled or failed plugin: keep going without it
        log.warning("%s: ignored; plugins not loaded: %s",
                    config.source.located(("monitors", name), "no such monitor"), ", ".join(not_loaded))
    jobs = {}
    for name, registered in sorted(plugins.monitors.items()):
        jobs[name] = _resolve_job(config, name, registered.monitor, registered.plugin, now)
    return jobs


def _split(table: dict[str, Any], keys: frozenset[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    return {k: v for k, v in table.items() if k in keys}, {k: v for k, v in table.items() if k not in keys}


def _convert(config: Config, key: tuple[str, ...], data: dict[str, Any], kind: Any) -> Any:
    try:
        return msgspec.convert(data, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(config.source.describe_validation_error(str(exc), prefix=key)) from exc


def _plugin_config(config: Config, key: tuple[str, ...], owner: Any, extra: dict[str, Any]) -> Any:
    config_type = getattr(owner, "config_type", None)
    if config_type is None:
        if extra:
            raise ConfigError(config.source.located((*key, sorted(extra)[0]), "unknown key"))
        return None
    allowed = set(getattr(config_type, "__struct_fields__", ()))
    unknown = sorted(set(extra) - allowed) if allowed else []
    if unknown:
        raise ConfigError(config.source.located((*key, unknown[0]), "unknown key"))
    return _convert(config, key, extra, config_type)


def _resolve_job(config: Config, name: str, monitor: Monitor, plugin: PluginInfo, now: datetime) -> Job:
    key = ("monitors", name)
    raw_settings, extra = _split(dict(config.monitors.get(name, {})), _SETTING_KEYS)
    settings: MonitorSettings = _convert(config, key, raw_settings, MonitorSettings)
    plugin_config = _plugin_config(config, key, monitor, extra)
    try:
        return build_job(monitor, plugin, settings, plugin_config, now)
    except SettingError as exc:
        raise ConfigError(config.source.located((*key, exc.key), str(exc))) from exc


class SettingError(ValueError):
    """A monitor setting that cannot be used; ``key`` names it."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = key


def build_job(
    monitor: Monitor, plugin: PluginInfo, settings: MonitorSettings, plugin_config: Any, now: datetime | None = None
) -> Job:
    """Combine a monitor's class defaults with its settings; raises :class:`SettingError`."""
    try:
        schedule = CronSchedule(settings.schedule or monitor.schedule, settings.timezone or monitor.timezone)
    except ScheduleError as exc:
        raise SettingError("timezone" if "timezone" in str(exc) else "schedule", str(exc)) from exc
    for field_name in ("timeout", "misfire_grace", "jitter", "retries", "cooldown"):
        value = getattr(settings, field_name)
        if value is not None and value < 0:
            raise SettingError(field_name, "must not be negative")
    interval = schedule.min_interval(now or datetime.now(UTC))
    grace = (timedelta(seconds=settings.misfire_grace) if settings.misfire_grace is not None
             else min(interval, DEFAULT_MAX_GRACE))
    return Job(
        name=monitor.name,
        monitor=monitor,
        plugin=plugin,
        enabled=settings.enabled,
        schedule=schedule,
        timeout=monitor.timeout if settings.timeout is None else settings.timeout,
        retries=monitor.retries if settings.retries is None else settings.retries,
        run_at_startup=monitor.run_at_startup if settings.run_at_startup is None else settings.run_at_startup,
        misfire_grace=grace,
        jitter=_jitter(monitor.name, settings.jitter, interval),
        overlap=settings.overlap,
        concurrency=max(1, settings.concurrency or monitor.concurrency),
        config=plugin_config,
        cooldown=timedelta(seconds=monitor.cooldown if settings.cooldown is None else settings.cooldown),
    )


def _jitter(name: str, max_seconds: float, interval: timedelta) -> timedelta:
    """A deterministic offset in ``[0, max_seconds)`` from the monitor's name, kept below its interval."""
    if max_seconds <= 0:
        return timedelta(0)
    fraction = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") / 2**64
    return min(timedelta(seconds=max_seconds * fraction), interval / 2)


def resolve_sinks(config: Config, plugins: PluginSet) -> dict[str, Sink]:
    """Build every enabled sink from its ``[sinks.<name>]`` table."""
    unknown = sorted(set(config.sinks) - set(plugins.sinks))
    if unknown:
        known = ", ".join(sorted(plugins.sinks)) or "none"
        raise ConfigError(config.source.located(("sinks", unknown[0]), f"no such sink (known: {known})"))
    sinks: dict[str, Sink] = {}
    for name, (factory, _info) in sorted(plugins.sinks.items()):
        key = ("sinks", name)
        table = dict(config.sinks.get(name, {}))
        enabled = table.pop("enabled", name in DEFAULT_SINKS or name in config.sinks)
        if not isinstance(enabled, bool):
            raise ConfigError(config.source.located((*key, "enabled"), "expected true or false"))
        options = _plugin_config(config, key, factory, table)
        if enabled:
            try:
                sinks[name] = factory(options if options is not None else {}, config.state_dir)
            except ValueError as exc:  # SinkConfigError names the key; a missing secret, a bad URL...
                where = (*key, exc.key) if isinstance(exc, SinkConfigError) and exc.key else key
                raise ConfigError(config.source.located(where, str(exc))) from exc
    return sinks
