"""One tick of each built-in monitor over N demo-shaped users in Postgres (default 1,000,000), the alert path to
Redis and to the notifications table, and the old system's one-query-per-user access for comparison.

    .venv/bin/python bench/pg_scale.py [--users 1000000] [--only fuel,budget] [--alerts 50000] [--keep]

A schema of its own in the local Postgres (``--pg``, default 127.0.0.1:5432 database ``test``) gets pamd's
migration and the generated users (:mod:`bench.pg_data`: set-based ``generate_series`` copies of the demo set,
varied so that each monitor alerts for a realistic share); it is dropped at the end unless ``--keep``. Each monitor
then runs in its own subprocess through the daemon's runner and alert pipeline (the same code as
``bench/monitors_scale.py``, providers faked on 127.0.0.1): one tick and the same tick again at once. Reported: tick
seconds, users/s, rows fetched from Postgres (by the monitor and by the pipeline), alerts, peak RSS. Then the alert
path: ``--alerts`` alerts through the pipeline (stored in ``pam_alerts``, then delivered) to the Redis sink
(127.0.0.1:6379, a key prefix of its own, deleted afterwards), the same to the table sink (rows of the schema's
``notifications``, deleted afterwards), and ``--webhook-alerts`` to the webhook sink with a receiver on 127.0.0.1
answering after ``--webhook-delay`` s (a receiver a round trip away). Last, the naive baseline: the same fuel work
(read, estimate, alert text) on ``--naive-users`` users with one query per table per user through asyncpg, as the
old system did. Targets: fuel and budget ticks <= 10 s each, all five <= 60 s, peak RSS <= 200 MB, >= 5,000 alerts/s.

The development VMs differ by up to 3x in speed and are noisy (the same statement 53-106 ms within a minute): the report
starts with the machine's speed before and after the monitors (:func:`pg_baseline.machine_speed`), and
``--repeat N`` runs each monitor N times, each from a first tick, and reports the median run with the range of all.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.fakes (the bench's own modules are found beside this file)

import monitors_scale  # noqa: E402
from pg_baseline import alert_path, machine_speed, naive_fuel  # noqa: E402

MONITORS = monitors_scale.MONITORS
TARGET_TICK_S = {"fuel": 10.0, "budget": 10.0}
TARGET_ALL_S = 60.0
TARGET_PEAK_RSS_MB = 200.0
TARGET_ALERTS_PER_S = 5000.0
_ROWS: dict[str, int] = {"monitor": 0, "pipeline": 0}


def _count_rows() -> None:
    """Count the rows every asyncpg fetch brings back, by what the tick is doing (:data:`monitors_scale.PHASE`)."""
    connection = asyncpg.connection.Connection
    fetch, fetchrow = connection.fetch, connection.fetchrow

    async def counted_fetch(self: Any, *args: Any, **kwargs: Any) -> Any:
        rows = await fetch(self, *args, **kwargs)
        _ROWS[monitors_scale.PHASE.get()] += len(rows)
        return rows

    async def counted_fetchrow(self: Any, *args: Any, **kwargs: Any) -> Any:
        row = await fetchrow(self, *args, **kwargs)
        _ROWS[monitors_scale.PHASE.get()] += row is not None
        return row

    connection.fetch, connection.fetchrow = counted_fetch, counted_fetchrow


def server_cpu_seconds() -> float | None:
    """CPU seconds used so far by every ``postgres`` process of this machine (exited backends count in their
    parent's children's time), or ``None`` when none is readable (a server elsewhere): on a shared two-core machine
    the server's work is half of a tick."""
    ticks, found = 0, False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, _, rest = text.partition(") ")
        if name.endswith("(postgres"):
            fields = rest.split()
            ticks += sum(int(value) for value in fields[11:15])  # utime, stime, cutime, cstime
            found = True
    return ticks / os.sysconf("SC_CLK_TCK") if found else None


_SERVER_CPU: list[float | None] = [None]


def _probe() -> dict[str, Any]:
    """The rows fetched and the server's CPU seconds since the last call."""
    rows: dict[str, Any] = dict(_ROWS)
    _ROWS.update(monitor=0, pipeline=0)
    before, _SERVER_CPU[0] = _SERVER_CPU[0], server_cpu_seconds()
    now = _SERVER_CPU[0]
    rows["server_cpu"] = now - before if now is not None and before is not None else None
    return rows


def _seconds(value: float | None) -> str:
    return f"{value:>7.2f}" if value is not None else f"{'-':>7}"


def report(
    results: list[dict[str, Any]], users: int, path: dict[str, Any], naive: dict[str, Any],
    speed: dict[str, dict[str, float]], table: dict[str, Any] | None = None, hook: dict[str, Any] | None = None,
) -> list[str]:
    """Print the table with the verdicts against the targets; returns the failed targets."""
    failed: list[str] = []
    before, after = speed["before"], speed["after"]
    print(f"\nmachine, before the monitors and after: a pure-Python loop of 10M additions "
          f"{before['python_loop_seconds']:.2f} / {after['python_loop_seconds']:.2f} s, a server sum of 5M integers "
          f"{before['server_sum_seconds']:.2f} / {after['server_sum_seconds']:.2f} s")

    def verdict(name: str, ok: bool, text: str) -> str:
        if not ok:
            failed.append(name)
        return f"{name} {'PASS' if ok else 'FAIL'} ({text})"

    print(f"\n{'monitor':<12} {'tick s':>7} {'users/s':>9} {'pipeline s':>10} {'CPU s':>6} {'rows (mon/pipe)':>17} "
          f"{'alerts':>7} {'srv CPU':>7} {'again s':>7} {'CPU s':>6} {'srv CPU':>7} {'rows again':>10} {'req':>4} "
          f"{'RSS MB':>6} {'peak':>6} {'growth':>6}  target")
    for r in results:
        rate = users / r["seconds"] if r["seconds"] else 0.0
        rows, again = r["probe"], r["again_probe"]
        checks = [verdict(f"{r['monitor']} peak RSS", r["rss_peak_mb"] <= TARGET_PEAK_RSS_MB,
                          f"<= {TARGET_PEAK_RSS_MB:.0f} MB")]
        if r["monitor"] in TARGET_TICK_S:
            limit = TARGET_TICK_S[r["monitor"]]
            checks.insert(0, verdict(f"{r['monitor']} tick", r["seconds"] <= limit, f"<= {limit:.0f} s"))
        print(f"{r['monitor']:<12} {r['seconds']:>7.2f} {rate:>9,.0f} "
              f"{r['pipeline_seconds']:>10.2f} {r['cpu_seconds']:>6.2f} "
              f"{rows['monitor']:>8,}/{rows['pipeline']:<8,} {r['alerts']:>7,} {_seconds(rows.get('server_cpu'))} "
              f"{r['again_seconds']:>7.2f} {r['again_cpu_seconds']:>6.2f} {_seconds(again.get('server_cpu'))} "
              f"{again['monitor'] + again['pipeline']:>10,} {r['provider_requests']:>4.0f} "
              f"{r['rss_before_mb']:>6.1f} {r['rss_peak_mb']:>6.1f} {r['rss_peak_mb'] - r['rss_before_mb']:>6.1f}  "
              + "; ".join(checks))
        if len(r.get("runs", ())) > 1:
            print(f"{'':<12} {len(r['runs'])} runs, the median shown; first ticks "
                  + " / ".join(f"{run['seconds']:.2f}" for run in r["runs"]) + " s, steady "
                  + " / ".join(f"{run['again_seconds']:.2f}" for run in r["runs"]) + " s")
        if r["degraded"] or r["error"]:
            print(f"{'':<12} degraded: {r['degraded']} error: {r['error']}")
    if len(results) == len(MONITORS):
        total = sum(r["seconds"] for r in results)
        print(verdict("all five ticks", total <= TARGET_ALL_S, f"{total:.1f} s, target <= {TARGET_ALL_S:.0f} s"))
    if path:
        rate = path["delivered"] / path["seconds"]
        print(f"alert path: {path['alerts']:,} alerts -> pipeline (pam_alerts) -> redis sink: {path['delivered']:,} "
              f"delivered ({path['landed']:,} in the stream; {path.get('held', 0):,} held for the users' quiet "
              f"hours) in {path['seconds']:.2f} s, of which "
              f"{path['sink_seconds']:.2f} s in the sink: {rate:,.0f} alerts/s; peak RSS {path['rss_peak_mb']:.0f} MB; "
              + verdict("alerts/s", rate >= TARGET_ALERTS_PER_S, f">= {TARGET_ALERTS_PER_S:,.0f}"))
        stored = path["delivered"] / max(path["seconds"] - path["sink_seconds"], 1e-9)
        for r in results:  # a first tick writes every alert it makes: what that part alone costs at this rate
            if r["alerts"] >= 0.05 * users:
                print(f"{r['monitor']}'s first tick stored {r['alerts']:,} alerts: at the alert path's rate without "
                      f"its sink ({stored:,.0f}/s), {r['alerts'] / stored:.1f} s of its {r['seconds']:.2f} s")
    if table:
        print(f"the same to the table sink: {table['delivered']:,} delivered ({table['landed']:,} rows in "
              f"notifications) in {table['seconds']:.2f} s, of which {table['sink_seconds']:.2f} s in the sink: "
              f"{table['delivered'] / table['seconds']:,.0f} alerts/s (the target is Redis's)")
    if hook:
        print(f"{hook['alerts']:,} alerts to the webhook sink, the receiver answering after "
              f"{hook['webhook_delay'] * 1000:.0f} ms: {hook['delivered']:,} delivered ({hook['landed']:,} requests) "
              f"in {hook['seconds']:.2f} s: {hook['delivered'] / hook['seconds']:,.0f} alerts/s")
    if naive:
        naive_rate = naive["users"] / naive["naive_seconds"]
        store_rate = naive["users"] / naive["store_seconds"]
        fuel = next((r for r in results if r["monitor"] == "fuel"), None)
        line = (f"naive (one query per table per user, {naive['queries']:,} queries) over {naive['users']:,} users: "
                f"{naive_rate:,.0f} users/s ({naive['naive_alerts']:,} alerts); the store's batched stream, same work: "
                f"{store_rate:,.0f} users/s ({naive['store_alerts']:,} alerts): {store_rate / naive_rate:.1f}x")
        if fuel is not None:
            line += f"; the whole fuel tick: {users / fuel['seconds'] / naive_rate:.1f}x the naive rate"
        print(line)
    return failed


def child(args: argparse.Namespace) -> None:
    """Run one monitor's ticks with rows counted; print a JSON result line."""
    _count_rows()
    print(json.dumps(monitors_scale.run_child(args.child, args.store, args.config, _probe)))


async def _admin(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _prepare(dsn: str, schema: str, users: int, now: datetime) -> dict[str, Any]:
    from pg_data import generate

    from pamd.store.pg import PostgresStore

    await _admin(dsn, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE; CREATE SCHEMA "{schema}"')
    store = PostgresStore(f"{dsn}?search_path={schema}")
    await store.migrate()
    await store.aclose()
    return await generate(dsn, schema, users, now)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--only", default=",".join(MONITORS))
    parser.add_argument("--alerts", type=int, default=50_000, help="alerts through the alert path (0: skip)")
    parser.add_argument("--webhook-alerts", type=int, default=3_000,
                        help="alerts through the alert path to a webhook receiver on 127.0.0.1 (0: skip)")
    parser.add_argument("--webhook-delay", type=float, default=0.02, help="the receiver's reply time, s")
    parser.add_argument("--naive-users", type=int, default=20_000, help="users of the naive baseline (0: skip)")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--schema", help="use this schema (default: a new pamd_bench_<random>)")
    parser.add_argument("--reuse", action="store_true", help="the schema is already generated (with --schema)")
    parser.add_argument("--keep", action="store_true", help="do not drop the schema at the end")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each monitor; the median one is reported")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    schema = args.schema or f"pamd_bench_{secrets.token_hex(4)}"
    url = f"{args.pg}?search_path={schema}"
    now = datetime.now(UTC)
    workdir = Path(tempfile.mkdtemp(prefix="pamd-pgbench-"))
    generated: dict[str, Any] = {}
    try:
        if not args.reuse:
            started = time.perf_counter()
            generated = anyio.run(_prepare, args.pg, schema, args.users, now)
            generated["total_seconds"] = time.perf_counter() - started
            print(f"generated {generated['users']:,} users ({sum(generated['rows'].values()):,} rows) in schema "
                  f"{schema} in {generated['total_seconds']:.1f} s: " +
                  ", ".join(f"{t} {n:,}" for t, n in generated["rows"].items()), flush=True)
        else:  # a kept schema: forget the alerts of the run before, so the first ticks are first ticks again
            anyio.run(_admin, args.pg, f'TRUNCATE "{schema}".pam_alerts, "{schema}".pam_alert_state, '
                      f'"{schema}".pam_deliveries, "{schema}".pamd_fence, "{schema}".notifications')
        users = anyio.run(_count_users, url)
        speed = {"before": anyio.run(machine_speed, url)}
        results = run_monitors(args.only.split(","), url, workdir, now, max(1, args.repeat))
        speed["after"] = anyio.run(machine_speed, url)
        path = anyio.run(alert_path, url, args.redis, args.alerts) if args.alerts else {}
        table = anyio.run(alert_path, url, args.redis, args.alerts, "table") if args.alerts else {}
        hook = (anyio.run(partial(alert_path, url, args.redis, args.webhook_alerts, "webhook",
                                  webhook_delay=args.webhook_delay)) if args.webhook_alerts else {})
        naive = anyio.run(naive_fuel, url, args.naive_users) if args.naive_users else {}
        failed = report(results, users, path, naive, speed, table, hook)
        results_dir = ROOT / "bench" / "results"
        results_dir.mkdir(exist_ok=True)
        out_path = results_dir / f"pg-scale-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
        out_path.write_text(json.dumps({"users": users, "generated": generated, "results": results,
                                        "alert_path": path, "table_path": table, "webhook_path": hook, "naive": naive,
                                        "failed": failed,
                                        "machine": speed,
                                        "cpu_count": os.cpu_count(), "load": os.getloadavg()}, indent=2))
        print(f"written {out_path}")
    finally:
        if not args.keep:
            anyio.run(_admin, args.pg, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def run_monitors(monitors: list[str], url: str, workdir: Path, now: datetime, repeat: int = 1) -> list[dict[str, Any]]:
    """Each monitor's ticks in a subprocess of its own (so peak RSS is per monitor), providers on 127.0.0.1;
    ``repeat`` times, each run after the first with the monitor's alerts of the one before forgotten (its first tick
    is a first tick again): the run with the median first tick, with every run's times under ``runs``."""
    from tests.fakes.bench_providers import serve_bench_providers

    results = []
    with serve_bench_providers(now) as (weather_url, places_url):
        config = workdir / "config.toml"
        config.write_text(f'[daemon]\nstate_dir = "{workdir}"\n[store]\nurl = "{url}"\nseed_demo = false\n'
                          f'[providers.weather]\nbase_url = "{weather_url}"\n'
                          f'[providers.places]\nbase_url = "{places_url}"\n')
        for monitor in monitors:
            runs = []
            for attempt in range(repeat):
                if attempt:
                    anyio.run(_forget, url, monitor)
                out = subprocess.run([sys.executable, __file__, "--child", monitor, "--store", url, "--config",
                                      str(config)], capture_output=True, text=True, check=False, cwd=ROOT)
                if out.returncode != 0:
                    print(f"{monitor}: failed\n{out.stderr[-3000:]}", flush=True)
                    break
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(f"{monitor}: {runs[-1]['seconds']:.2f} s, {runs[-1]['alerts']:,} alerts", flush=True)
            if runs:
                median = sorted(runs, key=lambda run: run["seconds"])[(len(runs) - 1) // 2]
                median["runs"] = [{"seconds": run["seconds"], "again_seconds": run["again_seconds"]} for run in runs]
                results.append(median)
    return results


async def _forget(url: str, monitor: str) -> None:
    """Delete ``monitor``'s alerts, states and deliveries (other monitors' stay: they count in the users' daily
    caps, as in a daemon running them all), then VACUUM the tables so that dead rows do not slow the next run."""
    from pamd.store.pg_base import split_pg_url

    conn = await asyncpg.connect(split_pg_url(url)[0])
    try:
        async with conn.transaction():
            await conn.execute("DELETE FROM pam_deliveries AS d USING pam_alerts AS a WHERE d.alert_id = a.id "
                               "AND a.monitor = $1", monitor)
            await conn.execute("DELETE FROM pam_alerts WHERE monitor = $1", monitor)
            await conn.execute("DELETE FROM pam_alert_state WHERE monitor = $1", monitor)
        await conn.execute("VACUUM (ANALYZE) pam_alerts, pam_alert_state, pam_deliveries")
    finally:
        await conn.close()


async def _count_users(url: str) -> int:
    from pamd.store.pg_base import split_pg_url

    conn = await asyncpg.connect(split_pg_url(url)[0])
    try:
        return int(await conn.fetchval("SELECT count(*) FROM profiles"))
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
