"""Postgres queries of the weather monitor: planned trips starting in a date range, one query per page of users.

The same records and skips as :mod:`pamd.store.sqlite_weather`, two statements per page of users (the page of
profiles from :meth:`pamd.store.pg_base.PostgresBase._pages`, then the page's trips). The trips statement keeps only
what can matter: rows of the page's users (``user_id = ANY(...)``, a walk of ``trips_user_idx`` on ``(user_id,
status)``) that are ``planned`` and whose ``start_date`` is in the requested range. ``start_date``/``end_date`` are
real dates here, so unlike SQLite no row has an unparsable one; the other bad rows (end before start, negative
``flex_days``, coordinates out of range or NaN) still come back, to be skipped and counted.

Each row is validated by the SQLite module's own rule (:meth:`SQLiteWeatherQueries._trip`, fed the row with its
dates as the ISO text SQLite holds), and timezones by its :func:`pamd.store.sqlite_weather._valid_timezone`, so the
two stores cannot drift apart in what they accept or in their skip messages.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from datetime import date
from typing import TYPE_CHECKING, Any, cast

import msgspec

from pamd.store.pg_base import PostgresBase
from pamd.store.records import Profile
from pamd.store.records_weather import PlannedTrip, WeatherInput
from pamd.store.sqlite_weather import SQLiteWeatherQueries, _valid_timezone

if TYPE_CHECKING:
    import asyncpg

# $1: the page's user ids, $2..$3: the first and last start date. Ids are compared byte-wise (COLLATE "C") so trips
# starting the same day come in SQLite's order whatever the database's collation.
_TRIPS_SQL = """
SELECT id, user_id, origin, destination, dest_lat, dest_lon, start_date, end_date, flex_days FROM trips
WHERE user_id = ANY($1::text[]) AND status = 'planned' AND start_date BETWEEN $2 AND $3
ORDER BY user_id, start_date, id COLLATE "C"
"""

# The users with a planned trip starting in $1..$2 (the trips statement's own filter), a page of $3 after {after}.
_TRIP_USERS_SQL = """
SELECT DISTINCT user_id FROM trips WHERE status = 'planned' AND start_date BETWEEN $1 AND $2{after}
ORDER BY user_id LIMIT $3
"""

_COLUMNS = ("id", "user_id", "origin", "destination", "dest_lat", "dest_lon", "start_date", "end_date", "flex_days")


def _as_sqlite_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A ``_TRIPS_SQL`` row as the SQLite store reads it: dates as ``YYYY-MM-DD`` text, everything else as is."""
    fields = {column: row[column] for column in _COLUMNS}
    for column in ("start_date", "end_date"):
        if isinstance(fields[column], date):
            fields[column] = fields[column].isoformat()
    return fields


class PostgresWeatherQueries(PostgresBase):
    """What the weather monitor reads from Postgres (:class:`pamd.store.records_weather.WeatherInputSource`)."""

    async def iter_weather_inputs(
        self, first: date, last: date, batch_size: int = 500, user_id: str | None = None
    ) -> AsyncGenerator[list[WeatherInput], None]:
        """Stream monitored users with their planned trips starting in ``first..last``, ``batch_size`` users at a
        time: one profile query and one trips query per batch. Every user of a page is yielded, with or without
        trips. Bad trip rows (end before start, negative ``flex_days``, coordinates out of range or NaN) are skipped
        and counted; a trip without coordinates is kept as is.

        The semantics of :meth:`pamd.store.sqlite_weather.SQLiteWeatherQueries.iter_weather_inputs`.
        """

        async def fetch(conn: asyncpg.Connection, profiles: list[Profile]) -> list[WeatherInput]:
            return await self._weather_batch(conn, profiles, first, last)

        async for batch in self._pages(fetch, batch_size, user_id):
            yield batch

    async def _weather_batch(
        self, conn: asyncpg.Connection, profiles: list[Profile], first: date, last: date
    ) -> list[WeatherInput]:
        trips: dict[str, list[PlannedTrip]] = {}
        for row in await conn.fetch(_TRIPS_SQL, [p.user_id for p in profiles], first, last):
            trip = self._weather_trip(row)
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

    def _weather_trip(self, row: Mapping[str, Any]) -> PlannedTrip | None:
        """The trip in a ``_TRIPS_SQL`` row, ``None`` (skipped and counted) if its data is unusable: the SQLite
        store's rule itself, which reads the row by column name and only calls ``self._skip`` (ours has the same
        signature), so the casts below only tell mypy so."""
        return SQLiteWeatherQueries._trip(cast(SQLiteWeatherQueries, self), cast(Any, _as_sqlite_row(row)))


class PostgresWeatherCandidates(PostgresWeatherQueries):
    """:class:`pamd.store.records_weather.WeatherCandidateSource` on Postgres (not over Supabase's REST, whose
    functions wrap only the full stream's statements)."""

    async def iter_weather_candidates(
        self, first: date, last: date, batch_size: int = 500, *, page_size: int = 5000
    ) -> AsyncGenerator[list[WeatherInput], None]:
        """As :meth:`iter_weather_inputs` over every user, but only the monitored users with a planned trip starting
        in ``first..last``, found ``page_size`` at a time from ``trips`` (keyset on ``user_id``) rather than by
        reading every profile (in the 1,000,000-user benchmark, 125,000 users instead of all). Their inputs, trips
        and skips are the full stream's: the users left out have no trip to check and no trip row to skip."""
        if batch_size < 1 or page_size < 1:
            raise ValueError("batch_size and page_size must be at least 1")

        async def step(conn: asyncpg.Connection, after: str | None) -> tuple[list[WeatherInput], str | None]:
            if after is None:
                rows = await conn.fetch(_TRIP_USERS_SQL.format(after=""), first, last, page_size)
            else:
                rows = await conn.fetch(_TRIP_USERS_SQL.format(after=" AND user_id > $4"), first, last, page_size,
                                        after)
            ids = [str(row[0]) for row in rows]
            profiles = await self._profiles_by_id(conn, ids) if ids else []
            batch = await self._weather_batch(conn, profiles, first, last) if profiles else []
            return batch, ids[-1] if len(ids) == page_size else None

        async for found in self._keyset(step):
            for start in range(0, len(found), batch_size):
                yield found[start : start + batch_size]
