"""The redis.asyncio client behind the coordinator and the Redis alert state, and clear messages for its errors.

``redis://``, ``rediss://`` and ``unix://`` URLs go to redis-py's ``from_url``; ``redis+sentinel://`` and
``rediss+sentinel://`` (see :mod:`pamd.coordination.redis_url`) to a client of the master that the sentinels
name, which follows a failover: it asks the sentinels which server is the master before a command when it last
asked more than ``master_recheck`` seconds ago, and drops its idle connections to a former master. redis-py alone
asks only when it opens a connection, and after a planned failover (``SENTINEL FAILOVER``) the old master goes on
taking writes from the connections it has for about ten seconds, until the sentinel turns it into a replica: a
leader's renewals would keep a lease there that the new master lets expire, and another replica would lead too.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pamd.coordination.redis_url import SentinelUrl, check_redis_url, connection_options, redact_url


class RedisUnavailableError(RedisConnectionError):
    """Redis did not answer as it should; ``str()`` is one line naming the URL (password redacted) and what went
    wrong, ``problem`` the latter alone."""

    def __init__(self, url: str, cause: BaseException) -> None:
        self.url = redact_url(url)
        self.problem = describe_redis_error(cause)
        super().__init__(f"{self.url}: {self.problem}")


def redis_client(url: str, *, timeout: float, backoff_cap: float, master_recheck: float = 1.0) -> aioredis.Redis:
    """A redis.asyncio client for ``url`` whose connects and commands give up after ``timeout`` seconds. A
    connection broken by a Redis restart or a failover fails the next command; that command is retried on a fresh
    connection, 3 times, with exponential backoff up to ``backoff_cap`` seconds. With Sentinel, the client asks
    which server is the master at most every ``master_recheck`` seconds (see the module docstring). Nothing
    connects yet.

    Raises ValueError (one line, password redacted) when ``url`` is not a usable Redis URL."""
    sentinel_url = check_redis_url(url)
    retry = Retry(ExponentialBackoff(cap=backoff_cap, base=0.02), retries=3)
    common: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout, "retry": retry,
                              "retry_on_error": [RedisConnectionError, RedisTimeoutError]}
    if sentinel_url is not None:
        return _sentinel_client(sentinel_url, common, master_recheck)
    client: aioredis.Redis = aioredis.Redis.from_url(url, **common)
    return client


class SentinelRedis(aioredis.Redis):
    """A client of the master named by Sentinel; closing it closes the connections to the sentinels too."""

    sentinel_manager: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.sentinel_manager is not None:
            await self.sentinel_manager.aclose()


class FollowingSentinelPool(SentinelConnectionPool):
    """A pool of connections to the master named by the sentinels that asks them again before handing out a
    connection when it last asked more than ``master_recheck`` seconds ago (not when no sentinel answers: the
    master may be fine, and the connections to it still work)."""

    def __init__(self, service_name: str, sentinel_manager: Sentinel, *, master_recheck: float = 1.0,
                 **kwargs: Any) -> None:
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]
        self.master_recheck = master_recheck
        self._checked_at = float("-inf")

    async def recheck_master(self) -> None:
        """Ask the sentinels which server is the master, unless asked less than ``master_recheck`` seconds ago;
        drop the idle connections to the old one if it changed."""
        now = time.monotonic()
        if now - self._checked_at >= self.master_recheck:
            self._checked_at = now
            with contextlib.suppress(RedisConnectionError, RedisTimeoutError):
                await self.get_master_address()  # type: ignore[no-untyped-call]

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        """A connection to the master; one still connected to a former master (it was in use when the master
        changed) connects again."""
        await self.recheck_master()
        connection = await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]
        if self.elsewhere(connection):
            try:
                await connection.disconnect()
                await connection.connect()
            except BaseException:
                await self.release(connection)
                raise
        return connection

    def elsewhere(self, connection: Any) -> bool:
        """True if ``connection`` is connected to another server than the master the sentinels last named."""
        master = self.master_address
        if master is None or connection is None or not connection.is_connected:
            return False
        return (str(connection.host), int(connection.port)) != (_text(master[0]), int(master[1]))


async def master_moved(client: aioredis.Redis, connection: Any) -> bool:
    """True if ``client`` follows a Sentinel master that is no longer the server ``connection`` (a long-lived one,
    such as a subscription's) is connected to. Asks the sentinels at most every ``master_recheck`` seconds."""
    pool = client.connection_pool
    if not isinstance(pool, FollowingSentinelPool) or connection is None or not connection.is_connected:
        return False
    await pool.recheck_master()
    return pool.elsewhere(connection)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _sentinel_client(target: SentinelUrl, common: dict[str, Any], master_recheck: float) -> aioredis.Redis:
    options = connection_options(target.options)
    tls = {name: value for name, value in options.items() if name.startswith("ssl_")}
    if target.tls:
        tls["ssl"] = True
    sentinel_auth = {"username": target.options.get("sentinel_username"),
                     "password": target.options.get("sentinel_password")}
    # A sentinel that does not answer is skipped for the next one, not retried (redis-py's default retries back
    # off for seconds).
    sentinel_kwargs = {"socket_timeout": common["socket_timeout"],
                       "socket_connect_timeout": common["socket_connect_timeout"], "retry": Retry(NoBackoff(), 0),
                       **{k: v for k, v in sentinel_auth.items() if v}, **tls}
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
    master_kwargs = {**common, **options, **tls, "db": target.db}
    if target.username:
        master_kwargs["username"] = target.username
    if target.password:
        master_kwargs["password"] = target.password
    client: SentinelRedis = sentinel.master_for(target.service, redis_class=SentinelRedis,
                                                connection_pool_class=FollowingSentinelPool,
                                                master_recheck=master_recheck, **master_kwargs)
    client.sentinel_manager = sentinel
    return client


def describe_redis_error(exc: BaseException) -> str:
    """One line on what went wrong, with a hint for the usual mistakes (password, ACL, TLS, Sentinel)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    causes = _chain(exc)
    if any(isinstance(e, AuthenticationError) for e in causes) or text.startswith(("WRONGPASS", "NOAUTH")):
        return f"authentication failed (check the user and password in the URL): {text}"
    if any(isinstance(e, NoPermissionError) for e in causes):
        return (f"the Redis user lacks a permission (it needs keys and channels under the prefix, and the "
                f"commands pamd uses; see README, Replicas): {text}")
    if any(isinstance(e, ssl.SSLCertVerificationError) for e in causes) or "CERTIFICATE_VERIFY_FAILED" in text:
        return (f"TLS certificate verification failed (ssl_ca_certs must name the CA file that signed the "
                f"server's certificate): {text}")
    if any(isinstance(e, ssl.SSLError) for e in causes) or "[SSL" in text:
        return f"TLS failed (does the server speak TLS on that port? rediss:// is TLS, redis:// is not): {text}"
    if any(isinstance(e, (FileNotFoundError, PermissionError)) for e in causes):
        return (f"cannot read a file the URL names (ssl_ca_certs, ssl_certfile, ssl_keyfile, or the unix socket): "
                f"{text}")
    if any(isinstance(e, MasterNotFoundError) for e in causes):
        return f"no sentinel named a healthy master (check the sentinel addresses and the service name): {text}"
    if isinstance(exc, ResponseError) and "READONLY" in text:
        return f"the server is a read-only replica, not the master: {text}"
    return text


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen
