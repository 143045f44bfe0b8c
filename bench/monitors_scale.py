"""One tick of each built-in monitor over demo-shaped SQLite data scaled to N users (default 100,000).

    .venv/bin/python bench/monitors_scale.py [--users 100000] [--only fuel,budget] [--keep DIR]

The demo data set (8 travellers) is copied N/8 times with fresh ids into a new SQLite file, the weather and places
providers are served by the test suite's fakes on 127.0.0.1 (real wire formats), and each monitor runs one tick in
its own subprocess (so peak RSS is per monitor) through the daemon's runner and alert pipeline (dedupe state and
alerts are written, sinks are off). Reported per monitor: tick seconds, users evaluated per second, the time spent
in the alert pipeline (which overlaps the monitor's), alerts, provider requests, RSS before the tick and its peak
during it (and the peak of SQLite's page reader process, counted whole in the growth), and the same tick run again
at once ("again": every condition in cooldown, the steady state of a schedule).
A baseline runs in the same session: the same fuel work (read, estimate, alert text) fed by one query per user (the
old system's way) and by pamd's batched pages, with their ratio.
Targets: >= 20,000 users/s for fuel and budget, peak RSS growth <= 100 MB.
"""

from __future__ import annotations

import argparse
import contextvars
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pamd.store.records import FuelInput

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the fakes live in tests/fakes

MONITORS = ("fuel", "budget", "weather", "maintenance", "context")
TARGET_USERS_PER_S = {"fuel": 20_000.0, "budget": 20_000.0}
TARGET_RSS_GROWTH_MB = 100.0
PHASE: contextvars.ContextVar[str] = contextvars.ContextVar("PHASE", default="monitor")
"""What the code reading is doing: ``monitor`` (reading, evaluating), or ``pipeline`` (deciding and storing)."""


def _timed(part: Callable[..., Awaitable[Any]], total: list[float]) -> Callable[..., Awaitable[Any]]:
    async def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        PHASE.set("pipeline")
        try:
            return await part(*args, **kwargs)
        finally:
            PHASE.set("monitor")
            total[0] += time.perf_counter() - started

    return timed


def generate(path: Path, users: int, now: datetime) -> dict[str, int]:
    """Write ``users`` demo-shaped users into a migrated SQLite file; returns rows per table."""
    import anyio

    from pamd.store.demo import demo_rows
    from pamd.store.records import to_sql_value
    from pamd.store.sqlite import SQLiteStore

    async def migrate() -> None:
        store = SQLiteStore(f"sqlite:///{path}")
        await store.migrate()
        await store.aclose()

    anyio.run(migrate)
    template = demo_rows(now)
    copies = max(1, users // len(template["profiles"]))  # whole copies of the demo set
    counts: dict[str, int] = {}
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    with conn:
        for table, rows in template.items():
            if not rows:
                continue
            columns = list(rows[0])
            sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            batch: list[tuple[Any, ...]] = []
            for copy in range(copies):
                for row in rows:
                    values = dict(row)
                    for key in ("id", "user_id", "vehicle_id"):
                        if values.get(key) is not None:
                            values[key] = f"{values[key]}-{copy:06d}"
                    batch.append(tuple(to_sql_value(values[c]) for c in columns))
                if len(batch) > 50_000:
                    conn.executemany(sql, batch)
                    counts[table] = counts.get(table, 0) + len(batch)
                    batch = []
            conn.executemany(sql, batch)
            counts[table] = counts.get(table, 0) + len(batch)
    conn.execute("ANALYZE")
    conn.close()
    return counts


def child(args: argparse.Namespace) -> None:
    """Run one tick of ``args.child`` and print a JSON result line."""
    print(json.dumps(run_child(args.child, f"sqlite:///{args.db}", args.config)))


def run_child(
    monitor: str, store_url: str, config: Path, probe: Callable[[], dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Two ticks of ``monitor`` (the first, then the same again at once) over the store at ``store_url``, through
    the daemon's runner and alert pipeline (no sinks); their figures. ``probe()`` is called before the first tick
    and after each (its results under ``probe`` and ``again_probe``). Also used by ``bench/pg_scale.py``."""
    import anyio

    from pamd.assemble import assemble
    from pamd.coordination.local import LocalCoordinator
    from pamd.heap import settle_heap
    from pamd.metrics import Metrics
    from pamd.pipeline import AlertPipeline
    from pamd.providers import ProviderHub
    from pamd.runner import Runner
    from pamd.store import open_store

    async def go() -> dict[str, Any]:
        assembly = assemble(str(config), sinks=False)
        store = open_store(store_url)
        await store.ping()
        metrics = Metrics()
        coordinator = LocalCoordinator(str(config.parent))
        await coordinator.start()
        hub = ProviderHub(assembly.config.providers, metrics)
        job = assembly.jobs[monitor]
        pipeline = AlertPipeline({}, metrics, book=store, settings=assembly.config.alerts)
        in_pipeline = [0.0]
        open_session = pipeline.open

        def timed_open(*args: Any, **kwargs: Any) -> Any:
            """The tick's submission, with the time spent in its parts (they overlap the monitor's work) counted
            and the pipeline's reads marked as such (a context variable: the parts run in tasks of their own)."""
            session = open_session(*args, **kwargs)
            for name in ("add", "close"):
                setattr(session, name, _timed(getattr(session, name), in_pipeline))
            return session

        pipeline.open = timed_open  # type: ignore[method-assign]
        runner = Runner({job.name: job}, pipeline, metrics, coordinator, store, providers=hub, keep_decisions=False)
        settle_heap()  # as the daemon does once started
        rss_before = _rss_mb()
        if probe is not None:
            probe()  # from here on
        started, cpu = time.perf_counter(), time.process_time()
        result = await runner.run_tick(job, datetime.now(UTC).replace(microsecond=0))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        first_pipeline = in_pipeline[0]
        probed = probe() if probe is not None else {}
        # The same tick again a second later: every condition is now in cooldown (the steady state of a schedule).
        started, again_cpu = time.perf_counter(), time.process_time()
        again = await runner.run_tick(job, datetime.now(UTC).replace(microsecond=0))
        again_seconds, again_cpu = time.perf_counter() - started, time.process_time() - again_cpu
        again_probed = probe() if probe is not None else {}
        reader = getattr(store, "_page_reader", None)  # SQLite's page reader process, if the ticks started it
        reader_peak = _rss_mb(reader.pid, "VmHWM") if reader is not None and reader.pid is not None else 0.0
        await runner.aclose()
        await store.aclose()
        requests = sum(s.value for m in metrics.registry.collect() if m.name == "pamd_provider_requests"
                       for s in m.samples if s.name.endswith("_total"))
        return {"monitor": monitor, "outcome": result.outcome, "error": result.error, "seconds": seconds,
                "pipeline_seconds": first_pipeline, "cpu_seconds": cpu, "again_seconds": again_seconds,
                "again_cpu_seconds": again_cpu,
                "again_outcome": again.outcome, "again_accepted": again.accepted,
                "alerts": result.produced, "accepted": result.accepted, "degraded": result.degradations,
                "rss_before_mb": rss_before,
                "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "reader_peak_mb": reader_peak,
                "provider_requests": requests, "skipped_rows": dict(getattr(store, "skipped_rows", {})),
                "probe": probed, "again_probe": again_probed}

    return anyio.run(go)


def fuel_work(now: datetime) -> Callable[[FuelInput], int]:
    """What both baselines do per user: estimate, classify and (if it alerts) build the alert; 1 if it alerts."""
    if TYPE_CHECKING:  # mypy sees the source tree; installed, the built-in plugins are pamd_plugins
        from plugins.fuel import FuelConfig, FuelEstimate, build_alert, classify, estimate_fuel
    else:
        from pamd_plugins.fuel import FuelConfig, FuelEstimate, build_alert, classify, estimate_fuel

    cfg = FuelConfig()

    def evaluate(inp: FuelInput) -> int:
        est = estimate_fuel(inp, now, cfg)
        priority = classify(est, cfg) if isinstance(est, FuelEstimate) else None
        if priority is None or not isinstance(est, FuelEstimate):
            return 0
        build_alert(inp, est, priority, [])
        return 1

    return evaluate


def fuel_baseline(db: Path, limit: int) -> dict[str, Any]:
    """The same fuel work (read, estimate, classify, build the alert text; no stations, no pipeline) two ways: the
    old system's one-query-per-user access (profile, vehicle, fill-ups), and pamd's batched keyset pages."""
    import anyio

    from pamd.store.records import FuelFill, FuelInput, FuelVehicle, parse_ts
    from pamd.store.sqlite import SQLiteStore

    now = datetime.now(UTC)
    evaluate = fuel_work(now)

    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    started = time.perf_counter()
    naive_alerts = 0
    ids = [r[0] for r in conn.execute("SELECT id FROM profiles ORDER BY id LIMIT ?", [limit])]
    for user_id in ids:
        profile = conn.execute("SELECT * FROM profiles WHERE id = ?", [user_id]).fetchone()
        v = conn.execute("SELECT * FROM vehicles WHERE user_id = ? AND is_primary = 1", [user_id]).fetchone()
        if v is None:
            continue
        fills = tuple(
            FuelFill(id=f["id"], logged_at=parse_ts(f["logged_at"]) or now, volume_l=f["volume_l"],
                     is_full_tank=bool(f["is_full_tank"]), odometer_km=f["odometer_km"], total_cost=f["total_cost"])
            for f in conn.execute("SELECT * FROM fuel_log WHERE vehicle_id = ? ORDER BY logged_at", [v["id"]]))
        naive_alerts += evaluate(FuelInput(
            user_id=user_id, timezone=profile["timezone"], currency=profile["currency"], vehicle=FuelVehicle(
                id=v["id"], name=v["name"], vehicle_type=v["vehicle_type"], fuel_type=v["fuel_type"],
                fuel_capacity_l=v["fuel_capacity_l"], consumption_l_per_100km=v["consumption_l_per_100km"],
                odometer_km=v["odometer_km"]), fills=fills))
    naive_seconds = time.perf_counter() - started
    conn.close()

    async def batched() -> tuple[float, int]:
        store = SQLiteStore(f"sqlite:///{db}")
        begun, found, seen = time.perf_counter(), 0, 0
        async for batch in store.iter_fuel_inputs(500, now=now):
            for inp in batch:
                if seen < limit:
                    found += evaluate(inp)
                seen += 1
            if seen >= limit:
                break
        elapsed = time.perf_counter() - begun
        await store.aclose()
        return elapsed, found

    batched_seconds, batched_alerts = anyio.run(batched)
    return {"users": len(ids), "naive_seconds": naive_seconds, "naive_alerts": naive_alerts,
            "batched_seconds": batched_seconds, "batched_alerts": batched_alerts}


def _rss_mb(pid: int | str = "self", field: str = "VmRSS") -> float:
    """A process's resident set (``VmHWM``: its peak) in MB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return 0.0


def report(results: list[dict[str, Any]], users: int, baseline: dict[str, Any]) -> None:
    """Print the table, the verdicts against the targets, and the ratio to the naive baseline."""
    print(f"\n{'monitor':<12} {'tick s':>7} {'users/s':>8} {'pipeline s':>10} {'alerts':>7} "
          f"{'accepted':>8} {'again s':>7} {'users/s':>8} {'req':>4} {'RSS MB':>6} {'peak':>6} {'reader':>6} "
          f"{'growth':>6}  target")
    for r in results:
        rate = users / r["seconds"] if r["seconds"] else 0.0
        growth = r["rss_peak_mb"] - r["rss_before_mb"] + r.get("reader_peak_mb", 0.0)  # the reader: all of it
        target = TARGET_USERS_PER_S.get(r["monitor"])
        verdict = []
        if target:
            verdict.append(f"users/s {'PASS' if rate >= target else 'FAIL'} (>= {target:,.0f})")
        verdict.append(f"growth {'PASS' if growth <= TARGET_RSS_GROWTH_MB else 'FAIL'} (<= {TARGET_RSS_GROWTH_MB:.0f})")
        print(f"{r['monitor']:<12} {r['seconds']:>7.2f} {rate:>8,.0f} {r['pipeline_seconds']:>10.2f} "
              f"{r['alerts']:>7,} {r['accepted']:>8,} {r['again_seconds']:>7.2f} {users / r['again_seconds']:>8,.0f} "
              f"{r['provider_requests']:>4.0f} {r['rss_before_mb']:>6.1f} {r['rss_peak_mb']:>6.1f} "
              f"{r.get('reader_peak_mb', 0.0):>6.1f} {growth:>6.1f}  " + "; ".join(verdict))
        if r["degraded"] or r["error"]:
            print(f"{'':<12} degraded: {r['degraded']} error: {r['error']}")
    print("pipeline s: time in the alert pipeline's parts, which overlap the monitor's work; reader: the peak RSS "
          "of SQLite's page reader process (counted whole in growth)")
    naive = baseline["users"] / baseline["naive_seconds"]
    batched = baseline["users"] / baseline["batched_seconds"]
    print(f"\nsame fuel work (read, estimate, alert text) over {baseline['users']:,} users: one query per user "
          f"{naive:,.0f} users/s ({baseline['naive_alerts']:,} alerts), batched pages {batched:,.0f} users/s "
          f"({baseline['batched_alerts']:,} alerts): ratio {batched / naive:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--only", default=",".join(MONITORS))
    parser.add_argument("--keep", type=Path, help="keep the generated database in this directory")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    from tests.fakes.bench_providers import serve_bench_providers

    workdir = Path(args.keep or tempfile.mkdtemp(prefix="pamd-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "scale.db"
    if db.exists():
        db.unlink()
    now = datetime.now(UTC)
    started = time.perf_counter()
    counts = generate(db, args.users, now)
    args.users = counts["profiles"]
    print(f"generated {args.users:,} users ({sum(counts.values()):,} rows) in {time.perf_counter() - started:.1f} s"
          f": {db}")
    results = []
    with serve_bench_providers() as (weather_url, places_url):
        config = workdir / "config.toml"
        config.write_text(f'[daemon]\nstate_dir = "{workdir}"\n[store]\nurl = "sqlite:///{db}"\nseed_demo = false\n'
                          f'[providers.weather]\nbase_url = "{weather_url}"\n'
                          f'[providers.places]\nbase_url = "{places_url}"\n')
        for monitor in args.only.split(","):
            out = subprocess.run([sys.executable, __file__, "--child", monitor, "--db", str(db), "--config",
                                  str(config)], capture_output=True, text=True, check=False, cwd=ROOT)
            if out.returncode != 0:
                print(f"{monitor}: failed\n{out.stderr[-2000:]}")
                continue
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    baseline = fuel_baseline(db, args.users)
    report(results, args.users, baseline)
    results_dir = ROOT / "bench" / "results"
    results_dir.mkdir(exist_ok=True)
    out_path = results_dir / f"scale-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out_path.write_text(json.dumps({"users": args.users, "rows": counts, "results": results, "baseline": baseline,
                                    "cpu_count": os.cpu_count()}, indent=2))
    print(f"written {out_path}")


if __name__ == "__main__":
    main()
