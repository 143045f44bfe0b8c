"""Users' notification preferences: opt-out, quiet hours in their timezone, and a daily cap. Pure; no I/O.

A user may have a ``notification_preferences`` row for ``monitor = '*'`` (all monitors) and rows for single
monitors; a monitor's own row wins field by field over the ``'*'`` row, which wins over ``[alerts]`` defaults.
"""

from __future__ import annotations

import functools
from datetime import UTC, date, datetime, time, timedelta, tzinfo

import msgspec

from pamd.store.records import zone as zone_or_none


class PreferenceRow(msgspec.Struct, frozen=True, kw_only=True):
    """One ``notification_preferences`` row. ``None`` fields inherit (see the module docstring)."""

    user_id: str
    monitor: str
    enabled: bool | None = None
    quiet_start: time | None = None
    quiet_end: time | None = None
    max_per_day: int | None = None


class Preferences(msgspec.Struct, frozen=True, kw_only=True):
    """The effective preferences of one user for one monitor."""

    enabled: bool = True
    quiet_start: time | None = None
    quiet_end: time | None = None
    max_per_day: int | None = None
    cap_scope: str = "*"  # "*": the cap counts alerts of every monitor; a monitor name: only that monitor's
    timezone: str = "UTC"

    @property
    def tz(self) -> tzinfo:
        return zone(self.timezone)


def zone(name: str) -> tzinfo:
    """The user's zone, or UTC when the name is not a known IANA zone."""
    return zone_or_none(name) or UTC


def parse_hhmm(value: object) -> time | None:
    """``"22:00"`` (or ``"22:00:00"``) to a :class:`time`; ``None`` for empty or unparsable values."""
    if isinstance(value, time):
        return value
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return time.fromisoformat(value.strip())
    except ValueError:
        return None


def effective(
    rows: list[PreferenceRow],
    monitor: str,
    timezone: str,
    *,
    default_max_per_day: int | None = None,
    default_quiet: tuple[time, time] | None = None,
) -> Preferences:
    """Merge a user's rows for ``monitor`` and ``'*'`` over the defaults."""
    enabled, max_per_day, cap_scope = True, default_max_per_day, "*"
    quiet_start, quiet_end = default_quiet if default_quiet else (None, None)
    for row in sorted((r for r in rows if r.monitor in ("*", monitor)), key=lambda r: r.monitor != "*"):
        if row.enabled is not None:
            enabled = enabled and row.enabled if row.monitor == "*" else row.enabled
        if row.quiet_start is not None and row.quiet_end is not None:
            quiet_start, quiet_end = row.quiet_start, row.quiet_end
        if row.max_per_day is not None:
            max_per_day, cap_scope = row.max_per_day, row.monitor
    return Preferences(enabled=enabled, quiet_start=quiet_start, quiet_end=quiet_end, max_per_day=max_per_day,
                       cap_scope=cap_scope, timezone=timezone)


def local_midnight(now: datetime, tz: tzinfo) -> datetime:
    """The UTC instant the user's current local day began."""
    local = now.astimezone(tz)
    return _at(local.date(), time(0), tz)


def quiet_until(now: datetime, prefs: Preferences) -> datetime | None:
    """If ``now`` falls in the user's quiet hours, the UTC instant they end; else ``None``.

    Windows may cross midnight (22:00-07:00). Wall times are the user's; on a DST day a quiet end that does not
    exist (02:30 in a spring-forward gap) is moved past the gap, and an ambiguous one takes its first occurrence.
    An empty window (start == end) means no quiet hours.
    """
    start, end = prefs.quiet_start, prefs.quiet_end
    if start is None or end is None or start == end:
        return None
    return _quiet_until(now, start, end, prefs.timezone)


@functools.lru_cache(maxsize=4096)  # a tick decides thousands of alerts at one ``now`` over few zones and windows
def _quiet_until(now: datetime, start: time, end: time, timezone: str) -> datetime | None:
    tz = zone(timezone)
    local = now.astimezone(tz)
    today = local.date()
    for day in (today - timedelta(days=1), today):
        begin = _at(day, start, tz)
        finish = _at(day + timedelta(days=1) if end <= start else day, end, tz)
        if begin <= now < finish:
            return finish
    return None


def _at(day: date, wall: time, tz: tzinfo) -> datetime:
    """The UTC instant of wall-clock ``wall`` on ``day`` in ``tz``.

    PEP 495: with ``fold=0`` an ambiguous time takes its first occurrence, and a time in a spring-forward gap is
    read with the offset before the gap, which lands past it (02:30 in a 02:00-03:00 gap becomes 03:30).
    """
    return datetime.combine(day, wall).replace(tzinfo=tz, fold=0).astimezone(UTC)
