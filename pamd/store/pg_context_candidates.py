"""The context monitor's candidates on Postgres: only users for whom a rule could fire come back.

Reading every user's trips, events and track into Python is what makes a full tick slow. Per page of users (keyset on
``profiles.id``, ``scan_size`` at a time) one statement walks each user's fixes of the history window (the
``(user_id, recorded_at)`` primary key, as :mod:`pamd.store.pg_context` reads them, with the same usable-or-not flag
and clamped, rounded seconds), looks at their active trips and upcoming located events, and keeps the users for whom
a rule of :mod:`plugins.context_rules` could fire. Every rule needs a usable latest fix young enough for its
confidence to reach the monitor's minimum (``ContextBounds.max_age_minutes``); on top of that, a user comes back for

* ``overnight_stop``: the latest fix possibly moving (its reported speed, else its speed from the fix before it,
  above the threshold), the local time in the evening window, and an active trip whose destination is at least as far
  (straight line x road factor at the average speed) as the time left until the window's end;
* ``leave_by``: an event with coordinates starting in ``(now, now + lookahead]`` far enough from the latest fix
  for its leave-by time (start - travel - buffer) to be within the reminder window;
* ``driving_rest``: the latest fix possibly moving and an upper bound on today's driving above the user's limit:
  :func:`~pamd.store.records_context.summarize_track`'s intervals (same clipping to local midnight, ``now`` and the
  longest gap), each counted unless its speed is known to be at or below the threshold.

Each user's local midnight, evening flag and hours until the evening's end are computed in Python per time zone
(:func:`~pamd.store.records_context.zone_clock`) and passed in. Comparisons carry margins (a minute on times and
ages, a millionth on speeds and hours, a billionth on distances): the candidates are a superset, and the monitor
decides on their full inputs, read by :meth:`~pamd.store.pg_context.PostgresContextQueries._pg_context_ids` exactly
as the full stream reads them. The confidence factors other than freshness and the "already there" distance are left
to the monitor (they only ever remove an alert); the minute of margin covers the leave-by time's rounding.

The statement is cheap (about 40 ms per 5,000 demo-shaped users, of whom 3.8 % come back) but its estimated cost is
high (the walks of fixes), so it runs with JIT off (:func:`~pamd.store.pg_scan.fetch_page`): compiling it would take
longer than running it.

A user also comes back, whatever their data, when the full stream would skip and report something of theirs: a
fix it cannot use, an active trip or upcoming event with bad coordinates, an unknown time zone.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from pamd.geo import EARTH_RADIUS_KM
from pamd.store.pg_context import PostgresContextQueries
from pamd.store.pg_scan import ZONES_SQL, fetch_page, page_where, scan_batches
from pamd.store.records_context import ContextBounds, ContextInput, zone_clock
from pamd.store.sqlite_base import INACTIVE_STATUSES
from pamd.store.sqlite_context import FUTURE_SKEW, MAX_SPEED_KMH

if TYPE_CHECKING:
    import asyncpg

_NUM = "NULLIF({0}, 'NaN'::float8)"
_VALID = "COALESCE({0} BETWEEN -90 AND 90 AND {1} BETWEEN -180 AND 180, false)"


def _km(lat1: str, lon1: str, lat2: str, lon2: str) -> str:
    """SQL for :func:`pamd.geo.great_circle_km` (haversine) between two points."""
    return (f"(2 * {EARTH_RADIUS_KM} * asin(least(1.0, sqrt(sin(radians({lat2} - {lat1}) / 2) ^ 2 + cos(radians("
            f"{lat1})) * cos(radians({lat2})) * sin(radians({lon2} - {lon1}) / 2) ^ 2))))")


# {where}: profile_where()'s clause (its parameter first when paging). Then: $a inactive statuses, $b page size,
# $c/$d/$e/$f/$g time zones (name, local midnight in POSIX seconds, evening, hours to the evening's end, known),
# $h now, $i oldest fix time, $j latest usable fix time (now + skew), $k now + look-ahead, $l the oldest latest
# fix that can still alert (POSIX seconds), $m moving speed, $n longest gap (s), $o default driving limit (h),
# $p hours of driving per straight-line km (road factor / average speed), $q leave-by window + buffer (h).
_SCAN_SQL = f"""
WITH page AS (
    SELECT id, COALESCE(NULLIF(timezone, ''), 'UTC') AS tz,
           CASE WHEN max_driving_hours > 0 AND max_driving_hours < 'Infinity'::float8 THEN max_driving_hours
                ELSE ${{o}}::float8 END AS hours_limit
    FROM profiles WHERE {{where}} AND COALESCE(status, 'active') <> ALL(${{a}}::text[]) ORDER BY id LIMIT ${{b}}
),
span AS (SELECT min(id) AS lo, max(id) AS hi, count(*) AS n FROM page),
u AS (
    SELECT page.id, page.hours_limit, t.midnight, t.evening, t.to_late, t.known FROM page
    LEFT JOIN unnest(${{c}}::text[], ${{d}}::float8[], ${{e}}::bool[], ${{f}}::float8[], ${{g}}::bool[])
        AS t(name, midnight, evening, to_late, known) ON t.name = page.tz
),
f AS (
    SELECT u.id, u.midnight, x.recorded_at, x.lat, x.lon, x.speed,
           round(extract(epoch FROM least(x.recorded_at, ${{h}}::timestamptz)), 3)::float8 AS s,
           COALESCE(x.lat BETWEEN -90 AND 90 AND x.lon BETWEEN -180 AND 180
                    AND (x.speed IS NULL OR x.speed BETWEEN 0 AND {MAX_SPEED_KMH}) AND x.recorded_at <= ${{j}}, false)
               AS usable
    FROM u CROSS JOIN LATERAL (
        SELECT l.recorded_at, {_NUM.format("l.lat")} AS lat, {_NUM.format("l.lon")} AS lon,
               {_NUM.format("l.speed_kmh")} AS speed
        FROM user_locations AS l WHERE l.user_id = u.id AND l.recorded_at >= ${{i}}
        ORDER BY l.recorded_at  -- keeps the walk per user: flattened, it became a merge join from the first id
    ) AS x
),
g AS (
    SELECT f.*, lag(s) OVER w AS s0, lag(lat) OVER w AS lat0, lag(lon) OVER w AS lon0, lag(speed) OVER w AS v0,
           lead(s) OVER w IS NULL AS last
    FROM f WINDOW w AS (PARTITION BY id, usable ORDER BY recorded_at)
),
h AS (  -- each fix: for a usable one, the speed from the previous one by distance (when none is reported), and
         -- whether the interval up to it could count as driving (interval_speed above the threshold, with a margin)
    SELECT *, usable AND s0 IS NOT NULL AND CASE
        WHEN speed IS NOT NULL AND v0 IS NOT NULL THEN (speed + v0) / 2 > ${{m}}::float8 - 1e-6
        ELSE COALESCE(speed, v0, kmh) > ${{m}}::float8 - 1e-6 END AS driving
    FROM (SELECT g.*, CASE WHEN usable AND speed IS NULL AND s > s0 THEN
                     {_km("lat0", "lon0", "lat", "lon")} * (1 + 1e-9) / (s - s0) * 3600 END AS kmh
          FROM g) AS d
),
trk AS (
    SELECT id, max(lat) FILTER (WHERE usable AND last) AS lat, max(lon) FILTER (WHERE usable AND last) AS lon,
           bool_or(usable AND last AND s >= ${{l}}::float8) AS fresh,
           bool_or(usable AND last AND COALESCE(speed, kmh) > ${{m}}::float8 - 1e-6) AS moving,
           COALESCE(sum(greatest(0, least(s, s0 + ${{n}}::float8, extract(epoch FROM ${{h}}::timestamptz)::float8)
                                    - greatest(s0, midnight))) FILTER (WHERE driving AND s >= midnight), 0) / 3600
               AS driven,
           bool_or(NOT usable) AS bad
    FROM h GROUP BY id
),
who AS (SELECT u.*, trk.lat, trk.lon, trk.fresh, trk.moving, trk.driven, trk.bad FROM u LEFT JOIN trk ON trk.id = u.id),
trip AS (  -- per user: an active trip with bad coordinates; one whose destination could be reached after the evening
    SELECT w.id, bool_or(NOT (t.lat IS NULL AND t.lon IS NULL) AND NOT {_VALID.format("t.lat", "t.lon")}) AS bad,
           bool_or(w.fresh AND w.moving AND w.evening AND {_VALID.format("t.lat", "t.lon")}
                   AND {_km("w.lat", "w.lon", "t.lat", "t.lon")} * ${{p}}::float8 >= w.to_late - 1.0 / 60) AS late
    FROM span JOIN trips AS x ON x.user_id BETWEEN span.lo AND span.hi AND lower(x.status) = 'active'
    JOIN who AS w ON w.id = x.user_id
    CROSS JOIN LATERAL (SELECT {_NUM.format("x.dest_lat")} AS lat, {_NUM.format("x.dest_lon")} AS lon) AS t
    GROUP BY w.id
),
ev AS (  -- per user: an upcoming located event with bad coordinates; one whose leave-by time could be near
    SELECT w.id, bool_or(NOT {_VALID.format("e.lat", "e.lon")}) AS bad,
           bool_or(w.fresh AND {_VALID.format("e.lat", "e.lon")}
                   AND extract(epoch FROM x.start_at - ${{h}}::timestamptz)::float8 / 3600 - ${{q}}::float8
                       <= {_km("w.lat", "w.lon", "e.lat", "e.lon")} * ${{p}}::float8) AS due
    FROM span JOIN calendar_events AS x ON x.user_id BETWEEN span.lo AND span.hi
        AND x.start_at > ${{h}}::timestamptz AND x.start_at <= ${{k}}::timestamptz
    JOIN who AS w ON w.id = x.user_id
    CROSS JOIN LATERAL (SELECT {_NUM.format("x.lat")} AS lat, {_NUM.format("x.lon")} AS lon) AS e
    WHERE e.lat IS NOT NULL AND e.lon IS NOT NULL
    GROUP BY w.id
),
judged AS (
    SELECT w.id, w.known IS NOT TRUE OR COALESCE(w.bad OR trip.bad OR trip.late OR ev.bad OR ev.due
        OR (w.fresh AND w.moving AND w.driven > w.hours_limit - 1e-6), false) AS maybe
    FROM who AS w LEFT JOIN trip ON trip.id = w.id LEFT JOIN ev ON ev.id = w.id
)
SELECT (SELECT hi FROM span), (SELECT n FROM span),
       COALESCE(array_agg(id ORDER BY id) FILTER (WHERE maybe), '{{{{}}}}')
FROM judged
"""


class PostgresContextCandidates(PostgresContextQueries):
    """:class:`pamd.store.records_context.ContextCandidateSource` on Postgres (see the module docstring)."""

    async def iter_context_candidates(
        self,
        bounds: ContextBounds,
        now: datetime,
        batch_size: int = 500,
        *,
        lookahead_hours: float = 24.0,
        history_hours: float = 27.0,
        moving_speed_kmh: float = 5.0,
        max_gap_minutes: float = 30.0,
        scan_size: int = 5000,
        parallel: int = 2,
    ) -> AsyncGenerator[list[ContextInput], None]:
        """Stream the monitored users for whom a context rule could fire at ``now`` (and those with a row the full
        stream would report), with their full inputs as :meth:`iter_context_inputs` gives them, at most
        ``batch_size`` at a time. Users are scanned ``scan_size`` at a time in ``parallel`` id ranges side by side
        (:func:`pamd.store.pg_scan.scan_ranges`); batches come in id order within a range, not across ranges."""
        if batch_size < 1 or scan_size < 1:
            raise ValueError("batch_size and scan_size must be at least 1")
        if lookahead_hours < 0 or history_hours < 0:
            raise ValueError("lookahead_hours and history_hours must be >= 0")
        until, since = now + timedelta(hours=lookahead_hours), now - timedelta(hours=history_hours)
        track = (since, moving_speed_kmh, max_gap_minutes)
        # The oldest latest fix that can still alert, a minute early; with no age limit, any fix of the window.
        oldest = (since.timestamp() - 60 if bounds.max_age_minutes is None
                  else now.timestamp() - (bounds.max_age_minutes + 1) * 60)
        per_km = bounds.road_factor / bounds.average_speed_kmh * (1 + 1e-9)
        slack = bounds.leave_by_window_hours + (bounds.leave_by_buffer_minutes + 1) / 60

        async def zones(conn: asyncpg.Connection) -> list[str]:
            return [row[0] for row in await conn.fetch(ZONES_SQL)]

        names = await self._call(zones)
        clocks = [zone_clock(now, name, bounds) for name in names]
        per_zone = (names, *([c[k] for c in clocks] for k in range(4)))

        async def step(
            conn: asyncpg.Connection, after: str | None, upto: str | None
        ) -> tuple[list[ContextInput], str | None]:
            where, params, keys = page_where(self, after, upto, "abcdefghijklmnopq")
            last, count, ids = await fetch_page(
                self, conn, _SCAN_SQL.format(where=where, **keys), *params, list(INACTIVE_STATUSES), scan_size,
                *per_zone, now, since, now + FUTURE_SKEW, until, oldest, moving_speed_kmh, max_gap_minutes * 60,
                bounds.max_driving_hours, per_km, slack)
            batch: list[ContextInput] = []
            if ids:
                batch = await self._pg_context_ids(conn, list(ids), now, until, track)
            return batch, last if count == scan_size else None

        async for batch in scan_batches(self, step, parallel, batch_size):
            yield batch
