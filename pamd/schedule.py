"""Cron expressions in an IANA timezone, with Debian cron's DST behaviour (via cronsim).

Expressions have 5 fields, or 6 with a trailing seconds field (cronsim's syntax), or one of the ``@hourly``-style
aliases. All datetimes returned are timezone-aware UTC.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_PROBE = datetime(2026, 1, 1, tzinfo=UTC)


class ScheduleError(ValueError):
    """A cron expression or timezone that cannot be used."""


def load_timezone(name: str) -> ZoneInfo:
    """The IANA zone ``name``, or :class:`ScheduleError`."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(f"unknown timezone {name!r} (expected an IANA name such as 'Europe/Berlin')") from exc


class CronSchedule:
    """A cron expression bound to a timezone."""

    def __init__(self, expr: str, timezone: str = "UTC") -> None:
        self.expr = expr.strip()
        self.timezone = timezone
        self.tz = load_timezone(timezone)
        self._cron = ALIASES.get(self.expr.lower(), self.expr)
        try:
            next(CronSim(self._cron, _PROBE.astimezone(self.tz)))
        except (CronSimError, StopIteration) as exc:
            raise ScheduleError(f"bad cron expression {expr!r}: {exc or 'never fires'}") from exc

    def __repr__(self) -> str:
        return f"CronSchedule({self.expr!r}, {self.timezone!r})"

    def iter_after(self, after: datetime) -> Iterator[datetime]:
        """Fire times strictly after ``after``, in UTC, forever."""
        for local in CronSim(self._cron, after.astimezone(self.tz)):
            yield local.astimezone(UTC)

    def next_after(self, after: datetime) -> datetime:
        return next(self.iter_after(after))

    def next_n(self, after: datetime, n: int) -> list[datetime]:
        return list(itertools.islice(self.iter_after(after), n))

    def previous_at_or_before(self, moment: datetime) -> datetime:
        """The latest fire time not after ``moment``."""
        local = moment.astimezone(self.tz)
        if local.microsecond:
            local = local.replace(microsecond=0) + timedelta(seconds=1)
        else:
            local += timedelta(seconds=1)
        return next(CronSim(self._cron, local, reverse=True)).astimezone(UTC)

    def between(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """Fire times in ``(start, end]``."""
        for fire in self.iter_after(start):
            if fire > end:
                return
            yield fire

    def min_interval(self, after: datetime, samples: int = 8) -> timedelta:
        """The shortest gap between consecutive fires over the next ``samples`` fires."""
        fires = self.next_n(after, samples + 1)
        return min(b - a for a, b in itertools.pairwise(fires))
