"""SQLite queries of the fuel monitor: each user's primary vehicle and its recent fill-ups."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from typing import Any

from pamd.store.records import (
    POSITION_MAX_AGE,
    FuelFill,
    FuelInput,
    FuelVehicle,
    Position,
    finite_or_none,
    format_ts,
    parse_ts,
)
from pamd.store.sqlite_base import _INACTIVE_SQL, SQLiteBase

# Each user's primary vehicle by a correlated LIMIT 1 on (user_id, is_primary DESC, id): 4x faster here than a
# ROW_NUMBER() window over the page's vehicles.
_PROFILE_VEHICLE_SQL = """
WITH page AS (
    SELECT id, full_name, timezone, preferred_units, currency, vehicle_type FROM profiles
    WHERE {where} AND COALESCE(status, 'active') NOT IN ({inactive})
    ORDER BY id LIMIT ?
)
SELECT page.id AS user_id, page.full_name, page.timezone, page.preferred_units, page.currency,
       page.vehicle_type, r.id AS v_id, r.name AS v_name, r.vehicle_type AS v_type, r.fuel_type AS v_fuel,
       r.fuel_capacity_l AS v_capacity, r.consumption_l_per_100km AS v_consumption, r.odometer_km AS v_odometer
FROM page LEFT JOIN vehicles AS r ON r.id = (
    SELECT x.id FROM vehicles AS x WHERE x.user_id = page.id ORDER BY x.is_primary DESC, x.id LIMIT 1)
ORDER BY page.id
"""

# The newest ``max_fills`` fill-ups of each user: a cut-off time per user (the max_fills-th newest logged_at, by a
# short walk of the (user_id, logged_at) index), then every row since. Twice as fast here as ROW_NUMBER() over the
# page, which sorts all its rows; the order is left to the caller. NULL logged_at rows come back to be counted.
_FUEL_LOG_SQL = """
WITH sel(user_id) AS (VALUES {values}),
cut AS (SELECT user_id, COALESCE((SELECT x.logged_at FROM fuel_log AS x WHERE x.user_id = sel.user_id
                                  ORDER BY x.logged_at DESC LIMIT 1 OFFSET ?), '') AS since FROM sel)
SELECT f.id, f.user_id, f.vehicle_id, f.logged_at, f.volume_l, f.total_cost, f.odometer_km, f.is_full_tank,
       f.lat, f.lon
FROM cut JOIN fuel_log AS f ON f.user_id = cut.user_id AND (f.logged_at >= cut.since OR f.logged_at IS NULL)
"""


# The newest located row per user since a cut-off: a MAX per user on the (user_id, recorded_at) primary key.
_LOCATIONS_SQL = """
WITH sel(user_id) AS (VALUES {values})
SELECT l.user_id, l.recorded_at, l.lat, l.lon FROM sel JOIN user_locations AS l ON l.user_id = sel.user_id
    AND l.recorded_at = (SELECT MAX(m.recorded_at) FROM user_locations AS m
                         WHERE m.user_id = sel.user_id AND m.recorded_at >= ?
                           AND m.lat IS NOT NULL AND m.lon IS NOT NULL)
"""
CLOCK_SKEW = timedelta(minutes=10)
"""How far in the future a location may be stamped before it is taken to be bad data."""


def _coordinates(lat: object, lon: object) -> tuple[float, float] | None:
    la, lo = finite_or_none(lat), finite_or_none(lon)
    if la is None or lo is None or not (-90 <= la <= 90 and -180 <= lo <= 180) or (la == 0 and lo == 0):
        return None
    return la, lo


def latest_locations(
    conn: sqlite3.Connection, user_ids: Sequence[str], now: datetime, max_age: timedelta,
    skip: Callable[[str, object, str], None],
) -> dict[str, Position]:
    """Each user's newest ``user_locations`` row recorded within ``max_age`` before ``now`` (one query).

    Rows with impossible coordinates or stamped in the future are skipped (``skip(table, id, reason)``).
    """
    if not user_ids:
        return {}
    sql = _LOCATIONS_SQL.format(values=", ".join("(?)" for _ in user_ids))
    found: dict[str, Position] = {}
    cursor = conn.cursor()
    cursor.row_factory = None
    for user_id, recorded_at, lat, lon in cursor.execute(sql, [*user_ids, format_ts(now - max_age)]):
        if (position := location_position(user_id, recorded_at, lat, lon, now, skip)) is not None:
            found[str(user_id)] = position
    return found


def location_position(
    user_id: object, recorded_at: object, lat: object, lon: object, now: datetime,
    skip: Callable[[str, object, str], None],
) -> Position | None:
    """A ``user_locations`` row as a position; ``None`` (skipped and counted through ``skip(table, id, reason)``)
    when its time is unreadable or in the future or its coordinates are impossible. Shared by every store."""
    at = parse_ts(recorded_at)
    where = _coordinates(lat, lon)
    if at is not None and at <= now + CLOCK_SKEW and where is not None:
        return Position(lat=where[0], lon=where[1], source="user_location", recorded_at=at)
    row_id = f"{user_id}@{format_ts(recorded_at) if isinstance(recorded_at, datetime) else recorded_at}"
    if at is None:
        skip("user_locations", row_id, f"unparsable recorded_at {recorded_at!r}")
    elif at > now + CLOCK_SKEW:
        skip("user_locations", row_id, "recorded in the future")
    else:
        skip("user_locations", row_id, f"bad coordinates {lat!r}, {lon!r}")
    return None


def fill_position(fills: Sequence[FuelFill], now: datetime) -> Position | None:
    """The newest fill-up (not in the future) with usable coordinates, as a position."""
    for fill in sorted(fills, key=lambda f: f.logged_at, reverse=True):
        where = _coordinates(fill.lat, fill.lon)
        if where is not None and fill.logged_at <= now + CLOCK_SKEW:
            return Position(lat=where[0], lon=where[1], source="fuel_log", recorded_at=fill.logged_at)
    return None


class SQLiteFuelQueries(SQLiteBase):
    """What the fuel monitor reads (:class:`pamd.store.records.FuelInputSource`)."""

    async def iter_fuel_inputs(
        self, batch_size: int = 500, user_id: str | None = None, *, max_fills: int = 100,
        now: datetime | None = None, position_max_age: timedelta = POSITION_MAX_AGE,
    ) -> AsyncGenerator[list[FuelInput], None]:
        """Stream monitored users with their primary vehicle and its fill-ups, ``batch_size`` users at a time.

        Users are paged by id (keyset pagination: no offset scans, never all users in memory); each batch costs
        one profile+vehicle query and one ``fuel_log`` query. At most the ``max_fills`` most recent fill-ups per
        user are returned (oldest first). Fill-ups with no vehicle are taken to be the primary vehicle's. Only
        ``user_id`` is read when given. Users whose ``status`` is in :data:`INACTIVE_STATUSES` are left out.

        ``position``: the newest ``user_locations`` row within ``position_max_age`` of ``now`` (default: the wall
        clock), else the newest of the returned fill-ups with coordinates, else ``None`` (one more query).
        """
        if batch_size < 1 or max_fills < 1:
            raise ValueError("batch_size and max_fills must be at least 1")
        at = now or datetime.now(UTC)

        args = (batch_size, user_id, max_fills, at, position_max_age)
        pages = self._method_pages("_fuel_page", args, FuelInput, user_id is None)
        async with aclosing(pages):
            async for batch in pages:
                yield batch

    def _fuel_page(
        self, conn: sqlite3.Connection, after: str | None, batch_size: int, user_id: str | None, max_fills: int,
        now: datetime, position_max_age: timedelta,
    ) -> tuple[list[FuelInput], str | None]:
        batch, last_id = self._fuel_batch(conn, after, batch_size, user_id, max_fills, now, position_max_age)
        return batch, last_id if len(batch) == batch_size else None

    def _fuel_batch(
        self, conn: sqlite3.Connection, after: str | None, limit: int, user_id: str | None, max_fills: int,
        now: datetime, position_max_age: timedelta,
    ) -> tuple[list[FuelInput], str | None]:
        where, params = self.profile_where(after, user_id)
        cursor = conn.cursor()
        cursor.row_factory = None  # plain tuples: this loop runs for every user and fill-up of a tick
        sql = _PROFILE_VEHICLE_SQL.format(where=where, inactive=_INACTIVE_SQL)
        rows = cursor.execute(sql, [*params, limit]).fetchall()
        if not rows:
            return [], None
        vehicles = {row[0]: self._vehicle(row) for row in rows}
        owned = [uid for uid, v in vehicles.items() if v is not None]
        fills: dict[str, list[FuelFill]] = {}
        if owned:
            sql = _FUEL_LOG_SQL.format(values=", ".join("(?)" for _ in owned))
            fill = self._fill
            for frow in cursor.execute(sql, [*owned, max_fills - 1]):
                vehicle = vehicles[frow[1]]
                # Fill-ups logged without a vehicle are the primary vehicle's; other vehicles' are not.
                if vehicle is not None and (frow[2] is None or frow[2] == vehicle.id) and (parsed := fill(frow)):
                    fills.setdefault(frow[1], []).append(parsed)
        located = latest_locations(conn, owned, now, position_max_age, self._skip)
        batch = []
        for row in rows:
            uid = row[0]
            mine = sorted(fills.get(uid, ()), key=_fill_order)[-max_fills:]
            batch.append(FuelInput(
                user_id=uid,
                full_name=row[1],
                timezone=row[2] or "UTC",
                preferred_units="imperial" if str(row[3]).lower() == "imperial" else "metric",
                currency=str(row[4] or "USD").upper(),
                vehicle_type=row[5],
                vehicle=vehicles[uid],
                fills=tuple(mine),
                position=located.get(uid) or fill_position(mine, now),
            ))
        return batch, str(rows[-1][0])

    def _vehicle(self, row: tuple[Any, ...]) -> FuelVehicle | None:
        return fuel_vehicle(row, self._skip)

    def _fill(self, row: tuple[Any, ...]) -> FuelFill | None:
        return fuel_fill(row, self._skip)


def _fill_order(fill: FuelFill) -> tuple[datetime, str]:
    return fill.logged_at, fill.id


def fuel_vehicle(row: Sequence[Any], skip: Callable[[str, object, str], None]) -> FuelVehicle | None:
    """The vehicle in a page row (columns 6-12: id, name, type, fuel, capacity, consumption, odometer), ``None`` if
    absent or bad (then skipped and counted). Shared by every store."""
    v_id, name, kind, fuel, capacity, consumption, odometer = row[6:13]
    if v_id is None:
        return None
    numbers = {}
    for raw, field in ((capacity, "fuel_capacity_l"), (consumption, "consumption_l_per_100km"),
                       (odometer, "odometer_km")):
        value = finite_or_none(raw)
        if raw is not None and (value is None or value < 0):
            skip("vehicles", v_id, f"bad {field} {raw!r}")
            return None
        numbers[field] = value
    return FuelVehicle(id=str(v_id), name=str(name or "your vehicle"), vehicle_type=kind, fuel_type=fuel, **numbers)


def fuel_fill(row: Sequence[Any], skip: Callable[[str, object, str], None]) -> FuelFill | None:
    """The fill-up in a row (id, user, vehicle, logged_at, volume, cost, odometer, full, lat, lon), ``None`` (skipped
    and counted) if its data is unusable. Shared by every store."""
    row_id, _, _, raw_at, raw_volume, raw_cost, raw_odometer, full, lat, lon = row
    logged_at = parse_ts(raw_at)
    volume = finite_or_none(raw_volume)
    odometer = finite_or_none(raw_odometer)
    if logged_at is None:
        reason = f"unparsable logged_at {raw_at!r}"
    elif volume is None or volume < 0:
        reason = f"bad volume_l {raw_volume!r}"
    elif full is None:
        reason = "is_full_tank is NULL"
    elif raw_odometer is not None and (odometer is None or odometer < 0):
        reason = f"bad odometer_km {raw_odometer!r}"
    else:
        cost = finite_or_none(raw_cost)
        return FuelFill(id=str(row_id), logged_at=logged_at, volume_l=volume, is_full_tank=bool(full),
                        odometer_km=odometer, total_cost=cost if cost is not None and cost >= 0 else None,
                        lat=finite_or_none(lat), lon=finite_or_none(lon))
    skip("fuel_log", row_id, reason)
    return None
