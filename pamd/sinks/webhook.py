"""Webhook sink: POSTs each alert as JSON to an HTTP(S) endpoint, signed with HMAC-SHA256.

Configuration::

    [sinks.webhook]
    url = "https://hooks.example.com/pamd"
    secret_env = "PAMD_WEBHOOK_SECRET"   # the NAME of the environment variable holding the HMAC secret
    timeout = 10                         # seconds for one delivery attempt, all of it
    headers = { Authorization = "Bearer ..." }   # optional extra headers
    concurrency = 8                      # requests in flight at once, each for another user (1 to 256)

The secret itself never appears in the config file; a ``secret_env`` naming an unset or empty variable is a
config error at startup. Without ``secret_env`` requests are not signed (no ``X-Pamd-Signature``).

Each user's alerts are posted one after another, in order; up to ``concurrency`` users' at once, so that a burst
(a first tick's thousands of alerts) is not held to one request per round trip: with the receiver 20 ms away, 44
alerts/s one at a time.

Each delivery is one ``POST url`` whose body is the alert's JSON payload (:mod:`pamd.sinks.payload`), with::

    Content-Type: application/json
    Idempotency-Key: <alert id>              same on every retry of one alert: receivers dedupe on it
    X-Pamd-Timestamp: <unix seconds>         when this attempt was signed (each retry signs afresh)
    X-Pamd-Signature: sha256=<hex HMAC-SHA256 of "<X-Pamd-Timestamp>.<raw body>" keyed with the secret>

To verify (the Stripe scheme): compute the HMAC over the timestamp header's exact text, a ``.`` and the raw body
bytes as received (before any JSON parsing), compare in constant time, and refuse a timestamp more than a few
minutes from your clock (replays). :func:`verify_signature` does exactly that; without pamd::

    expected = "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    ok = hmac.compare_digest(expected, signature) and abs(time.time() - int(timestamp)) <= 300

Outcomes: a 2xx reply is delivered. 408, 425, 429 and 5xx, timeouts and network errors are transient
(:class:`TransientDeliveryError`, with the ``Retry-After`` value in the message and in ``retry_after``): the
outbox tries again later. Any other status (other 4xx; 3xx, since redirects are not followed) is a
:class:`PermanentDeliveryError` carrying the status and the first 200 characters of the reply. A connection the
receiver closed while idle is retried once at once, on a fresh one; nothing else is retried here.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

import anyio
import msgspec

from pamd import __version__
from pamd.model import Alert
from pamd.providers.http import RETRYABLE_STATUS, parse_retry_after
from pamd.sinks.base import PermanentDeliveryError, Sink, SinkConfigError, TransientDeliveryError
from pamd.sinks.payload import encode_alert

if TYPE_CHECKING:
    import httpx

SIGNATURE_TOLERANCE = 300
"""Seconds a receiver should accept between ``X-Pamd-Timestamp`` and its own clock (default of
:func:`verify_signature`)."""
RESERVED_HEADERS = frozenset({"content-type", "content-length", "host", "transfer-encoding", "idempotency-key",
                              "x-pamd-timestamp", "x-pamd-signature"})
MAX_CONCURRENCY = 256
_REPLY_LIMIT = 64 * 1024  # bytes of a reply read at most (enough to reuse the connection after a small one)
_SNIPPET = 200


class WebhookOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[sinks.webhook]``: see the module docstring."""

    url: str = ""
    secret_env: str = ""
    timeout: float = 10.0
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    concurrency: int = 8


def sign(secret: str | bytes, timestamp: str | int, body: bytes) -> str:
    """``sha256=<hex>``: the HMAC-SHA256 of ``"<timestamp>.<body>"`` keyed with ``secret`` (UTF-8 if text)."""
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: str | bytes,
    timestamp: str | int,
    body: bytes,
    signature: str,
    tolerance: float | None = SIGNATURE_TOLERANCE,
    now: float | None = None,
) -> bool:
    """True if ``signature`` (the ``X-Pamd-Signature`` header) signs ``body`` (the raw request body) at
    ``timestamp`` (the ``X-Pamd-Timestamp`` header) with ``secret``, and ``timestamp`` is within ``tolerance``
    seconds of ``now`` (default: the current Unix time; ``tolerance=None`` skips that check). The header may list
    several comma-separated signatures (for secret rotation); one matching is enough. Constant-time comparison;
    never raises on malformed input (it is simply not valid)."""
    text = str(timestamp).strip()
    if not (text.isascii() and text.isdigit()):
        return False
    if tolerance is not None and abs((time.time() if now is None else now) - int(text)) > tolerance:
        return False
    expected = sign(secret, text, body).encode()
    candidates = (part.strip().encode("utf-8", "replace") for part in signature.split(","))
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


class WebhookSink(Sink):
    """POST each alert to ``[sinks.webhook] url``, signed; see the module docstring. One shared HTTP client
    (created at the first delivery, closed by :meth:`aclose`)."""

    name: ClassVar[str] = "webhook"
    config_type: ClassVar[type[Any] | None] = WebhookOptions

    def __init__(self, options: WebhookOptions | dict[str, Any], state_dir: Path | None = None) -> None:
        try:
            self.options = options if isinstance(options, WebhookOptions) else msgspec.convert(
                options, WebhookOptions, strict=False)
        except msgspec.ValidationError as exc:
            raise SinkConfigError("", str(exc)) from exc
        self.url = _check_url(self.options.url)
        self.origin = _origin(self.url)
        if not self.options.timeout > 0:
            raise SinkConfigError("timeout", f"must be more than 0 seconds, got {self.options.timeout}")
        if not 1 <= self.options.concurrency <= MAX_CONCURRENCY:
            raise SinkConfigError("concurrency", f"must be 1 to {MAX_CONCURRENCY}, got {self.options.concurrency}")
        self.concurrency = self.options.concurrency
        reserved = sorted(h for h in self.options.headers if h.lower() in RESERVED_HEADERS)
        if reserved:
            raise SinkConfigError("headers", f"{reserved[0]} is set by the sink and cannot be overridden")
        if any(c in item for pair in self.options.headers.items() for item in pair for c in "\r\n\0"):
            raise SinkConfigError("headers", "header names and values cannot contain line breaks")
        self._secret = _read_secret(self.options.secret_env)
        self._client: httpx.AsyncClient | None = None
        self._slots: asyncio.Semaphore | None = None  # made in the loop that delivers, with the client

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx

            headers = {"User-Agent": f"pamd/{__version__}", **self.options.headers}
            limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
            self._client = httpx.AsyncClient(timeout=self.options.timeout, headers=headers, follow_redirects=False,
                                             limits=limits)
            self._slots = asyncio.Semaphore(self.concurrency)
        return self._client

    async def deliver(self, alert: Alert) -> None:
        """POST ``alert`` once (see the module docstring for what each outcome raises)."""
        body = encode_alert(alert)
        timeout = self.options.timeout
        self._http()
        assert self._slots is not None
        # At most ``concurrency`` requests, whoever asks (two of a tick's batches deliver side by side); the wait for
        # a slot is not part of the deadline.
        async with self._slots:
            try:
                with anyio.fail_after(timeout):  # connect + send + reply, retry included: one deadline
                    status, reason, retry_after, snippet = await self._post(alert.id, body)
            except TimeoutError:
                raise TransientDeliveryError(f"webhook {self.origin}: no reply within {timeout:g} s") from None
        if 200 <= status < 300:
            return
        problem = f"webhook {self.origin}: HTTP {status} {reason}".rstrip()
        if status in RETRYABLE_STATUS or status >= 500:
            if retry_after is not None:
                problem += f" (Retry-After: {retry_after})"
            raise TransientDeliveryError(problem + (f": {snippet}" if snippet else ""),
                                         retry_after=parse_retry_after(retry_after))
        if 300 <= status < 400:
            problem += " (redirects are not followed: set url to the final address)"
        raise PermanentDeliveryError(problem + (f": {snippet}" if snippet else ""))

    async def _post(self, alert_id: str, body: bytes) -> tuple[int, str, str | None, str]:
        """One POST (twice if a kept-alive connection turns out closed): status, reason, Retry-After, snippet."""
        import httpx

        for attempt in (1, 2):
            timestamp = str(int(time.time()))
            headers = {"Content-Type": "application/json", "Idempotency-Key": alert_id,
                       "X-Pamd-Timestamp": timestamp}
            if self._secret is not None:
                headers["X-Pamd-Signature"] = sign(self._secret, timestamp, body)
            try:
                async with self._http().stream("POST", self.url, content=body, headers=headers) as response:
                    reply = await _read_some(response)
                    return (response.status_code, response.reason_phrase, response.headers.get("Retry-After"),
                            _snippet(reply, response.charset_encoding))
            except httpx.TimeoutException:
                raise TransientDeliveryError(
                    f"webhook {self.origin}: no reply within {self.options.timeout:g} s") from None
            except httpx.ConnectError as exc:
                raise TransientDeliveryError(f"webhook {self.origin}: cannot connect: {_describe(exc)}") from exc
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                if attempt == 1:
                    continue  # the receiver closed a kept-alive connection: once more, on a fresh one
                raise TransientDeliveryError(
                    f"webhook {self.origin}: connection lost: {_describe(exc)}") from exc
            except httpx.HTTPError as exc:
                raise TransientDeliveryError(f"webhook {self.origin}: {_describe(exc)}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        """Close the HTTP client (its connections); a later delivery opens a new one."""
        if self._client is not None:
            client, self._client, self._slots = self._client, None, None
            await client.aclose()


def _check_url(url: str) -> str:
    if not url:
        raise SinkConfigError("url", "required: the https:// address to POST alerts to")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SinkConfigError("url", f"expected an http:// or https:// URL with a host, got {_origin(url)!r}")
    try:
        _ = parts.port
    except ValueError:
        raise SinkConfigError("url", f"bad port in {_origin(url)!r}") from None
    return url


def _origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``: what messages and logs show (the path and query of a webhook URL are
    often its secret, as are user and password)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}" if parts.scheme and host else "(unparsable URL)"


def _read_secret(env_name: str) -> str | None:
    if not env_name:
        return None
    value = os.environ.get(env_name)
    if value is None:
        raise SinkConfigError("secret_env", f"environment variable {env_name} is not set (it must hold the "
                                            f"webhook's HMAC secret)")
    if not value.strip():
        raise SinkConfigError("secret_env", f"environment variable {env_name} is empty (it must hold the "
                                            f"webhook's HMAC secret)")
    return value


async def _read_some(response: httpx.Response) -> bytes:
    """At most about :data:`_REPLY_LIMIT` bytes of the reply's body (all of a small one)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= _REPLY_LIMIT:
            break
    return b"".join(chunks)


def _snippet(body: bytes, encoding: str | None) -> str:
    """The first :data:`_SNIPPET` characters of a reply, on one line."""
    try:
        text = body.decode(encoding or "utf-8", "replace")
    except LookupError:
        text = body.decode("utf-8", "replace")
    return " ".join(text.split())[:_SNIPPET]


def _describe(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
