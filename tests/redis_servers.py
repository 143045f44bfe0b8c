"""redis-server processes of a test's own, on free ports: plain, TLS (with a throwaway CA), replicas and sentinels.

Tests that kill, pause, fail over or reconfigure Redis use these rather than the shared Redis on 127.0.0.1:6379.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.conftest import free_port
from tests.daemon_proc import wait_for

needs_redis_server = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is not installed")

PERSISTENT = ("appendonly yes", "appendfsync always", 'save ""')
"""Config lines for a Redis that keeps its data across a restart (the epoch counter must survive one)."""


@dataclass(frozen=True)
class TlsFiles:
    """A throwaway CA and the certificates it signed, for 127.0.0.1 (server) and a client."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def server_lines(self, *, auth_clients: str = "no") -> tuple[str, ...]:
        """redis.conf lines that turn TLS on with the server certificate (``auth_clients``: yes, no, optional)."""
        return (f"tls-cert-file {self.server_cert}", f"tls-key-file {self.server_key}",
                f"tls-ca-cert-file {self.ca}", f"tls-auth-clients {auth_clients}")


def make_tls_files(directory: Path) -> TlsFiles:
    """Create a CA and a server (IP 127.0.0.1, localhost) and a client certificate with the openssl command."""
    directory.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=30)

    run("req", "-x509", "-new", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj",
        "/CN=pamd test CA", "-addext", "basicConstraints=critical,CA:TRUE", "-addext",
        "keyUsage=critical,keyCertSign,cRLSign")
    for name, usage, san in (("server", "serverAuth", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"),
                             ("client", "clientAuth", "")):
        (directory / f"{name}.ext").write_text(
            f"{san}basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage={usage}\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n", encoding="utf-8")
        run("req", "-new", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN=pamd test {name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial",
            str(secrets.randbits(63)), "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem")
    return TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key",
                    directory / "client.pem", directory / "client.key")


class OwnRedis:
    """A redis-server of a test's own on a free port (restartable on the same port), with its own directory.

    ``lines`` are extra redis.conf lines (``PERSISTENT``, ``user ...``, ``replicaof ...``); ``tls`` makes the port a
    TLS one (and the plain port 0); ``sentinel`` runs it as a sentinel (``lines`` then hold ``sentinel monitor ...``
    and the like). ``client_options`` are what :meth:`client` (and the start-up check) connect with.
    """

    def __init__(self, directory: Path, lines: Sequence[str] = PERSISTENT, *, tls: TlsFiles | None = None,
                 sentinel: bool = False, client_options: dict[str, Any] | None = None) -> None:
        self.port = free_port()
        self.directory = directory / f"redis-{self.port}"
        self.directory.mkdir(parents=True)
        self.config = self.directory / ("sentinel.conf" if sentinel else "redis.conf")
        ports = [f"port {self.port}"] if tls is None else ["port 0", f"tls-port {self.port}", *tls.server_lines()]
        self.config.write_text("\n".join(["bind 127.0.0.1", f"dir {self.directory}", *ports, *lines]) + "\n",
                               encoding="utf-8")
        self.sentinel = sentinel
        self.client_options: dict[str, Any] = dict(client_options or {})
        if tls is not None:
            self.client_options.setdefault("ssl", True)
            self.client_options.setdefault("ssl_ca_certs", str(tls.ca))
        self.log = self.directory / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                ["redis-server", str(self.config), *(["--sentinel"] if self.sentinel else [])],
                stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._answers, 10, lambda: f"redis-server did not start: {self.log.read_text()[-2000:]}")

    def client(self, **options: Any) -> redis.Redis:
        """A (synchronous) client of this server; close it after use."""
        return redis.Redis(port=self.port, **{"socket_timeout": 2.0, **self.client_options, **options})

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"redis-server exited: {self.log.read_text()[-2000:]}")
        try:
            with self.client(socket_timeout=0.5, retry=Retry(NoBackoff(), 0)) as client:
                return bool(client.ping())
        except (redis.AuthenticationError, redis.ResponseError):
            return True  # it answers; the default user may not log in
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def pause(self, seconds: float) -> None:
        with self.client() as client:
            client.client_pause(int(seconds * 1000))
