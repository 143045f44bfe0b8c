"""Postgres queries of the fuel monitor: each user's primary vehicle, its recent fill-ups and the latest position.

The same records and skips as :mod:`pamd.store.sqlite_fuel`, two statements per page of users:

1. the page of profiles (keyset on ``profiles.id``, inactive statuses filtered in SQL), each with its primary
   vehicle and, for users with a vehicle, the newest located ``user_locations`` row within the position age: two
   ``LEFT JOIN LATERAL ... LIMIT 1`` walks of the ``(user_id, is_primary, id)`` and ``(user_id, recorded_at)``
   indexes;
2. the fill-ups of the page's vehicle owners (``unnest`` of two text arrays: user and primary vehicle): per user a
   cut-off, the ``max_fills``-th newest ``logged_at`` of all the user's fill-ups (a ``LIMIT 1 OFFSET`` walk of the
   ``(user_id, logged_at)`` index), then the primary vehicle's rows (and those without a vehicle) since, plus any
   without ``logged_at`` (to be counted as skipped) -- the selection the SQLite store makes, so both agree row for row.

asyncpg hands back typed values (timestamptz as aware datetimes, double precision as floats, booleans); they are
validated here exactly as the SQLite module validates its text and numbers (NaN, negatives, NULLs).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pamd.store.pg_base import PostgresBase, pg_ts
from pamd.store.records import (
    POSITION_MAX_AGE,
    FuelFill,
    FuelInput,
    FuelVehicle,
    Position,
)
from pamd.store.sqlite_base import INACTIVE_STATUSES
from pamd.store.sqlite_fuel import (
    _fill_order,
    fill_position,
    fuel_fill,
    fuel_vehicle,
    location_position,
)

if TYPE_CHECKING:
    import asyncpg

# {where} is profile_where()'s clause on profiles (its parameters come first); then $n: inactive statuses,
# $n+1: page size, $n+2: oldest usable location time.
_PAGE_SQL = """
WITH page AS (
    SELECT id, full_name, timezone, preferred_units, currency, vehicle_type FROM profiles
    WHERE {where} AND COALESCE(status, 'active') <> ALL(${inactive}::text[])
    ORDER BY id LIMIT ${limit}
)
SELECT page.id, page.full_name, page.timezone, page.preferred_units, page.currency, page.vehicle_type,
       v.id, v.name, v.vehicle_type, v.fuel_type, v.fuel_capacity_l, v.consumption_l_per_100km, v.odometer_km,
       loc.recorded_at, loc.lat, loc.lon
FROM page
LEFT JOIN LATERAL (
    SELECT x.id, x.name, x.vehicle_type, x.fuel_type, x.fuel_capacity_l, x.consumption_l_per_100km, x.odometer_km
    FROM vehicles AS x WHERE x.user_id = page.id
    ORDER BY x.is_primary DESC, x.id LIMIT 1
) AS v ON true
LEFT JOIN LATERAL (
    SELECT l.recorded_at, l.lat, l.lon FROM user_locations AS l
    WHERE v.id IS NOT NULL AND l.user_id = page.id AND l.recorded_at >= ${since}
      AND l.lat IS NOT NULL AND l.lon IS NOT NULL
    ORDER BY l.recorded_at DESC LIMIT 1
) AS loc ON true
ORDER BY page.id
"""

# $1: user ids, $2: their primary vehicles' ids, $3: max_fills - 1. The cut-off is a LATERAL subquery with LIMIT
# (evaluated once per user, a walk of the (user_id, logged_at) index); the rows since it are two index range scans,
# the dated ones and the undated ones.
_FILLS_SQL = """
SELECT f.id, sel.user_id, f.vehicle_id, f.logged_at, f.volume_l, f.total_cost, f.odometer_km, f.is_full_tank,
       f.lat, f.lon
FROM unnest($1::text[], $2::text[]) AS sel(user_id, vehicle_id)
LEFT JOIN LATERAL (
    SELECT x.logged_at FROM fuel_log AS x
    WHERE x.user_id = sel.user_id AND x.logged_at IS NOT NULL
    ORDER BY x.logged_at DESC LIMIT 1 OFFSET $3
) AS cut ON true
CROSS JOIN LATERAL (
    SELECT y.id, y.vehicle_id, y.logged_at, y.volume_l, y.total_cost, y.odometer_km, y.is_full_tank, y.lat, y.lon
    FROM fuel_log AS y
    WHERE y.user_id = sel.user_id AND y.logged_at >= COALESCE(cut.logged_at, '-infinity'::timestamptz)
    UNION ALL
    SELECT z.id, z.vehicle_id, z.logged_at, z.volume_l, z.total_cost, z.odometer_km, z.is_full_tank, z.lat, z.lon
    FROM fuel_log AS z WHERE z.user_id = sel.user_id AND z.logged_at IS NULL
) AS f
WHERE f.vehicle_id IS NULL OR f.vehicle_id = sel.vehicle_id
"""


class PostgresFuelQueries(PostgresBase):
    """What the fuel monitor reads from Postgres (:class:`pamd.store.records.FuelInputSource`)."""

    async def iter_fuel_inputs(
        self, batch_size: int = 500, user_id: str | None = None, *, max_fills: int = 100,
        now: datetime | None = None, position_max_age: timedelta = POSITION_MAX_AGE,
    ) -> AsyncGenerator[list[FuelInput], None]:
        """Stream monitored users with their primary vehicle and its fill-ups, ``batch_size`` users at a time.

        The semantics of :meth:`pamd.store.sqlite_fuel.SQLiteFuelQueries.iter_fuel_inputs`: users paged by id
        (keyset), at most the ``max_fills`` most recent fill-ups per user (oldest first), fill-ups without a vehicle
        taken to be the primary vehicle's, only ``user_id`` when given, inactive users left out; ``position`` is the
        newest ``user_locations`` row within ``position_max_age`` of ``now``, else the newest fill-up with
        coordinates. Two statements per batch.
        """
        if batch_size < 1 or max_fills < 1:
            raise ValueError("batch_size and max_fills must be at least 1")
        at = now or datetime.now(UTC)

        async def step(conn: asyncpg.Connection, after: str | None) -> tuple[list[FuelInput], str | None]:
            batch, last_id = await self._fuel_batch(conn, after, batch_size, user_id, max_fills, at, position_max_age)
            return batch, last_id if len(batch) == batch_size else None

        async for batch in self._keyset(step):
            yield batch

    async def _fuel_batch(
        self, conn: asyncpg.Connection, after: str | None, limit: int, user_id: str | None, max_fills: int,
        now: datetime, position_max_age: timedelta, *, ids: list[str] | None = None,
    ) -> tuple[list[FuelInput], str | None]:
        # ``ids``: exactly these users (the candidates of pamd.store.pg_fuel_candidates) instead of a page.
        where, params = ("id = ANY($1::text[])", [ids]) if ids is not None else self.profile_where(after, user_id)
        n = len(params)
        sql = _PAGE_SQL.format(where=where, inactive=n + 1, limit=n + 2, since=n + 3)
        rows = await conn.fetch(sql, *params, list(INACTIVE_STATUSES), limit, pg_ts(now - position_max_age))
        if not rows:
            return [], None
        vehicles = {row[0]: self._vehicle(row) for row in rows}
        owned = [(uid, v.id) for uid, v in vehicles.items() if v is not None]
        fills: dict[str, list[FuelFill]] = {}
        if owned:
            frows = await conn.fetch(_FILLS_SQL, [u for u, _ in owned], [v for _, v in owned], max_fills - 1)
            for frow in frows:
                if (parsed := self._fill(frow)) is not None:
                    fills.setdefault(frow[1], []).append(parsed)
        batch = []
        for row in rows:
            uid = row[0]
            mine = sorted(fills.get(uid, ()), key=_fill_order)[-max_fills:]
            located = self._location(uid, row[13:16], now) if vehicles[uid] is not None else None
            batch.append(FuelInput(
                user_id=str(uid),
                full_name=row[1],
                timezone=row[2] or "UTC",
                preferred_units="imperial" if str(row[3]).lower() == "imperial" else "metric",
                currency=str(row[4] or "USD").upper(),
                vehicle_type=row[5],
                vehicle=vehicles[uid],
                fills=tuple(mine),
                position=located or fill_position(mine, now),
            ))
        return batch, str(rows[-1][0])

    def _location(self, user_id: str, found: Sequence[Any], now: datetime) -> Position | None:
        """The ``user_locations`` row of a page row, ``None`` if absent, or unusable (then skipped and counted)."""
        raw_at, lat, lon = found
        if raw_at is None:
            return None
        return location_position(user_id, raw_at, lat, lon, now, self._skip)

    def _vehicle(self, row: Sequence[Any]) -> FuelVehicle | None:
        return fuel_vehicle(row, self._skip)

    def _fill(self, row: Sequence[Any]) -> FuelFill | None:
        return fuel_fill(row, self._skip)
