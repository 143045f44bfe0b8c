"""Run ``pamd`` as a real subprocess for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.conftest import PAMD


class DaemonProcess:
    """A ``pamd run`` child with stdout/stderr captured to files in ``workdir``."""

    def __init__(self, workdir: Path, config: Path | None, port: int, env: dict[str, str] | None = None,
                 args: tuple[str, ...] = ()) -> None:
        self.workdir = workdir
        self.port = port
        self.stdout_path = workdir / "stdout.log"
        self.stderr_path = workdir / "stderr.log"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("PAMD_")}
        full_env.update(env or {})
        cmd = [PAMD, "run", *(["--config", str(config)] if config else []), *args]
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(cmd, cwd=workdir, env=full_env, stdout=out, stderr=err)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def json(self, path: str) -> Any:
        return json.loads(self.get(path)[1])

    def wait_ready(self, timeout: float = 15.0) -> None:
        wait_for(self._ready, timeout, lambda: f"daemon not ready; stderr:\n{self.stderr()}")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited with {self.proc.returncode}; stderr:\n{self.stderr()}")
        try:
            return self.get("/readyz")[0] == 200
        except OSError:
            return False

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def wait_for(condition: Callable[[], Any], timeout: float, message: Callable[[], str] | str = "timed out") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(message() if callable(message) else message)


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PAMD_")}
    full_env.update(env or {})
    return subprocess.run([PAMD, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
                          check=False)
