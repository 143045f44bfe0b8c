"""Prometheus metrics. One registry per daemon so several daemons can live in one test process.

Names follow Prometheus conventions: ``pamd_`` prefix, base units, ``_total`` counters, no per-user labels.
Every known label set is created at 0 so dashboards and alert rules see the series before the first event.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from pamd import __version__
from pamd.ai.metrics import AIMetrics
from pamd.model import Priority

RUN_OUTCOMES = ("success", "error", "timeout", "skipped", "missed")
ALERT_OUTCOMES = ("delivered", "failed", "held", "released", "expired", "cooldown", "opted_out", "capped", "dry_run",
                  "fenced")
DELIVERY_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 21600.0)
DELIVERY_OUTCOMES = ("success", "error", "rejected", "expired", "queued")
PROVIDER_OUTCOMES = ("success", "timeout", "unreachable", "http_error", "malformed")
LATENESS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@dataclass(frozen=True, slots=True)
class MonitorMetrics:
    """One monitor's labelled series, looked up once instead of on every tick."""

    runs: dict[str, Counter]
    retries: Counter
    duration: Histogram
    lateness: Histogram
    last_success: Gauge
    up: Gauge
    degraded: Counter


class Metrics:
    """All of pamd's metrics, on their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes, process_cpu_seconds_total, ...
        self.build_info = Gauge("pamd_build_info", "pamd version and Python runtime (value 1)",
                                ["version", "python"], registry=r)
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.runs = Counter("pamd_monitor_runs_total", "Scheduled ticks by outcome "
                            "(success, error, timeout, skipped: previous run still going, missed: beyond grace)",
                            ["monitor", "outcome"], registry=r)
        self.retries = Counter("pamd_monitor_retries_total", "Attempts retried after an error or timeout",
                               ["monitor"], registry=r)
        self.duration = Histogram("pamd_monitor_run_duration_seconds", "Wall time of a tick, retries included",
                                  ["monitor"], buckets=DURATION_BUCKETS, registry=r)
        self.lateness = Histogram("pamd_monitor_lateness_seconds", "Tick start minus its scheduled time",
                                  ["monitor"], buckets=LATENESS_BUCKETS, registry=r)
        self.last_success = Gauge("pamd_monitor_last_success_timestamp_seconds",
                                  "Unix time of the last successful tick", ["monitor"], registry=r)
        self.degraded = Counter("pamd_monitor_degraded_ticks_total", "Ticks that completed with a provider failure "
                                "or other degradation (their result is partial; nothing is resolved)", ["monitor"],
                                registry=r)
        self.up = Gauge("pamd_monitor_up", "1 if the monitor is enabled and its last tick succeeded",
                        ["monitor"], registry=r)
        self.alerts = Counter("pamd_alerts_total", "Alerts produced by monitors, by what became of them "
                              "(delivered, failed, held for quiet hours, released after them, expired while held, "
                              "suppressed by cooldown, opted_out or capped, dry_run)",
                              ["monitor", "priority", "outcome"], registry=r)
        self.alerts_resolved = Counter("pamd_alerts_resolved_total",
                                       "Alerted conditions a complete tick no longer reported (state cleared)",
                                       ["monitor"], registry=r)
        self.deliveries = Counter("pamd_deliveries_total", "Alert deliveries per sink: success, error (transient: "
                                  "retried with backoff), rejected (refused for good), expired (the alert expired "
                                  "before a retry got through), queued (behind an undelivered alert of the same user)",
                                  ["sink", "outcome"], registry=r)
        self.outbox_pending = Gauge("pamd_outbox_pending", "Stored alerts not yet delivered to every sink",
                                    registry=r)
        self.delivery_latency = Histogram("pamd_delivery_latency_seconds", "From an alert's creation to its "
                                          "successful delivery to a sink", ["sink"],
                                          buckets=DELIVERY_BUCKETS, registry=r)
        self.loop_lag = Histogram("pamd_event_loop_lag_seconds", "How late the event loop woke a timer",
                                  buckets=LAG_BUCKETS, registry=r)
        self.loop_stalls = Counter("pamd_event_loop_stalls_total",
                                   "Times the event loop was blocked beyond the stall threshold, by culprit",
                                   ["monitor"], registry=r)
        self.plugin_up = Gauge("pamd_plugin_up", "1 if the plugin loaded, 0 if it failed or is disabled",
                               ["plugin", "source"], registry=r)
        self.provider_requests = Counter("pamd_provider_requests_total",
                                         "HTTP requests to data providers by outcome (success, timeout, "
                                         "unreachable, http_error, malformed)", ["provider", "outcome"], registry=r)
        self.provider_latency = Histogram("pamd_provider_request_duration_seconds",
                                          "Wall time of one provider HTTP request", ["provider"],
                                          buckets=DURATION_BUCKETS, registry=r)
        for provider in ("weather", "places"):
            self.provider_latency.labels(provider)
            for outcome in PROVIDER_OUTCOMES:
                self.provider_requests.labels(provider, outcome)
        self.leader = Gauge("pamd_leader", "1 while this replica is the leader", registry=r)
        self.leader_epoch = Gauge("pamd_leader_epoch", "Fencing epoch of this replica's last leadership term",
                                  registry=r)
        self.leadership_changes = Counter("pamd_leadership_changes_total",
                                          "Times this replica became or stopped being the leader", registry=r)
        self.tick_claims = Counter("pamd_tick_claims_total", "Tick claims by outcome (won: this replica runs it)",
                                   ["outcome"], registry=r)
        for claim_outcome in ("won", "lost"):
            self.tick_claims.labels(claim_outcome)
        self.reloads = Counter("pamd_config_reloads_total", "SIGHUP reloads by outcome", ["outcome"], registry=r)
        for outcome in ("success", "error"):
            self.reloads.labels(outcome)
        self.ai = AIMetrics(r)

    def for_monitor(self, name: str) -> MonitorMetrics:
        """Create every series of monitor ``name`` at 0 and return its children (cheap to update per tick)."""
        for priority in Priority:
            for alert_outcome in ALERT_OUTCOMES:
                self.alerts.labels(name, priority.value, alert_outcome)
        self.loop_stalls.labels(name)
        self.alerts_resolved.labels(name)
        return MonitorMetrics(
            runs={outcome: self.runs.labels(name, outcome) for outcome in RUN_OUTCOMES},
            retries=self.retries.labels(name),
            duration=self.duration.labels(name),
            lateness=self.lateness.labels(name),
            last_success=self.last_success.labels(name),
            up=self.up.labels(name),
            degraded=self.degraded.labels(name),
        )

    def watch_store(self, store: object) -> None:
        """Export the store's count of skipped bad rows as ``pamd_store_rows_skipped_total{table}``."""
        self.registry.register(_SkippedRows(store))

    def declare_sinks(self, names: Iterable[str]) -> None:
        for name in names:
            for outcome in DELIVERY_OUTCOMES:
                self.deliveries.labels(name, outcome)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _SkippedRows(Collector):
    """Reads ``store.skipped_rows`` (a Counter by table) at scrape time."""

    TABLES = ("profiles", "vehicles", "fuel_log", "budgets", "expenses", "trips", "maintenance_records",
              "calendar_events", "user_locations", "notification_preferences")

    def __init__(self, store: object) -> None:
        self.store = store

    def collect(self) -> Iterable[CounterMetricFamily]:
        family = CounterMetricFamily("pamd_store_rows_skipped", "Rows of users' data skipped as malformed "
                                     "(NULL where required, wrong type, negative amount...), by table",
                                     labels=["table"])
        counts = dict(getattr(self.store, "skipped_rows", {}))
        for table in sorted(set(self.TABLES) | set(counts)):
            family.add_metric([table], counts.get(table, 0))
        yield family
