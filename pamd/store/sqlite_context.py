"""SQLite queries of the context monitor: active trips, upcoming calendar events and each user's track.

Per page of users (keyset pagination over ``profiles``): one query for their active trips, one for their calendar
events with coordinates starting within the look-ahead, one for their usable fixes of the last hours (checked and
converted to plain numbers by SQLite), which are summarised into a :class:`~pamd.store.records_context.Track` per
user (:func:`~pamd.store.records_context.summarize_track`). An index-only count of the fixes tells whether some were
bad (coordinates out of range or not numbers, unparsable timestamps, speeds below 0 or above 400 km/h, recorded in
the future); only then are those rows read, to be skipped and counted. Trips with bad coordinates and events with
unparsable times or bad coordinates are skipped and counted too.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncGenerator, Mapping, Sequence
from datetime import datetime, time, timedelta
from itertools import groupby
from operator import itemgetter

from pamd.store.records import Profile, finite_or_none, format_ts, parse_ts, zone
from pamd.store.records_budget import parse_date
from pamd.store.records_context import (
    ActiveTrip,
    CalendarEvent,
    ContextInput,
    Fix,
    Track,
    summarize_track,
    valid_coordinates,
)
from pamd.store.sqlite_base import SQLiteBase

SLACK = timedelta(hours=14)
"""How far a timestamp written with a UTC offset (or without a ``Z``) can sort away from its UTC text."""
MAX_SPEED_KMH = 400.0
"""Reported speeds above this are bad data."""
FUTURE_SKEW = timedelta(minutes=5)
"""Fixes recorded up to this far after ``now`` are accepted as ``now`` (device clocks drift); later ones are bad."""

_IDS = "user_id IN (SELECT value FROM json_each(?))"

_TRIPS_SQL = f"""
SELECT id, user_id, origin, destination, dest_lat, dest_lon, start_date, end_date FROM trips
WHERE {_IDS} AND lower(status) = 'active' ORDER BY user_id, id
"""

# Timestamps are compared as text first (index range), with slack for rows written with another UTC offset or
# format; the exact window is applied after parsing.
_EVENTS_SQL = f"""
SELECT id, user_id, title, start_at, location_name, lat, lon FROM calendar_events
WHERE {_IDS} AND start_at >= ? AND start_at <= ? AND lat IS NOT NULL AND lon IS NOT NULL
ORDER BY user_id, start_at, id
"""

# A usable fix: coordinates in range, speed unknown or plausible, a parsable timestamp not in the future (``?``).
_VALID_FIX = f"""lat BETWEEN -90 AND 90 AND lon BETWEEN -180 AND 180
    AND (speed_kmh IS NULL OR speed_kmh BETWEEN 0 AND {MAX_SPEED_KMH}) AND julianday(recorded_at) <= ?"""

# The usable fixes as plain (POSIX seconds, lat, lon, speed, user) rows: SQLite parses the timestamps and checks the
# values, much faster than Python would. Seconds are clamped to now and rounded to the stored milliseconds.
_FIXES_SQL = f"""
SELECT round(min((julianday(recorded_at) - 2440587.5) * 86400.0, ?), 3), lat, lon, speed_kmh, user_id
FROM user_locations WHERE {_IDS} AND recorded_at >= ? AND {_VALID_FIX}
ORDER BY user_id, recorded_at
"""

# How many fixes each user has in the window (index only): more than the usable ones means bad rows to report.
_FIX_COUNT_SQL = f"""
SELECT user_id, COUNT(*) FROM user_locations WHERE {_IDS} AND recorded_at >= ? GROUP BY user_id
"""

_BAD_FIXES_SQL = f"""
SELECT user_id, recorded_at, (julianday(recorded_at) - 2440587.5) * 86400.0, lat, lon, speed_kmh
FROM user_locations WHERE {_IDS} AND recorded_at >= ? AND NOT COALESCE(({_VALID_FIX}), 0)
"""


class SQLiteContextQueries(SQLiteBase):
    """What the context monitor reads from SQLite (:class:`pamd.store.records_context.ContextInputSource`)."""

    async def iter_context_inputs(
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
        """Stream monitored users with their active trips, upcoming located events and track.

        Each batch of ``batch_size`` users costs five queries (profiles, trips, events, fixes, fix count), plus
        one to report bad fixes when there are some. Events start
        in ``(now, now + lookahead_hours]``; the track covers the fixes recorded in ``[now - history_hours, now]``
        (a few minutes of clock skew allowed), with the driving time since each user's local midnight as
        :func:`~pamd.store.records_context.summarize_track` counts it with ``moving_speed_kmh`` and
        ``max_gap_minutes``. Unknown timezones are replaced by UTC and reported.
        """
        if lookahead_hours < 0 or history_hours < 0:
            raise ValueError("lookahead_hours and history_hours must be >= 0")
        until, since = now + timedelta(hours=lookahead_hours), now - timedelta(hours=history_hours)
        track = (since, moving_speed_kmh, max_gap_minutes)

        async for batch in self._pages("_context_batch", (now, until, track), ContextInput, batch_size, user_id):
            yield batch

    def _context_batch(
        self, conn: sqlite3.Connection, profiles: list[Profile], now: datetime, until: datetime,
        track: tuple[datetime, float, float],
    ) -> list[ContextInput]:
        users: list[tuple[Profile, str]] = []
        for profile in profiles:
            tz_name = profile.timezone
            if zone(tz_name) is None:
                self._skip("profiles", profile.user_id, f"unknown timezone {tz_name!r}, using UTC")
                tz_name = "UTC"
            users.append((profile, tz_name))
        ids = json.dumps([p.user_id for p in profiles])
        cursor = conn.cursor()
        cursor.row_factory = None
        trips: dict[str, list[ActiveTrip]] = {}
        for row in cursor.execute(_TRIPS_SQL, [ids]):
            trip = self._ctx_trip(row)
            if trip is not None:
                trips.setdefault(row[1], []).append(trip)
        events: dict[str, list[CalendarEvent]] = {}
        for row in cursor.execute(_EVENTS_SQL, [ids, format_ts(now - SLACK), format_ts(until + SLACK)]):
            event = self._ctx_event(row)
            if event is not None and now < event.start_at <= until:
                events.setdefault(row[1], []).append(event)
        tracks = self._ctx_tracks(cursor, users, now, *track, ids)
        return [
            ContextInput(
                user_id=profile.user_id, full_name=profile.full_name, timezone=tz_name,
                preferred_units=profile.preferred_units, currency=profile.currency,
                max_driving_hours=profile.max_driving_hours, trips=tuple(trips.get(profile.user_id, ())),
                events=tuple(events.get(profile.user_id, ())), track=tracks.get(profile.user_id),
            )
            for profile, tz_name in users
        ]

    def _ctx_tracks(
        self, cursor: sqlite3.Cursor, users: list[tuple[Profile, str]], now: datetime, since: datetime,
        moving_speed_kmh: float, max_gap_minutes: float, ids: str,
    ) -> dict[str, Track]:
        """Each user's :class:`Track` from their usable fixes since ``since``; bad fixes are skipped and counted."""
        since_text, latest = format_ts(since), _julian(now + FUTURE_SKEW)
        rows = cursor.execute(_FIXES_SQL, [now.timestamp(), ids, since_text, latest]).fetchall()
        # The rows are (seconds, lat, lon, speed, user): fixes with the user appended, which summarize_track ignores.
        fixes: dict[str, list[Fix]] = {uid: list(group) for uid, group in groupby(rows, key=itemgetter(4))}
        counts = cursor.execute(_FIX_COUNT_SQL, [ids, since_text]).fetchall()
        spoiled = [uid for uid, count in counts if count > len(fixes.get(uid, ()))]
        if spoiled:
            for row in cursor.execute(_BAD_FIXES_SQL, [json.dumps(spoiled), since_text, latest]):
                self._skip("user_locations", f"{row[0]}@{row[1]}", _why_bad_fix(row, now))
        return summarize_tracks(users, fixes, now, moving_speed_kmh, max_gap_minutes)

    def _ctx_trip(self, row: tuple[object, ...]) -> ActiveTrip | None:
        trip_id, _uid, origin, destination, raw_lat, raw_lon, start, end = row
        lat, lon = finite_or_none(raw_lat), finite_or_none(raw_lon)
        if raw_lat is None and raw_lon is None:
            lat = lon = None  # unknown destination: kept, the rules say why they cannot judge it
        elif not valid_coordinates(lat, lon):
            self._skip("trips", trip_id, f"bad destination coordinates {raw_lat!r}, {raw_lon!r}")
            return None
        return ActiveTrip(id=str(trip_id), origin=_text(origin), destination=_text(destination), dest_lat=lat,
                          dest_lon=lon, start_date=parse_date(start), end_date=parse_date(end))

    def _ctx_event(self, row: tuple[object, ...]) -> CalendarEvent | None:
        event_id, _uid, title, raw_start, location, raw_lat, raw_lon = row
        start = parse_ts(raw_start)
        lat, lon = finite_or_none(raw_lat), finite_or_none(raw_lon)
        if start is None:
            self._skip("calendar_events", event_id, f"unparsable start_at {raw_start!r}")
        elif not valid_coordinates(lat, lon):
            self._skip("calendar_events", event_id, f"bad coordinates {raw_lat!r}, {raw_lon!r}")
        else:
            assert lat is not None and lon is not None
            return CalendarEvent(id=str(event_id), title=_text(title) or "your event", start_at=start, lat=lat,
                                 lon=lon, location_name=_text(location))
        return None


def _julian(moment: datetime) -> float:
    return moment.timestamp() / 86400.0 + 2440587.5


def _why_bad_fix(row: tuple[object, ...], now: datetime) -> str:
    _uid, raw_at, seconds, raw_lat, raw_lon, raw_speed = row
    lat, lon = finite_or_none(raw_lat), finite_or_none(raw_lon)
    if not isinstance(seconds, float):
        return f"unparsable recorded_at {raw_at!r}"
    if seconds > (now + FUTURE_SKEW).timestamp():
        return f"recorded in the future ({raw_at})"
    if not valid_coordinates(lat, lon):
        return f"bad coordinates {raw_lat!r}, {raw_lon!r}"
    return f"bad speed_kmh {raw_speed!r}"


def _text(value: object) -> str | None:
    return str(value).strip() or None if value is not None else None


def summarize_tracks(
    users: Sequence[tuple[Profile, str]], fixes: Mapping[str, Sequence[Fix]], now: datetime,
    moving_speed_kmh: float, max_gap_minutes: float,
) -> dict[str, Track]:
    """Each user's driving today (since local midnight in their timezone) from their usable fixes, for those with
    any. Shared by every store."""
    midnights: dict[str, datetime] = {}  # timezone -> today's local midnight
    tracks: dict[str, Track] = {}
    for profile, tz_name in users:
        midnight = midnights.get(tz_name)
        if midnight is None:
            local = now.astimezone(zone(tz_name))
            midnight = midnights[tz_name] = datetime.combine(local.date(), time(), tzinfo=local.tzinfo)
        track = summarize_track(fixes.get(profile.user_id, []), midnight, now, moving_speed_kmh, max_gap_minutes)
        if track is not None:
            tracks[profile.user_id] = track
    return tracks
