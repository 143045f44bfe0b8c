"""A small JSON-over-HTTP client for data providers: timeout, retries with backoff, metrics, one clear error.

httpx is imported when the first client is built, so a daemon whose monitors call no provider never loads it.
"""

from __future__ import annotations

import email.utils
import logging
import math
import time
from collections.abc import Mapping
from datetime import UTC
from typing import TYPE_CHECKING, Any

import anyio

from pamd.backoff import backoff

if TYPE_CHECKING:
    import httpx

    from pamd.metrics import Metrics

log = logging.getLogger("pamd.providers")

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class ProviderError(Exception):
    """A provider could not answer (unreachable, timed out, HTTP error, malformed reply). ``str()`` is one line
    naming the provider and the problem."""

    def __init__(self, provider: str, problem: str) -> None:
        super().__init__(f"{provider}: {problem}")
        self.provider = provider
        self.problem = problem


class JsonHttp:
    """GET/POST returning parsed JSON, for one provider at ``base_url``.

    Transport errors, timeouts and the status codes in :data:`RETRYABLE_STATUS` are retried ``retries`` times
    with exponential backoff and full jitter (honouring ``Retry-After`` up to ``max_retry_after`` seconds); any
    other failure raises :class:`ProviderError` at once. Requests and their outcomes are counted in
    ``pamd_provider_requests_total{provider,outcome}``.
    """

    def __init__(
        self,
        provider: str,
        base_url: str,
        *,
        timeout: float = 10.0,
        retries: int = 2,
        user_agent: str = "pamd",
        metrics: Metrics | None = None,
        retry_base_seconds: float = 0.5,
        max_retry_after: float = 10.0,
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.user_agent = user_agent
        self.metrics = metrics
        self.retry_base_seconds = retry_base_seconds
        self.max_retry_after = max_retry_after
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(
                base_url=self.base_url, timeout=self.timeout, headers={"User-Agent": self.user_agent},
                follow_redirects=True,
            )
        return self._client

    async def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """``GET base_url + path`` with query ``params``; the decoded JSON body."""
        return await self.request("GET", path, params=params)

    async def post_form(self, path: str, data: Mapping[str, str]) -> Any:
        """``POST`` a form (``application/x-www-form-urlencoded``); the decoded JSON body."""
        return await self.request("POST", path, data=data)

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send with retries; raise :class:`ProviderError` when every attempt failed."""
        import httpx

        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            retry_after: float | None = None
            try:
                response = await self._http().request(method, path, **kwargs)
            except httpx.TimeoutException:
                outcome, problem = "timeout", f"timed out after {self.timeout:g} s"
            except httpx.HTTPError as exc:
                outcome, problem = "unreachable", f"{type(exc).__name__}: {exc}"
            else:
                if response.is_success:
                    try:
                        body = response.json()
                    except ValueError:
                        self._count("malformed", started)
                        raise ProviderError(self.provider, f"{method} {path}: reply is not JSON") from None
                    self._count("success", started)
                    return body
                outcome, problem = "http_error", f"{method} {path}: HTTP {response.status_code}"
                if response.status_code not in RETRYABLE_STATUS:
                    self._count(outcome, started)
                    raise ProviderError(self.provider, problem + _reason(response))
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            self._count(outcome, started)
            if attempt > self.retries:
                raise ProviderError(self.provider, f"{problem} (after {attempt} attempts)")
            delay = backoff(attempt, self.retry_base_seconds)
            if retry_after is not None:
                delay = min(max(delay, retry_after), self.max_retry_after)
            log.info("%s: %s; retrying in %.2f s", self.provider, problem, delay, extra={"provider": self.provider})
            await anyio.sleep(delay)

    def _count(self, outcome: str, started: float) -> None:
        if self.metrics is not None:
            self.metrics.provider_requests.labels(self.provider, outcome).inc()
            self.metrics.provider_latency.labels(self.provider).observe(time.monotonic() - started)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """The seconds a ``Retry-After`` header asks to wait (delta-seconds, or an HTTP date compared with ``now``,
    default the current Unix time); ``None`` when absent or unreadable. Never negative."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": RFC 5322's "UTC, origin unknown"
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _reason(response: httpx.Response) -> str:
    """The API's own explanation of a refusal (Open-Meteo: ``{"error": true, "reason": ...}``), if short."""
    try:
        body = response.json()
    except ValueError:
        return ""
    reason = body.get("reason") or body.get("error") if isinstance(body, dict) else None
    return f": {str(reason)[:200]}" if isinstance(reason, str) and reason else ""
