"""The built-in fuel monitor (DESIGN.md section 7), loaded through the same hooks as a third-party plugin.

The level is estimated from the last full fill-up: the tank was full then, partial fill-ups since add their volume,
and the distance driven since burns ``consumption`` litres per 100 km. Distance comes from the odometer when a newer
reading exists, else days x the user's own average daily distance, else a configured default. Consumption is the
median of the user's full-to-full fill-ups, else the vehicle's stated figure, else a vehicle-type default.

Users who alert get up to 3 real stations selling their vehicle's fuel from the places provider (OpenStreetMap),
nearest first, or none: never invented. Stations are searched around the user's current position (a
``user_locations`` row of the last ``position_max_age_hours``), else around their newest fill-up with coordinates,
which the text says. Only a current position feeds the "range shorter than the nearest station" urgent rule: the
stations near an old fill-up say nothing about what is in reach now. Distances are great-circle, not by road.
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any, Literal

import msgspec

import pamd
from pamd import units
from pamd.providers import ProviderError
from pamd.providers.places import UnsupportedFuelError, describe_places, fuel_kind
from pamd.store.records import (
    FuelBounds,
    FuelCandidateSource,
    FuelFill,
    FuelInput,
    FuelInputSource,
    FuelVehicle,
    format_ts,
)

DAY = timedelta(days=1)
DEFAULT_CONSUMPTION = {  # L/100km, by vehicles.vehicle_type (normalised: lower case, "_" for spaces and dashes)
    "rv_class_a": 35.0, "rv_class_b": 16.0, "rv_class_c": 22.0, "motorhome": 22.0, "campervan": 12.0,
    "van": 11.0, "truck_trailer": 25.0, "fifth_wheel": 25.0, "truck": 16.0, "suv": 12.0, "car": 8.0,
}
ConsumptionSource = Literal["history", "vehicle", "type_default"]
DistanceSource = Literal["odometer", "odometer+days", "days"]


class FuelConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[monitors.fuel]`` settings. Percentages are of tank capacity; alerts fire strictly below them."""

    medium_pct: float = 20.0
    high_pct: float = 10.0
    urgent_pct: float = 5.0
    default_daily_km: float = 150.0
    stale_after_days: float = 14.0  # no estimate when this many days are extrapolated without a reading
    unlogged_fill_pct: float = 15.0  # estimate below -this % of capacity: they must have filled up unlogged
    history_pairs: int = 10  # full-to-full pairs (and readings) of history used
    min_l_per_100km: float = 3.0  # plausible range for a full-to-full consumption figure
    max_l_per_100km: float = 80.0
    fallback_l_per_100km: float = 25.0  # unknown vehicle type
    consumption_l_per_100km: dict[str, float] = msgspec.field(default_factory=dict)  # overrides the defaults
    station_radius_km: float = 25.0  # nearby fuel stations: search radius and how many to attach
    stations: int = 3
    position_max_age_hours: float = 6.0  # a user_locations row older than this is not the current position
    batch_size: int = 500

    def __post_init__(self) -> None:
        if not 0 <= self.urgent_pct <= self.high_pct <= self.medium_pct <= 100:
            raise ValueError("need 0 <= urgent_pct <= high_pct <= medium_pct <= 100")
        if self.default_daily_km < 0 or self.batch_size < 1 or self.history_pairs < 1:
            raise ValueError("default_daily_km must be >= 0, batch_size and history_pairs >= 1")
        if not 0 < self.station_radius_km <= 100 or self.stations < 0 or self.position_max_age_hours <= 0:
            raise ValueError("need 0 < station_radius_km <= 100, stations >= 0 and position_max_age_hours > 0")


class FuelEstimate(msgspec.Struct, frozen=True, kw_only=True):
    """An estimated tank level (SI units) and how it was obtained."""

    level_pct: float
    litres_left: float
    capacity_l: float
    range_km: float
    distance_since_fill_km: float
    distance_source: DistanceSource
    daily_km: float
    daily_km_source: Literal["history", "default"]
    consumption_l_per_100km: float
    consumption_source: ConsumptionSource
    last_full_fill_at: datetime
    days_since_fill: float
    price_per_l: float | None
    confidence: float


class NoEstimate(msgspec.Struct, frozen=True):
    """Why no estimate could be made (no alert follows): no_vehicle, no_capacity, no_full_fill,
    odometer_backwards, stale, unlogged_fill."""

    reason: str


def _days(later: datetime, earlier: datetime) -> float:
    return max(0.0, (later - earlier) / DAY)


def consumption(fills: Sequence[FuelFill], inp: FuelInput, cfg: FuelConfig) -> tuple[float, ConsumptionSource]:
    """Median L/100km of full-to-full fill-up pairs (litres added after the first full tank up to and including
    the second, over the km between them), else the vehicle's stated figure, else the vehicle-type default."""
    figures: list[float] = []
    start: FuelFill | None = None
    litres = 0.0
    for fill in fills:
        if start is not None:
            litres += fill.volume_l
        if not fill.is_full_tank:
            continue
        if start is not None and start.odometer_km is not None and fill.odometer_km is not None:
            km = fill.odometer_km - start.odometer_km
            if km > 0 and cfg.min_l_per_100km <= litres / km * 100 <= cfg.max_l_per_100km:
                figures.append(litres / km * 100)
        start, litres = fill, 0.0
    if figures:
        return statistics.median(figures[-cfg.history_pairs :]), "history"
    vehicle = inp.vehicle
    stated = vehicle.consumption_l_per_100km if vehicle is not None else None
    if stated is not None and cfg.min_l_per_100km <= stated <= cfg.max_l_per_100km:
        return stated, "vehicle"
    kind = (vehicle.vehicle_type if vehicle is not None else None) or inp.vehicle_type or ""
    key = kind.strip().lower().replace(" ", "_").replace("-", "_")
    table = DEFAULT_CONSUMPTION | cfg.consumption_l_per_100km
    return table.get(key, cfg.fallback_l_per_100km), "type_default"


def daily_distance(fills: Sequence[FuelFill], cfg: FuelConfig) -> tuple[float, Literal["history", "default"]]:
    """The user's average km per day between their first and last recent odometer readings, else the default."""
    readings = [(f.logged_at, f.odometer_km) for f in fills if f.odometer_km is not None]
    readings = readings[-(cfg.history_pairs + 1) :]
    if len(readings) >= 2:
        (t0, km0), (t1, km1) = readings[0], readings[-1]
        days = _days(t1, t0)
        if days >= 1 and km1 > km0 and all(b[1] >= a[1] for a, b in pairwise(readings)):
            return (km1 - km0) / days, "history"
    return cfg.default_daily_km, "default"


def estimate_fuel(inp: FuelInput, now: datetime, cfg: FuelConfig) -> FuelEstimate | NoEstimate:
    """Estimate the fuel left in ``inp``'s primary vehicle at ``now``. Pure; never raises on odd data."""
    vehicle, fills = inp.vehicle, inp.fills
    if vehicle is None:
        return NoEstimate("no_vehicle")
    capacity = vehicle.fuel_capacity_l or 0.0
    if capacity <= 0:
        return NoEstimate("no_capacity")
    fulls = [i for i, f in enumerate(fills) if f.is_full_tank]
    if not fulls:
        return NoEstimate("no_full_fill")
    last_full = fills[fulls[-1]]
    since = fills[fulls[-1] :]
    checked = fills[fulls[-2] if len(fulls) > 1 else fulls[-1] :]
    odometers = [f.odometer_km for f in checked if f.odometer_km is not None]
    if any(b < a for a, b in pairwise(odometers)):
        return NoEstimate("odometer_backwards")
    used, used_source = consumption(fills, inp, cfg)
    rate, rate_source = daily_distance(fills, cfg)

    # The newest odometer reading since the last full tank, and when it was taken.
    read_at, read_km = last_full.logged_at, last_full.odometer_km
    for fill in since:
        if fill.odometer_km is not None:
            read_at, read_km = fill.logged_at, fill.odometer_km
    if vehicle.odometer_km is not None and (read_km is None or vehicle.odometer_km > read_km):
        read_at, read_km = now, vehicle.odometer_km  # the vehicle's own reading is taken as current
    measured = 0.0
    if last_full.odometer_km is not None and read_km is not None:
        measured = read_km - last_full.odometer_km
    extrapolated_days = _days(now, read_at if measured > 0 else last_full.logged_at)
    source: DistanceSource = "days"
    if measured > 0:
        source = "odometer" if extrapolated_days == 0 else "odometer+days"
    if source != "odometer" and extrapolated_days > cfg.stale_after_days:
        return NoEstimate("stale")
    distance = measured + extrapolated_days * rate

    raw_left = capacity + sum(f.volume_l for f in since[1:]) - used * distance / 100
    if raw_left < -cfg.unlogged_fill_pct / 100 * capacity:
        return NoEstimate("unlogged_fill")
    litres_left = min(capacity, max(0.0, raw_left))
    priced = [f for f in fills if f.total_cost and f.volume_l > 0]
    confidence = {"history": 0.9, "vehicle": 0.75, "type_default": 0.6}[used_source]
    confidence *= {"odometer": 1.0, "odometer+days": 0.85, "days": 0.75}[source]
    if source != "odometer" and rate_source == "default":
        confidence *= 0.8
    return FuelEstimate(
        level_pct=litres_left / capacity * 100,
        litres_left=litres_left,
        capacity_l=capacity,
        range_km=litres_left / used * 100,
        distance_since_fill_km=distance,
        distance_source=source,
        daily_km=rate,
        daily_km_source=rate_source,
        consumption_l_per_100km=used,
        consumption_source=used_source,
        last_full_fill_at=last_full.logged_at,
        days_since_fill=_days(now, last_full.logged_at),
        price_per_l=(priced[-1].total_cost or 0) / priced[-1].volume_l if priced else None,
        confidence=round(confidence, 2),
    )


def classify(est: FuelEstimate, cfg: FuelConfig, nearest_station_km: float | None = None) -> pamd.Priority | None:
    """The alert priority for an estimate, or ``None``. Range shorter than the nearest station is urgent."""
    if est.level_pct < cfg.urgent_pct or (nearest_station_km is not None and est.range_km < nearest_station_km):
        return pamd.Priority.URGENT
    if est.level_pct < cfg.high_pct:
        return pamd.Priority.HIGH
    if est.level_pct < cfg.medium_pct:
        return pamd.Priority.MEDIUM
    return None


_HEADLINES = {
    pamd.Priority.URGENT: ("Fuel critically low", "Refuel as soon as possible."),
    pamd.Priority.HIGH: ("Fuel low", "Plan to refuel today."),
    pamd.Priority.MEDIUM: ("Fuel getting low", "Plan a fill-up soon."),
}


def render(
    inp: FuelInput, vehicle: FuelVehicle, est: FuelEstimate, priority: pamd.Priority,
    stations: Sequence[dict[str, Any]] = (),
) -> tuple[str, str]:
    """Rule text for a fuel alert, in the user's units and currency: ``(title, body)``. ``stations`` are
    :meth:`pamd.providers.places.Place.fact` dicts, nearest first; none are mentioned when there are none."""
    imp = inp.preferred_units == "imperial"
    headline, advice = _HEADLINES.get(priority, ("Fuel check", ""))
    if est.distance_source == "odometer":
        how = f"{units.distance(est.distance_since_fill_km, imp)} driven since (odometer)"
    else:
        basis = "your average" if est.daily_km_source == "history" else "a typical"
        how = (
            f"about {units.distance(est.distance_since_fill_km, imp)} driven since (estimated from {basis} "
            f"{units.distance(est.daily_km, imp)} a day)"
        )
    body = (
        f"{vehicle.name} has about {units.volume(est.litres_left, imp)} of fuel left ({est.level_pct:.0f}% of "
        f"{units.volume(est.capacity_l, imp)}), roughly {units.distance(est.range_km, imp)} of range. Estimated from "
        f"your last full fill-up {units.days_ago(est.days_since_fill)} and {how}."
    )
    if est.price_per_l is not None:
        need = est.capacity_l - est.litres_left
        cost = units.money(need * est.price_per_l, inp.currency)
        body += f" Filling up ({units.volume(need, imp)}) costs about {cost} at your last price."
    body += _stations_text(inp, vehicle, est, stations)
    return f"{headline}: about {est.level_pct:.0f}% left", f"{body} {advice}".strip()


_FUEL_NAMES = {"petrol": "petrol", "diesel": "diesel", "lpg": "LPG", "cng": "CNG"}


def _stations_text(inp: FuelInput, vehicle: FuelVehicle, est: FuelEstimate, stations: Sequence[dict[str, Any]]) -> str:
    if not stations:
        return ""
    imp = inp.preferred_units == "imperial"
    try:
        fuel = _FUEL_NAMES.get(fuel_kind(vehicle.fuel_type) or "", "fuel")
    except UnsupportedFuelError:
        fuel = "fuel"
    what = f"{fuel} station" if len(stations) == 1 else f"{fuel} stations"
    where = "you"
    if inp.position is not None and inp.position.source == "fuel_log":
        where = "your last fill-up"
    listed = describe_places(stations, imp, f"{fuel} not confirmed in OpenStreetMap")
    text = f" Nearest {what} to {where} (straight-line distance): {listed}."
    nearest = stations[0]["distance_km"]
    if where == "you" and est.range_km < nearest:
        text += " Your estimated range is shorter than the distance to the nearest one."
    return text


def build_alert(
    inp: FuelInput, est: FuelEstimate, priority: pamd.Priority, stations: list[dict[str, Any]], *,
    defer: bool = False,
) -> pamd.Alert:
    """The ``fuel_low`` alert: rule text for the user, SI numbers in ``facts``. ``defer``: the text is made only
    if the pipeline needs it (:meth:`pamd.Alert.deferred`; a steady tick's repeats in cooldown never do)."""
    assert inp.vehicle is not None
    alert = pamd.Alert.deferred(functools.partial(text, inp, est, priority, stations), user_id=inp.user_id,
                                kind="fuel_low", priority=priority, subject=inp.vehicle.id)
    return alert if defer else alert.complete()


def text(
    inp: FuelInput, est: FuelEstimate, priority: pamd.Priority, stations: list[dict[str, Any]]
) -> pamd.AlertText:
    """Title, body, facts and actions of a ``fuel_low`` alert."""
    assert inp.vehicle is not None
    title, body = render(inp, inp.vehicle, est, priority, stations)
    numbers = {k: round(v, 3) if isinstance(v, float) else v for k, v in msgspec.to_builtins(est).items()}
    facts = numbers | {
        "vehicle_id": inp.vehicle.id, "vehicle_name": inp.vehicle.name, "fuel_type": inp.vehicle.fuel_type,
        "last_full_fill_at": format_ts(est.last_full_fill_at), "currency": inp.currency,
        "units": inp.preferred_units,
        "refill_l": round(est.capacity_l - est.litres_left, 3), "stations": stations,
        "refill_cost": None if est.price_per_l is None else round((est.capacity_l - est.litres_left)
                                                                  * est.price_per_l, 2),
        "position": msgspec.to_builtins(inp.position) if inp.position is not None else None,
    }
    actions = [{"action": "log_fuel", "label": "Log a fill-up"}]
    return pamd.AlertText(title=title, body=body, facts=facts, actions=actions)


class FuelMonitor(pamd.Monitor):
    """Estimates every user's tank level and warns below 20% (medium), 10% (high) and 5% (urgent)."""

    name = "fuel"
    description = "Low fuel: estimated from the last full fill-up, distance since and the user's consumption"
    schedule = "*/5 * * * *"
    run_at_startup = True
    config_type = FuelConfig

    async def run(self, ctx: pamd.MonitorContext) -> AsyncIterator[pamd.Alert]:
        """Yield a ``fuel_low`` alert for every user whose estimated level is in a band."""
        store = ctx.store
        if not isinstance(store, FuelInputSource):
            raise TypeError(f"the fuel monitor needs a store with iter_fuel_inputs(), got {type(store).__name__}")
        cfg = ctx.config if isinstance(ctx.config, FuelConfig) else FuelConfig()
        now = ctx.now()
        max_age = timedelta(hours=cfg.position_max_age_hours)
        if ctx.user_id is None and not ctx.explaining and isinstance(store, FuelCandidateSource):
            # Only users whose fuel could be low (the store filters in SQL; a superset, decided below as usual).
            inputs = store.iter_fuel_candidates(bounds(cfg), cfg.batch_size, now=now, position_max_age=max_age)
        else:
            inputs = store.iter_fuel_inputs(cfg.batch_size, ctx.user_id, now=now, position_max_age=max_age)
        async with aclosing(inputs) as batches:
            async for batch in batches:
                found: list[tuple[FuelInput, FuelEstimate]] = []
                for inp in batch:
                    est = estimate_fuel(inp, now, cfg)
                    if isinstance(est, NoEstimate):
                        ctx.explain(inp.user_id, "no estimate", reason=est.reason)
                    elif classify(est, cfg) is not None:
                        found.append((inp, est))
                    elif ctx.explaining:
                        ctx.explain(inp.user_id, "estimate", **msgspec.to_builtins(est))
                        ctx.explain(inp.user_id, "rule", outcome=f"no alert: {est.level_pct:.1f}% is above "
                                    f"thresholds (medium below {cfg.medium_pct:g}%)")
                # One lookup per distinct (position, fuel): travellers parked together share the answer.
                keys = [_lookup_key(inp) for inp, _ in found]
                unique = {key: pair for key, pair in zip(keys, found, strict=True)}
                answers = await ctx.map_bounded(lambda pair: self.nearby_stations(ctx, *pair), unique.values())
                by_key = dict(zip(unique, answers, strict=True))
                for (inp, est), key in zip(found, keys, strict=True):
                    stations = by_key[key]
                    nearest = min((s["distance_km"] for s in stations), default=None)
                    if inp.position is None or inp.position.source != "user_location":
                        nearest = None  # stations near an old fill-up say nothing about what is in reach now
                    priority = classify(est, cfg, nearest)
                    if ctx.explaining:
                        ctx.explain(inp.user_id, "estimate", **msgspec.to_builtins(est))
                        ctx.explain(inp.user_id, "rule", outcome=f"{priority.value if priority else 'no alert'}: "
                                    f"{est.level_pct:.1f}% left (medium < {cfg.medium_pct:g}%, high < "
                                    f"{cfg.high_pct:g}%, urgent < {cfg.urgent_pct:g}% or range "
                                    f"{est.range_km:.0f} km < nearest station "
                                    f"{nearest if nearest is not None else '-'})")
                    if priority is not None:
                        yield build_alert(inp, est, priority, stations, defer=True)

    async def nearby_stations(
        self, ctx: pamd.MonitorContext, inp: FuelInput, est: FuelEstimate
    ) -> list[dict[str, Any]]:
        """Up to ``stations`` (3) real stations selling the vehicle's fuel near the user's position, nearest first,
        as :meth:`~pamd.providers.places.Place.fact` dicts (``distance_km``...), from ``ctx.providers.places``.

        None without a places provider (none, or ``[providers.places] enabled = false``), a position or a fuel
        sold at stations (electric...). When the provider fails the tick is marked degraded and the alert goes
        out without stations. Stations are never invented.
        """
        cfg = ctx.config if isinstance(ctx.config, FuelConfig) else FuelConfig()
        vehicle, position = inp.vehicle, inp.position
        if ctx.providers is None or not ctx.providers.hub.config.places.enabled:
            ctx.explain(inp.user_id, "stations", outcome="not looked up", reason="no places provider configured")
            return []
        if vehicle is None or position is None or cfg.stations == 0:
            ctx.explain(inp.user_id, "stations", outcome="not looked up", reason="no known position")
            return []
        try:
            found = await ctx.providers.places.fuel_stations(
                position.lat, position.lon, vehicle.fuel_type, radius_km=cfg.station_radius_km, limit=cfg.stations)
        except UnsupportedFuelError as exc:
            ctx.explain(inp.user_id, "stations", outcome="not looked up", reason=str(exc))
            return []
        except ProviderError as exc:
            ctx.degraded(f"places provider: {exc.problem}")
            ctx.explain(inp.user_id, "stations", outcome="provider failed", reason=exc.problem)
            return []
        stations = [place.fact() for place in found]
        ctx.explain(inp.user_id, "stations", outcome=f"{len(stations)} found", position=position,
                    radius_km=cfg.station_radius_km, stations=stations)
        return stations


def bounds(cfg: FuelConfig) -> FuelBounds:
    """What a store needs to leave out users who cannot alert (:class:`pamd.store.records.FuelCandidateSource`)."""
    return FuelBounds(
        below_pct=cfg.medium_pct, stale_after_days=cfg.stale_after_days, default_daily_km=cfg.default_daily_km,
        history_pairs=cfg.history_pairs, min_l_per_100km=cfg.min_l_per_100km, max_l_per_100km=cfg.max_l_per_100km,
        fallback_l_per_100km=cfg.fallback_l_per_100km,
        type_l_per_100km=DEFAULT_CONSUMPTION | cfg.consumption_l_per_100km)


def _lookup_key(inp: FuelInput) -> tuple[object, ...]:
    position, vehicle = inp.position, inp.vehicle
    if position is None or vehicle is None:
        return ("user", inp.user_id)
    return (position.lat, position.lon, position.source, vehicle.fuel_type)


@pamd.hookimpl
def register_monitors(register: Callable[[pamd.Monitor], None]) -> None:
    """Register the fuel monitor."""
    register(FuelMonitor())
