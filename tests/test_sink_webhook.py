"""The webhook sink against real HTTP receivers on 127.0.0.1 (tests/fakes/server.py; no mocks of httpx)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pamd.alerts.delivery import Deliverer
from pamd.config import ConfigError, load_config
from pamd.jobs import resolve_sinks
from pamd.metrics import Metrics
from pamd.model import Alert, Priority, new_alert_id
from pamd.plugins import load_plugins
from pamd.sinks.base import PermanentDeliveryError, SinkConfigError, TransientDeliveryError
from pamd.sinks.payload import PAYLOAD_FIELDS
from pamd.sinks.webhook import WebhookOptions, WebhookSink, sign, verify_signature
from tests.conftest import free_port
from tests.fakes.server import FakeServer, Reply, Request, serve

SECRET = "whsec-test-1234"
ENV = "PAMD_TEST_WEBHOOK_SECRET"


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(ENV, SECRET)
    return SECRET


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    with serve(lambda request: Reply(204)) as running:
        yield running


@pytest.fixture
def receiver(server: FakeServer) -> FakeServer:
    """A receiver answering 204 until a test queues other replies with ``fail_next``; nothing recorded yet."""
    with server._lock:
        server.requests.clear()
        server.failures.clear()
    server.delay = 0.0
    return server


def make_alert(**changes: object) -> Alert:
    alert = Alert(user_id="u1", kind="fuel_low", priority=Priority.URGENT, title="Fuel critically low",
                  body="About 2% left — 10 mi of range", facts={"pct": 2, "range_mi": 10.0, "name": "Honu"},
                  actions=[{"type": "open", "url": "pam://fuel"}], monitor="fuel", id=new_alert_id(),
                  fingerprint="f" * 32, created_at=datetime(2026, 1, 15, 0, 0, tzinfo=UTC),
                  expires_at=datetime(2026, 1, 16, 0, 0, tzinfo=UTC), epoch=3)
    for name, value in changes.items():
        setattr(alert, name, value)
    return alert


@asynccontextmanager
async def webhook(url: str, **options: object) -> AsyncIterator[WebhookSink]:
    sink = WebhookSink({"url": url, "secret_env": ENV, "timeout": 2.0, **options})
    try:
        yield sink
    finally:
        await sink.aclose()


# -- happy path ---------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_delivers_signed_json(receiver: FakeServer) -> None:
    alert = make_alert()
    async with webhook(receiver.url + "/hooks/pamd?token=abc", headers={"Authorization": "Bearer t0k"}) as sink:
        await sink.deliver(alert)
    [request] = receiver.requests
    assert (request.method, request.path, request.query) == ("POST", "/hooks/pamd", {"token": ["abc"]})
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Idempotency-Key"] == alert.id
    assert request.headers["Authorization"] == "Bearer t0k"
    assert request.headers["User-Agent"].startswith("pamd/")
    payload = json.loads(request.body)
    assert tuple(payload) == PAYLOAD_FIELDS
    assert payload == {
        "id": alert.id, "user_id": "u1", "monitor": "fuel", "kind": "fuel_low", "priority": "urgent",
        "title": "Fuel critically low", "body": "About 2% left — 10 mi of range",
        "facts": {"pct": 2, "range_mi": 10.0, "name": "Honu"}, "actions": [{"type": "open", "url": "pam://fuel"}],
        "fingerprint": "f" * 32, "created_at": "2026-01-15T00:00:00Z", "expires_at": "2026-01-16T00:00:00Z",
        "epoch": 3,
    }

    timestamp, signature = request.headers["X-Pamd-Timestamp"], request.headers["X-Pamd-Signature"]
    assert abs(int(timestamp) - time.time()) < 5
    assert signature.startswith("sha256=") and len(signature) == len("sha256=") + 64
    assert verify_signature(SECRET, timestamp, request.body, signature)
    assert verify_signature(SECRET.encode(), int(timestamp), request.body, f"sha256={'0' * 64}, {signature}")
    # Tampered body, other secret, replayed later, timestamp header changed: all refused.
    assert not verify_signature(SECRET, timestamp, request.body.replace(b'"pct":2', b'"pct":3'), signature)
    assert not verify_signature("other", timestamp, request.body, signature)
    assert not verify_signature(SECRET, timestamp, request.body, signature, now=int(timestamp) + 301)
    assert not verify_signature(SECRET, timestamp, request.body, signature, now=int(timestamp) - 301)
    assert verify_signature(SECRET, timestamp, request.body, signature, now=int(timestamp) + 299)
    assert verify_signature(SECRET, timestamp, request.body, signature, tolerance=None, now=0)
    assert not verify_signature(SECRET, str(int(timestamp) + 1), request.body, signature, tolerance=None)


def test_verify_signature_never_raises_on_garbage() -> None:
    good = sign(SECRET, 1700000000, b"{}")
    assert verify_signature(SECRET, "1700000000", b"{}", good, now=1700000000)
    for timestamp in ("", "abc", "-1", "1.5", "²"):
        assert not verify_signature(SECRET, timestamp, b"{}", good, tolerance=None)
    for signature in ("", "sha256=", "sha256=zz", "md5=abc", "sha256=é", good.upper()):
        assert not verify_signature(SECRET, "1700000000", b"{}", signature, now=1700000000)


@pytest.mark.anyio
async def test_a_retry_repeats_the_idempotency_key_and_signs_afresh(receiver: FakeServer) -> None:
    alert = make_alert()
    async with webhook(receiver.url) as sink:
        receiver.fail_next(1, 503)
        with pytest.raises(TransientDeliveryError):
            await sink.deliver(alert)
        await sink.deliver(alert)
    first, second = receiver.requests
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"] == alert.id
    assert first.body == second.body
    for request in (first, second):
        assert verify_signature(SECRET, request.headers["X-Pamd-Timestamp"], request.body,
                                request.headers["X-Pamd-Signature"])


@pytest.mark.anyio
async def test_without_secret_env_requests_are_not_signed(receiver: FakeServer) -> None:
    sink = WebhookSink(WebhookOptions(url=receiver.url))
    try:
        await sink.deliver(make_alert())
    finally:
        await sink.aclose()
    [request] = receiver.requests
    assert "X-Pamd-Signature" not in request.headers and "X-Pamd-Timestamp" in request.headers


# -- failures -----------------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 425])
async def test_server_errors_and_408_are_transient(receiver: FakeServer, status: int) -> None:
    receiver.fail_next(1, status, "upstream broke")
    async with webhook(receiver.url) as sink:
        with pytest.raises(TransientDeliveryError, match=f"HTTP {status}.*upstream broke") as caught:
            await sink.deliver(make_alert())
    assert not isinstance(caught.value, PermanentDeliveryError) and caught.value.retry_after is None


@pytest.mark.anyio
@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_is_reported(receiver: FakeServer, status: int) -> None:
    receiver.fail_next(1, status, **{"Retry-After": "30"})
    async with webhook(receiver.url) as sink:
        with pytest.raises(TransientDeliveryError, match=rf"HTTP {status} .*\(Retry-After: 30\)") as caught:
            await sink.deliver(make_alert())
    assert caught.value.retry_after == 30.0


@pytest.mark.anyio
async def test_retry_after_as_an_http_date(receiver: FakeServer) -> None:
    when = datetime.now(UTC) + timedelta(seconds=120)
    receiver.fail_next(1, 429, **{"Retry-After": when.strftime("%a, %d %b %Y %H:%M:%S GMT")})
    async with webhook(receiver.url) as sink:
        with pytest.raises(TransientDeliveryError, match="Retry-After: ") as caught:
            await sink.deliver(make_alert())
    assert caught.value.retry_after is not None and 100 < caught.value.retry_after <= 120


@pytest.mark.anyio
@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
async def test_other_4xx_are_permanent(receiver: FakeServer, status: int) -> None:
    receiver.fail_next(1, status, "bad payload: " + "x" * 500)
    async with webhook(receiver.url + "/secret-path") as sink:
        with pytest.raises(PermanentDeliveryError) as caught:
            await sink.deliver(make_alert())
    message = str(caught.value)
    assert f"HTTP {status}" in message and "bad payload: " in message
    assert message.endswith(("bad payload: " + "x" * 500)[:200])
    assert "secret-path" not in message  # a webhook URL's path is often its secret: messages show the origin


@pytest.mark.anyio
async def test_redirects_are_not_followed(receiver: FakeServer) -> None:
    receiver.fail_next(1, 301, Location="https://elsewhere.example/")
    async with webhook(receiver.url) as sink:
        with pytest.raises(PermanentDeliveryError, match=r"HTTP 301 .*redirects are not followed"):
            await sink.deliver(make_alert())
    assert len(receiver.requests) == 1


@pytest.mark.anyio
async def test_a_slow_receiver_times_out_as_transient(receiver: FakeServer) -> None:
    receiver.delay = 3.0
    async with webhook(receiver.url, timeout=0.3) as sink:
        started = time.monotonic()
        with pytest.raises(TransientDeliveryError, match=r"no reply within 0\.3 s"):
            await sink.deliver(make_alert())
    assert time.monotonic() - started < 1.5


@pytest.mark.anyio
async def test_connection_refused_is_transient() -> None:
    async with webhook(f"http://user:pw@127.0.0.1:{free_port()}/hook") as sink:
        started = time.monotonic()
        with pytest.raises(TransientDeliveryError, match="cannot connect") as caught:
            await sink.deliver(make_alert())
    assert time.monotonic() - started < 1.5
    assert "pw" not in str(caught.value) and "/hook" not in str(caught.value)


@pytest.mark.anyio
async def test_a_connection_closed_without_reply_is_retried_once_at_once() -> None:
    """The receiver drops the first connection without answering (as when a kept-alive connection was closed
    meanwhile): the sink sends again on a fresh one within the same call; if that one is dropped too, transient."""
    requests: list[bytes] = []
    drop = [1]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        requests.append(await reader.readexactly(length))
        if drop[0] > 0:
            drop[0] -= 1
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with webhook(f"http://127.0.0.1:{port}/") as sink:
            await sink.deliver(make_alert())
            assert len(requests) == 2 and requests[0] == requests[1]
            drop[0] = 2
            with pytest.raises(TransientDeliveryError, match="connection lost"):
                await sink.deliver(make_alert())
            assert len(requests) == 4
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.anyio
async def test_one_client_is_shared_and_closed(receiver: FakeServer) -> None:
    sink = WebhookSink({"url": receiver.url, "secret_env": ENV})
    assert sink._client is None  # lazily created
    await sink.deliver(make_alert())
    client = sink._client
    await sink.deliver(make_alert())
    assert client is not None and sink._client is client
    await sink.aclose()
    assert sink._client is None and client.is_closed
    await sink.aclose()  # idempotent


# -- configuration ------------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("concurrency", [8, 1])
async def test_several_users_in_flight_each_in_order(concurrency: int) -> None:
    """Up to ``concurrency`` requests at once on the receiver (real HTTP, each answered after 30 ms), each user's
    alerts arriving in the order they were stored, even with two deliveries side by side (as a tick's two batches
    in flight are)."""
    lock = threading.Lock()
    in_flight, most, arrived = [0], [0], []

    def slow(request: Request) -> Reply:
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        time.sleep(0.03)
        with lock:
            in_flight[0] -= 1
            arrived.append(json.loads(request.body)["title"])
        return Reply(204)

    alerts = [make_alert(user_id=f"u{u}", title=f"u{u}#{n}", id=new_alert_id()) for n in range(3) for u in range(10)]
    with serve(slow) as receiver:
        sink = WebhookSink({"url": f"{receiver.url}/hook", "concurrency": concurrency})
        deliverer = Deliverer({"webhook": sink}, Metrics())
        try:
            halves = await asyncio.gather(deliverer.deliver([a for a in alerts if a.user_id < "u5"]),
                                          deliverer.deliver([a for a in alerts if a.user_id >= "u5"]))
            assert not halves[0] and not halves[1]  # nothing left undelivered
        finally:
            await sink.aclose()
    assert sorted(arrived) == sorted(a.title for a in alerts)
    for u in range(10):
        assert [t for t in arrived if t.startswith(f"u{u}#")] == [f"u{u}#{n}" for n in range(3)]
    assert most[0] == concurrency  # 10 users: the limit is reached, never passed


@pytest.mark.anyio
async def test_waiting_for_a_free_slot_is_not_part_of_the_deadline(receiver: FakeServer) -> None:
    """Three deliveries at once through one slot, each answered after 1 s with a 1.5 s timeout: the third waits
    2 s for its turn and still has its whole deadline."""
    receiver.delay = 1.0
    sink = WebhookSink({"url": f"{receiver.url}/hook", "timeout": 1.5, "concurrency": 1})
    try:
        await asyncio.gather(*(sink.deliver(make_alert(user_id=user, id=new_alert_id())) for user in "abc"))
    finally:
        await sink.aclose()
    assert len(receiver.requests) == 3


def test_missing_secret_env_is_a_clear_construction_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV)
    with pytest.raises(SinkConfigError, match=f"environment variable {ENV} is not set") as caught:
        WebhookSink({"url": "https://example.com/hook", "secret_env": ENV})
    assert caught.value.key == "secret_env"
    monkeypatch.setenv(ENV, "  ")
    with pytest.raises(SinkConfigError, match=f"environment variable {ENV} is empty"):
        WebhookSink({"url": "https://example.com/hook", "secret_env": ENV})


@pytest.mark.parametrize(("options", "key", "problem"), [
    ({}, "url", "required"),
    ({"url": "ftp://example.com/x"}, "url", "expected an http:// or https:// URL"),
    ({"url": "https:///nohost"}, "url", "expected an http"),
    ({"url": "https://example.com:99999/"}, "url", "bad port"),
    ({"url": "https://example.com", "timeout": 0}, "timeout", "more than 0"),
    ({"url": "https://example.com", "concurrency": 0}, "concurrency", "must be 1 to 256, got 0"),
    ({"url": "https://example.com", "concurrency": 1000}, "concurrency", "must be 1 to 256, got 1000"),
    ({"url": "https://example.com", "headers": {"idempotency-key": "x"}}, "headers", "cannot be overridden"),
    ({"url": "https://example.com", "headers": {"X-A": "a\r\nX-B: b"}}, "headers", "line breaks"),
])
def test_bad_options(options: dict[str, object], key: str, problem: str) -> None:
    with pytest.raises(SinkConfigError, match=problem) as caught:
        WebhookSink(options)
    assert caught.value.key == key


def test_config_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plugins = load_plugins([], {})
    path = tmp_path / "config.toml"
    path.write_text("")
    assert {"webhook", "redis"}.isdisjoint(resolve_sinks(load_config(path, {}), plugins))  # not on by default

    path.write_text(f'[sinks.webhook]\nurl = "https://example.com/hook"\nsecret_env = "{ENV}"\ntimeout = 3\n'
                    '[sinks.webhook.headers]\nAuthorization = "Bearer x"\n')
    sink = resolve_sinks(load_config(path, {}), plugins)["webhook"]
    assert isinstance(sink, WebhookSink)
    assert sink.options == WebhookOptions(url="https://example.com/hook", secret_env=ENV, timeout=3.0,
                                          headers={"Authorization": "Bearer x"})

    monkeypatch.delenv(ENV)
    with pytest.raises(ConfigError, match=rf"config.toml:3: sinks\.webhook\.secret_env: environment variable "
                                          rf"{ENV} is not set"):
        resolve_sinks(load_config(path, {}), plugins)
    path.write_text("[sinks.webhook]\nenabled = false\n")
    assert "webhook" not in resolve_sinks(load_config(path, {}), plugins)
    path.write_text("[sinks.webhook]\nurl = 'https://example.com'\nsecret = 'inline'\n")
    with pytest.raises(ConfigError, match=r"sinks\.webhook\.secret: unknown key"):
        resolve_sinks(load_config(path, {}), plugins)
