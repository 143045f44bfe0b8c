"""A Celery app whose beat uses RedBeat (a Redis lock elects the one beat that sends), for bench/failover.py.

Environment: BENCH_REDIS (broker and RedBeat URL), BENCH_LOCK_TIMEOUT (seconds, RedBeat's lock timeout; its
default is 5 x beat_max_loop_interval = 25 minutes). One task is due every second.
"""

import os

from celery import Celery  # type: ignore[import-not-found, unused-ignore]

redis_url = os.environ["BENCH_REDIS"]
app = Celery("redbeat_bench", broker=redis_url)
app.conf.update(
    beat_scheduler="redbeat.RedBeatScheduler",
    redbeat_redis_url=redis_url,
    redbeat_lock_timeout=int(os.environ.get("BENCH_LOCK_TIMEOUT", "10")),
    beat_max_loop_interval=1,  # the lock is refreshed on every loop: well inside the timeout
    beat_schedule={"tick": {"task": "redbeat_bench.tick", "schedule": 1.0}},
    timezone="UTC",
)


@app.task(name="redbeat_bench.tick")  # type: ignore[misc, untyped-decorator, unused-ignore]
def tick() -> None:
    """Never executed here: the benchmark watches beat send it."""
