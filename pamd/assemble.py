"""Config + plugins -> the validated set of jobs and sinks. Shared by the daemon, its reload and the CLI."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pamd.config import Config, ConfigError, find_config_path, load_config
from pamd.jobs import Job, resolve_jobs, resolve_sinks
from pamd.plugins import PluginDirError, PluginSet, load_plugins
from pamd.sinks.base import Sink


@dataclass
class Assembly:
    config_path: Path | None
    config: Config
    plugins: PluginSet
    jobs: dict[str, Job]
    sinks: dict[str, Sink]


def assemble(explicit_path: str | None, environ: Mapping[str, str] = os.environ, *, sinks: bool = True) -> Assembly:
    """Load config and plugins and resolve jobs (and sinks); raises :class:`ConfigError` with a located message."""
    path = find_config_path(explicit_path, environ)
    config = load_config(path, environ)
    try:
        plugins = load_plugins(config.daemon.plugin_dirs, environ)
    except PluginDirError as exc:
        raise ConfigError(config.source.located(("daemon", "plugin_dirs"), str(exc))) from exc
    _check_urls(config)
    jobs = resolve_jobs(config, plugins)
    built_sinks = resolve_sinks(config, plugins) if sinks else {}
    return Assembly(path, config, plugins, jobs, built_sinks)


def _check_urls(config: Config) -> None:
    from pamd.coordination import open_coordinator
    from pamd.store import open_store

    for key, opener in ((("store", "url"), lambda: open_store(config.store_url, **config.store.options())),
                        (("coordination", "url"), lambda: open_coordinator(
                            config.coordination.url, config.coordination.prefix, str(config.state_dir)))):
        try:
            opener()  # constructors only parse the URL; nothing connects yet
        except ValueError as exc:
            raise ConfigError(config.source.located(key, str(exc))) from exc
