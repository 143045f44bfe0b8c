"""Alert dedupe state in Redis, shared by every replica (``[alerts] state = "redis"``).

The same state, with the same semantics, as the store's ``pam_alert_state`` (:mod:`pamd.store.sqlite_alerts`):

* ``{prefix}:alert:{fingerprint}``: a hash with ``user_id``, ``monitor``, ``kind``, ``priority``, ``last_alert_id``,
  ``last_sent_at``, ``last_seen_at`` (the tick that last stored an alert for it; UTC, millisecond precision, as
  the store writes them) and ``epoch``;
* ``{prefix}:alerts:seen:{monitor}`` and ``{prefix}:alerts:seen:{monitor}:{user_id}``: sorted sets of that
  monitor's (and user's) fingerprints scored by when they were last seen (ms since 1970), which make the sweep of
  resolved conditions a range query, for a whole monitor or for one user.

Writes are fenced: a batch whose epoch (a leadership term, >= 1) is older than ``{prefix}:epoch``, the counter the
Redis coordinator increments at each acquisition, is refused as a whole and writes nothing (:class:`FencedError`).
Epoch 0 (``pamd trigger`` outside any term) is not fenced. A batch's chunks go in one MULTI/EXEC transaction, so
no leader can take over between them (Redis is busy for about 12 µs per fingerprint: the pipeline's batches of about
2,000 alerts keep that short); each Lua script handles at most ``chunk`` fingerprints. Scripts build the
per-fingerprint keys from the prefix, so the keys must live on one Redis (not a cluster), like the coordinator's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from redis.exceptions import RedisError

from pamd.alerts.book import FencedError
from pamd.alerts.decide import AlertState, Decision
from pamd.coordination.redis_client import RedisUnavailableError, redis_client
from pamd.model import Priority
from pamd.store.records import format_ts, parse_ts

log = logging.getLogger("pamd.alerts.redis")

_EPOCH_1970 = datetime(1970, 1, 1, tzinfo=UTC)

_FENCE = """
local epoch = tonumber(ARGV[2])
local newest = tonumber(redis.call('GET', KEYS[1]) or '0')
if epoch > 0 and epoch < newest then
  return {-1, newest}
end
"""
# KEYS: epoch. ARGV: prefix, batch epoch, now (ms), now (text), number of accepted entries, then 8 values per
# accepted entry (fingerprint, user, monitor, kind, priority, alert id, sent at, epoch), then the fingerprints of
# the other decisions, whose seen indexes are touched if they have a state. {1, 0}, or {-1, newest epoch} if fenced.
RECORD = _FENCE + """
local prefix, now_ms, now_text = ARGV[1], ARGV[3], ARGV[4]
local function index(fp, monitor, user)
  redis.call('ZADD', prefix .. ':alerts:seen:' .. monitor, now_ms, fp)
  redis.call('ZADD', prefix .. ':alerts:seen:' .. monitor .. ':' .. user, now_ms, fp)
end
local i = 6
for _ = 1, tonumber(ARGV[5]) do
  local key = prefix .. ':alert:' .. ARGV[i]
  local owner = redis.call('HMGET', key, 'monitor', 'user_id')
  local monitor, user = owner[1], owner[2]
  if not (monitor and user) then  -- a new state; an existing one keeps its user, monitor and kind (as in SQL)
    monitor, user = ARGV[i + 2], ARGV[i + 1]
    redis.call('HSET', key, 'user_id', user, 'monitor', monitor, 'kind', ARGV[i + 3])
  end
  redis.call('HSET', key, 'priority', ARGV[i + 4], 'last_alert_id', ARGV[i + 5], 'last_sent_at', ARGV[i + 6],
             'last_seen_at', now_text, 'epoch', ARGV[i + 7])
  index(ARGV[i], monitor, user)
  i = i + 8
end
for j = i, #ARGV do
  local key = prefix .. ':alert:' .. ARGV[j]
  local owner = redis.call('HMGET', key, 'monitor', 'user_id')
  if owner[1] and owner[2] then
    index(ARGV[j], owner[1], owner[2])
  end
end
return {1, 0}
"""
# ARGV: prefix, fingerprints. A JSON array with each one's fields (false where missing): one string is
# much cheaper for the client to read than seven per fingerprint.
LOAD = """
local rows = {}
for i = 2, #ARGV do
  rows[i - 1] = redis.call('HMGET', ARGV[1] .. ':alert:' .. ARGV[i], 'user_id', 'monitor', 'kind', 'priority',
                          'last_alert_id', 'last_sent_at', 'epoch')
end
return cjson.encode(rows)
"""
# KEYS: epoch, the seen index to sweep (the monitor's or one user's). ARGV: prefix, batch epoch, now (ms), limit,
# monitor. Forgets at most `limit` fingerprints last seen before now: {1, fingerprint...}, or {-1, newest epoch}.
SWEEP = _FENCE + """
local prefix, monitor = ARGV[1], ARGV[5]
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[3], 'LIMIT', 0, tonumber(ARGV[4]))
for _, fp in ipairs(stale) do
  local key = prefix .. ':alert:' .. fp
  local user = redis.call('HGET', key, 'user_id')
  redis.call('DEL', key)
  redis.call('ZREM', KEYS[2], fp)
  redis.call('ZREM', prefix .. ':alerts:seen:' .. monitor, fp)
  if user then
    redis.call('ZREM', prefix .. ':alerts:seen:' .. monitor .. ':' .. user, fp)
  end
end
table.insert(stale, 1, 1)
return stale
"""


class RedisAlertState:
    """Per-fingerprint dedupe state in Redis under ``prefix`` (see the module docstring).

    ``chunk`` bounds the fingerprints per Lua script (about 5 ms of Redis time for 500 upserts). Nothing connects
    before the first command; :meth:`aclose` closes the client.
    """

    def __init__(self, url: str, prefix: str = "pamd", *, timeout: float = 5.0, chunk: int = 500) -> None:
        if chunk < 1:
            raise ValueError("chunk must be at least 1")
        self.url = url
        self.prefix = prefix
        self.chunk = chunk
        self._redis = redis_client(url, timeout=timeout, backoff_cap=timeout / 5)
        self._load = self._redis.register_script(LOAD)
        self._record = self._redis.register_script(RECORD)
        self._sweep = self._redis.register_script(SWEEP)

    def key(self, *parts: str) -> str:
        """``prefix:part:part...``."""
        return ":".join((self.prefix, *parts))

    async def ping(self) -> None:
        """Raise :class:`RedisUnavailableError` (one line naming the URL, password redacted) if Redis does not
        answer."""
        try:
            await self._redis.ping()
        except RedisError as exc:
            raise RedisUnavailableError(self.url, exc) from exc

    async def aclose(self) -> None:
        """Close the client's connections."""
        await self._redis.aclose()

    async def load(self, fingerprints: Sequence[str]) -> dict[str, AlertState]:
        """The states of those ``fingerprints`` that have one; one round trip (a read-only script) per ``chunk``
        fingerprints."""
        states: dict[str, AlertState] = {}
        unique = sorted(set(fingerprints))
        for part in _chunks(unique, self.chunk):
            rows = msgspec.json.decode(await self._load(args=[self.prefix, *part]), type=list[list[str | bool]])
            for fingerprint, row in zip(part, rows, strict=True):
                state = self._state(fingerprint, [v if isinstance(v, str) else None for v in row])
                if state is not None:
                    states[fingerprint] = state
        return states

    def _state(self, fingerprint: str, row: list[str | None]) -> AlertState | None:
        user, monitor, kind, priority, alert_id, sent_text, epoch = row
        if user is None:
            return None
        sent = parse_ts(sent_text)
        try:
            level, term = Priority(priority or ""), int(epoch or 0)
        except ValueError:
            level, term, sent = Priority.LOW, 0, None
        if sent is None:  # like a store row whose last_sent_at cannot be read: no state
            log.warning("ignoring unreadable alert state %s in Redis: %r", self.key("alert", fingerprint), row)
            return None
        return AlertState(fingerprint=fingerprint, user_id=user, monitor=monitor or "", kind=kind or "",
                          priority=level, last_alert_id=alert_id or "", last_sent_at=sent, epoch=term)

    async def check_epoch(self, epoch: int) -> None:
        """Raise :class:`FencedError` if ``epoch`` (>= 1) is older than the newest leadership term in Redis."""
        if epoch <= 0:
            return
        newest = int(_text(await self._redis.get(self.key("epoch"))) or 0)
        if epoch < newest:
            raise _fenced(epoch, newest)

    async def record(
        self,
        monitor: str,
        decisions: Sequence[Decision],
        now: datetime,
        *,
        sweep: bool = False,
        sweep_user: str | None = None,
        epoch: int = 0,
    ) -> list[str]:
        """Remember the accepted decisions' fingerprints (sent at their ``release_at`` if held, else ``now``),
        mark the others' states as seen at ``now``, and, if ``sweep``, forget ``monitor``'s fingerprints (of
        ``sweep_user`` only, if given) not seen at ``now``. Returns the forgotten (resolved) fingerprints.

        Fenced as a whole (see the module docstring): :class:`FencedError`, nothing written. The sweep runs after
        the upserts, ``chunk`` fingerprints per script, each fenced: a term that ends in the middle of it may leave
        a few conditions unresolved until the next complete tick, never forget one that was not resolved."""
        epoch = max((d.alert.epoch for d in decisions), default=epoch)
        now_ms, stamp = str(_ms(now)), format_ts(now)
        accepted: list[list[str]] = []
        for d in decisions:
            if d.accepted:
                a = d.alert
                sent = format_ts(d.release_at) if d.release_at else stamp  # a held alert's cooldown starts then
                accepted.append([a.fingerprint, a.user_id, a.monitor, a.kind, a.priority.value, a.id, sent,
                                 str(a.epoch)])
        seen = sorted({d.alert.fingerprint for d in decisions if not d.accepted})
        head = [self.prefix, str(epoch), now_ms, stamp]
        calls = [[*head, str(len(part)), *(v for entry in part for v in entry)]
                 for part in _chunks(accepted, self.chunk)]
        calls += [[*head, "0", *part] for part in _chunks(seen, self.chunk)]
        if calls:
            async with self._redis.pipeline(transaction=True) as pipe:
                for args in calls:
                    await self._record(keys=[self.key("epoch")], args=args, client=pipe)
                results = await pipe.execute()
            status, newest = (int(v) for v in results[0])
            if status < 0:
                raise _fenced(epoch, newest)
        if not sweep:
            return []
        index = self.key("alerts", "seen", monitor, *([sweep_user] if sweep_user is not None else []))
        resolved: list[str] = []
        while True:
            reply = await self._sweep(keys=[self.key("epoch"), index],
                                      args=[self.prefix, epoch, now_ms, self.chunk, monitor])
            if int(reply[0]) < 0:
                raise _fenced(epoch, int(reply[1]))
            found = [str(_text(v)) for v in reply[1:]]
            resolved += found
            if len(found) < self.chunk:
                return resolved


def _fenced(epoch: int, newest: int) -> FencedError:
    return FencedError(f"epoch {epoch} is older than epoch {newest}, the newest leadership term in Redis: this "
                       "replica lost its leadership and must not deliver")


def _ms(moment: datetime) -> int:
    """Milliseconds since 1970, rounded down like :func:`format_ts` (a naive ``datetime`` is UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH_1970) // timedelta(milliseconds=1)


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
