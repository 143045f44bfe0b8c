"""Postgres queries of the context monitor: active trips, upcoming calendar events and each user's track.

The same records and skips as :mod:`pamd.store.sqlite_context`, four statements per page of users (keyset
pagination over ``profiles``, :meth:`~pamd.store.pg_base.PostgresBase._pages`):

1. the page of profiles;
2. their active trips (``lower(status) = 'active'``);
3. their calendar events with coordinates starting in ``(now, now + lookahead]``: the exact window is applied in
   SQL (``start_at`` is a timestamptz, so no slack is needed), a range scan of the ``(user_id, start_at)`` index;
4. their fixes recorded since ``now - history_hours``: one ``CROSS JOIN LATERAL`` walk of the
   ``(user_id, recorded_at)`` primary key per user, each row flagged usable or not in SQL (coordinates in range,
   speed unknown or plausible, not recorded after ``now`` plus the clock skew) with its seconds clamped to ``now``
   and rounded to milliseconds, as SQLite computes them. The usable fixes are summarised into a
   :class:`~pamd.store.records_context.Track` per user; the others are skipped and counted with the SQLite module's
   reasons (:func:`pamd.store.sqlite_context._why_bad_fix`).

SQLite cannot hold a NaN (it stores NULL instead); Postgres can, so every double read here goes through
``NULLIF(x, 'NaN')``: a NaN is what SQLite would have held, a NULL, and both stores agree on the records and skips.
Timestamps and dates are typed in Postgres, so unparsable ``start_at``/``recorded_at`` cannot occur here.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

from pamd.store.pg_base import PostgresBase
from pamd.store.records import Profile, format_ts, zone
from pamd.store.records_context import ActiveTrip, CalendarEvent, ContextInput, Fix, Track
from pamd.store.sqlite_context import FUTURE_SKEW, MAX_SPEED_KMH, SQLiteContextQueries, _why_bad_fix, summarize_tracks

if TYPE_CHECKING:
    import asyncpg

_NUM = "NULLIF({0}, 'NaN'::float8)"

# $1: the page's user ids.
_TRIPS_SQL = f"""
SELECT id, user_id, origin, destination, {_NUM.format("dest_lat")}, {_NUM.format("dest_lon")}, start_date, end_date
FROM trips WHERE user_id = ANY($1::text[]) AND lower(status) = 'active' ORDER BY user_id, id
"""

# $1: user ids, $2: now (exclusive), $3: now + look-ahead (inclusive).
_EVENTS_SQL = f"""
SELECT id, user_id, title, start_at, location_name, {_NUM.format("lat")}, {_NUM.format("lon")}
FROM calendar_events
WHERE user_id = ANY($1::text[]) AND start_at > $2 AND start_at <= $3
  AND {_NUM.format("lat")} IS NOT NULL AND {_NUM.format("lon")} IS NOT NULL
ORDER BY user_id, start_at, id
"""

# $1: user ids, $2: oldest fix time, $3: latest acceptable fix time (now + skew), $4: now (seconds clamp).
# Columns: user, recorded_at, POSIX seconds (clamped to now, rounded to ms), lat, lon, speed, usable.
_FIXES_SQL = f"""
SELECT u.id, f.recorded_at, round(extract(epoch FROM least(f.recorded_at, $4::timestamptz)), 3)::float8,
       f.lat, f.lon, f.speed,
       COALESCE(f.lat BETWEEN -90 AND 90 AND f.lon BETWEEN -180 AND 180
                AND (f.speed IS NULL OR f.speed BETWEEN 0 AND {MAX_SPEED_KMH}) AND f.recorded_at <= $3, false)
FROM unnest($1::text[]) AS u(id)
CROSS JOIN LATERAL (
    SELECT l.recorded_at, {_NUM.format("l.lat")} AS lat, {_NUM.format("l.lon")} AS lon,
           {_NUM.format("l.speed_kmh")} AS speed
    FROM user_locations AS l WHERE l.user_id = u.id AND l.recorded_at >= $2
    ORDER BY l.recorded_at
) AS f
"""


class PostgresContextQueries(PostgresBase):
    """What the context monitor reads from Postgres (:class:`pamd.store.records_context.ContextInputSource`)."""

    def _as_sqlite(self) -> SQLiteContextQueries:
        """``self`` for the SQLite module's row checks (:meth:`~SQLiteContextQueries._ctx_trip` and
        :meth:`~SQLiteContextQueries._ctx_event`), which only call ``self._skip``: the rows here have the same columns
        in the same order, so both stores keep, convert and skip them with the same rules and messages."""
        return cast("SQLiteContextQueries", self)

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

        The semantics of :meth:`pamd.store.sqlite_context.SQLiteContextQueries.iter_context_inputs`: events start in
        ``(now, now + lookahead_hours]``; the track covers the fixes recorded in ``[now - history_hours, now]`` (a
        few minutes of clock skew allowed), with the driving time since each user's local midnight as
        :func:`~pamd.store.records_context.summarize_track` counts it with ``moving_speed_kmh`` and
        ``max_gap_minutes``. Unknown timezones are replaced by UTC and reported. Four statements per batch.
        """
        if lookahead_hours < 0 or history_hours < 0:
            raise ValueError("lookahead_hours and history_hours must be >= 0")
        until, since = now + timedelta(hours=lookahead_hours), now - timedelta(hours=history_hours)
        track = (since, moving_speed_kmh, max_gap_minutes)

        async def fetch(conn: asyncpg.Connection, profiles: list[Profile]) -> list[ContextInput]:
            return await self._pg_context_batch(conn, profiles, now, until, track)

        async for batch in self._pages(fetch, batch_size, user_id):
            yield batch

    async def _pg_context_ids(
        self, conn: asyncpg.Connection, ids: list[str], now: datetime, until: datetime,
        track: tuple[datetime, float, float],
    ) -> list[ContextInput]:
        """The inputs of exactly the monitored users among ``ids`` (the candidates of
        :mod:`pamd.store.pg_context_candidates`), in id order, read as a page of the full stream is read."""
        profiles = await self._profiles_by_id(conn, ids)
        return await self._pg_context_batch(conn, profiles, now, until, track) if profiles else []

    async def _pg_context_batch(
        self, conn: asyncpg.Connection, profiles: list[Profile], now: datetime, until: datetime,
        track: tuple[datetime, float, float],
    ) -> list[ContextInput]:
        users: list[tuple[Profile, str]] = []
        for profile in profiles:
            tz_name = profile.timezone
            if zone(tz_name) is None:
                self._skip("profiles", profile.user_id, f"unknown timezone {tz_name!r}, using UTC")
                tz_name = "UTC"
            users.append((profile, tz_name))
        ids = [p.user_id for p in profiles]
        trips: dict[str, list[ActiveTrip]] = {}
        for row in await conn.fetch(_TRIPS_SQL, ids):
            trip = SQLiteContextQueries._ctx_trip(self._as_sqlite(), tuple(row))
            if trip is not None:
                trips.setdefault(row[1], []).append(trip)
        events: dict[str, list[CalendarEvent]] = {}
        for row in await conn.fetch(_EVENTS_SQL, ids, now, until):
            event = SQLiteContextQueries._ctx_event(self._as_sqlite(), tuple(row))
            if event is not None:
                events.setdefault(row[1], []).append(event)
        since, moving_speed_kmh, max_gap_minutes = track
        rows = await conn.fetch(_FIXES_SQL, ids, since, now + FUTURE_SKEW, now)
        tracks = self._pg_tracks(rows, users, now, moving_speed_kmh, max_gap_minutes)
        return [
            ContextInput(
                user_id=profile.user_id, full_name=profile.full_name, timezone=tz_name,
                preferred_units=profile.preferred_units, currency=profile.currency,
                max_driving_hours=profile.max_driving_hours, trips=tuple(trips.get(profile.user_id, ())),
                events=tuple(events.get(profile.user_id, ())), track=tracks.get(profile.user_id),
            )
            for profile, tz_name in users
        ]

    def _pg_tracks(
        self, rows: Sequence[Any], users: list[tuple[Profile, str]], now: datetime, moving_speed_kmh: float,
        max_gap_minutes: float,
    ) -> dict[str, Track]:
        """Each user's :class:`Track` from the ``_FIXES_SQL`` rows; unusable fixes are skipped and counted."""
        fixes: dict[str, list[Fix]] = {}
        for uid, recorded_at, seconds, lat, lon, speed, usable in rows:
            if usable:
                fixes.setdefault(uid, []).append((seconds, lat, lon, speed))
            else:
                stamp = format_ts(recorded_at)
                why = _why_bad_fix((uid, stamp, recorded_at.timestamp(), lat, lon, speed), now)
                self._skip("user_locations", f"{uid}@{stamp}", why)
        return summarize_tracks(users, fixes, now, moving_speed_kmh, max_gap_minutes)
