"""The daemon: wires config, plugins, store, coordinator, runner, scheduler, HTTP and systemd together.

Lifecycle: load and validate everything (a bad config exits before anything starts), bind HTTP, open the store,
start, then ``READY=1``. SIGTERM/SIGINT drain running ticks within ``daemon.shutdown_grace`` and exit 0. SIGHUP
reloads config and plugins while the HTTP port stays open; a bad new config keeps the old one running.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.abc

from pamd import __version__, http
from pamd.ai.setup import build_phraser
from pamd.alerts.release import deliver_in_background
from pamd.alerts.split_book import RedisStateBook, open_alert_book
from pamd.assemble import Assembly, assemble
from pamd.config import ConfigError, redact
from pamd.coordination import Coordinator, open_coordinator
from pamd.heap import settle_heap
from pamd.logs import setup_logging
from pamd.loopwatch import LoopWatch
from pamd.metrics import Metrics
from pamd.pipeline import AlertPipeline
from pamd.providers import ProviderHub
from pamd.runner import JobState, Runner
from pamd.scheduler import Scheduler
from pamd.store import prepare_store
from pamd.store.base import Store
from pamd.systemd import Notifier

log = logging.getLogger("pamd.daemon")
PING_TIMEOUT_SECONDS = 2.0


class StartupError(Exception):
    """A backend (store, coordinator, state directory) could not be opened; nothing was started."""


@dataclass
class Generation:
    """What a (re)load produces: replaced whole on SIGHUP while older ticks finish."""

    assembly: Assembly
    runner: Runner
    scheduler: Scheduler
    scope: anyio.CancelScope | None = None


class Daemon:
    def __init__(self, config_path: str | None = None, environ: Mapping[str, str] | None = None,
                 notifier: Notifier | None = None) -> None:
        self.config_path = config_path
        self.environ = dict(os.environ if environ is None else environ)
        self.notifier = notifier or Notifier.from_env(self.environ)
        self.metrics = Metrics()
        self.state = "starting"
        self.started_at = datetime.now(UTC)
        self.last_reload: dict[str, Any] | None = None
        self.store: Store | None = None
        self.book: Store | RedisStateBook | None = None  # the pipeline's alert book: the store, or over it
        self.coordinator: Coordinator | None = None
        self.current: Generation | None = None
        self._generations: list[Generation] = []
        self._stop = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None
        self.loopwatch: LoopWatch | None = None

    # ---- lifecycle -------------------------------------------------------------------------------------------
    async def run(self) -> int:
        """Run until SIGTERM/SIGINT. Raises :class:`ConfigError` (or ``http.ListenError``) before starting."""
        started_at = datetime.now(UTC)  # alerts stored before this and still pending were left by a crash
        assembly = assemble(self.config_path, self.environ)
        config = assembly.config
        setup_logging(config.log.level, config.log.format)
        for plugin in assembly.plugins.failed:
            log.error("plugin %s failed: %s", plugin.name, plugin.error, extra={"plugin": plugin.name})
        sock = http.bind(config.http.listen) if config.http.enabled else None
        try:
            try:
                await self._open_backends(assembly)
            except Exception as exc:
                raise StartupError(f"cannot open backends: {exc}") from exc
            async with anyio.create_task_group() as tg:
                self._tg = tg
                self.loopwatch = LoopWatch(self.metrics, self._disable_stalled, config.daemon.stall_threshold,
                                           config.daemon.stall_disable_after)
                tg.start_soon(self.loopwatch.run)
                assert self.coordinator is not None
                tg.start_soon(self.coordinator.run)
                await self._start_generation(assembly)
                if sock is not None:
                    await tg.start(http.serve, sock, self)
                tg.start_soon(self._handle_signals)
                tg.start_soon(self._ping_watchdog)
                tg.start_soon(deliver_in_background, lambda: self.current.runner.pipeline if self.current else None,
                              config.alerts, self.coordinator.is_leader, started_at)
                frozen = settle_heap()
                log.debug("%d startup objects moved out of the garbage collector's way", frozen)
                self.state = "running"
                listen = config.http.listen if sock else "off"
                self.notifier.ready(f"running {len(assembly.jobs)} monitors; http {listen}")
                log.info("pamd %s ready: %d monitors, http %s, store %s", __version__, len(assembly.jobs), listen,
                         redact(config.store_url, "url"))
                await self._stop.wait()
                await self._drain(config.daemon.shutdown_grace)
                tg.cancel_scope.cancel()
        finally:
            if sock is not None:
                sock.close()
            await self._close_backends()
            self.notifier.close()
        log.info("pamd stopped")
        return 0

    def request_stop(self) -> None:
        self._stop.set()

    async def _open_backends(self, assembly: Assembly) -> None:
        config = assembly.config
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self.store = await prepare_store(config.store_url, config.seeds_demo, **config.store.options())
        self.metrics.watch_store(self.store)
        self.book = open_alert_book(config, self.store)
        self.coordinator = open_coordinator(config.coordination.url, config.coordination.prefix,
                                            str(config.state_dir), self.metrics, config.coordination.lease_ttl)
        await self.coordinator.start()

    async def _close_backends(self) -> None:
        for gen in self._generations:
            await gen.runner.aclose()
        book = self.book if isinstance(self.book, RedisStateBook) else None
        for closer in (book, self.coordinator, self.store):
            if closer is not None:
                with anyio.CancelScope(shield=True):
                    await closer.aclose()

    async def _start_generation(self, assembly: Assembly) -> None:
        assert self._tg is not None and self.coordinator is not None
        self.metrics.declare_sinks(assembly.sinks)
        for plugin in assembly.plugins.plugins:
            self.metrics.plugin_up.labels(plugin.name, plugin.source).set(1 if plugin.status == "loaded" else 0)
        for sink in assembly.sinks.values():
            sink.bind_store(self.store)
        pipeline = AlertPipeline(assembly.sinks, self.metrics, book=self.book, settings=assembly.config.alerts,
                                 outbox=self.store, phraser=build_phraser(assembly.config, self.metrics))
        providers = ProviderHub(assembly.config.providers, self.metrics)
        runner = Runner(assembly.jobs, pipeline, self.metrics, self.coordinator, self.store,
                        assembly.config.daemon.max_concurrent_ticks, providers=providers, keep_decisions=False)
        if self.current is not None:  # share state so overlap protection and history survive a reload
            for name in assembly.jobs.keys() & self.current.runner.states.keys():
                state = self.current.runner.states[name]
                state.disabled_reason = None
                runner.states[name] = state
        await self._tg.start(runner.serve)
        scheduler = Scheduler(assembly.jobs, runner, self.coordinator, self.metrics,
                              daemon_start=self.current is None)
        gen = Generation(assembly, runner, scheduler)
        self._tg.start_soon(self._run_scheduler, gen)
        self.current = gen
        self._generations.append(gen)

    async def _run_scheduler(self, gen: Generation) -> None:
        with anyio.CancelScope() as scope:
            gen.scope = scope
            await gen.scheduler.run()

    async def _retire(self, gen: Generation) -> None:
        """Stop scheduling for an old generation; let its running ticks finish, then drop it."""
        if gen.scope is not None:
            gen.scope.cancel()
        await gen.runner.wait_idle()
        gen.runner.cancel_all()
        await gen.runner.aclose()
        self._generations.remove(gen)

    async def _drain(self, grace: float) -> None:
        self.state = "stopping"
        running = sum(g.runner.running_count for g in self._generations)
        self.notifier.stopping(f"draining {running} running tick(s)")
        log.info("stopping: draining %d running tick(s), grace %.0f s", running, grace)
        for gen in self._generations:
            if gen.scope is not None:
                gen.scope.cancel()
        with anyio.move_on_after(grace) as scope:
            for gen in list(self._generations):
                await gen.runner.wait_idle()
        if scope.cancelled_caught:
            log.warning("grace period over: cancelling %d tick(s)",
                        sum(g.runner.running_count for g in self._generations))
        for gen in self._generations:
            gen.runner.cancel_all()

    # ---- signals, reload, watchdog ---------------------------------------------------------------------------
    async def _handle_signals(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    await self.reload()
                elif self._stop.is_set():
                    log.warning("received %s again: cancelling running ticks now", signal.Signals(signum).name)
                    for gen in self._generations:
                        gen.runner.cancel_all()
                else:
                    log.info("received %s", signal.Signals(signum).name)
                    self.request_stop()

    async def reload(self) -> bool:
        """Reload config and plugins; on any error keep the running generation and say why."""
        assert self.current is not None and self._tg is not None
        self.notifier.reloading()
        self.state = "reloading"
        try:
            assembly = await anyio.to_thread.run_sync(assemble, self.config_path, self.environ)
        except ConfigError as exc:
            self.metrics.reloads.labels("error").inc()
            self.last_reload = {"at": datetime.now(UTC), "outcome": "error", "error": str(exc)}
            log.error("reload failed, keeping the running configuration: %s", exc)
            self.state = "running"
            self.notifier.ready(f"reload failed, old config kept: {exc}")
            return False
        old_config = self.current.assembly.config
        for key in ("http.listen", "store.url", "coordination.url", "alerts.state"):
            section, name = key.split(".")
            if getattr(getattr(old_config, section), name) != getattr(getattr(assembly.config, section), name):
                log.warning("%s changed; it takes effect on restart, not reload", key)
        setup_logging(assembly.config.log.level, assembly.config.log.format)
        old = self.current
        await self._start_generation(assembly)
        self._tg.start_soon(self._retire, old)
        self.metrics.reloads.labels("success").inc()
        self.last_reload = {"at": datetime.now(UTC), "outcome": "success", "error": None}
        self.state = "running"
        self.notifier.ready(f"reloaded: {len(assembly.jobs)} monitors")
        log.info("reloaded: %d monitors, %d plugins failed", len(assembly.jobs), len(assembly.plugins.failed))
        return True

    async def _ping_watchdog(self) -> None:
        interval = self.notifier.watchdog_interval
        if not interval:
            return
        while True:
            if self.liveness()[0]:
                self.notifier.watchdog()
            await anyio.sleep(interval)

    def _disable_stalled(self, monitor: str, seconds: float, where: str) -> None:
        """Called from the loop-watch thread: keep a monitor that blocks the loop from running again."""
        if self.current is None or monitor not in self.current.runner.states:
            return
        state: JobState = self.current.runner.states[monitor]
        state.stalls += 1
        state.disabled_reason = (f"blocked the event loop for over {seconds:.1f} s at {where}; "
                                 "disabled until reload (SIGHUP)")
        self.metrics.up.labels(monitor).set(0)
        log.error("monitor %s disabled: %s", monitor, state.disabled_reason, extra={"monitor": monitor})

    # ---- health and status (http.HealthSource) ---------------------------------------------------------------
    def liveness(self) -> tuple[bool, dict[str, Any]]:
        loop_ok = self.loopwatch is not None and self.loopwatch.healthy()
        sched_ok = self.current is not None and self.current.scheduler.alive
        return loop_ok and sched_ok, {"event_loop": "ok" if loop_ok else "stalled",
                                      "scheduler": "ok" if sched_ok else "not running"}

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        checks: dict[str, str] = {"config": "ok", "plugins": "ok" if self.current else "not loaded"}
        for name, backend in (("store", self.store), ("coordinator", self.coordinator)):
            checks[name] = await _ping(backend)
        checks["state"] = self.state
        ok = all(v == "ok" for k, v in checks.items() if k != "state") and self.state in ("running", "reloading")
        return ok, {"status": "ready" if ok else "not ready", "checks": checks}

    def metrics_text(self) -> bytes:
        return self.metrics.render()

    def status(self) -> dict[str, Any]:
        gen = self.current
        monitors: dict[str, Any] = {}
        if gen is not None:
            for name, job in gen.assembly.jobs.items():
                state = gen.runner.states[name]
                monitors[name] = {
                    "plugin": job.plugin.name, "source": job.plugin.source, "enabled": job.enabled,
                    "schedule": job.schedule.expr, "timezone": job.schedule.timezone,
                    "timeout_seconds": job.timeout, "retries": job.retries, **state.__dict__,
                }
        coordinator = self.coordinator.status() if self.coordinator else {}
        return {
            "version": __version__, "pid": os.getpid(), "host": socket.gethostname(), "state": self.state,
            "started_at": self.started_at, "uptime_seconds": round(time.time() - self.started_at.timestamp(), 3),
            "config_path": str(gen.assembly.config_path) if gen and gen.assembly.config_path else None,
            "leader": coordinator.get("leader"), "epoch": coordinator.get("epoch"), "coordinator": coordinator,
            "store": redact(self.store.url, "url") if self.store else None,
            "monitors": monitors,
            "plugins": [p.as_json() for p in gen.assembly.plugins.plugins] if gen else [],
            "sinks": sorted(gen.assembly.sinks) if gen else [],
            "outbox": gen.runner.pipeline.deliverer.status() if gen else None,
            "last_reload": self.last_reload,
            "event_loop": {"last_stall": self.loopwatch.last_stall if self.loopwatch else None},
        }


async def _ping(backend: Store | Coordinator | None) -> str:
    if backend is None:
        return "not open"
    try:
        with anyio.fail_after(PING_TIMEOUT_SECONDS):
            await backend.ping()
    except Exception as exc:
        return f"error: {exc}" if str(exc) else f"error: {type(exc).__name__}"
    return "ok"
