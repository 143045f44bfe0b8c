"""A tiny HTTP server on 127.0.0.1 for provider tests: real sockets, real HTTP, scripted answers.

Subclass-free: give :class:`FakeServer` a ``handler(request) -> Reply`` function. Every request is recorded;
``fail_next`` queues error replies (status, body, headers) served before the handler is consulted again, and
``delay`` makes every reply slow (to exercise client timeouts). By default each connection carries one request
(HTTP/1.0); ``keep_alive=True`` speaks HTTP/1.1 with persistent connections, as the model APIs do, so a client
pays for one connection per slot rather than one per request. :meth:`FakeServer.stop` closes open connections too:
a stopped server answers nothing. ``service_seconds`` holds, per answered request, the time from its headers read to
its reply written: the server's own share of a request's latency (``delay`` and the handler's work included).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


class _Server(ThreadingHTTPServer):
    # http.server listens with a backlog of 5: a client opening 16 connections at once (the AI phraser's default
    # concurrency in the benchmark) saw some refused, counted as provider "connection" failures that no real API
    # would cause.
    request_queue_size = 128
    daemon_threads = True


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def form(self) -> dict[str, list[str]]:
        """The body parsed as ``application/x-www-form-urlencoded``."""
        return parse_qs(self.body.decode())


@dataclass
class Reply:
    status: int = 200
    body: bytes | str | Any = b""
    headers: dict[str, str] = field(default_factory=dict)
    trickle: float = 0.0  # seconds between the body's ten chunks: slow in total, never silent for long

    def encoded(self) -> tuple[bytes, str]:
        if isinstance(self.body, bytes):
            return self.body, self.headers.get("Content-Type", "application/octet-stream")
        if isinstance(self.body, str):
            return self.body.encode(), self.headers.get("Content-Type", "text/plain; charset=utf-8")
        return json.dumps(self.body).encode(), "application/json; charset=utf-8"


Handler = Callable[[Request], Reply]


class FakeServer:
    """See the module docstring. ``url`` is ``http://127.0.0.1:PORT`` (``port``: 0 for a free one)."""

    def __init__(self, handler: Handler, port: int = 0, *, keep_alive: bool = False) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.failures: list[Reply] = []
        self.delay = 0.0
        self.service_seconds: list[float] = []
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"
            # A reply goes out in two writes (headers, then body): with Nagle's algorithm the body waited for the
            # client's delayed ACK of the headers, 40 ms on Linux, on every keep-alive reply (real APIs do not stall).
            disable_nagle_algorithm = True

            def setup(self) -> None:
                super().setup()
                with server._lock:
                    server._connections.add(self.connection)

            def finish(self) -> None:
                with server._lock:
                    server._connections.discard(self.connection)
                super().finish()

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                started = time.perf_counter()
                length = int(self.headers.get("Content-Length") or 0)
                parts = urlsplit(self.path)
                request = Request(self.command, parts.path, parse_qs(parts.query), dict(self.headers.items()),
                                  self.rfile.read(length) if length else b"")
                reply = server._reply(request)
                if server.delay:
                    time.sleep(server.delay)
                payload, content_type = reply.encoded()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in reply.headers.items():
                        if name.lower() != "content-type":
                            self.send_header(name, value)
                    self.end_headers()
                    if not reply.trickle:
                        self.wfile.write(payload)
                    step = max(1, -(-len(payload) // 10))
                    for start in range(0, len(payload), step) if reply.trickle else ():
                        self.wfile.write(payload[start : start + step])
                        self.wfile.flush()
                        time.sleep(reply.trickle)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    return  # the client gave up (a timeout test)
                with server._lock:
                    server.service_seconds.append(time.perf_counter() - started)

            do_GET = do_POST = do_DELETE = do_PATCH = _serve  # noqa: N815 - http.server's naming

        self._httpd = _Server(("127.0.0.1", port), _Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def _reply(self, request: Request) -> Reply:
        with self._lock:
            self.requests.append(request)
            if self.failures:
                return self.failures.pop(0)
        return self.handler(request)

    def fail_next(self, count: int, status: int = 503, body: bytes | str | Any = b"", **headers: str) -> None:
        """Answer the next ``count`` requests with ``status`` (then the handler again)."""
        with self._lock:
            self.failures.extend(Reply(status, body, dict(headers)) for _ in range(count))

    def start(self) -> None:
        # A short poll interval: stop() waits for the serve loop to notice, 0.5 s by default (per test, per fake)
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="fake-http", daemon=True).start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            connections, self._connections = list(self._connections), set()
        for connection in connections:  # kept-alive ones would otherwise go on answering
            with contextlib.suppress(OSError):  # already closed by its client
                connection.shutdown(socket.SHUT_RDWR)


@contextmanager
def serve(handler: Handler) -> Iterator[FakeServer]:
    """Run a :class:`FakeServer` for the duration of a ``with`` block."""
    server = FakeServer(handler)
    server.start()
    try:
        yield server
    finally:
        server.stop()
