"""Postgres queries of the maintenance monitor: maintenance records with their due dates and odometers, the users'
vehicles with recent odometer readings, and where the users are.

The same records and skips as :mod:`pamd.store.sqlite_maintenance`, five statements per page of users:

1. the page of profiles (:meth:`PostgresBase._pages`: keyset on ``profiles.id``, inactive statuses filtered in SQL);
2. the ``max_records`` newest records of each of the page's users (``unnest`` of the ids, ``CROSS JOIN LATERAL ...
   LIMIT``, so only users with records come back: the owners);
3. the owners' vehicles (primary first, then by id);
4. the owners' ``max_fills`` newest fill-ups (a ``LATERAL ... LIMIT`` per owner; of those, only rows that can give an
   odometer reading or a position, or that are to be counted as skipped, are sent back);
5. the owners' newest located ``user_locations`` row within the position age (``LATERAL ... LIMIT 1`` on the
   ``(user_id, recorded_at)`` key).

Rows are ranked as SQLite ranks them: NULL dates last, ties broken by id in byte order (``COLLATE "C"``) whatever
the database's collation. The row rules (what is skipped, with which message) are the SQLite module's own methods,
run through :class:`_Rules`, so the two stores cannot drift apart; asyncpg's typed values (``date``, aware
``datetime``, floats, booleans) go through the same checks as SQLite's text and numbers.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pamd.store.pg_base import PostgresBase, pg_ts
from pamd.store.records import POSITION_MAX_AGE, FuelFill, Position, Profile
from pamd.store.records_maintenance import MaintenanceInput, MaintenanceVehicle
from pamd.store.sqlite_fuel import fill_position, location_position
from pamd.store.sqlite_maintenance import SQLiteMaintenanceQueries

if TYPE_CHECKING:
    import asyncpg

# $1: the page's user ids, $2: max_records.
_RECORDS_SQL = """
SELECT r.id, sel.user_id, r.vehicle_id, r.task, r.date, r.odometer_km, r.cost, r.next_due_date,
       r.next_due_odometer_km
FROM unnest($1::text[]) AS sel(user_id)
CROSS JOIN LATERAL (
    SELECT x.id, x.vehicle_id, x.task, x.date, x.odometer_km, x.cost, x.next_due_date, x.next_due_odometer_km
    FROM maintenance_records AS x WHERE x.user_id = sel.user_id
    ORDER BY x.date DESC NULLS LAST, x.id COLLATE "C" DESC LIMIT $2
) AS r
"""
# $1: the owners' ids.
_VEHICLES_SQL = """
SELECT v.id, v.user_id, v.name, v.vehicle_type, v.odometer_km, v.is_primary
FROM vehicles AS v WHERE v.user_id = ANY($1::text[])
ORDER BY v.user_id COLLATE "C", v.is_primary DESC, v.id COLLATE "C"
"""
# $1: the owners' ids, $2: max_fills. A fill-up with a time but neither an odometer nor both coordinates gives
# nothing (it still counts towards max_fills, as in SQLite), so it is not sent.
_FILLS_SQL = """
SELECT f.id, sel.user_id, f.vehicle_id, f.logged_at, f.odometer_km, f.lat, f.lon
FROM unnest($1::text[]) AS sel(user_id)
CROSS JOIN LATERAL (
    SELECT x.id, x.vehicle_id, x.logged_at, x.odometer_km, x.lat, x.lon FROM fuel_log AS x
    WHERE x.user_id = sel.user_id
    ORDER BY x.logged_at DESC NULLS LAST, x.id COLLATE "C" DESC LIMIT $2
) AS f
WHERE f.logged_at IS NULL OR f.odometer_km IS NOT NULL OR (f.lat IS NOT NULL AND f.lon IS NOT NULL)
"""
# $1: the owners' ids, $2: the oldest usable location time.
_LOCATIONS_SQL = """
SELECT sel.user_id, l.recorded_at, l.lat, l.lon
FROM unnest($1::text[]) AS sel(user_id)
CROSS JOIN LATERAL (
    SELECT x.recorded_at, x.lat, x.lon FROM user_locations AS x
    WHERE x.user_id = sel.user_id AND x.recorded_at >= $2 AND x.lat IS NOT NULL AND x.lon IS NOT NULL
    ORDER BY x.recorded_at DESC LIMIT 1
) AS l
"""


class _Rules(SQLiteMaintenanceQueries):
    """The SQLite module's row rules (``_maint_record``, ``_maintenance_vehicle``, ``_maint_reading``,
    ``_maint_zone``, ``_maint_readings``), reporting their skips to a Postgres store. Only those methods are used:
    no SQLite database is opened (hence no ``SQLiteBase.__init__``). They read rows by column name, which asyncpg
    records support."""

    def __init__(self, skip: Callable[[str, object, str], None]) -> None:
        self._report = skip

    def _skip(self, table: str, row_id: object, reason: str) -> None:
        self._report(table, row_id, reason)


class PostgresMaintenanceQueries(PostgresBase):
    """What the maintenance monitor reads from Postgres
    (:class:`pamd.store.records_maintenance.MaintenanceInputSource`)."""

    async def iter_maintenance_inputs(
        self, batch_size: int = 500, user_id: str | None = None, *, now: datetime | None = None,
        position_max_age: timedelta = POSITION_MAX_AGE, max_records: int = 200, max_fills: int = 30,
    ) -> AsyncGenerator[list[MaintenanceInput], None]:
        """Stream monitored users with their maintenance records, ``batch_size`` users at a time.

        The semantics of :meth:`pamd.store.sqlite_maintenance.SQLiteMaintenanceQueries.iter_maintenance_inputs`:
        per user the ``max_records`` newest records (oldest first in the result); for users with records also their
        vehicles (with the odometer readings of their ``max_fills`` newest fill-ups) and their position (the newest
        ``user_locations`` row within ``position_max_age`` of ``now``, else the newest fill-up with coordinates).
        Bad rows are skipped and counted as in SQLite; an unknown timezone is counted and read as UTC.
        """
        at = now or datetime.now(UTC)
        rules = _Rules(self._skip)

        async def fetch(conn: asyncpg.Connection, profiles: list[Profile]) -> list[MaintenanceInput]:
            return await self._maintenance_batch(conn, rules, profiles, at, position_max_age, max_records, max_fills)

        async for batch in self._pages(fetch, batch_size, user_id):
            yield batch

    async def _maintenance_batch(
        self, conn: asyncpg.Connection, rules: _Rules, profiles: list[Profile], now: datetime, max_age: timedelta,
        max_records: int, max_fills: int,
    ) -> list[MaintenanceInput]:
        rows: dict[str, list[Any]] = {}
        for row in await conn.fetch(_RECORDS_SQL, [p.user_id for p in profiles], max_records):
            rows.setdefault(str(row["user_id"]), []).append(row)
        owners = sorted(rows)
        vehicles: dict[str, list[MaintenanceVehicle]] = {}
        fills: dict[str, list[tuple[str | None, FuelFill]]] = {}  # user -> (vehicle id, fill-up)
        located: dict[str, Position] = {}
        if owners:
            for vrow in await conn.fetch(_VEHICLES_SQL, owners):
                vehicles.setdefault(str(vrow["user_id"]), []).append(rules._maintenance_vehicle(vrow))
            for frow in await conn.fetch(_FILLS_SQL, owners, max_fills):
                fill = rules._maint_reading(frow)
                if fill is not None:
                    fills.setdefault(str(frow["user_id"]), []).append((frow["vehicle_id"], fill))
            for lrow in await conn.fetch(_LOCATIONS_SQL, owners, pg_ts(now - max_age)):
                if (position := self._maint_location(lrow, now)) is not None:
                    located[str(lrow["user_id"])] = position
        batch = []
        for profile in profiles:
            uid = profile.user_id
            user_fills = fills.get(uid, [])
            own = rules._maint_readings(vehicles.get(uid, []), user_fills)
            position = located.get(uid) or fill_position([f for _, f in user_fills], now)
            records = [r for r in (rules._maint_record(row, own, now) for row in rows.get(uid, ())) if r is not None]
            records.sort(key=lambda r: (r.done_on, r.id))
            batch.append(MaintenanceInput(
                profile=rules._maint_zone(profile), records=tuple(records), vehicles=tuple(own),
                position=position if uid in rows else None,
            ))
        return batch

    def _maint_location(self, row: Any, now: datetime) -> Position | None:
        """The position in a ``_LOCATIONS_SQL`` row, ``None`` (skipped and counted) if unusable."""
        return location_position(row["user_id"], row["recorded_at"], row["lat"], row["lon"], now, self._skip)
