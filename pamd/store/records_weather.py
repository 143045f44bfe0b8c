"""Records the weather monitor reads: users with their planned trips (SI units, calendar dates)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import date
from typing import Protocol, runtime_checkable

import msgspec

from pamd.store.records import Profile


class PlannedTrip(msgspec.Struct, frozen=True, kw_only=True):
    """A ``trips`` row with ``status = 'planned'``.

    ``start_date`` is the planned departure day (a calendar date, as the app stores it); the traveller can leave
    up to ``flex_days`` days earlier or later. ``dest_lat``/``dest_lon`` are ``None`` when the app has no
    coordinates for the destination (then there is no forecast; that is not bad data).
    """

    id: str
    start_date: date
    end_date: date | None = None
    flex_days: int = 0
    origin: str | None = None
    destination: str | None = None
    dest_lat: float | None = None
    dest_lon: float | None = None

    @property
    def has_coordinates(self) -> bool:
        return self.dest_lat is not None and self.dest_lon is not None


class WeatherInput(msgspec.Struct, frozen=True, kw_only=True):
    """One user and their planned trips starting in the requested date range (ordered by start date).

    ``profile.timezone`` is a valid IANA name (an unknown one is replaced by ``"UTC"`` and counted as a skip).
    """

    profile: Profile
    trips: tuple[PlannedTrip, ...] = ()

    @property
    def user_id(self) -> str:
        return self.profile.user_id


@runtime_checkable
class WeatherInputSource(Protocol):
    """A store that can stream :class:`WeatherInput` batches (what the weather monitor needs from ``ctx.store``)."""

    def iter_weather_inputs(
        self, first: date, last: date, batch_size: int = 500, user_id: str | None = None
    ) -> AsyncGenerator[list[WeatherInput], None]:
        """Yield users in batches of at most ``batch_size`` (only ``user_id`` when given), each with their planned
        trips whose ``start_date`` is in ``first..last`` (inclusive)."""
        ...


@runtime_checkable
class WeatherCandidateSource(Protocol):
    """A store that can stream only the users the weather monitor has something to judge for."""

    def iter_weather_candidates(
        self, first: date, last: date, batch_size: int = 500
    ) -> AsyncGenerator[list[WeatherInput], None]:
        """As ``iter_weather_inputs`` over every user, but only the users with at least one planned trip starting
        in ``first..last`` (the others come with no trips: nothing to check, nothing to skip)."""
        ...
