"""HTTP endpoints (/livez, /readyz, /healthz, /metrics, /status) served by uvicorn inside the daemon's loop.

The socket is bound by the daemon itself (so "port in use" is a clean startup error and a reload never closes it);
uvicorn only serves on it. The application is plain ASGI with no framework.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio

from pamd.config import parse_listen

log = logging.getLogger("pamd.http")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HealthSource(Protocol):
    """What the endpoints ask the daemon."""

    def liveness(self) -> tuple[bool, dict[str, Any]]: ...

    async def readiness(self) -> tuple[bool, dict[str, Any]]: ...

    def metrics_text(self) -> bytes: ...

    def status(self) -> dict[str, Any]: ...


class ListenError(Exception):
    """The HTTP address cannot be bound."""


def bind(listen: str) -> socket.socket:
    """Bind and listen on ``HOST:PORT``; raises :class:`ListenError` with a one-line reason."""
    host, port = parse_listen(listen)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"http.listen {listen}: cannot resolve host: {exc.strerror}") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ListenError(f"http.listen {listen}: {exc.strerror or exc}") from exc
    sock.setblocking(False)
    return sock


def make_app(source: HealthSource) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _respond(send, 405, {"error": "method not allowed"}, head=False)
            return
        head = scope["method"] == "HEAD"
        path = scope["path"].rstrip("/") or "/"
        if path == "/livez":
            ok, body = source.liveness()
            await _respond(send, 200 if ok else 503, body, head)
        elif path in ("/readyz", "/healthz"):
            ok, body = await source.readiness()
            await _respond(send, 200 if ok else 503, body, head)
        elif path == "/metrics":
            await _send(send, 200, source.metrics_text(), PROMETHEUS_CONTENT_TYPE, head)
        elif path == "/status":
            await _respond(send, 200, source.status(), head)
        else:
            await _respond(send, 404, {"error": "not found",
                                       "paths": ["/livez", "/readyz", "/healthz", "/metrics", "/status"]}, head)

    return app


async def _respond(send: Send, status: int, body: dict[str, Any], head: bool) -> None:
    payload = json.dumps(body, default=_jsonable, indent=1).encode() + b"\n"
    await _send(send, status, payload, "application/json", head)


def _jsonable(value: object) -> object:
    isoformat = getattr(value, "isoformat", None)
    return isoformat() if callable(isoformat) else str(value)


async def _send(send: Send, status: int, payload: bytes, content_type: str, head: bool) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", content_type.encode()), (b"content-length", str(len(payload)).encode()),
        (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": b"" if head else payload})


async def serve(sock: socket.socket, source: HealthSource, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
    """Serve the endpoints on ``sock`` until cancelled."""
    import uvicorn

    config = uvicorn.Config(make_app(source), lifespan="off", http="h11", loop="none", log_config=None,
                            access_log=False, server_header=False, date_header=False, timeout_graceful_shutdown=1)
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    await server.startup(sockets=[sock])
    task_status.started()
    try:
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(2):
            await server.shutdown()
