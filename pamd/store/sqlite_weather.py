"""SQLite queries of the weather monitor: planned trips starting in a date range, one query per page of users."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncGenerator
from datetime import date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from pamd.store.records import Profile, finite_or_none
from pamd.store.records_weather import PlannedTrip, WeatherInput
from pamd.store.sqlite_base import SQLiteBase

# Users of one page are a contiguous id range (keyset pagination), so their trips are one range scan of
# trips_user_idx; the unary + keeps the planner off trips_status_start_idx, which would scan every user's planned
# trips for each page. Start dates that are not even shaped like dates are selected too, so they are skipped and
# counted rather than silently ignored.
_TRIPS_SQL = """
SELECT id, user_id, origin, destination, dest_lat, dest_lon, start_date, end_date, flex_days FROM trips
WHERE user_id BETWEEN ? AND ? AND +status = 'planned' AND +start_date IS NOT NULL
  AND (substr(start_date, 1, 10) BETWEEN ? AND ?
       OR start_date NOT GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*')
ORDER BY user_id, start_date, id
"""


def parse_day(value: object) -> date | None:
    """A calendar date from ``YYYY-MM-DD`` (or the date part of ``YYYY-MM-DDTHH:MM...``); ``None`` if unusable."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    try:
        if len(text) > 10:
            datetime.fromisoformat(text)  # a whole, valid timestamp; its calendar date is the one written
        return date.fromisoformat(text[:10]) if len(text) >= 10 else None
    except ValueError:
        return None


class SQLiteWeatherQueries(SQLiteBase):
    """What the weather monitor reads (:class:`pamd.store.records_weather.WeatherInputSource`)."""

    async def iter_weather_inputs(
        self, first: date, last: date, batch_size: int = 500, user_id: str | None = None
    ) -> AsyncGenerator[list[WeatherInput], None]:
        """Stream monitored users with their planned trips starting in ``first..last``, ``batch_size`` users at a
        time: one profile query and one trips query per batch. Every user of a page is yielded, with or without
        trips. Bad trip rows (unparsable dates, end before start, negative or fractional ``flex_days``,
        coordinates out of range) are skipped and counted; a trip without coordinates is kept as is.
        """
        bounds = (first.isoformat(), last.isoformat())
        async for batch in self._pages("_weather_batch", bounds, WeatherInput, batch_size, user_id):
            yield batch

    def _weather_batch(
        self, conn: sqlite3.Connection, profiles: list[Profile], first: str, last: str
    ) -> list[WeatherInput]:
        trips: dict[str, list[PlannedTrip]] = {}
        wanted = {p.user_id for p in profiles}
        params = (profiles[0].user_id, profiles[-1].user_id, first, last)
        for row in conn.execute(_TRIPS_SQL, params):
            if str(row["user_id"]) not in wanted:
                continue  # an unmonitored (inactive) user between two of this page's ids
            trip = self._trip(row)
            if trip is not None:
                trips.setdefault(str(row["user_id"]), []).append(trip)
        batch = []
        for profile in profiles:
            mine = trips.get(profile.user_id, ())
            checked = profile
            if mine and not _valid_timezone(profile.timezone):
                self._skip("profiles", profile.user_id, f"unknown timezone {profile.timezone!r}; using UTC")
                checked = msgspec.structs.replace(profile, timezone="UTC")
            batch.append(WeatherInput(profile=checked, trips=tuple(mine)))
        return batch

    def _trip(self, row: sqlite3.Row) -> PlannedTrip | None:
        start, end = parse_day(row["start_date"]), parse_day(row["end_date"])
        flex = finite_or_none(row["flex_days"])
        lat, lon = row["dest_lat"], row["dest_lon"]
        flat, flon = finite_or_none(lat), finite_or_none(lon)
        if start is None:
            reason = f"unparsable start_date {row['start_date']!r}"
        elif row["end_date"] is not None and end is None:
            reason = f"unparsable end_date {row['end_date']!r}"
        elif end is not None and end < start:
            reason = f"end_date {end} before start_date {start}"
        elif flex is not None and (flex < 0 or not flex.is_integer()):
            reason = f"bad flex_days {row['flex_days']!r}"
        elif lat is not None and (flat is None or not -90 <= flat <= 90):
            reason = f"bad dest_lat {lat!r}"
        elif lon is not None and (flon is None or not -180 <= flon <= 180):
            reason = f"bad dest_lon {lon!r}"
        else:
            both = flat is not None and flon is not None
            return PlannedTrip(
                id=str(row["id"]), start_date=start, end_date=end, flex_days=int(flex or 0),
                origin=row["origin"], destination=row["destination"],
                dest_lat=flat if both else None, dest_lon=flon if both else None,
            )
        self._skip("trips", row["id"], reason)
        return None


def _valid_timezone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True
