"""Leader election and per-tick claims in Redis (DESIGN.md section 5), for several replicas of pamd.

* Lease: ``SET {prefix}:leader <token> NX PX ttl``; the same Lua script increments ``{prefix}:epoch``, the fencing
  token of the new term. The leader renews every ``ttl/3`` with a compare-and-pexpire, and steps down by itself when
  it has not renewed for ``renew_deadline`` (< ttl), so two replicas never both believe they lead for long.
* Claims: ``SET {prefix}:tick:{monitor}:{scheduled_at} <epoch> NX EX`` in a script that refuses an epoch older
  than the current one, so a paused ex-leader that wakes up cannot claim anything.
* A graceful stop deletes the lease (compare-and-delete) and publishes on ``{prefix}:leader:events`` so a follower
  takes over at once; otherwise a follower tries again when the holder's lease would run out (at most every
  ``retry_interval`` seconds while there is no lease), so a crashed leader is replaced within about ``ttl``.

``url`` is any form :func:`pamd.coordination.redis_client.redis_client` takes, Sentinel included: the client then
follows a failover to the new master, where the lease, the epoch and the claims are as far as replication had
carried them (see README, Replicas, for what an asynchronous replica may lose).

redis-py is imported when this module is, which only happens when ``[coordination] url`` is a Redis URL.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio
from redis.exceptions import RedisError

from pamd.coordination.redis_client import RedisUnavailableError, describe_redis_error, master_moved, redis_client
from pamd.coordination.redis_url import redact_url

if TYPE_CHECKING:
    from pamd.metrics import Metrics

__all__ = ["RedisCoordinator", "redis_client"]

log = logging.getLogger("pamd.coordination")

# KEYS: leader, epoch. ARGV: token, ttl ms. Returns {new epoch, 0}, or {0, ms left on the holder's lease}.
ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {redis.call('INCR', KEYS[2]), 0}
end
return {0, redis.call('PTTL', KEYS[1])}
"""
# KEYS: leader. ARGV: token, ttl ms. 1 when renewed, 0 when the lease is not ours (expired or taken).
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# KEYS: leader, events channel. ARGV: token. 1 when released (and followers told), 0 when not ours.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', KEYS[2], 'released')
  return 1
end
return 0
"""
# KEYS: tick, epoch, last tick of the monitor. ARGV: our epoch, expiry s, scheduled_at (ISO, sortable).
# -1: a newer term exists (we are fenced off); 1: claimed; 0: already claimed.
CLAIM = """
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) < current then
  return -1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then
  local last = redis.call('GET', KEYS[3])
  if (not last) or last < ARGV[3] then
    redis.call('SET', KEYS[3], ARGV[3])
  end
  return 1
end
return 0
"""


class RedisCoordinator:
    """See the module docstring. ``run()`` campaigns until cancelled; ``is_leader()`` is true only while this
    replica holds a lease it renewed less than ``renew_deadline`` seconds ago."""

    def __init__(
        self,
        url: str,
        prefix: str = "pamd",
        *,
        ttl: float = 10.0,
        renew_deadline: float | None = None,
        retry_interval: float = 1.0,
        claim_expiry: float = 7 * 86400.0,
        metrics: Metrics | None = None,
        clock: Any = time.monotonic,
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.url = url
        self.safe_url = redact_url(url)
        self.prefix = prefix
        self.ttl = ttl
        self.renew_deadline = renew_deadline if renew_deadline is not None else ttl * 2 / 3
        if not 0 < self.renew_deadline < ttl:
            raise ValueError("renew_deadline must be between 0 and ttl")
        self.retry_interval = retry_interval
        self.claim_expiry = claim_expiry
        self.metrics = metrics
        self.clock = clock
        self.identity = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        # Retries stay short: the renew deadline must still be met.
        # With Sentinel, which server is the master is checked often enough to renew the lease on a new master
        # before the copy replication carried there runs out (see _listen_for_release).
        self._master_recheck = min(1.0, ttl / 6)
        self._redis = redis_client(url, timeout=max(0.5, ttl / 5), backoff_cap=ttl / 10,
                                   master_recheck=self._master_recheck)
        self._scripts = {name: self._redis.register_script(text) for name, text in
                         (("acquire", ACQUIRE), ("renew", RENEW), ("release", RELEASE), ("claim", CLAIM))}
        self._epoch = 0
        self._leading = False
        self._renewed_at = 0.0
        self._last_error = ""
        self._wake = anyio.Event()
        self._new_term = anyio.Event()
        self._follow_wait = retry_interval

    # -- keys ---------------------------------------------------------------------------------------------------

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    # -- Coordinator protocol -----------------------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return self._epoch

    def is_leader(self) -> bool:
        return self._leading and self.clock() - self._renewed_at < self.renew_deadline

    async def start(self) -> None:
        """Check that Redis answers (a clear error at startup rather than a silent follower), and try once to
        become leader, so a replica that finds no leader schedules from its first second."""
        await self.ping()
        await self._step()

    async def run(self) -> None:
        """Campaign and renew until cancelled; on cancellation release the lease if held."""
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._listen_for_release)
                while True:
                    await self._step()
                    interval = self.ttl / 3 if self._leading else self._follow_wait
                    with anyio.move_on_after(interval):
                        await self._wake.wait()
                    self._wake = anyio.Event()
        finally:
            with anyio.CancelScope(shield=True):
                await self.release()

    async def claim_tick(self, monitor: str, scheduled_at: datetime) -> bool:
        if not self.is_leader():
            return False
        stamp = scheduled_at.isoformat()
        try:
            result = await self._scripts["claim"](
                keys=[self.key("tick", monitor, stamp), self.key("epoch"), self.key("last", monitor)],
                args=[self._epoch, int(self.claim_expiry), stamp])
        except RedisError as exc:
            self._failed(f"claiming {monitor} {stamp}: {describe_redis_error(exc)}")
            return False
        outcome = {1: "won", 0: "lost", -1: "fenced"}.get(int(result), "lost")
        if self.metrics is not None:
            self.metrics.tick_claims.labels("won" if outcome == "won" else "lost").inc()
        if outcome == "fenced":
            self._step_down("a newer leadership term exists")
        return outcome == "won"

    async def last_tick(self, monitor: str) -> datetime | None:
        try:
            raw = await self._redis.get(self.key("last", monitor))
        except RedisError:
            return None
        if not raw:
            return None
        return datetime.fromisoformat(raw.decode() if isinstance(raw, bytes) else raw)

    async def ping(self) -> None:
        """Raise :class:`RedisUnavailableError` (one line: the URL, password redacted, and what went wrong) if
        Redis does not answer."""
        try:
            await self._redis.ping()
        except RedisError as exc:
            raise RedisUnavailableError(self.url, exc) from exc

    async def release(self) -> bool:
        """Give up the lease if held (compare-and-delete) and tell followers; True if it was ours."""
        was_leading, self._leading = self._leading, False
        if not was_leading:
            return False
        try:
            released = await self._scripts["release"](keys=[self.key("leader"), self.key("leader", "events")],
                                                      args=[self.identity])
        except RedisError as exc:
            log.warning("could not release the leader lease in %s: %s", self.safe_url, describe_redis_error(exc))
            return False
        self._changed(False)
        return bool(released)

    async def aclose(self) -> None:
        await self.release()
        await self._redis.aclose()

    def status(self) -> dict[str, Any]:
        remaining = self.ttl - (self.clock() - self._renewed_at) if self._leading else None
        return {"backend": "redis", "identity": self.identity, "leader": self.is_leader(), "epoch": self._epoch,
                "lease_remaining_seconds": round(remaining, 3) if remaining is not None else None,
                "prefix": self.prefix, "last_error": self._last_error or None}

    # -- the campaign -------------------------------------------------------------------------------------------

    async def _step(self) -> None:
        try:
            if self._leading:
                sent = self.clock()  # Redis extended the lease after this moment: counting from it errs safe
                renewed = await self._scripts["renew"](keys=[self.key("leader")],
                                                       args=[self.identity, int(self.ttl * 1000)])
                if renewed:
                    self._renewed_at = sent
                else:
                    self._step_down("the lease was lost (expired or taken)")
            else:
                started = self.clock()
                epoch, left_ms = await self._scripts["acquire"](keys=[self.key("leader"), self.key("epoch")],
                                                                args=[self.identity, int(self.ttl * 1000)])
                if int(epoch):
                    self._epoch, self._leading, self._renewed_at = int(epoch), True, started
                    self._changed(True)
                else:
                    # Nothing to win before the holder's lease runs out (unless it announces a release), so a
                    # follower asks again then, not every second: a fraction of a command per second when idle.
                    left = int(left_ms) / 1000
                    if left_ms == -1:  # a lease without expiry, set by hand: look again now and then
                        self._follow_wait = self.retry_interval
                    else:  # -2 (it just expired) or the time left
                        self._follow_wait = max(0.05, min(left + 0.02, self.ttl))
            self._recovered()
        except RedisError as exc:
            self._failed(describe_redis_error(exc))
            self._follow_wait = self.retry_interval
            if self._leading and self.clock() - self._renewed_at >= self.renew_deadline:
                self._step_down("Redis did not answer before the renew deadline")

    async def _listen_for_release(self) -> None:
        """Wake the campaign at once when the leader announces a graceful stop.

        With Sentinel, also when the master changed (asking the sentinels every ``_master_recheck`` seconds):
        a leader then renews at once on the new master, whose copy of the lease is older than the one it had
        been renewing on the old master (the old master takes writes until the sentinel demotes it, about ten
        seconds later); and subscribe again there, as the old master will not hear of releases."""
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(self.key("leader", "events"))
                    while not await master_moved(self._redis, pubsub.connection):
                        message = await pubsub.get_message(ignore_subscribe_messages=True,
                                                           timeout=self._master_recheck)
                        if message is not None and message.get("type") == "message":
                            self._wake.set()
                    log.info("the Redis master changed (a Sentinel failover): following it")
                    self._wake.set()
            except RedisError:
                await anyio.sleep(self.retry_interval)

    def _step_down(self, why: str) -> None:
        if self._leading:
            self._leading = False
            log.warning("stepping down as leader (epoch %d): %s", self._epoch, why)
            self._changed(False)

    async def wait_new_term(self) -> None:
        """Return when this replica next becomes leader (the scheduler then catches up missed ticks)."""
        await self._new_term.wait()

    def _changed(self, leading: bool) -> None:
        if leading:
            log.info("became leader, epoch %d (%s)", self._epoch, self.identity)
            self._new_term.set()
            self._new_term = anyio.Event()
        if self.metrics is not None:
            self.metrics.leader.set(1 if leading else 0)
            self.metrics.leader_epoch.set(self._epoch)
            self.metrics.leadership_changes.inc()

    def _failed(self, problem: str) -> None:
        if problem != self._last_error:  # one line per distinct problem, not one per second
            log.error("redis coordination %s: %s", self.safe_url, problem)
        self._last_error = problem

    def _recovered(self) -> None:
        if self._last_error:
            log.info("redis coordination recovered")
            self._last_error = ""
