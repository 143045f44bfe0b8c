"""The alert path to Redis and to the notifications table, the naive one-query-per-user baseline and the machine's
speed, for ``bench/pg_scale.py``."""

from __future__ import annotations

import math
import resource
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from monitors_scale import fuel_work

from pamd.store.pg_base import split_pg_url
from pamd.store.records import FuelFill, FuelInput, FuelVehicle

ROOT = Path(__file__).resolve().parent.parent


# A webhook receiver in a process of its own (the GIL of a threaded server in the bench's process would slow the
# daemon's side): tests/fakes/server.py with kept-alive connections, answering 204 after ``delay`` seconds. It prints
# its URL, then, once its stdin closes, how many requests it answered.
_RECEIVER = """
import sys
sys.path.insert(0, sys.argv[1])
from tests.fakes.server import FakeServer, Reply
server = FakeServer(lambda request: Reply(204), keep_alive=True)
server.delay = float(sys.argv[2])
server.start()
print(server.url, flush=True)
sys.stdin.read()
print(len(server.requests), flush=True)
"""


@contextmanager
def webhook_receiver(delay: float) -> Iterator[tuple[str, Callable[[], int]]]:
    """A webhook receiver on 127.0.0.1 answering after ``delay`` s: its URL, and a function that stops it and
    returns how many requests it answered."""
    proc = subprocess.Popen([sys.executable, "-c", _RECEIVER, str(ROOT), str(delay)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    answered: list[int] = []

    def stop() -> int:
        if not answered:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.close()
            answered.append(int(proc.stdout.readline()))
            proc.wait(10)
        return answered[0]

    try:
        yield proc.stdout.readline().strip(), stop
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def alert_path(url: str, redis_url: str, count: int, sink: str = "redis", *, webhook_delay: float = 0.02
                     ) -> dict[str, Any]:
    """``count`` alerts (one per user, fuel-sized text and facts) through :class:`pamd.pipeline.AlertPipeline` with
    the Postgres store as alert book and outbox, as a tick submits them: decided, stored in ``pam_alerts``, delivered
    to ``sink``: ``redis`` (its keys, prefix ``pamd-bench-<random>``, deleted afterwards), ``table`` (rows of the
    schema's ``notifications``, deleted afterwards) or ``webhook`` (a receiver on 127.0.0.1 answering after
    ``webhook_delay`` s, the webhook sink at its default concurrency)."""
    if sink == "webhook":
        with webhook_receiver(webhook_delay) as (hook, stop):
            result = await _alert_path(url, redis_url, count, sink, hook)
            result["landed"] = stop()
            result["webhook_delay"] = webhook_delay
            return result
    return await _alert_path(url, redis_url, count, sink, "")


async def _alert_path(url: str, redis_url: str, count: int, sink: str, hook: str) -> dict[str, Any]:
    import redis.asyncio as aioredis

    import pamd
    from pamd.metrics import Metrics
    from pamd.pipeline import AlertPipeline
    from pamd.store.pg import PostgresStore

    prefix = f"pamd-bench-{secrets.token_hex(4)}"
    store = PostgresStore(url)
    target = _sink(sink, store, redis_url, prefix, count, hook)
    in_sink = [0.0]
    name = "deliver" if sink == "webhook" else "deliver_batch"
    deliver = getattr(target, name)

    async def timed(alerts: Any) -> None:  # deliver's alert or deliver_batch's alerts
        started = time.perf_counter()
        try:
            await deliver(alerts)
        finally:
            in_sink[0] += time.perf_counter() - started

    setattr(target, name, timed)
    pipeline = AlertPipeline({sink: target}, Metrics(), book=store)
    users = [row[0] for row in await store._call(lambda conn: conn.fetch(
        "SELECT id FROM profiles ORDER BY id LIMIT $1", count))]
    facts = {"level_pct": 12.5, "litres_left": 47.5, "capacity_l": 380.0, "range_km": 158.3, "stations": [],
             "vehicle_name": "Big Sky", "currency": "USD"}
    alerts = [pamd.Alert(user_id=user, kind="bench_alert", priority=pamd.Priority.MEDIUM,
                         title="Fuel getting low: about 12% left",
                         body="Big Sky has about 12.5 gal of fuel left (12% of 100.4 gal), roughly 98 mi of range. "
                              "Estimated from your last full fill-up 3 days ago and 671 mi driven since (odometer). "
                              "Filling up (87.9 gal) costs about $349.20 at your last price. Plan a fill-up soon.",
                         facts=facts, actions=[{"action": "log_fuel", "label": "Log a fill-up"}])
              for user in users]
    client = aioredis.Redis.from_url(redis_url)
    try:
        started = time.perf_counter()
        result = await pipeline.submit("bench_alerts", alerts, epoch=0, keep=False)
        seconds = time.perf_counter() - started
        if sink == "redis":
            landed = int(await client.xlen(f"{prefix}:alerts"))
        elif sink == "table":
            landed = await store._call(lambda conn: conn.fetchval(
                "SELECT count(*) FROM notifications WHERE type = 'bench_alert'"))
        else:
            landed = 0  # the receiver counts
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=5000)]
        for start in range(0, len(keys), 1000):
            await client.unlink(*keys[start : start + 1000])
        await client.aclose()
        if sink == "table":
            await store._call(lambda conn: conn.execute("DELETE FROM notifications WHERE type = 'bench_alert'"))
        await pipeline.aclose()
        await store.aclose()
    return {"sink": sink, "alerts": len(alerts), "delivered": result.outcomes["delivered"], "landed": landed,
            "held": result.outcomes.get("held", 0),
            "seconds": seconds, "sink_seconds": in_sink[0],
            "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _sink(kind: str, store: Any, redis_url: str, prefix: str, count: int, hook: str) -> Any:
    """The alert path's sink: ``redis``, ``table`` (writing through ``store``) or ``webhook`` (to ``hook``)."""
    from pamd.sinks.redis import RedisSink
    from pamd.sinks.table import TableSink
    from pamd.sinks.webhook import WebhookSink

    if kind == "redis":
        return RedisSink({"url": redis_url, "prefix": prefix, "stream_maxlen": count + 1000})
    if kind == "webhook":
        return WebhookSink({"url": f"{hook}/hook"})
    table = TableSink({}, None)
    table.bind_store(store)
    return table


async def naive_fuel(url: str, limit: int) -> dict[str, Any]:
    """The fuel work (read, estimate, classify, alert text; no stations, no pipeline) over the first ``limit``
    users two ways: the old system's access, one query per user and table (profile, primary vehicle, its fill-ups)
    through asyncpg, and the store's batched stream (:meth:`PostgresStore.iter_fuel_inputs`)."""
    from pamd.store.pg import PostgresStore

    now = datetime.now(UTC)
    evaluate = fuel_work(now)

    conn = await asyncpg.connect(split_pg_url(url)[0])
    try:
        started = time.perf_counter()
        ids = [r[0] for r in await conn.fetch("SELECT id FROM profiles ORDER BY id LIMIT $1", limit)]
        alerts, queries = 0, 1
        for user_id in ids:
            profile = await conn.fetchrow("SELECT * FROM profiles WHERE id = $1", user_id)
            v = await conn.fetchrow("SELECT * FROM vehicles WHERE user_id = $1 AND is_primary", user_id)
            queries += 2
            if profile is None or v is None:
                continue
            fills = tuple(
                FuelFill(id=f["id"], logged_at=f["logged_at"], volume_l=f["volume_l"],
                         is_full_tank=bool(f["is_full_tank"]), odometer_km=f["odometer_km"],
                         total_cost=f["total_cost"])
                for f in await conn.fetch("SELECT * FROM fuel_log WHERE vehicle_id = $1 ORDER BY logged_at", v["id"]))
            queries += 1
            alerts += evaluate(FuelInput(
                user_id=user_id, timezone=profile["timezone"], currency=profile["currency"], vehicle=FuelVehicle(
                    id=v["id"], name=v["name"], vehicle_type=v["vehicle_type"], fuel_type=v["fuel_type"],
                    fuel_capacity_l=v["fuel_capacity_l"], consumption_l_per_100km=v["consumption_l_per_100km"],
                    odometer_km=v["odometer_km"]), fills=fills))
        naive_seconds = time.perf_counter() - started
    finally:
        await conn.close()

    store = PostgresStore(url)
    started, found, seen = time.perf_counter(), 0, 0
    async for batch in store.iter_fuel_inputs(500, now=now):
        for inp in batch[: limit - seen]:
            found += evaluate(inp)
        seen += len(batch)
        if seen >= limit:
            break
    store_seconds = time.perf_counter() - started
    await store.aclose()
    return {"users": len(ids), "queries": queries, "naive_seconds": naive_seconds, "naive_alerts": alerts,
            "store_seconds": store_seconds, "store_alerts": found}


async def machine_speed(url: str) -> dict[str, float]:
    """A reading of this machine's speed, beside the figures of a run (the development VMs differ by up to 3x): the
    best of three runs of a pure-Python loop of 10 million additions and of a server statement summing 5 million
    generated integers on one backend. Neither predicts a tick well (bench/README.md, session 13's VM)."""
    python = server = math.inf
    conn = await asyncpg.connect(split_pg_url(url)[0])
    try:
        await conn.execute("SET jit = off; SET max_parallel_workers_per_gather = 0")
        for _ in range(3):
            started = time.perf_counter()
            total = 0
            for i in range(10_000_000):
                total += i
            python = min(python, time.perf_counter() - started)
            started = time.perf_counter()
            await conn.fetchval("SELECT sum(i) FROM generate_series(1, 5000000) AS i")
            server = min(server, time.perf_counter() - started)
    finally:
        await conn.close()
    return {"python_loop_seconds": python, "server_sum_seconds": server}
