"""Typed records the stores hand to monitors, and the timestamp convention they share.

Everything is in SI units (litres, kilometres) and UTC. Records are immutable :class:`msgspec.Struct` values, so a
monitor cannot accidentally change what another one sees, and ``pamd explain`` can print them as JSON.
"""

from __future__ import annotations

import functools
import math
from collections.abc import AsyncGenerator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Literal, Protocol, runtime_checkable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

Units = Literal["metric", "imperial"]
POSITION_MAX_AGE = timedelta(hours=6)
"""How old a ``user_locations`` row may be to count as the user's current position."""


class Profile(msgspec.Struct, frozen=True, kw_only=True):
    """The ``profiles`` fields monitors use, normalised: ``timezone`` defaults to ``"UTC"``, ``preferred_units``
    to ``"metric"``, ``currency`` to ``"USD"`` (upper case); ``max_driving_hours`` is ``None`` when unknown."""

    user_id: str
    full_name: str | None = None
    timezone: str = "UTC"
    preferred_units: Units = "metric"
    currency: str = "USD"
    vehicle_type: str | None = None
    max_driving_hours: float | None = None


class FuelFill(msgspec.Struct, frozen=True, kw_only=True):
    """One ``fuel_log`` row: a fill-up of ``volume_l`` litres at ``logged_at`` (UTC)."""

    id: str
    logged_at: datetime
    volume_l: float
    is_full_tank: bool
    odometer_km: float | None = None
    total_cost: float | None = None
    lat: float | None = None
    lon: float | None = None


class FuelVehicle(msgspec.Struct, frozen=True, kw_only=True):
    """The fields of a ``vehicles`` row the fuel monitor needs.

    ``odometer_km`` is the vehicle's current odometer as last reported by the app (its time is unknown, so it is
    taken as current). ``fuel_capacity_l`` and ``consumption_l_per_100km`` may be unknown (``None``).
    """

    id: str
    name: str
    vehicle_type: str | None = None
    fuel_type: str | None = None
    fuel_capacity_l: float | None = None
    consumption_l_per_100km: float | None = None
    odometer_km: float | None = None


class Position(msgspec.Struct, frozen=True, kw_only=True):
    """Where a user was last known to be: from ``user_locations`` (``source="user_location"``) or, failing a
    recent one, the newest fill-up with coordinates (``source="fuel_log"``); ``recorded_at`` is when (UTC)."""

    lat: float
    lon: float
    source: Literal["user_location", "fuel_log"]
    recorded_at: datetime


class FuelInput(msgspec.Struct, frozen=True, kw_only=True):
    """What the fuel monitor needs about one user: profile, primary vehicle and that vehicle's fill-ups.

    ``fills`` are ordered by ``logged_at`` (oldest first). ``vehicle`` is ``None`` when the user has no (valid)
    vehicle. Profile fields are normalised: ``timezone`` defaults to ``"UTC"``, ``preferred_units`` to
    ``"metric"``, ``currency`` to ``"USD"``. ``position`` is the user's current position when known (see
    :class:`Position`).
    """

    user_id: str
    full_name: str | None = None
    timezone: str = "UTC"
    preferred_units: Units = "metric"
    currency: str = "USD"
    vehicle_type: str | None = None
    vehicle: FuelVehicle | None = None
    fills: tuple[FuelFill, ...] = ()
    position: Position | None = None


@runtime_checkable
class FuelInputSource(Protocol):
    """A store that can stream :class:`FuelInput` batches (what the fuel monitor needs from ``ctx.store``)."""

    def iter_fuel_inputs(
        self, batch_size: int = 500, user_id: str | None = None, *, now: datetime | None = None,
        position_max_age: timedelta = POSITION_MAX_AGE,
    ) -> AsyncGenerator[list[FuelInput], None]:
        """Yield users in batches of at most ``batch_size`` (only ``user_id`` when given). ``position`` is the
        newest ``user_locations`` row no older than ``position_max_age`` at ``now`` (default: the wall clock),
        else the newest fill-up with coordinates."""
        ...


class FuelBounds(msgspec.Struct, frozen=True, kw_only=True):
    """What a store needs to leave out, in SQL, users whose fuel estimate cannot fall into a band: the fuel
    monitor's thresholds and the limits of its estimate (see ``FuelConfig`` in the fuel plugin)."""

    below_pct: float  # the highest band (medium): only users who could be under it come back
    stale_after_days: float
    default_daily_km: float
    history_pairs: int
    min_l_per_100km: float
    max_l_per_100km: float
    fallback_l_per_100km: float
    type_l_per_100km: dict[str, float]  # normalised vehicle type -> default consumption


@runtime_checkable
class FuelCandidateSource(Protocol):
    """A store that can stream only the users whose fuel could be low (a superset: the monitor decides)."""

    def iter_fuel_candidates(
        self, bounds: FuelBounds, batch_size: int = 500, *, now: datetime | None = None,
        position_max_age: timedelta = POSITION_MAX_AGE,
    ) -> AsyncGenerator[list[FuelInput], None]:
        """As ``iter_fuel_inputs`` over every user, but leaving out users a conservative bound on their estimate
        shows cannot be below ``bounds.below_pct`` (or have no estimate at all)."""
        ...


@functools.lru_cache(maxsize=1024)
def zone(name: str | None) -> ZoneInfo | None:
    """The :class:`ZoneInfo` for an IANA name, or ``None`` if there is no such zone (cached)."""
    if not name or not isinstance(name, str):
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def format_ts(value: datetime) -> str:
    """Format a timestamp the way every store column holds it: UTC, ISO-8601, millisecond precision, ``Z``.

    The fixed width keeps text ordering equal to time ordering. A naive ``datetime`` is taken to be UTC.
    """
    if value.tzinfo is not UTC:
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if value.year < 1000:  # isoformat pads years to four digits as strftime does not everywhere: keep one format
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return value.isoformat(timespec="milliseconds")[:-6] + "Z"  # "+00:00" -> "Z"


def parse_ts(value: object) -> datetime | None:
    """Parse a stored timestamp (ISO-8601 text, with or without offset; naive means UTC). ``None`` if unusable."""
    if type(value) is str:  # the hot path: text as format_ts writes it (Python 3.11 reads the "Z")
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            text = value.strip()
            if text.endswith(("z", "Z")):
                text = text[:-1] + "+00:00"
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                return None
    elif isinstance(value, datetime):
        parsed = value
    else:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed if parsed.tzinfo is UTC else parsed.astimezone(UTC)


def format_date(value: date | datetime) -> str:
    """Format a calendar date column (``YYYY-MM-DD``); a ``datetime`` is converted to UTC first."""
    if isinstance(value, datetime):
        return format_ts(value)[:10]
    return value.isoformat()


def finite_or_none(value: object) -> float | None:
    """``value`` as a float if it is a finite number, else ``None`` (text, booleans, NaN, infinities...)."""
    kind = type(value)
    if kind is float:  # the hot path; x - x is NaN for NaN and the infinities
        return value if value - value == 0.0 else None  # type: ignore[operator,return-value]
    if kind is int:
        return float(value)  # type: ignore[arg-type]
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):  # Decimal: a numeric column
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def to_sql_value(value: object) -> object:
    """Convert a Python value to what a store column holds: UTC ISO text for datetimes, 0/1, JSON text..."""
    if isinstance(value, datetime):
        return format_ts(value)
    if isinstance(value, date):
        return format_date(value)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict | list | tuple | msgspec.Struct):
        return msgspec.json.encode(value).decode()
    return value
