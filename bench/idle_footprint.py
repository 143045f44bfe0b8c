"""Idle footprint of pamd against Celery (worker + beat), APScheduler 4 and a bare asyncio loop.

Each system runs five no-op jobs on a one-second schedule, one system at a time. For each one this measures,
over a window that starts after its first run plus a warm-up:

* memory: RSS and PSS summed over every process of its tree (``/proc/<pid>/smaps_rollup``), sampled a few
  times in the window; the maximum is reported (the median is in the JSON too);
* CPU: ``utime+stime+cutime+cstime`` from ``/proc/<pid>/stat`` summed over the tree, delta over the window
  divided by the window's wall time (percent of one core); a nanosecond cross-check from
  ``/proc/<pid>/task/*/schedstat`` is reported beside it;
* start lateness: ``actual - scheduled`` of every run scheduled inside the window, p50 and p99 in ms;
* first run: the earliest recorded run's start minus the moment the system was launched.

Usage::

    .venv/bin/python bench/idle_footprint.py [--seconds 60] [--only pamd,celery,apscheduler,asyncio]

The peers (Celery, APScheduler) live in their own virtualenv, ``bench/.venv-peers``, created on first use.
Results are printed and written to ``bench/results/idle-<timestamp>.json``. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import types
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import urlsplit

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PEERS_DIR = BENCH / "peers"
PEERS_VENV = BENCH / ".venv-peers"
PLUGIN_DIR = BENCH / "plugins"
RESULTS_DIR = BENCH / "results"
PEER_REQUIREMENTS = ("celery[redis]>=5.4,<6", "apscheduler>=4.0.0a5", "celery-redbeat>=2.2")  # redbeat: failover.py

SYSTEMS = ("pamd", "celery", "apscheduler", "asyncio")
JOBS = 5
RECORD_ENV = "BENCH_RECORD"  # not PAMD_*: pamd rejects unknown PAMD_* variables
CLK_TCK = os.sysconf("SC_CLK_TCK")
KIB_PER_MIB = 1024

TARGETS = {
    "rss_vs_celery": 0.15,
    "cpu_vs_celery": 0.05,
    "p99_vs_apscheduler": 1.0,
    "first_run_s": 0.5,
}


class BenchError(RuntimeError):
    """A system could not be measured (did not start, died, ...)."""


# --------------------------------------------------------------------------------------------------------------
# /proc


def _stat_fields(pid: int) -> list[str]:
    """Fields 3.. of /proc/<pid>/stat (after the parenthesised command name, which may contain spaces)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def _all_ppids() -> dict[int, int]:
    ppids: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                ppids[int(entry.name)] = int(_stat_fields(int(entry.name))[1])
    return ppids


def process_tree(roots: Iterable[int]) -> list[int]:
    """The live processes among ``roots`` and all their descendants."""
    children: dict[int, list[int]] = {}
    ppids = _all_ppids()
    for pid, ppid in ppids.items():
        children.setdefault(ppid, []).append(pid)
    found: list[int] = []
    todo = [pid for pid in roots if pid in ppids]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return sorted(found)


def cpu_ticks(pids: Iterable[int]) -> int:
    """utime + stime + cutime + cstime (clock ticks) summed over ``pids``.

    Including the reaped children's times keeps the sum monotonic when a process of the tree exits and is
    reaped by its parent inside the tree.
    """
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = _stat_fields(pid)
            total += sum(int(value) for value in fields[11:15])
    return total


def schedstat_ns(pids: Iterable[int]) -> dict[tuple[int, int], int]:
    """On-CPU nanoseconds of every live thread of ``pids``, keyed by (pid, tid)."""
    times: dict[tuple[int, int], int] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for task in os.scandir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    times[(pid, int(task.name))] = int(Path(task.path, "schedstat").read_text().split()[0])
    return times


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:160]


def thread_count(pids: Iterable[int]) -> int:
    count = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            count += sum(1 for _ in os.scandir(f"/proc/{pid}/task"))
    return count


def memory_kib(pids: Iterable[int]) -> tuple[int, int]:
    """(RSS, PSS) in KiB summed over ``pids``, from smaps_rollup."""
    rss = pss = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                key, _, rest = line.partition(":")
                if key == "Rss":
                    rss += int(rest.split()[0])
                elif key == "Pss":
                    pss += int(rest.split()[0])
    return rss, pss


# --------------------------------------------------------------------------------------------------------------
# A minimal Redis client (RESP over a socket): enough to snapshot, clean up and read INFO, without redis-py.

Resp: TypeAlias = "int | bytes | str | list[Resp] | None"


class RedisClient:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.db = int(parts.path.lstrip("/") or 0)
        self._sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=5)
        self._file = self._sock.makefile("rb")
        if parts.password:
            self.call("AUTH", parts.password)
        self.call("SELECT", str(self.db))

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def __enter__(self) -> RedisClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, *args: str | bytes) -> Resp:
        out = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode() if isinstance(arg, str) else arg
            out.append(b"$%d\r\n%s\r\n" % (len(data), data))
        self._sock.sendall(b"".join(out))
        return self._read()

    def _read(self) -> Resp:
        line = self._file.readline()
        if not line:
            raise ConnectionError("redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(f"redis: {rest.decode()}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self._file.read(size + 2)
            return data[:-2]
        if kind == b"*":
            size = int(rest)
            return None if size < 0 else [self._read() for _ in range(size)]
        raise RuntimeError(f"redis: unexpected reply {line!r}")

    def keys(self) -> set[bytes]:
        found: set[bytes] = set()
        cursor = b"0"
        while True:
            reply = self.call("SCAN", cursor, "COUNT", "1000")
            assert isinstance(reply, list) and isinstance(reply[0], bytes) and isinstance(reply[1], list)
            cursor = reply[0]
            found.update(key for key in reply[1] if isinstance(key, bytes))
            if cursor == b"0":
                return found

    def delete(self, keys: Iterable[bytes]) -> int:
        batch = list(keys)
        deleted = 0
        for start in range(0, len(batch), 500):
            reply = self.call("DEL", *batch[start : start + 500])
            deleted += reply if isinstance(reply, int) else 0
        return deleted

    def cpu_seconds(self) -> float:
        """The server's used_cpu_user + used_cpu_sys (the whole redis-server, every client)."""
        reply = self.call("INFO", "cpu")
        text = reply.decode() if isinstance(reply, bytes) else str(reply)
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        return float(fields.get("used_cpu_user", 0)) + float(fields.get("used_cpu_sys", 0))


def redis_cpu(url: str) -> float | None:
    try:
        with RedisClient(url) as redis:
            return redis.cpu_seconds()
    except (OSError, RuntimeError):
        return None


# --------------------------------------------------------------------------------------------------------------
# Processes


@dataclass
class Launch:
    label: str
    argv: list[str]
    cwd: Path
    env: dict[str, str]


_RUNNING: list[subprocess.Popen[bytes]] = []


def start(launch: Launch, log_dir: Path) -> subprocess.Popen[bytes]:
    log = (log_dir / f"{launch.label}.log").open("wb")
    try:
        proc = subprocess.Popen(
            launch.argv,
            cwd=launch.cwd,
            env=launch.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole, spared our Ctrl-C
        )
    finally:
        log.close()
    _RUNNING.append(proc)
    return proc


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop(procs: Sequence[subprocess.Popen[bytes]], grace: float = 10.0) -> None:
    """SIGTERM every process group, wait up to ``grace`` seconds, then SIGKILL what is left."""
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for sig in (signal.SIGKILL, None):
        while time.monotonic() < deadline:
            for proc in procs:
                proc.poll()
            if not any(_group_alive(proc.pid) for proc in procs):
                break
            time.sleep(0.05)
        if sig is None:
            break
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
        deadline = time.monotonic() + 5.0
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=1)
        if proc in _RUNNING:
            _RUNNING.remove(proc)


def stop_all() -> None:
    if _RUNNING:
        stop(list(_RUNNING))


def _raise_interrupt(signum: int, frame: types.FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def log_tail(log_dir: Path, lines: int = 15) -> str:
    tails = []
    for log in sorted(log_dir.glob("*.log")):
        text = log.read_text(errors="replace").strip().splitlines()[-lines:]
        tails.append(f"--- {log.name}\n" + "\n".join(text))
    return "\n".join(tails)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --------------------------------------------------------------------------------------------------------------
# Records and statistics


@dataclass(frozen=True)
class Run:
    job: str
    scheduled: float
    actual: float


def read_runs(path: Path) -> list[Run]:
    runs = []
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 3:
                with contextlib.suppress(ValueError):
                    runs.append(Run(parts[0], float(parts[1]), float(parts[2])))
    return runs


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    low = math.floor(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


# --------------------------------------------------------------------------------------------------------------
# The measurement


@dataclass
class Result:
    system: str
    ok: bool = False
    error: str | None = None
    command: list[str] = field(default_factory=list)
    window_s: float | None = None
    processes: int | None = None
    threads: int | None = None
    rss_mib_max: float | None = None
    pss_mib_max: float | None = None
    rss_mib_median: float | None = None
    pss_mib_median: float | None = None
    memory_samples: list[dict[str, float]] = field(default_factory=list)
    cpu_pct: float | None = None
    cpu_pct_schedstat: float | None = None
    redis_server_cpu_pct: float | None = None
    lateness_ms_p50: float | None = None
    lateness_ms_p99: float | None = None
    lateness_ms_max: float | None = None
    runs_in_window: int | None = None
    runs_per_job_per_s: float | None = None
    period_ms_mean: float | None = None
    first_run_s: float | None = None
    loadavg_1m: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Options:
    seconds: float
    warmup: float
    samples: int
    start_timeout: float
    redis_url: str


def _sleep_until(deadline: float, procs: Sequence[subprocess.Popen[bytes]], log_dir: Path) -> None:
    while True:
        for proc in procs:
            if proc.poll() is not None:
                raise BenchError(f"process {proc.args!r} exited with {proc.returncode}\n{log_tail(log_dir)}")
        remaining = deadline - time.time()
        if remaining <= 0:
            return
        time.sleep(min(remaining, 0.5))


def _measure_window(
    roots: Sequence[int], procs: Sequence[subprocess.Popen[bytes]], work: Path, opts: Options, result: Result
) -> tuple[float, float]:
    """Measure CPU and memory of the tree over one window starting now; return the window (start, end)."""
    pids = process_tree(roots)
    load = [os.getloadavg()[0]]
    w0 = time.time()
    ticks0 = cpu_ticks(pids)
    sched0 = schedstat_ns(pids)
    redis0 = redis_cpu(opts.redis_url)
    memory: list[tuple[int, int]] = []
    for index in range(opts.samples):
        _sleep_until(w0 + index * opts.seconds / opts.samples + 0.25, procs, work)
        memory.append(memory_kib(process_tree(roots)))
    _sleep_until(w0 + opts.seconds, procs, work)
    pids = process_tree(roots)
    ticks1 = cpu_ticks(pids)
    sched1 = schedstat_ns(pids)
    redis1 = redis_cpu(opts.redis_url)
    w1 = time.time()
    load.append(os.getloadavg()[0])
    window = w1 - w0

    result.window_s = round(window, 3)
    result.processes = len(pids)
    result.threads = thread_count(pids)
    result.loadavg_1m = load
    rss = [sample[0] / KIB_PER_MIB for sample in memory]
    pss = [sample[1] / KIB_PER_MIB for sample in memory]
    result.memory_samples = [{"rss_mib": round(r, 2), "pss_mib": round(p, 2)} for r, p in zip(rss, pss, strict=True)]
    result.rss_mib_max = round(max(rss), 2)
    result.pss_mib_max = round(max(pss), 2)
    result.rss_mib_median = round(statistics.median(rss), 2)
    result.pss_mib_median = round(statistics.median(pss), 2)
    result.cpu_pct = round((ticks1 - ticks0) / CLK_TCK / window * 100, 3)
    sched_ns = sum(ns - sched0.get(key, 0) for key, ns in sched1.items())
    result.cpu_pct_schedstat = round(sched_ns / 1e9 / window * 100, 3)
    if redis0 is not None and redis1 is not None:
        result.redis_server_cpu_pct = round((redis1 - redis0) / window * 100, 3)
    per_pid: dict[int, int] = {}
    for (pid, tid), ns in sched1.items():
        per_pid[pid] = per_pid.get(pid, 0) + ns - sched0.get((pid, tid), 0)
    breakdown = []
    for pid, ns in sorted(per_pid.items()):
        pid_rss, pid_pss = memory_kib([pid])
        breakdown.append(
            {
                "pid": pid,
                "cmd": cmdline(pid),
                "cpu_pct_ns": round(ns / 1e9 / window * 100, 3),
                "rss_mib": round(pid_rss / KIB_PER_MIB, 2),
                "pss_mib": round(pid_pss / KIB_PER_MIB, 2),
            }
        )
    result.extra["per_process"] = breakdown
    return w0, w1


def _score_runs(runs: Sequence[Run], w0: float, w1: float, launched: float, result: Result) -> None:
    in_window = [run for run in runs if w0 <= run.scheduled < w1]
    lateness = [(run.actual - run.scheduled) * 1000 for run in in_window]
    result.runs_in_window = len(in_window)
    result.runs_per_job_per_s = round(len(in_window) / JOBS / (w1 - w0), 4)
    result.lateness_ms_p50 = _round(percentile(lateness, 0.50), 2)
    result.lateness_ms_p99 = _round(percentile(lateness, 0.99), 2)
    result.lateness_ms_max = _round(max(lateness, default=None), 2)
    result.first_run_s = round(min(run.actual for run in runs) - launched, 3)
    periods = []
    for job in {run.job for run in in_window}:
        times = sorted(run.scheduled for run in in_window if run.job == job)
        if len(times) > 1:
            periods.append((times[-1] - times[0]) / (len(times) - 1) * 1000)
    result.period_ms_mean = _round(statistics.fmean(periods), 3) if periods else None
    jobs = sorted({run.job for run in runs})
    result.extra["jobs_seen"] = jobs
    if len(jobs) != JOBS:
        raise BenchError(f"expected {JOBS} jobs, saw {jobs}")
    if not in_window:
        raise BenchError("no run was scheduled inside the measurement window")


def measure(
    system: str,
    launches: Sequence[Launch],
    work: Path,
    opts: Options,
    after_window: Callable[[Result], None] | None = None,
) -> Result:
    """Launch ``launches``, wait for the first run and the warm-up, measure one window, stop everything."""
    result = Result(system, command=[" ".join(launch.argv) for launch in launches])
    record = work / "runs.txt"
    for launch in launches:
        launch.env[RECORD_ENV] = str(record)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        launched = time.time()
        procs = [start(launch, work) for launch in launches]
        deadline = launched + opts.start_timeout
        while not read_runs(record):
            if time.time() > deadline:
                raise BenchError(f"no run within {opts.start_timeout:.0f} s of launch\n{log_tail(work)}")
            _sleep_until(time.time() + 0.02, procs, work)
        _sleep_until(time.time() + opts.warmup, procs, work)
        w0, w1 = _measure_window([proc.pid for proc in procs], procs, work, opts, result)
        if after_window is not None:
            after_window(result)
        stop(procs)
        _score_runs(read_runs(record), w0, w1, launched, result)
        result.ok = True
    except BenchError as exc:
        result.error = str(exc)
    finally:
        stop(procs)
    return result


# --------------------------------------------------------------------------------------------------------------
# The four systems


def _env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(extra)
    return env


def pamd_executable() -> Path:
    for candidate in (Path(sys.executable).parent / "pamd", REPO / ".venv" / "bin" / "pamd"):
        if candidate.exists():
            return candidate
    raise BenchError("pamd is not installed (expected .venv/bin/pamd)")


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string of a path is a valid TOML basic string


def pamd_config(work: Path, port: int) -> Path:
    state = work / "state"
    state.mkdir()
    config = work / "pamd.toml"
    config.write_text(
        "\n".join(
            [
                "[daemon]",
                f"state_dir = {_toml_str(str(state))}",
                f"plugin_dirs = [{_toml_str(str(PLUGIN_DIR))}]",
                "[log]",
                'level = "warning"',
                "[http]",
                f'listen = "127.0.0.1:{port}"',
                "[store]",
                f"url = {_toml_str('sqlite:///' + str(state / 'pamd.db'))}",
                "seed_demo = false",
                "[monitors.fuel]",
                "enabled = false",
                "[sinks.console]",
                "enabled = false",
                "[sinks.jsonl]",
                "enabled = false",
                "",
            ]
        )
    )
    return config


def scrape_metrics(port: int) -> dict[str, Any]:
    """GET /metrics; the sum of pamd_monitor_runs_total over its labels."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    total = 0.0
    series = 0
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name == "pamd_monitor_runs_total":
            total += float(line.rsplit(" ", 1)[1])
            series += 1
    return {"url": url, "bytes": len(text), "pamd_monitor_runs_total": total, "series": series}


def run_pamd(work: Path, opts: Options) -> Result:
    try:
        executable = pamd_executable()
    except BenchError as exc:
        return Result("pamd", error=str(exc))
    port = free_port()
    config = pamd_config(work, port)
    launch = Launch("pamd", [str(executable), "run", "--config", str(config)], REPO, _env())

    def metrics(result: Result) -> None:
        try:
            result.extra["metrics"] = scrape_metrics(port)
        except OSError as exc:
            result.extra["metrics"] = {"error": repr(exc)}

    result = measure("pamd", [launch], work, opts, after_window=metrics)
    metrics_info = result.extra.get("metrics", {})
    if result.ok and "error" in metrics_info:
        result.ok = False
        result.error = f"/metrics was not served: {metrics_info['error']}"
    return result


def run_celery(work: Path, opts: Options, lean: bool) -> Result:
    celery = str(PEERS_VENV / "bin" / "celery")
    env = _env(BENCH_REDIS_URL=opts.redis_url)
    worker = [celery, "-A", "bench_celery", "worker", "--pool", "prefork", "--concurrency", "4"]
    worker += ["--loglevel", "WARNING", "--hostname", f"pamd-bench-{os.getpid()}@%h"]
    if lean:
        worker += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    beat = [celery, "-A", "bench_celery", "beat", "--scheduler", "bench_celery:BenchScheduler"]
    beat += ["--schedule", str(work / "celerybeat-schedule"), "--loglevel", "WARNING"]
    try:
        with RedisClient(opts.redis_url) as redis:
            before = redis.keys()
    except (OSError, RuntimeError) as exc:
        return Result("celery", error=f"redis at {opts.redis_url} is not reachable: {exc!r}")
    try:
        result = measure(
            "celery",
            [Launch("celery-worker", worker, PEERS_DIR, dict(env)), Launch("celery-beat", beat, PEERS_DIR, env)],
            work,
            opts,
        )
    finally:
        # Only the keys this run created (the worker and beat are stopped by now, so none come back).
        try:
            with RedisClient(opts.redis_url) as redis:
                deleted: int | str = redis.delete(redis.keys() - before)
        except (OSError, RuntimeError) as exc:
            deleted = f"cleanup failed: {exc!r}"
            print(f"  celery: could not delete its Redis keys in {opts.redis_url}: {exc!r}", file=sys.stderr)
    result.extra["redis_keys_deleted"] = deleted
    result.extra["lean"] = lean
    return result


def run_apscheduler(work: Path, opts: Options) -> Result:
    python = str(PEERS_VENV / "bin" / "python")
    return measure(
        "apscheduler", [Launch("apscheduler", [python, "bench_apscheduler.py"], PEERS_DIR, _env())], work, opts
    )


def run_asyncio(work: Path, opts: Options) -> Result:
    # The main venv's interpreter (same CPython as the others); stdlib only.
    launch = Launch("asyncio", [sys.executable, "bench_asyncio.py"], PEERS_DIR, _env())
    return measure("asyncio", [launch], work, opts)


def ensure_peers_venv() -> dict[str, str]:
    """Create bench/.venv-peers and install the peers if needed; return their versions."""
    python = PEERS_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {PEERS_VENV} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
    probe = [str(python), "-c", "import celery, apscheduler, redis, redbeat"]
    if subprocess.run(probe, capture_output=True, check=False).returncode != 0:
        print(f"installing {', '.join(PEER_REQUIREMENTS)} into {PEERS_VENV} ...", flush=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--pre", *PEER_REQUIREMENTS]
        subprocess.run(pip, check=True)
    versions = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m, json; "
            "print(json.dumps({p: m.version(p) for p in ('celery', 'kombu', 'redis', 'apscheduler')}))",
        ],
        capture_output=True,
        check=True,
        text=True,
    )
    loaded: dict[str, str] = json.loads(versions.stdout)
    return loaded


# --------------------------------------------------------------------------------------------------------------
# Report


def _fmt(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(results: Sequence[Result]) -> str:
    header = (
        f"{'system':<12} {'procs':>5} {'RSS MiB':>8} {'PSS MiB':>8} {'CPU %':>7} {'CPU % ns':>8} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'1st run s':>9} {'runs/job/s':>10}"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        if not r.ok:
            lines.append(f"{r.system:<12} FAILED: {(r.error or '').splitlines()[0]}")
            continue
        lines.append(
            f"{r.system:<12} {_fmt(r.processes, 'd'):>5} {_fmt(r.rss_mib_max, '.1f'):>8} "
            f"{_fmt(r.pss_mib_max, '.1f'):>8} {_fmt(r.cpu_pct, '.3f'):>7} {_fmt(r.cpu_pct_schedstat, '.3f'):>8} "
            f"{_fmt(r.lateness_ms_p50, '.2f'):>7} {_fmt(r.lateness_ms_p99, '.2f'):>7} "
            f"{_fmt(r.first_run_s, '.3f'):>9} {_fmt(r.runs_per_job_per_s, '.3f'):>10}"
        )
    return "\n".join(lines)


def comparisons(by_name: dict[str, Result]) -> dict[str, dict[str, Any]]:
    def get(system: str, attr: str) -> float | None:
        result = by_name.get(system)
        if result is None or not result.ok:
            return None
        value = getattr(result, attr)
        return None if value is None else float(value)

    rows: dict[str, tuple[float | None, float]] = {
        "rss_vs_celery": (ratio(get("pamd", "rss_mib_max"), get("celery", "rss_mib_max")), TARGETS["rss_vs_celery"]),
        "cpu_vs_celery": (ratio(get("pamd", "cpu_pct"), get("celery", "cpu_pct")), TARGETS["cpu_vs_celery"]),
        "p99_vs_apscheduler": (
            ratio(get("pamd", "lateness_ms_p99"), get("apscheduler", "lateness_ms_p99")),
            TARGETS["p99_vs_apscheduler"],
        ),
        "first_run_s": (get("pamd", "first_run_s"), TARGETS["first_run_s"]),
    }
    extra: dict[str, float | None] = {
        "pss_vs_celery": ratio(get("pamd", "pss_mib_max"), get("celery", "pss_mib_max")),
        "cpu_schedstat_vs_celery": ratio(get("pamd", "cpu_pct_schedstat"), get("celery", "cpu_pct_schedstat")),
        "rss_vs_apscheduler": ratio(get("pamd", "rss_mib_max"), get("apscheduler", "rss_mib_max")),
        "cpu_vs_apscheduler": ratio(get("pamd", "cpu_pct"), get("apscheduler", "cpu_pct")),
        "rss_vs_asyncio": ratio(get("pamd", "rss_mib_max"), get("asyncio", "rss_mib_max")),
        "cpu_vs_asyncio": ratio(get("pamd", "cpu_pct"), get("asyncio", "cpu_pct")),
    }
    out: dict[str, dict[str, Any]] = {}
    for name, (value, target) in rows.items():
        out[name] = {"value": _round(value, 4), "target": target, "pass": None if value is None else value <= target}
    for name, value in extra.items():
        out[name] = {"value": _round(value, 4), "target": None, "pass": None}
    return out


def print_comparisons(comp: dict[str, dict[str, Any]]) -> None:
    print("\npamd vs peers")
    for name, row in comp.items():
        value = "-" if row["value"] is None else f"{row['value']:.4g}"
        if row["target"] is None:
            print(f"  {name:<24} {value:>10}")
        else:
            verdict = {True: "PASS", False: "FAIL", None: "n/a"}[row["pass"]]
            print(f"  {name:<24} {value:>10}  target <= {row['target']:<5} {verdict}")


# --------------------------------------------------------------------------------------------------------------
# Main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=60.0, help="measurement window per system (default 60)")
    parser.add_argument(
        "--only", default=",".join(SYSTEMS), help=f"comma-separated subset of {','.join(SYSTEMS)} (default: all)"
    )
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds after the first run before measuring")
    parser.add_argument("--samples", type=int, default=5, help="memory samples in the window (default 5)")
    parser.add_argument("--start-timeout", type=float, default=60.0, help="seconds to wait for a first run")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/15", help="broker/backend for Celery (own DB)")
    parser.add_argument(
        "--celery-lean",
        action="store_true",
        help="run the worker --without-gossip --without-mingle --without-heartbeat",
    )
    parser.add_argument("--output", type=Path, default=None, help="results JSON (default bench/results/idle-*.json)")
    args = parser.parse_args(argv)
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(SYSTEMS))
    if unknown or not only:
        parser.error(f"--only takes a subset of {','.join(SYSTEMS)}; unknown: {','.join(unknown)}")
    args.only = [name for name in SYSTEMS if name in only]
    if args.seconds < 5 or args.samples < 1:
        parser.error("--seconds must be at least 5 and --samples at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    opts = Options(args.seconds, args.warmup, args.samples, args.start_timeout, args.redis)
    # Ctrl-C, kill and hang-up all unwind through the ``finally`` blocks that stop the systems and clean Redis.
    # (SIGINT explicitly: a shell starts background jobs with it ignored.)
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_interrupt)

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    meta: dict[str, Any] = {
        "timestamp": stamp,
        "host": platform.node(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "seconds": opts.seconds,
        "warmup_s": opts.warmup,
        "memory_samples": opts.samples,
        "memory_statistic": "max over samples (median also given)",
        "cpu_statistic": "utime+stime+cutime+cstime of the process tree, delta / window wall time, % of one core",
        "lateness_statistic": "actual - scheduled of runs scheduled inside the window, linear-interpolated percentiles",
        "systems": args.only,
    }
    results: list[Result] = []
    try:
        if {"celery", "apscheduler"} & set(args.only):
            meta["peer_versions"] = ensure_peers_venv()
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            meta["pamd_version"] = version("pamd")
        runners: dict[str, Callable[[Path], Result]] = {
            "pamd": lambda work: run_pamd(work, opts),
            "celery": lambda work: run_celery(work, opts, args.celery_lean),
            "apscheduler": lambda work: run_apscheduler(work, opts),
            "asyncio": lambda work: run_asyncio(work, opts),
        }
        for system in args.only:
            print(f"measuring {system}: first run + {opts.warmup:.0f} s warm-up + {opts.seconds:.0f} s ...", flush=True)
            with tempfile.TemporaryDirectory(prefix=f"pamd-bench-{system}-") as tmp:
                result = runners[system](Path(tmp))
            results.append(result)
            if not result.ok:
                print(f"  {system} FAILED: {result.error}", file=sys.stderr, flush=True)
            time.sleep(1.0)  # let the machine settle between systems
    except KeyboardInterrupt:
        print("\ninterrupted; stopping everything", file=sys.stderr)
        return 130
    finally:
        stop_all()

    by_name = {result.system: result for result in results}
    comp = comparisons(by_name)
    print()
    print(table(results))
    if "pamd" in by_name and by_name["pamd"].ok:
        runs_total = by_name["pamd"].extra.get("metrics", {}).get("pamd_monitor_runs_total")
        print(f"\npamd /metrics: pamd_monitor_runs_total = {runs_total}")
    print_comparisons(comp)

    output = args.output or RESULTS_DIR / f"idle-{stamp}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "results": [asdict(result) for result in results], "comparisons": comp}
    output.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {output}")
    return 0 if all(result.ok for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
