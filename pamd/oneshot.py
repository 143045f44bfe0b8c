"""One-off ticks for the command line: ``pamd trigger`` and ``pamd explain``.

Both build the same runner, pipeline and providers the daemon uses, against the configured store, so what they
print is what the daemon would do. ``explain`` and ``trigger --dry-run`` write and deliver nothing.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TextIO

import msgspec

from pamd.ai.router import Phraser, Preview
from pamd.ai.setup import build_phraser
from pamd.alerts.split_book import RedisStateBook, open_alert_book
from pamd.assemble import Assembly
from pamd.config import redact
from pamd.coordination import open_coordinator
from pamd.heap import settle_heap
from pamd.metrics import Metrics
from pamd.pipeline import AlertPipeline
from pamd.providers import ProviderHub
from pamd.runner import Runner, TickResult
from pamd.store import prepare_store


@asynccontextmanager
async def one_shot_runner(assembly: Assembly, *, deliver: bool) -> AsyncIterator[Runner]:
    """A runner over the configured store and providers; sinks only when ``deliver``."""
    config = assembly.config
    config.state_dir.mkdir(parents=True, exist_ok=True)
    store = await prepare_store(config.store_url, config.seeds_demo, **config.store.options())
    coordinator = open_coordinator(config.coordination.url, config.coordination.prefix, str(config.state_dir))
    metrics = Metrics()
    book = open_alert_book(config, store)
    for sink in assembly.sinks.values():
        sink.bind_store(store)
    pipeline = AlertPipeline(assembly.sinks if deliver else {}, metrics, book=book, settings=config.alerts,
                             outbox=store, phraser=build_phraser(config, metrics))
    runner = Runner(assembly.jobs, pipeline, metrics, coordinator, store,
                    providers=ProviderHub(config.providers, metrics))
    try:
        yield runner
    finally:
        await runner.aclose()
        if isinstance(book, RedisStateBook):
            await book.aclose()
        await store.aclose()


async def trigger(assembly: Assembly, monitor: str, user: str | None, dry_run: bool) -> bool:
    """Run one tick of ``monitor`` now: alerts as JSON lines on stdout, decisions and a summary on stderr."""
    async with one_shot_runner(assembly, deliver=not dry_run) as runner:
        settle_heap()  # a tick over every user allocates as the daemon's do: the same collector settings
        result = await runner.run_tick(assembly.jobs[monitor], _now(), user_id=user, dry_run=dry_run)
        _print_outcome(result, dry_run, runner.pipeline.phraser)
    return result.outcome == "success"


def _print_outcome(result: TickResult, dry_run: bool, phraser: Phraser | None) -> None:
    monitor = result.monitor
    for decision in result.decisions:
        print(msgspec.json.encode(decision.alert).decode())
    for decision in result.decisions:
        a = decision.alert
        verdict = _verdict(decision.outcome, dry_run)
        print(f"  {a.user_id} {a.kind} [{a.priority.value}]: {verdict} ({decision.reason})", file=sys.stderr)
        if dry_run and decision.accepted and phraser is not None and phraser.active:
            _print_preview(phraser.preview(a), sys.stderr)
    for reason in result.degradations:
        print(f"  degraded: {reason}", file=sys.stderr)
    accepted = sum(1 for d in result.decisions if d.outcome == "delivered")
    verb = "would deliver" if dry_run else "delivered"
    print(f"{monitor}: {result.outcome}, {len(result.decisions)} alert(s), {accepted} {verb} in "
          f"{result.duration_seconds:.3f} s" + (f": {result.error}" if result.error else ""), file=sys.stderr)
    if not dry_run or phraser is None:
        return
    if not phraser.active:
        print("AI phrasing: off (no provider key set, see [ai]): alerts keep their rule text", file=sys.stderr)
        return
    previews = [phraser.preview(d.alert) for d in result.decisions if d.accepted]
    total = sum(p.cost_usd for p in previews if p is not None)
    print(f"AI phrasing of these {len(previews)} alert(s) would cost about ${total:.4f} (estimated at the "
          "configured prices; each request also carries the fixed instructions in pamd/ai/prompt.py, counted here)",
          file=sys.stderr)


def _print_preview(preview: Preview | None, out: TextIO) -> None:
    if preview is None:
        print("    AI: no provider enabled: rule text", file=out)
        return
    how = "cached: free" if preview.cached else f"about ${preview.cost_usd:.5f}"
    key = "" if preview.key_set else " (its key is not set: the rule text would be used)"
    print(f"    AI: {preview.provider} {preview.model}, ~{preview.input_tokens} input + ~{preview.output_tokens} "
          f"output tokens, {how}{key}", file=out)
    print(f"    prompt: {preview.prompt}", file=out)


async def explain(assembly: Assembly, user: str, monitors: list[str]) -> list[dict[str, Any]]:
    """Run each of ``monitors`` for ``user`` in explain mode; one report per monitor."""
    reports: list[dict[str, Any]] = []
    async with one_shot_runner(assembly, deliver=False) as runner:
        lookup = getattr(runner.store, "monitored_profile", None)
        if lookup is not None and await lookup(user) is None:
            raise LookupError(f"no monitored user {user!r} in {redact(assembly.config.store_url, 'url')} "
                              "(unknown id, or a profile whose status is inactive)")
        for name in monitors:
            job = assembly.jobs[name]
            result = await runner.run_tick(job, _now(), user_id=user, dry_run=True, explain=True)
            reports.append(_report(result, user, job.enabled, runner.pipeline.phraser))
    return reports


def _report(result: TickResult, user: str, enabled: bool, phraser: Phraser | None) -> dict[str, Any]:
    steps = [{"step": e.step, **msgspec.to_builtins(e.data)} for e in result.explanation or [] if e.user_id == user]
    alerts = [{"kind": d.alert.kind, "priority": d.alert.priority.value, "title": d.alert.title,
               "body": d.alert.body, "decision": d.outcome, "reason": d.reason,
               "release_at": d.release_at.isoformat() if d.release_at else None,
               "ai": _preview_dict(phraser.preview(d.alert)) if phraser and phraser.active and d.accepted else None}
              for d in result.decisions]
    return {"monitor": result.monitor, "enabled": enabled, "outcome": result.outcome, "error": result.error,
            "degraded": result.degradations, "steps": steps, "alerts": alerts}


def print_explanation(user: str, reports: list[dict[str, Any]], out: TextIO = sys.stdout) -> None:
    """The human-readable form of :func:`explain`'s reports."""
    print(f"user {user}", file=out)
    for report in reports:
        state = "" if report["enabled"] else " (disabled in config: the daemon does not run it)"
        print(f"\n{report['monitor']}{state}", file=out)
        if report["outcome"] != "success":
            print(f"  tick {report['outcome']}: {report['error']}", file=out)
        for reason in report["degraded"]:
            print(f"  degraded: {reason}", file=out)
        for step in report["steps"]:
            details = ", ".join(f"{k}={_short(v)}" for k, v in step.items() if k != "step")
            print(f"  {step['step']}: {details}" if details else f"  {step['step']}", file=out)
        if not report["alerts"] and report["outcome"] == "success":
            print("  no alert", file=out)
        for alert in report["alerts"]:
            print(f"  alert {alert['kind']} [{alert['priority']}]: {alert['title']}", file=out)
            print(f"    {alert['body']}", file=out)
            print(f"    -> {_verdict(alert['decision'], True)}: {alert['reason']}", file=out)
            if alert["ai"] is not None:
                _print_preview(Preview(**alert["ai"]), out)


def _preview_dict(preview: Preview | None) -> dict[str, Any] | None:
    if preview is None:
        return None
    data = dataclasses.asdict(preview)
    data["system"] = "pamd.ai.prompt.SYSTEM"  # the same for every alert; not repeated in each report
    return data


_VERDICTS = {"delivered": "would be delivered", "held": "would be held", "cooldown": "would not be sent (cooldown)",
             "opted_out": "would not be sent (opted out)", "capped": "would not be sent (daily cap)"}


def _verdict(outcome: str, dry_run: bool) -> str:
    if dry_run:
        return _VERDICTS.get(outcome, outcome)
    return {"delivered": "delivered", "held": "held for quiet hours"}.get(outcome, f"not sent ({outcome})")


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str, separators=(",", ":"))


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)
