"""SQLite queries of the maintenance monitor: maintenance records with their due dates and odometers, the users'
vehicles with recent odometer readings, and where the users are."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncGenerator, Sequence
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import msgspec

from pamd.store.records import POSITION_MAX_AGE, FuelFill, Position, Profile, finite_or_none, parse_ts
from pamd.store.records_maintenance import MaintenanceInput, MaintenanceRecord, MaintenanceVehicle, OdometerReading
from pamd.store.sqlite_base import SQLiteBase
from pamd.store.sqlite_fuel import fill_position, latest_locations

_RECORDS_SQL = """
WITH sel(user_id) AS (VALUES {values})
SELECT id, user_id, vehicle_id, task, date, odometer_km, cost, next_due_date, next_due_odometer_km FROM (
    SELECT r.*, ROW_NUMBER() OVER (PARTITION BY r.user_id ORDER BY r.date DESC, r.id DESC) AS rn
    FROM maintenance_records AS r JOIN sel ON r.user_id = sel.user_id
) WHERE rn <= ?
"""
_VEHICLES_SQL = """
WITH sel(user_id) AS (VALUES {values})
SELECT v.id, v.user_id, v.name, v.vehicle_type, v.odometer_km, v.is_primary
FROM vehicles AS v JOIN sel ON v.user_id = sel.user_id
ORDER BY v.user_id, v.is_primary DESC, v.id
"""
_FUEL_SQL = """
WITH sel(user_id) AS (VALUES {values})
SELECT id, user_id, vehicle_id, logged_at, odometer_km, lat, lon FROM (
    SELECT f.*, ROW_NUMBER() OVER (PARTITION BY f.user_id ORDER BY f.logged_at DESC, f.id DESC) AS rn
    FROM fuel_log AS f JOIN sel ON f.user_id = sel.user_id
) WHERE rn <= ?
"""


def _date(value: object) -> date | None:
    """A calendar date column: ``YYYY-MM-DD`` (a timestamp's date part is accepted). ``None`` if unusable."""
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or len(value) < 10 or (len(value) > 10 and value[10] not in "T "):
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


class SQLiteMaintenanceQueries(SQLiteBase):
    """What the maintenance monitor reads (:class:`pamd.store.records_maintenance.MaintenanceInputSource`)."""

    async def iter_maintenance_inputs(
        self, batch_size: int = 500, user_id: str | None = None, *, now: datetime | None = None,
        position_max_age: timedelta = POSITION_MAX_AGE, max_records: int = 200, max_fills: int = 30,
    ) -> AsyncGenerator[list[MaintenanceInput], None]:
        """Stream monitored users with their maintenance records, ``batch_size`` users at a time.

        Per batch: the profile page, then for its users the ``max_records`` newest records each; for users with
        records also their vehicles, their ``max_fills`` newest fill-ups (odometer readings, and the fallback
        position) and their newest recent location: five queries whatever the batch size. Bad rows (NULL or
        empty task, unparsable or future dates, negative odometers or costs, unknown vehicle) are skipped and
        counted; an unknown timezone is counted and read as UTC.
        """
        at = now or datetime.now(UTC)

        args = (at, position_max_age, max_records, max_fills)
        async for batch in self._pages("_maintenance_batch", args, MaintenanceInput, batch_size, user_id):
            yield batch

    def _maintenance_batch(
        self, conn: sqlite3.Connection, profiles: list[Profile], now: datetime, max_age: timedelta,
        max_records: int, max_fills: int,
    ) -> list[MaintenanceInput]:
        ids = [p.user_id for p in profiles]
        rows: dict[str, list[sqlite3.Row]] = {}
        for row in conn.execute(_RECORDS_SQL.format(values=", ".join("(?)" for _ in ids)), [*ids, max_records]):
            rows.setdefault(str(row["user_id"]), []).append(row)
        owners = sorted(rows)
        vehicles: dict[str, list[MaintenanceVehicle]] = {}
        fills: dict[str, list[tuple[str | None, FuelFill]]] = {}  # user -> (vehicle id, fill-up)
        located: dict[str, Position] = {}
        if owners:
            values = ", ".join("(?)" for _ in owners)
            for vrow in conn.execute(_VEHICLES_SQL.format(values=values), owners):
                vehicles.setdefault(str(vrow["user_id"]), []).append(self._maintenance_vehicle(vrow))
            for frow in conn.execute(_FUEL_SQL.format(values=values), [*owners, max_fills]):
                fill = self._maint_reading(frow)
                if fill is not None:
                    fills.setdefault(str(frow["user_id"]), []).append((frow["vehicle_id"], fill))
            located = latest_locations(conn, owners, now, max_age, self._skip)
        batch = []
        for profile in profiles:
            uid = profile.user_id
            user_fills = fills.get(uid, [])
            own = self._maint_readings(vehicles.get(uid, []), user_fills)
            position = located.get(uid) or fill_position([f for _, f in user_fills], now)
            records = [r for r in (self._maint_record(row, own, now) for row in rows.get(uid, ())) if r is not None]
            records.sort(key=lambda r: (r.done_on, r.id))
            batch.append(MaintenanceInput(
                profile=self._maint_zone(profile), records=tuple(records), vehicles=tuple(own),
                position=position if uid in rows else None,
            ))
        return batch

    def _maint_zone(self, profile: Profile) -> Profile:
        try:
            ZoneInfo(profile.timezone)
        except (ValueError, KeyError):  # ZoneInfoNotFoundError is a KeyError
            self._skip("profiles", profile.user_id, f"unknown timezone {profile.timezone!r}; using UTC")
            return msgspec.structs.replace(profile, timezone="UTC")
        return profile

    def _maintenance_vehicle(self, row: sqlite3.Row) -> MaintenanceVehicle:
        odometer = finite_or_none(row["odometer_km"])
        if row["odometer_km"] is not None and (odometer is None or odometer < 0):
            self._skip("vehicles", row["id"], f"bad odometer_km {row['odometer_km']!r}; taken as unknown")
            odometer = None
        return MaintenanceVehicle(id=str(row["id"]), name=str(row["name"] or "your vehicle"),
                                  vehicle_type=row["vehicle_type"], is_primary=bool(row["is_primary"]),
                                  odometer_km=odometer)

    def _maint_reading(self, row: sqlite3.Row) -> FuelFill | None:
        """A fill-up reduced to what maintenance needs: time, odometer, position."""
        logged_at = parse_ts(row["logged_at"])
        odometer = finite_or_none(row["odometer_km"])
        if logged_at is None:
            self._skip("fuel_log", row["id"], f"unparsable logged_at {row['logged_at']!r}")
            return None
        if row["odometer_km"] is not None and (odometer is None or odometer < 0):
            self._skip("fuel_log", row["id"], f"bad odometer_km {row['odometer_km']!r}")
            return None
        return FuelFill(id=str(row["id"]), logged_at=logged_at, volume_l=0.0, is_full_tank=False,
                        odometer_km=odometer, lat=finite_or_none(row["lat"]), lon=finite_or_none(row["lon"]))

    @staticmethod
    def _maint_readings(
        vehicles: Sequence[MaintenanceVehicle], fills: Sequence[tuple[str | None, FuelFill]]
    ) -> list[MaintenanceVehicle]:
        """Attach each vehicle's fill-up odometer readings (fill-ups without a vehicle are the primary's)."""
        out = []
        for index, vehicle in enumerate(vehicles):
            mine = sorted(
                (OdometerReading(f.logged_at, f.odometer_km) for vid, f in fills
                 if f.odometer_km is not None and (vid == vehicle.id or (vid is None and index == 0))),
                key=lambda r: r.at,
            )
            out.append(msgspec.structs.replace(vehicle, readings=tuple(mine)))
        return out

    def _maint_record(self, row: sqlite3.Row, vehicles: Sequence[MaintenanceVehicle], now: datetime
                ) -> MaintenanceRecord | None:
        done_on, due_on = _date(row["date"]), _date(row["next_due_date"])
        numbers = {name: finite_or_none(row[name]) for name in ("odometer_km", "cost", "next_due_odometer_km")}
        task = str(row["task"]).strip() if row["task"] is not None else ""
        vehicle_id = row["vehicle_id"] if row["vehicle_id"] is not None else (vehicles[0].id if vehicles else None)
        reason = None
        if not task:
            reason = "task is NULL or empty"
        elif done_on is None:
            reason = f"unparsable date {row['date']!r}"
        elif done_on > (now + timedelta(days=1)).date():
            reason = f"date {done_on} is in the future"
        elif row["next_due_date"] is not None and due_on is None:
            reason = f"unparsable next_due_date {row['next_due_date']!r}"
        elif vehicle_id is None or all(v.id != vehicle_id for v in vehicles):
            reason = f"unknown vehicle {row['vehicle_id']!r}"
        else:
            for name, value in numbers.items():
                if row[name] is not None and (value is None or value < 0):
                    reason = f"bad {name} {row[name]!r}"
                    break
        if reason is not None or done_on is None or vehicle_id is None:
            self._skip("maintenance_records", row["id"], reason or "unusable")
            return None
        return MaintenanceRecord(
            id=str(row["id"]), vehicle_id=str(vehicle_id), task=task, done_on=done_on,
            odometer_km=numbers["odometer_km"], cost=numbers["cost"], next_due_date=due_on,
            next_due_odometer_km=numbers["next_due_odometer_km"],
        )
