"""Redis sink: publishes each alert on a per-user channel and appends it to a capped stream.

Configuration::

    [sinks.redis]
    url = "redis://localhost:6379/0"   # also rediss://, unix://, redis+sentinel:// (as [coordination] url)
    prefix = "pamd"
    stream_maxlen = 10000              # approximate cap of the stream (XADD MAXLEN ~)
    timeout = 5                        # seconds for one delivery attempt, reconnects included
    dedupe_ttl = 86400                 # seconds a delivered alert id is remembered

Per alert, with ``<json>`` the alert's JSON payload (:mod:`pamd.sinks.payload`):

* ``PUBLISH <prefix>:alerts:<user_id> <json>``: for push servers (WebSocket, SSE) that relay a user's alerts
  live. Pub/sub delivers only to who is subscribed at that moment;
* ``XADD <prefix>:alerts MAXLEN ~ <stream_maxlen> * id <alert id> user_id <user_id> alert <json>``: a capped
  stream for consumers that must not miss any (read it with ``XREAD`` or a consumer group, ``XREADGROUP``).

Idempotency (delivery is at-least-once: a delivery whose reply was lost is repeated): both commands run in one Lua
script, atomically, guarded by ``<prefix>:alerts:sent:<alert id>``. The script does nothing if that key exists;
otherwise it adds the stream entry, publishes, and sets the key to the entry's id for ``dedupe_ttl`` seconds. So
an alert is published and appended at most once per ``dedupe_ttl`` (the outbox retries long before that). A Lua
script rather than MULTI/EXEC because the guard must decide whether the rest runs, which a transaction cannot.

Every Redis error is transient (:class:`TransientDeliveryError`, the URL's password redacted): the outbox tries
again later. The Redis user needs ``EVALSHA``, ``EVAL``, ``EXISTS``, ``SET``, ``XADD`` and ``PUBLISH`` on keys
``<prefix>:alerts*`` and channels ``<prefix>:alerts:*``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import anyio
import msgspec

from pamd.coordination.redis_url import check_redis_url, redact_url
from pamd.model import Alert
from pamd.sinks.base import Sink, SinkConfigError, TransientDeliveryError
from pamd.sinks.payload import encode_alert

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from redis.commands.core import AsyncScript

# KEYS: the sent guard, the stream. ARGV: alert id, user id, JSON, stream maxlen, guard TTL (s), channel.
# Returns the new stream entry's id, or false when the alert was already delivered.
DELIVER_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local entry = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*',
                         'id', ARGV[1], 'user_id', ARGV[2], 'alert', ARGV[3])
redis.call('SET', KEYS[1], entry, 'EX', ARGV[5])
redis.call('PUBLISH', ARGV[6], ARGV[3])
return entry
"""


# The same for many alerts in one call. KEYS: the stream, then each alert's sent guard. ARGV: stream maxlen, guard
# TTL (s), then per alert: id, user id, JSON, channel. Returns the number of alerts appended now.
DELIVER_MANY_SCRIPT = """
local appended = 0
for i = 2, #KEYS do
  local a = 3 + (i - 2) * 4
  if redis.call('EXISTS', KEYS[i]) == 0 then
    local entry = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
                             'id', ARGV[a], 'user_id', ARGV[a + 1], 'alert', ARGV[a + 2])
    redis.call('SET', KEYS[i], entry, 'EX', ARGV[2])
    redis.call('PUBLISH', ARGV[a + 3], ARGV[a + 2])
    appended = appended + 1
  end
end
return appended
"""


class RedisSinkOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[sinks.redis]``: see the module docstring."""

    url: str = ""
    prefix: str = "pamd"
    stream_maxlen: int = 10000
    timeout: float = 5.0
    dedupe_ttl: int = 86400


class RedisSink(Sink):
    """Publish each alert on ``<prefix>:alerts:<user_id>`` and append it to the stream ``<prefix>:alerts``, at most
    once per alert id; see the module docstring. The client connects at the first delivery."""

    name: ClassVar[str] = "redis"
    config_type: ClassVar[type[Any] | None] = RedisSinkOptions

    def __init__(self, options: RedisSinkOptions | dict[str, Any], state_dir: Path | None = None) -> None:
        try:
            self.options = options if isinstance(options, RedisSinkOptions) else msgspec.convert(
                options, RedisSinkOptions, strict=False)
        except msgspec.ValidationError as exc:
            raise SinkConfigError("", str(exc)) from exc
        opts = self.options
        if not opts.url:
            raise SinkConfigError("url", "required: the redis:// (or rediss://, unix://, redis+sentinel://) URL")
        try:
            check_redis_url(opts.url)
        except ValueError as exc:
            raise SinkConfigError("url", str(exc)) from exc
        if not opts.prefix:
            raise SinkConfigError("prefix", "cannot be empty")
        for key, value in (("stream_maxlen", opts.stream_maxlen), ("timeout", opts.timeout),
                           ("dedupe_ttl", opts.dedupe_ttl)):
            if not value > 0:
                raise SinkConfigError(key, f"must be more than 0, got {value}")
        self.stream = f"{opts.prefix}:alerts"
        self._client: aioredis.Redis | None = None
        self._script: AsyncScript | None = None
        self._many: AsyncScript | None = None

    def channel(self, user_id: str) -> str:
        """The pub/sub channel of ``user_id``'s alerts."""
        return f"{self.options.prefix}:alerts:{user_id}"

    def sent_key(self, alert_id: str) -> str:
        """The key that marks ``alert_id`` as delivered."""
        return f"{self.options.prefix}:alerts:sent:{alert_id}"

    def _redis(self) -> tuple[aioredis.Redis, AsyncScript]:
        if self._client is None or self._script is None:
            from pamd.coordination.redis_client import redis_client

            timeout = self.options.timeout
            self._client = redis_client(self.options.url, timeout=timeout, backoff_cap=min(0.5, timeout / 4))
            self._script = self._client.register_script(DELIVER_SCRIPT)
            self._many = self._client.register_script(DELIVER_MANY_SCRIPT)
        return self._client, self._script

    async def deliver(self, alert: Alert) -> None:
        """Publish and append ``alert`` unless already done; :class:`TransientDeliveryError` on any Redis error."""
        await self.deliver_once(alert)

    async def deliver_once(self, alert: Alert) -> bool:
        """As :meth:`deliver`; True if this call published and appended ``alert``, False if an earlier delivery
        of the same alert id already had."""
        from redis.exceptions import RedisError

        from pamd.coordination.redis_client import describe_redis_error

        payload = encode_alert(alert)
        opts = self.options
        try:
            with anyio.fail_after(opts.timeout):
                _client, script = self._redis()
                entry = await script(keys=[self.sent_key(alert.id), self.stream],
                                     args=[alert.id, alert.user_id, payload, opts.stream_maxlen, opts.dedupe_ttl,
                                           self.channel(alert.user_id)])
        except TimeoutError:
            raise TransientDeliveryError(
                f"redis {redact_url(opts.url)}: no reply within {opts.timeout:g} s") from None
        except (RedisError, OSError) as exc:
            raise TransientDeliveryError(f"redis {redact_url(opts.url)}: {describe_redis_error(exc)}") from exc
        return entry is not None

    async def deliver_batch(self, alerts: Sequence[Alert]) -> None:
        """:meth:`deliver` for many alerts in one script call (one round trip), in order, each at most once: what a
        tick's burst of alerts costs is then the encoding, not a round trip per alert. Atomic in Redis, so a
        failure leaves none of them delivered, or (the reply lost) all of them."""
        from redis.exceptions import RedisError

        from pamd.coordination.redis_client import describe_redis_error

        if not alerts:
            return
        opts = self.options
        args: list[str | bytes | int | float] = [opts.stream_maxlen, opts.dedupe_ttl]
        for alert in alerts:
            args += [alert.id, alert.user_id, encode_alert(alert), self.channel(alert.user_id)]
        try:
            with anyio.fail_after(opts.timeout):
                self._redis()
                assert self._many is not None
                await self._many(keys=[self.stream, *(self.sent_key(a.id) for a in alerts)], args=args)
        except TimeoutError:
            raise TransientDeliveryError(
                f"redis {redact_url(opts.url)}: no reply within {opts.timeout:g} s") from None
        except (RedisError, OSError) as exc:
            raise TransientDeliveryError(f"redis {redact_url(opts.url)}: {describe_redis_error(exc)}") from exc

    async def aclose(self) -> None:
        """Close the client's connections; a later delivery connects again."""
        if self._client is not None:
            client, self._client, self._script, self._many = self._client, None, None, None
            await client.aclose()
