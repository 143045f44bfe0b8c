"""What AI phrasing costs on the 100,000-user demo tick: pamd's policy against one Sonnet call per alert.

    .venv/bin/python bench/ai_cost.py [--users 100000] [--delay 0.05] [--concurrency 16] [--only fuel,budget]

The data are monitors_scale.py's (the demo set copied N/8 times into SQLite, weather and places served by the test
fakes). Both model APIs are the test fakes (tests/fakes/anthropic_api.py, gemini_api.py) answering every request
with ``Compose(delay=--delay)``: a faithful reply for each alert of the prompt, billed at about four characters a
token, after ``--delay`` seconds that stand for the provider's own latency. The real SDKs talk to them over HTTP.

Each monitor runs in a subprocess through the daemon's runner, alert pipeline and phraser (store writes on, sinks
off): the first tick (every condition new), then the same tick at once (the steady state: cooldown suppresses the
repeats). That is done twice on two copies of the database: with the keys set (AI on) and without (AI off, for the
latency comparison). pamd's requests, tokens and cost are the daemon's own counters (pamd_ai_*), which take the
token counts the fakes billed and the configured prices.

The naive policy is computed, not run, from the alerts the same AI-on tick produced: one request per produced alert
(no dedupe, no cooldown, no cache, no batching, no routing) to the Anthropic (Sonnet) model, input = the single-alert
prompt of build_prompt([alert]) with estimate_tokens, output = the output tokens the fakes billed per alert for
pamd's requests of the same monitor (assumed: a lone alert's reply is as long as its share of a batched one).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the fakes live in tests/fakes
sys.path.insert(0, str(ROOT / "bench"))

from monitors_scale import MONITORS, generate  # noqa: E402 - after the path is set

TICKS_PER_HOUR = {"fuel": 12, "context": 4, "weather": 2, "budget": 1, "maintenance": 1}  # the default schedules
TARGET_RATIO = 0.20
AI_KEYS = ("ANTHROPIC_API_KEY", "GEMINI_API_KEY")


def _ai_counters(registry: Any) -> dict[str, float]:
    """The pamd_ai_* counters summed over labels, tokens split by kind."""
    totals: dict[str, float] = {}
    for metric in registry.collect():
        if not metric.name.startswith("pamd_ai_"):
            continue
        for sample in metric.samples:
            if sample.name == "pamd_ai_latency_seconds_sum":  # summed over requests: their mean wall time
                totals["latency_sum"] = totals.get("latency_sum", 0.0) + sample.value
            if not sample.name.endswith("_total"):
                continue
            key = sample.name.removeprefix("pamd_ai_").removesuffix("_total")
            if key == "tokens":
                key = f"tokens_{sample.labels['kind']}"
            if key == "fallbacks" and sample.value:
                reason = f"fallbacks_{sample.labels['reason']}"
                totals[reason] = totals.get(reason, 0.0) + sample.value
            totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def _instrument(pipeline: Any, phraser: Any, max_tokens: int) -> dict[str, float]:
    """Wrap the pipeline's tick submissions to compute the naive policy's prompts from the alerts a tick produced
    (each part, before phrasing rewrites them; that time is taken off the tick's) and ``phraser.phrase_all`` to time
    it. Returns the figures of the latest tick (reset them before each), which the wrappers update."""
    from pamd.ai.prompt import build_prompt
    from pamd.model import PackedAlerts

    state = {"naive_input_tokens": 0.0, "naive_seconds": 0.0, "naive_cpu": 0.0, "phrasing_seconds": 0.0,
             "attempts": 0.0}
    open_session, phrase_all = pipeline.open, phraser.phrase_all

    def naive_open(*args: Any, **kwargs: Any) -> Any:
        # A new session within a tick is a retry: the naive policy is computed from the final attempt's alerts (the
        # tick's ``produced``); pamd's own counters keep every attempt's requests, which were really spent.
        state["naive_input_tokens"] = 0.0
        state["attempts"] += 1
        session = open_session(*args, **kwargs)
        add = session.add

        async def naive_then_add(alerts: Any, **options: Any) -> None:
            started, cpu = time.perf_counter(), time.process_time()
            items = (alerts[i] for i in range(len(alerts))) if isinstance(alerts, PackedAlerts) else alerts
            state["naive_input_tokens"] += sum(build_prompt([a], max_tokens).input_tokens for a in items)
            state["naive_seconds"] += time.perf_counter() - started
            state["naive_cpu"] += time.process_time() - cpu
            await add(alerts, **options)

        session.add = naive_then_add
        return session

    async def timed_phrase_all(alerts: Any) -> None:  # overlaps the pipeline's deciding of the next batch
        started = time.perf_counter()
        try:
            await phrase_all(alerts)
        finally:
            state["phrasing_seconds"] += time.perf_counter() - started

    pipeline.open, phraser.phrase_all = naive_open, timed_phrase_all
    return state


def child(args: argparse.Namespace) -> None:
    """Run ``args.child``'s tick twice with the phraser of the config and the environment; print one JSON line."""
    import anyio

    from pamd.ai.setup import build_phraser
    from pamd.assemble import assemble
    from pamd.coordination.local import LocalCoordinator
    from pamd.heap import settle_heap
    from pamd.metrics import Metrics
    from pamd.pipeline import AlertPipeline
    from pamd.providers import ProviderHub
    from pamd.runner import Runner
    from pamd.store.sqlite import SQLiteStore

    async def go() -> dict[str, Any]:
        assembly = assemble(str(args.config), sinks=False)
        store = SQLiteStore(f"sqlite:///{args.db}")
        await store.ping()
        metrics = Metrics()
        coordinator = LocalCoordinator(str(args.db.parent))
        await coordinator.start()
        hub = ProviderHub(assembly.config.providers, metrics)
        job = assembly.jobs[args.child]
        phraser = build_phraser(assembly.config, metrics)
        pipeline = AlertPipeline({}, metrics, book=store, settings=assembly.config.alerts, phraser=phraser)
        state = _instrument(pipeline, phraser, assembly.config.ai.anthropic.max_tokens)
        runner = Runner({job.name: job}, pipeline, metrics, coordinator, store, providers=hub, keep_decisions=False)
        settle_heap()  # as the daemon does once started
        ticks = []
        for _ in ("first", "again"):  # the second tick at once: every condition in cooldown
            before = _ai_counters(metrics.registry)
            state.update(dict.fromkeys(state, 0.0))
            started, cpu = time.perf_counter(), time.process_time()
            result = await runner.run_tick(job, datetime.now(UTC).replace(microsecond=0))
            seconds = time.perf_counter() - started - state["naive_seconds"]
            cpu = time.process_time() - cpu - state["naive_cpu"]  # all threads of the daemon's process
            after = _ai_counters(metrics.registry)
            ticks.append({"outcome": result.outcome, "error": result.error, "seconds": seconds, "cpu": cpu,
                          "produced": result.produced, "accepted": result.accepted, **state,
                          "ai": {k: v - before.get(k, 0.0) for k, v in after.items()}})
        await runner.aclose()
        await pipeline.aclose()
        await store.aclose()
        return {"monitor": args.child, "ai_active": phraser.active, "first": ticks[0], "again": ticks[1]}

    print(json.dumps(anyio.run(go)))


def _naive(tick: dict[str, Any], out_per_alert: float, prices: tuple[float, float]) -> dict[str, float]:
    output = tick["produced"] * out_per_alert
    return {"requests": tick["produced"], "input": tick["naive_input_tokens"], "output": output,
            "cost": (tick["naive_input_tokens"] * prices[0] + output * prices[1]) / 1e6}


def _ours(tick: dict[str, Any]) -> dict[str, float]:
    ai = tick["ai"]
    return {"requests": ai.get("requests", 0.0), "input": ai.get("tokens_input", 0.0),
            "output": ai.get("tokens_output", 0.0), "cost": ai.get("cost_usd", 0.0),
            "cache_hits": ai.get("cache_hits", 0.0), "fallbacks": ai.get("fallbacks", 0.0),
            **{k: v for k, v in ai.items() if k.startswith("fallbacks_")}}


def _hour(first: dict[str, float], again: dict[str, float], ticks: int) -> dict[str, float]:
    return {k: first[k] + (ticks - 1) * again.get(k, 0.0) for k in first}


def _row(name: str, produced: float, accepted: float, ours: dict[str, float], naive: dict[str, float]) -> str:
    ratio = f"{ours['cost'] / naive['cost']:.1%}" if naive["cost"] else "-"
    return (f"{name:<12} {produced:>9,.0f} {accepted:>9,.0f} {ours['requests']:>8,.0f} {naive['requests']:>9,.0f} "
            f"{ours['input']:>11,.0f} {ours['output']:>10,.0f} {naive['input']:>12,.0f} {naive['output']:>10,.0f} "
            f"{ours['cost']:>9.2f} {naive['cost']:>9.2f} {ratio:>7}")


def report_cost(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Print the cost tables and the verdicts; return pamd's cost / the naive cost on each basis."""
    from pamd.config import AISection

    sonnet = AISection().anthropic
    prices = (sonnet.input_usd_per_mtok, sonnet.output_usd_per_mtok)
    bases: dict[str, list[tuple[str, float, float, dict[str, float], dict[str, float]]]] = {
        "first tick": [], "steady tick": [], "one hour": []}
    for run in runs:
        on, name = run["on"], run["monitor"]
        ours_first, ours_again = _ours(on["first"]), _ours(on["again"])
        sent = run["alerts_sent"]  # alerts carried by pamd's requests (both ticks), from the fakes' request lists
        out_per_alert = (ours_first["output"] + ours_again["output"]) / sent if sent else 0.0
        run["output_tokens_per_alert"] = out_per_alert
        naive_first, naive_again = _naive(on["first"], out_per_alert, prices), _naive(on["again"], out_per_alert,
                                                                                      prices)
        n = TICKS_PER_HOUR[name]
        bases["first tick"].append((name, on["first"]["produced"], on["first"]["accepted"], ours_first, naive_first))
        bases["steady tick"].append((name, on["again"]["produced"], on["again"]["accepted"], ours_again, naive_again))
        bases["one hour"].append((name, on["first"]["produced"] + (n - 1) * on["again"]["produced"],
                                  on["first"]["accepted"] + (n - 1) * on["again"]["accepted"],
                                  _hour(ours_first, ours_again, n), _hour(naive_first, naive_again, n)))
    verdicts: dict[str, float] = {}
    for basis, rows in bases.items():
        note = {"first tick": "every condition new (measured)",
                "steady tick": "the same tick run again at once, every condition in cooldown (measured)",
                "one hour": "of the default schedules = first tick + (ticks per hour - 1) x steady tick "
                            "(computed, not run; ticks/h: " + ", ".join(f"{k} {v}" for k, v in TICKS_PER_HOUR.items())
                            + ")"}[basis]
        print(f"\n== {basis}: {note}")
        print(f"{'monitor':<12} {'produced':>9} {'accepted':>9} {'our req':>8} {'naive req':>9} {'our in tok':>11} "
              f"{'our out':>10} {'naive in tok':>12} {'naive out':>10} {'our $':>9} {'naive $':>9} {'ratio':>7}")
        total_ours: dict[str, float] = {}
        total_naive: dict[str, float] = {}
        for name, produced, accepted, ours, naive in rows:
            print(_row(name, produced, accepted, ours, naive))
            for k, v in ours.items():
                total_ours[k] = total_ours.get(k, 0.0) + v
            for k, v in naive.items():
                total_naive[k] = total_naive.get(k, 0.0) + v
        print(_row("total", sum(r[1] for r in rows), sum(r[2] for r in rows), total_ours, total_naive))
        reasons = ", ".join(f"{k.removeprefix('fallbacks_')} {v:,.0f}" for k, v in total_ours.items()
                            if k.startswith("fallbacks_") and v)
        print(f"{'':<12} cache hits {total_ours['cache_hits']:,.0f}, alerts that fell back (to the other provider, "
              f"then the rule text) {total_ours['fallbacks']:,.0f}" + (f" ({reasons})" if reasons else ""))
        verdicts[basis] = total_ours["cost"] / total_naive["cost"] if total_naive["cost"] else 0.0
    print("\nnaive output tokens per alert (= what the fakes billed per alert for pamd's batched requests): "
          + ", ".join(f"{r['monitor']} {r['output_tokens_per_alert']:.1f}" for r in runs))
    print(f"\nTarget: pamd's cost <= {TARGET_RATIO:.0%} of the naive policy's. Judged on one hour of the default "
          "schedules (what a deployment pays; the naive policy pays every tick again, pamd only for new conditions):")
    for basis in ("one hour", "first tick", "steady tick"):
        ratio = verdicts[basis]
        label = "PASS" if ratio <= TARGET_RATIO else "FAIL"
        print(f"  {basis:<12} {ratio:7.1%}  {label}{'  <- the verdict' if basis == 'one hour' else '  (shown too)'}")
    print("  The first tick is the strict basis (every alert new: only batching and routing save there); the steady"
          " tick's saving is the pipeline's cooldown, not the AI cache.")
    return verdicts


def report_latency(runs: list[dict[str, Any]], delay: float, concurrency: int) -> list[dict[str, Any]]:
    """Print the latency table: the tick with AI against the tick without, and the providers' own share."""
    print(f"\n== latency: tick with AI - tick without AI, against the providers' own lower bound = requests x "
          f"delay / concurrency ({delay:g} s / {concurrency})")
    print(f"{'monitor':<12} {'tick':<6} {'AI off s':>9} {'AI on s':>8} {'added s':>8} {'requests':>8} "
          f"{'bound s':>8} {'added-bound':>11} {'served s':>8} {'phrasing s':>10} {'mean req s':>10} "
          f"{'CPU off s':>9} {'CPU on s':>8}")
    latency = []
    for run in runs:
        all_requests = sum(run["on"][tick]["ai"].get("requests", 0.0) for tick in ("first", "again"))
        for tick in ("first", "again"):
            off, on = run["off"][tick]["seconds"], run["on"][tick]["seconds"]
            ai = run["on"][tick]["ai"]
            requests = ai.get("requests", 0.0)
            bound = requests * delay / concurrency
            # The fakes' own time (delay and work) of the run's requests, shared by the ticks that made them.
            served = run.get("served_seconds", 0.0) * requests / all_requests / concurrency if requests else 0.0
            mean = f"{ai.get('latency_sum', 0.0) / requests:.3f}" if requests else "-"
            latency.append({"monitor": run["monitor"], "tick": tick, "off": off, "on": on, "requests": requests,
                            "bound": bound, "served": served, "phrasing": run["on"][tick]["phrasing_seconds"],
                            "cpu_off": run["off"][tick]["cpu"], "cpu_on": run["on"][tick]["cpu"]})
            print(f"{run['monitor']:<12} {tick:<6} {off:>9.2f} {on:>8.2f} {on - off:>8.2f} {requests:>8,.0f} "
                  f"{bound:>8.2f} {on - off - bound:>11.2f} {served:>8.2f} {latency[-1]['phrasing']:>10.2f} "
                  f"{mean:>10} {latency[-1]['cpu_off']:>9.2f} {latency[-1]['cpu_on']:>8.2f}")
    added = sum(x["on"] - x["off"] for x in latency)
    bound = sum(x["bound"] for x in latency)
    served = sum(x["served"] for x in latency)
    print(f"{'total':<19} {sum(x['off'] for x in latency):>9.2f} {sum(x['on'] for x in latency):>8.2f} "
          f"{added:>8.2f} {sum(x['requests'] for x in latency):>8,.0f} {bound:>8.2f} {added - bound:>11.2f} "
          f"{served:>8.2f} {sum(x['phrasing'] for x in latency):>10.2f} {'':>10} "
          f"{sum(x['cpu_off'] for x in latency):>9.2f} {sum(x['cpu_on'] for x in latency):>8.2f}")
    requests = sum(x["requests"] for x in latency)
    if requests:
        extra = sum(x["cpu_on"] - x["cpu_off"] for x in latency) / requests
        print(f"added beyond the providers' own: {added - bound:.1f} s over {requests:,.0f} requests = "
              f"{(added - bound) / requests * 1000:.1f} ms a request beyond the delay, "
              f"{(added - served) / requests * 1000:.1f} ms beyond the time the fakes took to answer (served); CPU "
              f"the daemon's process added per request (SDK, HTTP, prompt, checks): {extra * 1000:.1f} ms")
    print("added = AI-on tick - AI-off tick (separate processes, separate database copies); bound = the fakes' delay "
          "alone with the limiter always full; served = the fakes' own time per request (from its headers read to "
          "its reply written: the delay, composing the reply, and waiting for the fakes' process, which shares the "
          "cores), summed / concurrency; phrasing = wall time inside the phraser (it overlaps the pipeline's "
          "deciding of the next batch); mean req = the daemon's pamd_ai_latency_seconds per request, which includes "
          "the wait for a slot of the limiter; CPU = the tick's process CPU time, all threads")
    for run in runs:
        if run["off"]["first"]["produced"] != run["on"]["first"]["produced"]:
            print(f"note: {run['monitor']} produced {run['off']['first']['produced']:,} alerts with AI off and "
                  f"{run['on']['first']['produced']:,} with AI on")
    return latency


def _run_child(monitor: str, db: Path, config: Path, env: dict[str, str]) -> dict[str, Any] | None:
    out = subprocess.run([sys.executable, __file__, "--child", monitor, "--db", str(db), "--config", str(config)],
                         capture_output=True, text=True, check=False, cwd=ROOT, env=env)
    if out.returncode != 0:
        print(f"{monitor}: failed\n{out.stderr[-3000:]}")
        return None
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    for tick in ("first", "again"):
        if result[tick]["outcome"] != "success" or result[tick]["error"]:
            print(f"{monitor} {tick}: {result[tick]['outcome']} {result[tick]['error'] or ''}")
        if result[tick].get("attempts", 1) > 1:
            print(f"{monitor} {tick}: {result[tick]['attempts']:.0f} attempts (a retry); the naive policy counts the "
                  "last attempt's alerts, pamd's cost every attempt's requests")
    return result


def measure(args: argparse.Namespace, dbs: dict[str, Path]) -> list[dict[str, Any]]:
    """Serve the fakes and run each monitor's child with AI off then on; return the runs."""
    from pamd.ai.prompt import read_prompt
    from tests.fakes.anthropic_api import AnthropicAPI
    from tests.fakes.bench_providers import serve_bench_providers
    from tests.fakes.gemini_api import GeminiAPI
    from tests.fakes.model_api import Compose, running

    runs = []
    with serve_bench_providers() as (weather_url, places_url), running(AnthropicAPI()) as anthropic, \
            running(GeminiAPI()) as gemini:
        for fake in (anthropic, gemini):
            fake.default = Compose(delay=args.delay, jitter=args.jitter)
        keys = {"ANTHROPIC_API_KEY": anthropic.api_key, "GEMINI_API_KEY": gemini.api_key}
        base_env = {k: v for k, v in os.environ.items() if k not in AI_KEYS and not k.startswith("PAMD_")}
        base_env["NO_PROXY"] = base_env["no_proxy"] = "127.0.0.1,localhost"
        configs = {}
        for mode, db in dbs.items():
            configs[mode] = db.parent / "config.toml"
            configs[mode].write_text(
                f'[daemon]\nstate_dir = "{db.parent}"\n[store]\nurl = "sqlite:///{db}"\nseed_demo = false\n'
                f'[providers.weather]\nbase_url = "{weather_url}"\n[providers.places]\nbase_url = "{places_url}"\n'
                f"[ai]\nmax_concurrency = {args.concurrency}\ndaily_budget_usd = 1000000.0\n"
                + (f"batch_size = {args.batch_size}\n" if args.batch_size else "")
                + (f'analysis_min_priority = "{args.analysis_min_priority}"\n' if args.analysis_min_priority else "")
                + f'[ai.anthropic]\nbase_url = "{anthropic.url}"\n[ai.gemini]\nbase_url = "{gemini.url}"\n')
        for monitor in args.only.split(","):
            off = _run_child(monitor, dbs["off"], configs["off"], base_env)
            for fake in (anthropic, gemini):
                fake.requests.clear()
                fake.server.service_seconds.clear()
            on = _run_child(monitor, dbs["on"], configs["on"], {**base_env, **keys})
            if off is None or on is None:
                continue
            requests = anthropic.requests + gemini.requests
            sent = sum(len(read_prompt(r.prompt)) for r in requests)
            print(f"{monitor}: AI off {off['first']['seconds']:.1f} s + {off['again']['seconds']:.1f} s, AI on "
                  f"{on['first']['seconds']:.1f} s + {on['again']['seconds']:.1f} s; {len(anthropic.requests)} "
                  f"Anthropic and {len(gemini.requests)} Gemini requests carrying {sent:,} alerts", flush=True)
            served = sum(anthropic.server.service_seconds) + sum(gemini.server.service_seconds)
            runs.append({"monitor": monitor, "off": off, "on": on, "alerts_sent": sent, "served_seconds": served,
                         "requests_seen": {"anthropic": len(anthropic.requests), "gemini": len(gemini.requests)}})
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--delay", type=float, default=0.05, help="the fake providers' latency per request (s)")
    parser.add_argument("--jitter", type=float, default=0.0,
                        help="spread each delay uniformly over delay x (1 +- jitter) (default 0: every request alike)")
    parser.add_argument("--concurrency", type=int, default=16, help="[ai] max_concurrency")
    parser.add_argument("--batch-size", type=int, help="[ai] batch_size (default: pamd's default)")
    parser.add_argument("--analysis-min-priority", choices=["low", "medium", "high", "urgent"],
                        help="[ai] analysis_min_priority (default: pamd's default)")
    parser.add_argument("--only", default=",".join(MONITORS))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    workdir = Path(tempfile.mkdtemp(prefix="pamd-ai-cost-"))
    try:
        started = time.perf_counter()
        dbs = {"on": workdir / "on" / "scale.db", "off": workdir / "off" / "scale.db"}
        dbs["on"].parent.mkdir()
        dbs["off"].parent.mkdir()
        counts = generate(dbs["on"], args.users, datetime.now(UTC))
        sqlite3.connect(dbs["on"]).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
        shutil.copyfile(dbs["on"], dbs["off"])  # AI off runs on its own copy: its first tick sees new conditions
        users = counts["profiles"]
        print(f"generated {users:,} users ({sum(counts.values()):,} rows) in {time.perf_counter() - started:.1f} s; "
              f"fake providers answer after {args.delay:g} s (jitter {args.jitter:g}), [ai] max_concurrency = "
              f"{args.concurrency}, batch_size = {args.batch_size or 'default'}, analysis_min_priority = "
              f"{args.analysis_min_priority or 'default'}")
        runs = measure(args, dbs)
        figures = {"users": users, "ratios": report_cost(runs),
                   "latency": report_latency(runs, args.delay, args.concurrency)}
        results_dir = ROOT / "bench" / "results"
        results_dir.mkdir(exist_ok=True)
        out_path = results_dir / f"ai-cost-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
        out_path.write_text(json.dumps({**figures, "delay": args.delay, "jitter": args.jitter,
                                        "concurrency": args.concurrency, "runs": runs, "cpu_count": os.cpu_count()},
                                       indent=2))
        print(f"written {out_path}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
