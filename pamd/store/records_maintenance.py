"""Records the stores hand to the maintenance monitor (SI units, UTC; calendar dates as :class:`datetime.date`)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from datetime import date, datetime, timedelta
from typing import Protocol, runtime_checkable

import msgspec

from pamd.store.records import POSITION_MAX_AGE, Position, Profile


class MaintenanceRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One ``maintenance_records`` row: ``task`` done on ``done_on`` (at ``odometer_km``, for ``cost`` in the
    user's currency), next due on ``next_due_date`` and/or at ``next_due_odometer_km``. ``vehicle_id`` is
    resolved: a row without one belongs to the user's primary vehicle."""

    id: str
    vehicle_id: str
    task: str
    done_on: date
    odometer_km: float | None = None
    cost: float | None = None
    next_due_date: date | None = None
    next_due_odometer_km: float | None = None


class OdometerReading(msgspec.Struct, frozen=True):
    """An odometer reading ``km`` taken at ``at`` (UTC), from a fill-up."""

    at: datetime
    km: float


class MaintenanceVehicle(msgspec.Struct, frozen=True, kw_only=True):
    """A vehicle of the user: ``odometer_km`` is ``vehicles.odometer_km`` (as last reported; its time is unknown),
    ``readings`` the recent fill-up odometer readings, oldest first."""

    id: str
    name: str
    vehicle_type: str | None = None
    is_primary: bool = False
    odometer_km: float | None = None
    readings: tuple[OdometerReading, ...] = ()


class MaintenanceInput(msgspec.Struct, frozen=True, kw_only=True):
    """What the maintenance monitor needs about one user.

    ``records`` are ordered by ``done_on`` then id (oldest first). ``vehicles`` and ``position`` are only loaded
    for users with records (nobody else can have maintenance due).
    """

    profile: Profile
    records: tuple[MaintenanceRecord, ...] = ()
    vehicles: tuple[MaintenanceVehicle, ...] = ()
    position: Position | None = None

    @property
    def user_id(self) -> str:
        return self.profile.user_id


@runtime_checkable
class MaintenanceInputSource(Protocol):
    """A store that can stream :class:`MaintenanceInput` batches."""

    def iter_maintenance_inputs(
        self, batch_size: int = 500, user_id: str | None = None, *, now: datetime | None = None,
        position_max_age: timedelta = POSITION_MAX_AGE,
    ) -> AsyncGenerator[list[MaintenanceInput], None]:
        """Yield users in batches of at most ``batch_size`` (only ``user_id`` when given). ``position`` is the
        newest ``user_locations`` row no older than ``position_max_age`` at ``now`` (default: the wall clock),
        else the newest fill-up with coordinates."""
        ...


class MaintenanceBands(msgspec.Struct, frozen=True, kw_only=True):
    """What a store that filters candidates needs of the maintenance monitor: its widest band (``due_soon_*``) and
    how it groups task names (``task_key``: records whose keys are equal are one task, the newest one counts)."""

    due_soon_days: int
    due_soon_km: float
    task_key: Callable[[str], str] | None = None


@runtime_checkable
class MaintenanceCandidateSource(Protocol):
    """A store that can stream only the users with a task that could be due (a superset: the monitor decides)."""

    def iter_maintenance_candidates(
        self, bands: MaintenanceBands, batch_size: int = 500, *, now: datetime | None = None,
        position_max_age: timedelta = POSITION_MAX_AGE,
    ) -> AsyncGenerator[list[MaintenanceInput], None]:
        """As ``iter_maintenance_inputs`` over every user, but leaving out users none of whose tasks can be due
        within ``bands`` at ``now``, and users without maintenance records."""
        ...
