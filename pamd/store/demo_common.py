"""What the per-monitor demo modules share: the demo users and row helpers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pamd.store.records import format_date, format_ts

Row = dict[str, Any]


@dataclass(frozen=True)
class DemoUser:
    """A demo traveller: ``key`` is ``u01``..., ``user_id`` is ``demo-u01``; home position; primary vehicle."""

    key: str
    user_id: str
    timezone: str
    lat: float
    lon: float
    vehicle_id: str | None

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def local_date(self, now: datetime, days: float = 0.0) -> str:
        """The user's local calendar date ``days`` after ``now``, as ``YYYY-MM-DD``."""
        return (now + timedelta(days=days)).astimezone(self.tz).date().isoformat()


def row(prefix: str, key: str, n: int | None = None, **values: Any) -> Row:
    """A row with a deterministic id ``demo-<prefix><user>[-n]`` owned by ``demo-<key>``."""
    suffix = f"-{n:02d}" if n is not None else ""
    return {"id": f"demo-{prefix}{key[1:]}{suffix}", "user_id": f"demo-{key}", **values}


def day(now: datetime, days: float) -> str:
    """The UTC date ``days`` after ``now``."""
    return format_date(now + timedelta(days=days))


def at(now: datetime, days: float = 0.0, hours: float = 0.0) -> str:
    """The UTC timestamp ``days`` and ``hours`` after ``now``."""
    return format_ts(now + timedelta(days=days, hours=hours))
