"""What keeps AI use cheap and safe: a circuit breaker per provider, the daily spend cap, the phrasing cache.

All three are small, synchronous and clock-injected, so the router stays readable and the tests need no sleeping.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

from pamd.ai.grounding import Phrasing

__all__ = ["CircuitBreaker", "PhrasingCache", "SpendLedger"]

log = logging.getLogger("pamd.ai")


class CircuitBreaker:
    """Opens after ``failures`` consecutive failures and stays open ``cooloff`` seconds; then lets one trial request
    through (half-open): its success closes the circuit, its failure opens it for another cool-off."""

    def __init__(self, failures: int, cooloff: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.cooloff = cooloff
        self.clock = clock
        self._consecutive = 0
        self._open_until: float | None = None
        self._trial = False

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open`` (the cool-off is over; the next request is the trial)."""
        if self._open_until is None:
            return "closed"
        return "open" if self.clock() < self._open_until or self._trial else "half_open"

    def allow(self) -> bool:
        """May a request be sent now? In half-open state only the first caller gets a yes."""
        state = self.state
        if state == "half_open":
            self._trial = True
            return True
        return state == "closed"

    def success(self) -> None:
        self._consecutive, self._open_until, self._trial = 0, None, False

    def abandon(self) -> None:
        """A request let through ended without a verdict (cancelled): a trial may be made again."""
        self._trial = False

    def failure(self) -> None:
        self._consecutive += 1
        if self._trial or self._consecutive >= self.failures:
            self._open_until, self._trial = self.clock() + self.cooloff, False


class SpendLedger:
    """Spend per UTC day against ``cap_usd``. A request reserves its estimated cost before it is sent (so many
    concurrent requests cannot overshoot the cap together) and settles at the billed cost when it returns.

    With a ``path`` the day's spend survives restarts (a JSON file, written at most once a second and on
    :meth:`flush`), so restarting the daemon does not reopen the day's budget.
    """

    def __init__(self, cap_usd: float, path: Path | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.cap_usd = cap_usd
        self.path = path
        self.now = now
        self.day: date = now().date()
        self.spent_usd = 0.0  # billed today
        self.reserved_usd = 0.0  # in flight
        self._written = 0.0
        self._load()

    def _roll(self) -> None:
        today = self.now().astimezone(UTC).date()
        if today != self.day:
            self.day, self.spent_usd = today, 0.0

    def reserve(self, usd: float) -> bool:
        """Reserve ``usd`` for a request if today's spend, in-flight reservations and it stay within the cap."""
        self._roll()
        if self.spent_usd + self.reserved_usd + usd > self.cap_usd:
            return False
        self.reserved_usd += usd
        return True

    def settle(self, reserved: float, billed: float) -> None:
        """Release a reservation of ``reserved`` and book ``billed`` (0 for a failed request)."""
        self._roll()
        self.reserved_usd = max(0.0, self.reserved_usd - reserved)
        self.spent_usd += billed
        if self.path is not None and time.monotonic() - self._written >= 1.0:
            self.flush()

    @property
    def remaining_usd(self) -> float:
        self._roll()
        return max(0.0, self.cap_usd - self.spent_usd - self.reserved_usd)

    def flush(self) -> None:
        """Write today's spend to ``path`` (atomically)."""
        if self.path is None:
            return
        self._written = time.monotonic()
        tmp = self.path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps({"day": self.day.isoformat(), "spent_usd": self.spent_usd}))
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("cannot record the AI spend in %s: %s", self.path, exc)

    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text())
            if date.fromisoformat(data["day"]) == self.day:
                self.spent_usd = float(data["spent_usd"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the unreadable AI spend record %s: %s", self.path, exc)


class PhrasingCache:
    """The last ``size`` checked phrasings, keyed by (fingerprint, facts digest, model): a reminder of an unchanged
    condition costs nothing."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str, str], Phrasing] = OrderedDict()

    def get(self, key: tuple[str, str, str]) -> Phrasing | None:
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
        return found

    def put(self, key: tuple[str, str, str], phrasing: Phrasing) -> None:
        if self.size <= 0:
            return
        self._items[key] = phrasing
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
