"""Failover time of pamd's Redis leader election, and what an idle leader and follower cost Redis.

    .venv/bin/python bench/failover.py [--rounds 3] [--ttl 10,3]

For each lease ttl: two ``pamd run`` replicas share a Redis of the benchmark's own (a redis-server on a free port)
and a monitor that runs every second and records when it ran. The leader is stopped gracefully (SIGTERM) or
killed (SIGKILL); reported from that signal to the other replica's "became leader" log line (the handover) and
to the first tick it runs (with a 1-second schedule the latter includes up to a second of waiting for the next
due tick when the old leader had already run the current one). Then, with no
monitor due, Redis's own command counters (INFO commandstats) give the commands per second of a lone idle leader
and of an idle follower added beside it. In the same run, RedBeat (Celery beat's Redis lock) with its lock timeout
set to the same ttl: SIGKILL the beat holding the lock, seconds until the other beat sends its first task (needs
bench/.venv-peers with celery-redbeat, created on first use as by bench/idle_footprint.py). Targets: graceful
<= 0.5 s; crash <= ttl + 1 s; <= 2 commands/s each.
Results go to bench/results/failover-*.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

ROOT = Path(__file__).resolve().parents[1]
PAMD = str(Path(sys.executable).with_name("pamd"))
PLUGIN = '''
import os, time
import pamd

class Beat(pamd.Monitor):
    name = "beat"
    schedule = os.environ.get("BENCH_SCHEDULE", "* * * * * *")
    retries = 0

    async def run(self, ctx):
        with open(os.environ["BENCH_RECORD"], "a") as f:
            f.write(f"{time.time():.4f} {os.environ['BENCH_REPLICA']} {ctx.scheduled_at.timestamp():.0f}\\n")
        return []

@pamd.hookimpl
def register_monitors(register):
    register(Beat())
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Replica:
    def __init__(self, workdir: Path, name: str, redis_port: int, ttl: float, schedule: str, record: Path) -> None:
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = self.workdir / "config.toml"
        disabled = "".join(f"[monitors.{m}]\nenabled = false\n" for m in ("fuel", "budget", "weather",
                                                                          "maintenance", "context"))
        config.write_text(
            f'[daemon]\nstate_dir = "{self.workdir}/state"\nplugin_dirs = ["{workdir}/plugins"]\n'
            f'[log]\nformat = "json"\n[http]\nlisten = "127.0.0.1:{self.port}"\n'
            f'[store]\nurl = "sqlite:///{workdir}/shared.db"\nseed_demo = false\n'
            f'[coordination]\nurl = "redis://127.0.0.1:{redis_port}/0"\nprefix = "bench"\nlease_ttl = {ttl}\n'
            f'[sinks.console]\nenabled = false\n{disabled}')
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAMD_")}
        env.update(BENCH_RECORD=str(record), BENCH_REPLICA=name, BENCH_SCHEDULE=schedule)
        with (self.workdir / "stderr.log").open("wb") as err:
            self.proc = subprocess.Popen([PAMD, "run", "--config", str(config)], env=env, stdout=subprocess.DEVNULL,
                                         stderr=err)
        self.name = name
        self.wait(lambda: self.status() is not None, 20)

    def status(self) -> dict[str, Any] | None:
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/status", timeout=1) as reply:
                data: dict[str, Any] = json.loads(reply.read())
                return data
        except OSError:
            return None

    def leading(self) -> bool:
        status = self.status()
        return bool(status and status["leader"])

    @staticmethod
    def wait(condition: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(30)


def first_run_after(record: Path, replica: str, since: float, timeout: float) -> float:
    """Wall time of the first tick ``replica`` ran after ``since``."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for line in record.read_text().splitlines() if record.exists() else []:
            at, who, _ = line.split()
            if who == replica and float(at) > since:
                return float(at)
        time.sleep(0.02)
    raise TimeoutError(f"{replica} ran no tick within {timeout} s")


def became_leader_after(replica: Replica, since: float, timeout: float) -> float:
    """Wall time of ``replica``'s "became leader" log line after ``since`` (its JSON logs carry ``ts``)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        for line in (replica.workdir / "stderr.log").read_text().splitlines():
            if "became leader" in line:
                at = datetime.fromisoformat(json.loads(line)["ts"].replace("Z", "+00:00")).timestamp()
                if at > since:
                    return at
        time.sleep(0.02)
    raise TimeoutError(f"{replica.name} did not become leader within {timeout} s")


def failover(workdir: Path, redis_port: int, ttl: float, how: int) -> tuple[float, float]:
    """(signal -> the other replica leads, signal -> its first tick run)."""
    record = workdir / f"ticks-{time.monotonic_ns()}.txt"
    a = Replica(workdir, "a", redis_port, ttl, "* * * * * *", record)
    a.wait(a.leading, 20)
    b = Replica(workdir, "b", redis_port, ttl, "* * * * * *", record)
    time.sleep(1.5)  # b is a settled follower
    since = time.time()
    a.stop(how)
    first_tick = first_run_after(record, "b", since, ttl + 10) - since
    handover = became_leader_after(b, since, ttl + 10) - since
    b.stop()
    redis.Redis(port=redis_port).flushall()
    return handover, first_tick


def commands(redis_port: int) -> int:
    stats = redis.Redis(port=redis_port).info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k not in ("cmdstat_info",))


def idle_cost(workdir: Path, redis_port: int, ttl: float, window: float) -> tuple[float, float]:
    record = workdir / "idle.txt"
    leader = Replica(workdir, "a", redis_port, ttl, "0 0 1 1 *", record)
    leader.wait(leader.leading, 20)
    time.sleep(1)
    before = commands(redis_port)
    time.sleep(window)
    lone = (commands(redis_port) - before - 1) / window  # -1: our own INFO
    follower = Replica(workdir, "b", redis_port, ttl, "0 0 1 1 *", record)
    time.sleep(1)
    before = commands(redis_port)
    time.sleep(window)
    both = (commands(redis_port) - before - 1) / window
    follower.stop()
    leader.stop()
    redis.Redis(port=redis_port).flushall()
    return lone, both - lone


def redbeat_crash_failover(workdir: Path, redis_port: int, lock_timeout: int) -> float | None:
    """SIGKILL the beat holding RedBeat's lock; seconds until the other beat sends its first task. ``None`` when
    Celery/RedBeat cannot be installed into bench/.venv-peers (created on first use)."""
    from idle_footprint import PEERS_VENV, ensure_peers_venv  # the same peers venv, created on first use

    try:
        ensure_peers_venv()
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"RedBeat not measured: cannot set up {PEERS_VENV}: {exc}")
        return None
    python = PEERS_VENV / "bin" / "python"
    env = dict(os.environ, BENCH_REDIS=f"redis://127.0.0.1:{redis_port}/0", BENCH_LOCK_TIMEOUT=str(lock_timeout),
               PYTHONPATH=str(ROOT / "bench" / "peers"))
    logs = [workdir / f"beat-{n}-{time.monotonic_ns()}.log" for n in (1, 2)]
    beats = []
    for log in logs:
        with log.open("wb") as out:
            beats.append(subprocess.Popen([str(python), "-m", "celery", "-A", "redbeat_app", "beat", "-l", "info",
                                           "-s", str(workdir / f"{log.stem}.schedule")],
                                          env=env, stdout=out, stderr=subprocess.STDOUT, cwd=workdir))
        if len(beats) == 1:
            Replica.wait(lambda log=log: "Sending due task" in log.read_text(), 30)  # the first beat leads
    time.sleep(3)  # the second beat waits on the lock
    since = time.time()
    beats[0].kill()
    beats[0].wait()
    try:
        Replica.wait(lambda: "Sending due task" in logs[1].read_text(), lock_timeout + 60)
        for line in logs[1].read_text().splitlines():
            found = re.match(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})", line)
            if found and "Sending due task" in line:
                at = datetime.strptime(found[1], "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=UTC)
                return max(0.0, at.timestamp() - since)
    finally:
        beats[1].kill()
        beats[1].wait()
        redis.Redis(port=redis_port).flushall()
    return None


def _fmt(values: Any) -> str:
    return "/".join(f"{v:.3f}" for v in values) + " s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ttl", default="10,3")
    parser.add_argument("--idle-window", type=float, default=20.0)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="pamd-failover-"))
    (workdir / "plugins").mkdir(mode=0o755)
    (workdir / "plugins" / "beat.py").write_text(PLUGIN)
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no"], stdout=subprocess.DEVNULL)
    results: dict[str, Any] = {"when": datetime.now(UTC).isoformat(), "rounds": args.rounds}
    try:
        time.sleep(0.5)
        for ttl in (float(t) for t in args.ttl.split(",")):
            graceful = [failover(workdir, port, ttl, signal.SIGTERM) for _ in range(args.rounds)]
            crash = [failover(workdir, port, ttl, signal.SIGKILL) for _ in range(args.rounds)]
            leader_cps, follower_cps = idle_cost(workdir, port, ttl, args.idle_window)
            redbeat = redbeat_crash_failover(workdir, port, int(ttl))
            results[f"ttl_{ttl:g}"] = {"graceful_handover_s": [g[0] for g in graceful],
                                       "graceful_first_tick_s": [g[1] for g in graceful],
                                       "crash_handover_s": [c[0] for c in crash],
                                       "crash_first_tick_s": [c[1] for c in crash],
                                       "idle_leader_cmds_per_s": leader_cps, "idle_follower_cmds_per_s": follower_cps,
                                       "redbeat_crash_first_send_s": redbeat}
            worst_graceful = max(g[1] for g in graceful)
            worst_crash = max(c[1] for c in crash)
            print(f"ttl {ttl:g} s: graceful: handover {_fmt(g[0] for g in graceful)}, first tick "
                  f"{_fmt(g[1] for g in graceful)} ({'PASS' if worst_graceful <= 0.5 else 'FAIL'} <= 0.5 s); crash: "
                  f"handover {_fmt(c[0] for c in crash)}, first tick {_fmt(c[1] for c in crash)} "
                  f"({'PASS' if worst_crash <= ttl + 1 else 'FAIL'} <= {ttl + 1:g} s); idle Redis commands/s: "
                  f"leader {leader_cps:.2f}, follower {follower_cps:.2f} "
                  f"({'PASS' if max(leader_cps, follower_cps) <= 2 else 'FAIL'} <= 2); RedBeat (lock timeout "
                  f"{int(ttl)} s) crash failover to its first send: "
                  + (f"{redbeat:.2f} s" if redbeat is not None else "not measured (no celery-redbeat)"))
    finally:
        server.kill()
    out = ROOT / "bench" / "results" / f"failover-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
