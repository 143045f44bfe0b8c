"""The Supabase store's REST plumbing: URL and key, the PostgREST client, retries, and PostgREST errors as exceptions.

URL: ``supabase+https://<project>.supabase.co`` (``supabase+http://`` for a local stack), with an optional
``?key_env=NAME`` naming the environment variable that holds the service-role key (default
``SUPABASE_SERVICE_ROLE_KEY``). ``[store] url = "supabase"`` with ``supabase_url`` (and ``supabase_key_env``) in
the config builds this URL (:attr:`pamd.config.Config.store_url`). The key is read from the environment when the
client is first used and is never logged, shown or kept in the URL.

Requests go through postgrest-py (``AsyncPostgrestClient``, the client the ``supabase`` package uses for
``/rest/v1``), imported only when a Supabase store is used. Its own retry (GET/HEAD only, up to 30 s sleeps) is off;
:meth:`SupabaseRest.run` retries with short jittered backoff instead:

* any call, when the request cannot have run: the connection failed, or PostgREST answered that it could not reach
  the database or its schema cache is not loaded yet (``PGRST000``-``PGRST003``, 503/504);
* reads also on a broken connection or a timeout mid-request and on 502/503/504/520 from a proxy (a read can run
  twice).

A write whose connection broke or timed out after sending is not retried (it may have committed); the error is
raised, as the Postgres store raises a lost connection.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from pamd.alerts.book import FencedError
from pamd.backoff import backoff
from pamd.store.base import StoreError

if TYPE_CHECKING:
    from postgrest import APIResponse, AsyncPostgrestClient

log = logging.getLogger("pamd.store.supabase")

DEFAULT_KEY_ENV = "SUPABASE_SERVICE_ROLE_KEY"
INSTALL_HINT = ("install or update it: `pamd db sql | psql \"$DATABASE_URL\"`, or paste the output of `pamd db sql` "
                "into the Supabase SQL editor")

_NOT_RUN = frozenset({"PGRST000", "PGRST001", "PGRST002", "PGRST003"})
_PROXY = frozenset({"502", "503", "504", "520"})
_AUTH = frozenset({"PGRST300", "PGRST301", "PGRST302", "PGRST303", "401", "403", "42501"})
_SCHEMA = frozenset({"PGRST202", "PGRST205", "42P01", "42883"})


class SupabaseError(StoreError):
    """An error answered by PostgREST (its JSON ``code``, ``message``, ``details``, ``hint``), or a transport
    error that retries did not overcome."""

    def __init__(self, text: str, *, code: str | None = None, message: str | None = None,
                 details: object = None, hint: str | None = None) -> None:
        super().__init__(text)
        self.code, self.message, self.details, self.hint = code, message, details, hint


class SupabaseAuthError(SupabaseError):
    """The key is missing, or PostgREST refused it (or it lacks the privileges pamd needs)."""


class SupabaseSchemaError(SupabaseError):
    """pamd's tables or functions are not installed (or are out of date) in the Supabase database."""


class SupabaseUnavailableError(SupabaseError):
    """The server stayed unreachable or unavailable through every retry."""


def split_supabase_url(url: str) -> tuple[str, str]:
    """``(base URL, key variable)`` of a ``supabase+https://host?key_env=NAME`` store URL.

    Raises :class:`ValueError` for anything else (another scheme, no host, unknown parameters).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("supabase+https", "supabase+http") or not parts.hostname:
        raise ValueError(f"not a supabase store URL: {url!r} (expected supabase+https://<project>.supabase.co)")
    if parts.username or parts.password:
        raise ValueError("a supabase store URL carries no credentials: the service-role key comes from the "
                         f"environment (${DEFAULT_KEY_ENV}, or the variable named by ?key_env=)")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    key_env = query.pop("key_env", DEFAULT_KEY_ENV)
    if query or not key_env.isidentifier():
        raise ValueError(f"supabase store URL: unknown parameter(s) {sorted(query)} or bad key_env {key_env!r}")
    base = urlunsplit((scheme.removeprefix("supabase+"), parts.netloc, parts.path.rstrip("/"), "", ""))
    return base, key_env


def store_url(supabase_url: str, key_env: str = DEFAULT_KEY_ENV) -> str:
    """The store URL for ``[store] supabase_url`` and ``supabase_key_env`` (validated by :func:`split_supabase_url`)."""
    url = "supabase+" + supabase_url.strip().rstrip("/")
    if key_env != DEFAULT_KEY_ENV:
        url += f"?key_env={key_env}"
    split_supabase_url(url)
    return url


def _transient(code: str | None, idempotent: bool) -> bool:
    return code in _NOT_RUN or (idempotent and code in _PROXY)


class SupabaseRest:
    """PostgREST at ``{base}/rest/v1``, authenticated with the service-role key from ``$key_env``."""

    def __init__(self, base: str, key_env: str, *, timeout: float = 60.0, retries: int = 4,
                 retry_base: float = 0.25) -> None:
        self.base, self.key_env = base, key_env
        self.timeout, self.retries, self.retry_base = timeout, retries, retry_base
        self._client: AsyncPostgrestClient | None = None
        self._closed = False

    def client(self) -> AsyncPostgrestClient:
        """The PostgREST client, made on first use (raises if closed or without a key)."""
        if self._closed:
            raise RuntimeError(f"the Supabase store at {self.base} is closed")
        if self._client is None:
            key = os.environ.get(self.key_env, "").strip()
            if not key:
                raise SupabaseAuthError(f"no Supabase service-role key: set ${self.key_env} (the project's "
                                        "service_role key, from its API settings)")
            import httpx
            from postgrest import AsyncPostgrestClient

            headers = {"apikey": key, "Authorization": f"Bearer {key}"}
            # Our own httpx client: a plain timeout, HTTP/1.1 (postgrest-py's default asks for HTTP/2). The
            # PostgREST client closes it with itself.
            self._client = AsyncPostgrestClient(f"{self.base}/rest/v1", headers=headers, retry_enabled=False,
                                                http_client=httpx.AsyncClient(timeout=self.timeout))
        return self._client

    async def aclose(self) -> None:
        """Close the HTTP connections; further calls raise :class:`RuntimeError`."""
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def run(self, what: str, build: Callable[[AsyncPostgrestClient], Any], *, idempotent: bool) -> APIResponse:
        """``await build(client).execute()``, retried on transient failures (see the module doc); ``what`` names
        the call in errors. PostgREST errors become :class:`SupabaseError` (or a subclass, or
        :class:`FencedError`)."""
        import httpx
        from postgrest import APIError

        attempt = 0
        while True:
            attempt += 1
            try:
                request: Awaitable[APIResponse] = build(self.client()).execute()
                return await request
            except APIError as err:
                if not _transient(err.code, idempotent) or attempt > self.retries:
                    raise self._error(what, err) from None
                reason = f"{err.code} {err.message}"
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as err:  # nothing was sent
                if attempt > self.retries:
                    raise SupabaseUnavailableError(f"{what}: cannot reach {self.base}: {err!r}") from err
                reason = repr(err)
            except httpx.TransportError as err:  # sent, perhaps run: a broken connection, a timeout
                if not idempotent or attempt > self.retries:
                    raise SupabaseUnavailableError(f"{what}: no answer from {self.base}: {err!r}") from err
                reason = repr(err)
            delay = backoff(attempt, self.retry_base, 5.0)
            log.warning("%s failed (%s); retrying in %.2fs (attempt %d of %d)", what, reason, delay, attempt + 1,
                        self.retries + 1)
            await asyncio.sleep(delay)

    def _error(self, what: str, err: Any) -> Exception:
        code, message, details, hint = err.code, err.message, err.details, err.hint
        fields = {"code": code, "message": message, "details": details, "hint": hint}
        if code == "PAMDF":
            return FencedError(message or "fenced")
        if code in _AUTH or message == "Invalid API key":
            return SupabaseAuthError(f"{what}: {self.base} refused the service-role key from ${self.key_env} "
                                     f"({code}: {message}); check that it is the project's service_role key",
                                     **fields)
        if code in _SCHEMA:
            return SupabaseSchemaError(f"{what}: pamd's schema is missing or out of date at {self.base} ({code}: "
                                       f"{message}); {INSTALL_HINT}", **fields)
        if code in _NOT_RUN or code in _PROXY:
            return SupabaseUnavailableError(f"{what}: {self.base} is unavailable ({code}: {message})", **fields)
        extra = "; ".join(str(x) for x in (details, hint) if x)
        return SupabaseError(f"{what}: {code}: {message}" + (f" ({extra})" if extra else ""), **fields)
