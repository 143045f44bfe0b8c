"""The built-in maintenance monitor (DESIGN.md section 7): service tasks due by date or odometer.

For each vehicle and task (normalised: "Oil and filter change" and "oil change" are one task) only the latest
record counts: a later record of the same task means the earlier one was done. That record is due on its
``next_due_date`` (the user's local date) or at its ``next_due_odometer_km``, whichever comes first. The current
odometer is the highest of the vehicle's reported odometer, its newest fill-up reading and the odometer of its
newest maintenance record. Bands: overdue (date passed or odometer past the mark) urgent; within
``very_soon_days``/``very_soon_km`` (3 days / 150 km) high; within ``due_soon_days``/``due_soon_km`` (14 days /
800 km) medium. The recent km/day pace, when fill-ups show one, gives an estimated date for the odometer mark
(text only, called an estimate). The cost estimate is the median of the user's own past costs for the task, else
the configured table (in ``cost_table_currency`` only), else none; always called an estimate. Up to 3 real repair
shops near the user come from the places provider (OpenStreetMap), or none.
"""

from __future__ import annotations

import functools
import math
import re
import statistics
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from datetime import date, datetime, timedelta
from itertools import pairwise
from typing import Any, Literal
from zoneinfo import ZoneInfo

import msgspec

import pamd
from pamd import units
from pamd.providers import ProviderError
from pamd.providers.places import describe_places
from pamd.store.records_maintenance import (
    MaintenanceBands,
    MaintenanceCandidateSource,
    MaintenanceInput,
    MaintenanceInputSource,
    MaintenanceRecord,
    MaintenanceVehicle,
)

P = pamd.Priority
DEFAULT_COSTS = {  # typical costs in cost_table_currency (USD) by keyword of the normalised task
    "oil change": 120.0, "tyre rotation": 60.0, "brake inspection": 120.0, "brake pads": 350.0,
    "air filter": 60.0, "coolant": 150.0, "transmission": 300.0, "wheel alignment": 120.0, "battery": 220.0,
    "generator": 250.0, "roof": 200.0, "inspection": 100.0,
}
RV_TYPES = frozenset({"rv_class_a", "rv_class_b", "rv_class_c", "motorhome", "campervan", "camper", "caravan",
                      "travel_trailer", "fifth_wheel", "truck_trailer", "truck_camper", "rv"})
_OIL = re.compile(r"\b(oil change|oil and filter|oil filter|engine oil|oil service|lube)\b")
_NOT_ENGINE_OIL = re.compile(r"\b(transmission|gearbox|gear|differential|diff|hydraulic|generator|genset)\b")
_ROTATION = re.compile(r"\b(tyre rotation|rotate tyre|rotate the tyre)\b")
DueBy = Literal["date", "odometer", "date+odometer"]


class MaintenanceConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[monitors.maintenance]`` settings."""

    due_soon_days: int = 14
    due_soon_km: float = 800.0
    very_soon_days: int = 3
    very_soon_km: float = 150.0
    cost_table: dict[str, float] = msgspec.field(default_factory=lambda: dict(DEFAULT_COSTS))
    cost_table_currency: str = "USD"  # the table is only used for users who pay in this currency
    pace_days: float = 90.0  # fill-up readings this recent give the km/day pace
    shop_radius_km: float = 40.0
    shops: int = 3
    position_max_age_hours: float = 6.0
    # Users a page: a maintenance user's page carries all their vehicles, tasks, costs and readings, so half the
    # other monitors' 500 (the same speed over 100,000 users, about 9 MB less peak memory in the daemon and reader).
    batch_size: int = 250

    def __post_init__(self) -> None:
        if not 0 <= self.very_soon_days <= self.due_soon_days or not 0 <= self.very_soon_km <= self.due_soon_km:
            raise ValueError("need 0 <= very_soon_days <= due_soon_days and 0 <= very_soon_km <= due_soon_km")
        if any(not math.isfinite(v) or v < 0 for v in self.cost_table.values()):
            raise ValueError("cost_table amounts must be >= 0")
        if self.batch_size < 1 or self.shops < 0 or self.pace_days <= 0 or self.position_max_age_hours <= 0:
            raise ValueError("batch_size must be >= 1, shops >= 0, pace_days and position_max_age_hours > 0")
        if not 0 < self.shop_radius_km <= 100:
            raise ValueError("need 0 < shop_radius_km <= 100")


class Due(msgspec.Struct, frozen=True, kw_only=True):
    """A task that is due (or overdue) on a vehicle, with the facts that make it so (SI units)."""

    record: MaintenanceRecord
    vehicle: MaintenanceVehicle
    task_key: str
    priority: pamd.Priority
    by: DueBy
    today: date
    days_left: int | None = None
    km_left: float | None = None
    odometer_km: float | None = None
    odometer_source: str | None = None
    daily_km: float | None = None
    estimated_date: date | None = None


class Cost(msgspec.Struct, frozen=True):
    """An estimated cost and where it came from: ``history`` (median of ``samples`` past costs) or ``table``."""

    amount: float
    source: Literal["history", "table"]
    samples: int = 0


def task_key(task: str) -> str:
    """The normalised task: lower case, words only, "tire" -> "tyre", engine-oil and tyre-rotation synonyms."""
    text = " ".join(re.sub(r"[\W_]+", " ", task.lower().replace("&", " and ")).split())
    text = re.sub(r"\btires?\b|\btyres\b", "tyre", text)
    if _OIL.search(text) and not _NOT_ENGINE_OIL.search(text):
        return "oil change"
    if _ROTATION.search(text):
        return "tyre rotation"
    return text


def current_odometer(vehicle: MaintenanceVehicle, records: Sequence[MaintenanceRecord]) -> tuple[float, str] | None:
    """The highest of the vehicle's reported odometer, its newest fill-up reading and its newest record's."""
    found: list[tuple[float, str]] = []
    if vehicle.odometer_km is not None:
        found.append((vehicle.odometer_km, "vehicle"))
    if vehicle.readings:
        found.append((vehicle.readings[-1].km, "fuel_log"))
    mine = [r for r in records if r.vehicle_id == vehicle.id and r.odometer_km is not None]
    if mine:
        found.append((float(mine[-1].odometer_km or 0.0), "maintenance_record"))
    return max(found, key=lambda f: f[0]) if found else None


def pace(vehicle: MaintenanceVehicle, now: datetime, cfg: MaintenanceConfig) -> float | None:
    """Km per day between the first and last fill-up readings of the last ``pace_days`` (at least a week apart,
    never decreasing), else ``None``."""
    recent = [r for r in vehicle.readings if now - r.at <= timedelta(days=cfg.pace_days)]
    if len(recent) < 2 or any(b.km < a.km for a, b in pairwise(recent)):
        return None
    days = (recent[-1].at - recent[0].at) / timedelta(days=1)
    return (recent[-1].km - recent[0].km) / days if days >= 7 and recent[-1].km > recent[0].km else None


def band(days_left: int | None, km_left: float | None, cfg: MaintenanceConfig) -> tuple[pamd.Priority | None, DueBy]:
    """The priority of a task ``days_left`` days / ``km_left`` km from due (negative: overdue), and what sets it."""
    by_date = _level(days_left, cfg.very_soon_days, cfg.due_soon_days)
    by_km = _level(km_left, cfg.very_soon_km, cfg.due_soon_km)
    if by_date is None or by_km is None or by_date == by_km:
        return by_date or by_km, "date+odometer" if by_date == by_km else "date" if by_km is None else "odometer"
    return (by_date, "date") if by_date > by_km else (by_km, "odometer")


def _level(left: float | None, very_soon: float, soon: float) -> pamd.Priority | None:
    if left is None:
        return None
    return P.URGENT if left < 0 else P.HIGH if left <= very_soon else P.MEDIUM if left <= soon else None


def assess(inp: MaintenanceInput, now: datetime, cfg: MaintenanceConfig) -> tuple[list[Due], dict[str, str]]:
    """Every due task of ``inp``'s vehicles, and for the others why not (keyed by ``vehicle_id:task``). Pure."""
    today = now.astimezone(ZoneInfo(inp.profile.timezone)).date()
    latest: dict[tuple[str, str], MaintenanceRecord] = {}
    for record in inp.records:  # oldest first: the last one of each task wins
        latest[(record.vehicle_id, task_key(record.task))] = record
    vehicles = {v.id: v for v in inp.vehicles}
    due: list[Due] = []
    skipped: dict[str, str] = {}
    for (vehicle_id, key), record in latest.items():
        vehicle = vehicles[vehicle_id]
        odometer = current_odometer(vehicle, inp.records)
        days_left = (record.next_due_date - today).days if record.next_due_date is not None else None
        km_left = None
        if record.next_due_odometer_km is not None and odometer is not None:
            km_left = record.next_due_odometer_km - odometer[0]
        priority, by = band(days_left, km_left, cfg)
        if priority is None:
            skipped[f"{vehicle_id}:{key}"] = (
                "no next due date or odometer" if record.next_due_date is None and record.next_due_odometer_km is None
                else "no current odometer to compare" if days_left is None and km_left is None else "not due yet")
            continue
        rate = pace(vehicle, now, cfg)
        estimated = None
        if rate and km_left is not None and km_left > 0:
            estimated = today + timedelta(days=math.floor(km_left / rate))
        due.append(Due(record=record, vehicle=vehicle, task_key=key, priority=priority, by=by, today=today,
                       days_left=days_left, km_left=km_left, odometer_km=odometer[0] if odometer else None,
                       odometer_source=odometer[1] if odometer else None, daily_km=rate, estimated_date=estimated))
    return due, skipped


def estimate_cost(key: str, inp: MaintenanceInput, cfg: MaintenanceConfig) -> Cost | None:
    """Median of the user's own past (non-zero) costs for the task, else the config table, else ``None``."""
    costs = [r.cost for r in inp.records if r.cost and task_key(r.task) == key]
    if costs:
        return Cost(statistics.median(costs), "history", len(costs))
    if inp.profile.currency.upper() == cfg.cost_table_currency.upper():
        for keyword in sorted(cfg.cost_table, key=len, reverse=True):
            if re.search(rf"\b{re.escape(task_key(keyword))}\b", key):
                return Cost(cfg.cost_table[keyword], "table")
    return None


def _day(d: date, today: date) -> str:
    text = f"{d:%a} {d.day} {d:%b}"
    return text if d.year == today.year else f"{text} {d.year}"


def _in_days(days: int) -> str:
    if days < 0:
        return "yesterday" if days == -1 else f"{-days} days ago"
    return "today" if days == 0 else "tomorrow" if days == 1 else f"in {days} days"


_TITLES = {P.URGENT: "Overdue", P.HIGH: "Due very soon", P.MEDIUM: "Due soon"}
_ADVICE = {P.URGENT: "Book it as soon as you can.", P.HIGH: "Book it now.", P.MEDIUM: "Worth booking soon."}
_SHOP_KINDS = {"car_repair": "garage", "truck_repair": "truck garage", "caravan_repair": "RV repair"}


def render(inp: MaintenanceInput, due: Due, cost: Cost | None, shops: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """Rule text for a due task, in the user's units and currency: ``(title, body)``."""
    imp = inp.profile.preferred_units == "imperial"
    rec, today = due.record, due.today
    by_date = by_km = ""
    if rec.next_due_date is not None and due.days_left is not None:
        verb = "was due" if due.days_left < 0 else "is due"
        by_date = f"{verb} on {_day(rec.next_due_date, today)} ({_in_days(due.days_left)})"
    if rec.next_due_odometer_km is not None:
        mark, odometer = units.distance(rec.next_due_odometer_km, imp), units.distance(due.odometer_km or 0, imp)
        if due.km_left is None:
            by_km = f"is due at {mark} (no current odometer reading to compare)"
        elif due.km_left < 0:
            by_km = f"was due at {mark} (odometer {odometer}: {units.distance(-due.km_left, imp)} past it)"
        else:
            by_km = f"is due at {mark} ({units.distance(due.km_left, imp)} to go; odometer {odometer})"
    body = f"{rec.task} on {due.vehicle.name} "
    if by_date.startswith("is") and by_km.startswith("is"):
        body += f"{by_date} or {by_km.removeprefix('is due ')}, whichever comes first."
    elif by_date and by_km:
        body += f"{by_date}. By odometer it {by_km}."
    else:
        body += f"{by_date or by_km}."
    body += f" Last done on {_day(rec.done_on, today)}"
    body += f" at {units.distance(rec.odometer_km, imp)}." if rec.odometer_km is not None else "."
    if due.estimated_date is not None and due.daily_km:
        when = "within a day" if due.estimated_date == today else f"around {_day(due.estimated_date, today)}"
        body += (f" At your recent pace (about {units.distance(due.daily_km, imp)} a day) you would reach "
                 f"{units.distance(rec.next_due_odometer_km or 0, imp)} {when} (an estimate).")
    if cost is not None:
        money = units.money(cost.amount, inp.profile.currency)
        source = ("what it cost you last time" if cost.samples == 1 else
                  f"the median of your {cost.samples} past costs for it" if cost.source == "history" else
                  "a typical price, not from your own records")
        body += f" Estimated cost: about {money} ({source})."
    if shops:
        where = "your last fill-up" if inp.position is not None and inp.position.source == "fuel_log" else "you"
        listed = describe_places(
            [s | {"name": f"{s['name']}, {_SHOP_KINDS.get(s['category'], 'repair')}"} for s in shops], imp)
        body += f" Repair shops near {where} (straight-line distance): {listed}."
    return f"{_TITLES[due.priority]}: {rec.task} ({due.vehicle.name})", f"{body} {_ADVICE[due.priority]}"


def build_alert(inp: MaintenanceInput, due: Due, cost: Cost | None, shops: list[dict[str, Any]],
                now: datetime, *, defer: bool = False) -> pamd.Alert:
    """The ``maintenance_due`` alert; subject: vehicle id + normalised task, so a done task resolves it.
    ``defer``: the text is made only if the pipeline needs it (:meth:`pamd.Alert.deferred`)."""
    alert = pamd.Alert.deferred(
        functools.partial(text, inp, due, cost, shops), user_id=inp.user_id, kind="maintenance_due",
        priority=due.priority, subject=f"{due.vehicle.id}:{due.task_key}", expires_at=now + timedelta(hours=24))
    return alert if defer else alert.complete()


def text(inp: MaintenanceInput, due: Due, cost: Cost | None, shops: list[dict[str, Any]]) -> pamd.AlertText:
    """Title, body, facts and actions of a ``maintenance_due`` alert."""
    title, body = render(inp, due, cost, shops)
    rec = due.record
    facts = {
        "vehicle_id": due.vehicle.id, "vehicle_name": due.vehicle.name, "task": rec.task, "task_key": due.task_key,
        "record_id": rec.id, "done_on": rec.done_on.isoformat(), "done_odometer_km": rec.odometer_km,
        "next_due_date": rec.next_due_date.isoformat() if rec.next_due_date else None,
        "next_due_odometer_km": rec.next_due_odometer_km, "local_date": due.today.isoformat(),
        "days_left": due.days_left, "km_left": round(due.km_left, 3) if due.km_left is not None else None,
        "odometer_km": due.odometer_km, "odometer_source": due.odometer_source, "due_by": due.by,
        "daily_km": round(due.daily_km, 3) if due.daily_km else None,
        "estimated_due_date": due.estimated_date.isoformat() if due.estimated_date else None,
        "cost_estimate": round(cost.amount, 2) if cost else None, "cost_source": cost.source if cost else None,
        "cost_samples": cost.samples if cost else 0, "currency": inp.profile.currency, "shops": shops,
        "units": inp.profile.preferred_units,
    }
    return pamd.AlertText(title=title, body=body, facts=facts,
                          actions=[{"action": "log_maintenance", "label": "Log it as done"}])


def _summary(due: Due) -> dict[str, Any]:
    return {"task": f"{due.vehicle.id}:{due.task_key}", "priority": due.priority.value, "by": due.by,
            "days_left": due.days_left, "km_left": due.km_left, "odometer_km": due.odometer_km,
            "odometer_source": due.odometer_source, "daily_km": due.daily_km}


class MaintenanceMonitor(pamd.Monitor):
    """Warns about service tasks due within 14 days / 800 km (medium), 3 days / 150 km (high), or overdue."""

    name = "maintenance"
    description = "Maintenance due by date or odometer, with a cost estimate and nearby repair shops"
    schedule = "0 8 * * *"
    config_type = MaintenanceConfig
    cooldown = 7 * 86400.0  # a task that stays due is repeated weekly; a higher band passes at once

    async def run(self, ctx: pamd.MonitorContext) -> AsyncIterator[pamd.Alert]:
        """Yield a ``maintenance_due`` alert for every due task of every user's vehicles."""
        store = ctx.store
        if not isinstance(store, MaintenanceInputSource):
            raise TypeError(f"the maintenance monitor needs a store with iter_maintenance_inputs(), "
                            f"got {type(store).__name__}")
        cfg = ctx.config if isinstance(ctx.config, MaintenanceConfig) else MaintenanceConfig()
        now = ctx.now()
        max_age = timedelta(hours=cfg.position_max_age_hours)
        if ctx.user_id is None and not ctx.explaining and isinstance(store, MaintenanceCandidateSource):
            # Only users with a task that could be due (the store filters in SQL; a superset).
            bands = MaintenanceBands(due_soon_days=cfg.due_soon_days, due_soon_km=cfg.due_soon_km, task_key=task_key)
            inputs = store.iter_maintenance_candidates(bands, cfg.batch_size, now=now, position_max_age=max_age)
        else:
            inputs = store.iter_maintenance_inputs(cfg.batch_size, ctx.user_id, now=now, position_max_age=max_age)
        async with aclosing(inputs) as batches:
            async for batch in batches:
                found: list[tuple[MaintenanceInput, list[Due]]] = []
                for inp in batch:
                    if not inp.records:
                        ctx.explain(inp.user_id, "outcome", alert=False, reason="no maintenance records")
                        continue
                    due, not_due = assess(inp, now, cfg)
                    ctx.explain(inp.user_id, "assessed", due=[_summary(d) for d in due], not_due=not_due)
                    if due:
                        found.append((inp, due))
                    else:
                        ctx.explain(inp.user_id, "outcome", alert=False, reason="nothing due")
                lookups = await ctx.map_bounded(lambda pair: self.repair_shops(ctx, pair[0], pair[1]), found)
                for (inp, due), shops in zip(found, lookups, strict=True):
                    for item in due:
                        cost = estimate_cost(item.task_key, inp, cfg)
                        ctx.explain(inp.user_id, "outcome", alert=True, priority=item.priority, task=item.task_key,
                                    cost=cost)
                        yield build_alert(inp, item, cost, shops, now, defer=True)

    async def repair_shops(self, ctx: pamd.MonitorContext, inp: MaintenanceInput, due: list[Due]
                           ) -> list[dict[str, Any]]:
        """Up to ``shops`` (3) real repair shops near the user, nearest first (RV-capable ones included for
        RVs), as :meth:`~pamd.providers.places.Place.fact` dicts; none without providers or a position. A
        provider failure marks the tick degraded and the alerts go out without shops."""
        cfg = ctx.config if isinstance(ctx.config, MaintenanceConfig) else MaintenanceConfig()
        if ctx.providers is None or not ctx.providers.hub.config.places.enabled:
            ctx.explain(inp.user_id, "shops", outcome="not looked up", reason="no places provider configured")
            return []
        if inp.position is None or cfg.shops == 0:
            ctx.explain(inp.user_id, "shops", outcome="not looked up", reason="no known position")
            return []
        rv = any((d.vehicle.vehicle_type or inp.profile.vehicle_type or "").lower() in RV_TYPES for d in due)
        try:
            found = await ctx.providers.places.repair_shops(
                inp.position.lat, inp.position.lon, radius_km=cfg.shop_radius_km, limit=cfg.shops, rv=rv)
        except ProviderError as exc:
            ctx.degraded(f"places provider: {exc.problem}")
            ctx.explain(inp.user_id, "shops", outcome="provider failed", reason=exc.problem)
            return []
        shops = [place.fact() for place in found]
        ctx.explain(inp.user_id, "shops", outcome=f"{len(shops)} found", position=inp.position, rv=rv, shops=shops)
        return shops


@pamd.hookimpl
def register_monitors(register: Callable[[pamd.Monitor], None]) -> None:
    """Register the maintenance monitor."""
    register(MaintenanceMonitor())
