"""Records of the context monitor: where a user is, their active trips and their upcoming calendar events.

Everything is SI and UTC: coordinates in degrees (WGS84), speeds in km/h, timestamps timezone-aware UTC.
:class:`ContextBounds` and :func:`zone_clock` serve stores that leave out users no rule can fire for
(:class:`ContextCandidateSource`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol, runtime_checkable

import msgspec

from pamd.geo import great_circle_km
from pamd.store.records import Units, zone


class LocationPoint(msgspec.Struct, frozen=True, kw_only=True):
    """One ``user_locations`` fix. ``speed_kmh`` is ``None`` when the device did not report one."""

    recorded_at: datetime
    lat: float
    lon: float
    speed_kmh: float | None = None


class ActiveTrip(msgspec.Struct, frozen=True, kw_only=True):
    """A ``trips`` row with ``status = 'active'``. The destination's coordinates may be unknown (``None``)."""

    id: str
    origin: str | None = None
    destination: str | None = None
    dest_lat: float | None = None
    dest_lon: float | None = None
    start_date: date | None = None
    end_date: date | None = None


class CalendarEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An upcoming ``calendar_events`` row that has a location with coordinates."""

    id: str
    title: str
    start_at: datetime
    lat: float
    lon: float
    location_name: str | None = None


class Track(msgspec.Struct, frozen=True, kw_only=True):
    """What a user's recent fixes say: the latest fix (and the one before it, for a speed when none was reported),
    how many fixes there are, and the time spent driving since local midnight (see :func:`summarize_track`)."""

    latest: LocationPoint
    previous: LocationPoint | None = None
    recent_points: int = 1  # fixes in the hour up to the latest one (how dense the data is, whatever its age)
    points_today: int = 0  # fixes since local midnight
    driving_hours: float = 0.0  # since local midnight


class ContextInput(msgspec.Struct, frozen=True, kw_only=True):
    """What the context monitor needs about one user at a given ``now``.

    ``timezone`` is a valid IANA name (an unknown one is replaced by ``"UTC"`` and reported by the store).
    ``max_driving_hours`` is the profile's limit, ``None`` when unknown. ``events`` start after ``now`` and
    within the look-ahead, soonest first. ``track`` summarises the fixes of the last hours, ``None`` without any.
    """

    user_id: str
    full_name: str | None = None
    timezone: str = "UTC"
    preferred_units: Units = "metric"
    currency: str = "USD"
    max_driving_hours: float | None = None
    trips: tuple[ActiveTrip, ...] = ()
    events: tuple[CalendarEvent, ...] = ()
    track: Track | None = None


@runtime_checkable
class ContextInputSource(Protocol):
    """A store that can stream :class:`ContextInput` batches (what the context monitor needs)."""

    def iter_context_inputs(
        self,
        now: datetime,
        batch_size: int = 500,
        user_id: str | None = None,
        *,
        lookahead_hours: float = 24.0,
        history_hours: float = 27.0,
        moving_speed_kmh: float = 5.0,
        max_gap_minutes: float = 30.0,
    ) -> AsyncGenerator[list[ContextInput], None]:
        """Yield users in batches of at most ``batch_size`` (only ``user_id`` when given): events starting in
        ``(now, now + lookahead_hours]``; the track of the fixes recorded in ``[now - history_hours, now]``, with
        driving time as :func:`summarize_track` computes it."""
        ...


class ContextBounds(msgspec.Struct, frozen=True, kw_only=True):
    """The context monitor's thresholds, for a store that leaves out users no rule can fire for.

    ``max_age_minutes``: the oldest a latest fix can be and still give a confidence at the monitor's minimum
    (``None``: any age can). The evening window is in minutes after local midnight (it may wrap past midnight).
    """

    evening_start_minute: int = 17 * 60
    evening_end_minute: int = 22 * 60
    max_age_minutes: float | None = 120.0
    max_driving_hours: float = 6.0  # when the profile has no limit
    average_speed_kmh: float = 80.0
    road_factor: float = 1.2
    leave_by_buffer_minutes: float = 15.0
    leave_by_window_hours: float = 3.0


@runtime_checkable
class ContextCandidateSource(Protocol):
    """A store that can stream only users for whom a context rule could fire (a superset: the monitor decides)."""

    def iter_context_candidates(
        self,
        bounds: ContextBounds,
        now: datetime,
        batch_size: int = 500,
        *,
        lookahead_hours: float = 24.0,
        history_hours: float = 27.0,
        moving_speed_kmh: float = 5.0,
        max_gap_minutes: float = 30.0,
    ) -> AsyncGenerator[list[ContextInput], None]:
        """As ``iter_context_inputs`` over every user, but only users with an evening drive on an active trip,
        a located event near its leave-by time or a long drive today (and those with a row to report)."""
        ...


def zone_clock(now: datetime, name: object, bounds: ContextBounds) -> tuple[float, bool, float, bool]:
    """For the time zone ``name`` at ``now``: local midnight (POSIX seconds, as the track summary counts driving
    from it), whether the local time is in the evening window, the hours until the window's next end (when a late
    arrival begins), and whether the zone is known (an unknown one is read as UTC, as the full stream reads it).
    The same wall-clock arithmetic as the monitor's rules, for the stores' context candidates."""
    tz = zone(name) if isinstance(name, str) else None
    local = now.astimezone(tz or UTC)
    midnight = datetime.combine(local.date(), time(), tzinfo=local.tzinfo)
    minute, lo, hi = local.hour * 60 + local.minute, bounds.evening_start_minute, bounds.evening_end_minute
    evening = lo <= minute < hi if lo <= hi else minute >= lo or minute < hi
    day = local.date() + timedelta(days=hi // (24 * 60))
    at = time((hi % (24 * 60)) // 60, hi % 60)
    late = datetime.combine(day, at, tzinfo=local.tzinfo).astimezone(UTC)
    if late <= local:
        late = datetime.combine(day + timedelta(days=1), at, tzinfo=local.tzinfo).astimezone(UTC)
    return midnight.timestamp(), evening, (late - now) / HOUR, tz is not None


def valid_coordinates(lat: float | None, lon: float | None) -> bool:
    """True when ``lat``/``lon`` are finite numbers within -90..90 and -180..180."""
    return lat is not None and lon is not None and -90 <= lat <= 90 and -180 <= lon <= 180


HOUR = timedelta(hours=1)


distance_km = great_circle_km
"""Great-circle distance in km (:func:`pamd.geo.great_circle_km`)."""


Fix = tuple[float, float, float, float | None]
"""A fix as stores stream it: ``(POSIX seconds UTC, lat, lon, speed_kmh or None)``; plain floats keep summarising
thousands of fixes cheap."""


def interval_speed(a: Fix, b: Fix) -> float | None:
    """The speed between two consecutive fixes: the mean of their reported speeds, else the one reported, else
    the distance between them over the time between them (``None`` when they were recorded at the same time)."""
    if a[3] is not None and b[3] is not None:
        return (a[3] + b[3]) / 2
    if a[3] is not None or b[3] is not None:
        return a[3] if a[3] is not None else b[3]
    seconds = b[0] - a[0]
    return distance_km(a[1], a[2], b[1], b[2]) / seconds * 3600 if seconds > 0 else None


def _seconds(fix: Fix) -> float:
    return fix[0]


def fix_point(fix: Fix) -> LocationPoint:
    """A :class:`LocationPoint` from a :data:`Fix`."""
    return LocationPoint(recorded_at=datetime.fromtimestamp(fix[0], UTC), lat=fix[1], lon=fix[2], speed_kmh=fix[3])



def summarize_track(fixes: Sequence[Fix], day_start: datetime, now: datetime,
                    moving_speed_kmh: float = 5.0, max_gap_minutes: float = 30.0) -> Track | None:
    """Summarise fixes (none after ``now``) into a :class:`Track`, or ``None`` without fixes. Fixes are expected
    oldest first and sorted when they are not. Only the first four items of each fix are read.

    Driving time: the intervals between consecutive fixes whose :func:`interval_speed` is above
    ``moving_speed_kmh``, each counted for at most ``max_gap_minutes`` (a longer gap is missing data, not
    driving), clipped to ``[day_start, now]``.
    """
    if not fixes:
        return None
    gap, start_s, now_s = max_gap_minutes * 60, day_start.timestamp(), now.timestamp()
    hour_ago = fixes[-1][0] - 3600
    total = 0.0
    today = recent = 0
    a: Fix | None = None
    for b in fixes:
        t = b[0]
        if a is not None and t < a[0]:
            return summarize_track(sorted(fixes, key=_seconds), day_start, now, moving_speed_kmh, max_gap_minutes)
        if t >= hour_ago:
            recent += 1
        if t >= start_s:
            today += 1
            if a is not None:
                speed = interval_speed(a, b)
                if speed is not None and speed > moving_speed_kmh:
                    end = min(t, a[0] + gap, now_s)
                    begin = a[0] if a[0] > start_s else start_s
                    if end > begin:
                        total += end - begin
        a = b
    return Track(latest=fix_point(fixes[-1]), previous=fix_point(fixes[-2]) if len(fixes) > 1 else None,
                 recent_points=recent, points_today=today, driving_hours=total / 3600)
