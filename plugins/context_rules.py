"""The context monitor's rules: small pure functions over one user's location, local time, trip and calendar.

Each rule returns a :class:`RuleOutcome` ``(confidence, alert or None, reason)``. The confidence says how much the
data can be trusted (how old the latest location is, how many fixes there are, whether the speed was measured) and
is computed whenever the data allows; an alert is returned only when the rule's condition holds and the confidence
is at least ``min_confidence``. Distances are great-circle ("straight line") distances; travel times multiply them
by ``road_factor`` and divide by ``average_speed_kmh``, and the text says so.

Confidence factors (multiplied):

- freshness of the latest fix: <= 15 min 1.0, <= 30 min 0.95, <= 60 min 0.85, <= 2 h 0.75, older 0.4;
- fixes in the hour up to the latest one: >= 3 1.0, 2 0.95, 1 0.85;
- evening arrival: speed derived from two fixes instead of reported 0.9; arrival less than an hour past the
  evening's end 0.9;
- driving time: 0.6 + 0.4 x coverage, where coverage is the share of the expected fixes (4 an hour of driving)
  actually recorded today.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, time, timedelta
from typing import Any, NamedTuple

import msgspec

import pamd
from pamd import units
from pamd.store.records import format_ts, zone
from pamd.store.records_context import (
    HOUR,
    ActiveTrip,
    CalendarEvent,
    ContextInput,
    Track,
    distance_km,
)


@functools.lru_cache(maxsize=64)
def parse_hhmm(text: str) -> int:
    """Minutes after midnight of a ``"HH:MM"`` time of day (``"24:00"`` allowed as the end of the day)."""
    hours, sep, minutes = text.strip().partition(":")
    if not sep or not hours.isdigit() or not minutes.isdigit() or len(minutes) != 2:
        raise ValueError(f"not a HH:MM time: {text!r}")
    value = int(hours) * 60 + int(minutes)
    if int(minutes) > 59 or value > 24 * 60:
        raise ValueError(f"not a HH:MM time: {text!r}")
    return value


class ContextConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[monitors.context]`` settings."""

    min_confidence: float = 0.7  # alerts need at least this confidence
    expiry_hours: float = 24.0  # suggestions expire after this (leave-by reminders at the event's start)
    evening_start: str = "17:00"  # the evening window, user's local time (may wrap past midnight)
    evening_end: str = "22:00"  # ...and arriving after its end counts as arriving late
    average_speed_kmh: float = 80.0  # for travel-time estimates
    road_factor: float = 1.2  # road distance / straight-line distance, for travel-time estimates
    leave_by_buffer_minutes: float = 15.0
    leave_by_window_hours: float = 3.0  # remind when the leave-by time is this close (or past)
    leave_by_high_minutes: float = 60.0  # ...high priority when closer than this
    event_lookahead_hours: float = 24.0
    max_driving_hours: float = 6.0  # when the profile has no max_driving_hours
    moving_speed_kmh: float = 5.0  # faster than this counts as driving
    max_gap_minutes: float = 30.0  # a fix stands for at most this much driving (longer gaps: data missing)
    arrived_km: float = 1.0  # closer than this to the destination or event: already there
    batch_size: int = 500

    def __post_init__(self) -> None:
        parse_hhmm(self.evening_start)
        parse_hhmm(self.evening_end)
        if not 0 <= self.min_confidence <= 1:
            raise ValueError("min_confidence must be within 0..1")
        positive = (self.expiry_hours, self.average_speed_kmh, self.road_factor, self.event_lookahead_hours,
                    self.max_driving_hours, self.max_gap_minutes)
        if min(positive) <= 0 or self.batch_size < 1:
            raise ValueError("expiry_hours, average_speed_kmh, road_factor, event_lookahead_hours, "
                             "max_driving_hours, max_gap_minutes must be > 0 and batch_size >= 1")
        if min(self.leave_by_buffer_minutes, self.leave_by_window_hours, self.leave_by_high_minutes,
               self.moving_speed_kmh, self.arrived_km) < 0:
            raise ValueError("leave_by_*, moving_speed_kmh and arrived_km must be >= 0")


class RuleOutcome(NamedTuple):
    """What a rule concluded: the data's ``confidence`` (0..1), the ``alert`` or ``None``, and why."""

    confidence: float
    alert: pamd.Alert | None
    reason: str


# -- geometry and data quality ----------------------------------------------------------------------------------


def freshness(age_minutes: float) -> float:
    """Confidence factor for the age of the latest fix."""
    for limit, factor in ((15, 1.0), (30, 0.95), (60, 0.85), (120, 0.75)):
        if age_minutes <= limit:
            return factor
    return 0.4


def sampling(points: int) -> float:
    """Confidence factor for the number of fixes in the hour up to the latest one."""
    return 1.0 if points >= 3 else 0.95 if points == 2 else 0.85 if points == 1 else 0.0


class Whereabouts(msgspec.Struct, frozen=True, kw_only=True):
    """The latest fix of a user, how old it is and how fast they were going."""

    lat: float
    lon: float
    recorded_at: datetime
    age_minutes: float
    speed_kmh: float | None  # reported, else derived from the previous fix; None when neither is possible
    speed_measured: bool
    recent_points: int  # fixes in the hour up to the latest one

    def moving(self, cfg: ContextConfig) -> bool:
        """True when the latest speed is above the driving threshold."""
        return self.speed_kmh is not None and self.speed_kmh > cfg.moving_speed_kmh


def whereabouts(track: Track | None, now: datetime) -> Whereabouts | None:
    """The latest fix of ``track``, its age and speed (reported, else derived from the fix before it)."""
    if track is None:
        return None
    last, before = track.latest, track.previous
    speed, measured = last.speed_kmh, last.speed_kmh is not None
    if speed is None and before is not None and last.recorded_at > before.recorded_at:
        hours = (last.recorded_at - before.recorded_at) / HOUR
        speed = distance_km(before.lat, before.lon, last.lat, last.lon) / hours
    return Whereabouts(
        lat=last.lat, lon=last.lon, recorded_at=last.recorded_at,
        age_minutes=max(0.0, (now - last.recorded_at) / timedelta(minutes=1)), speed_kmh=speed,
        speed_measured=measured, recent_points=track.recent_points,
    )


class DrivingToday(msgspec.Struct, frozen=True, kw_only=True):
    """Time spent driving since local midnight (:func:`pamd.store.records_context.summarize_track`)."""

    hours: float
    points: int  # fixes since local midnight
    coverage: float  # fixes recorded / fixes expected while driving (4 an hour), at most 1

    @classmethod
    def of(cls, track: Track | None) -> DrivingToday:
        """The driving figures of ``track`` (none without a track)."""
        if track is None:
            return cls(hours=0.0, points=0, coverage=0.0)
        hours, points = track.driving_hours, track.points_today
        return cls(hours=hours, points=points, coverage=min(1.0, points / (hours * 4)) if hours > 0 else 0.0)


# -- text helpers -----------------------------------------------------------------------------------------------


def duration(hours: float) -> str:
    """``"45 min"``, ``"2 h 05 min"``."""
    minutes = max(0, round(hours * 60))
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def clock(moment: datetime, timezone: str) -> str:
    """``"18:40"`` in the user's timezone."""
    local = moment.astimezone(zone(timezone) or UTC)
    return f"{local.hour:02d}:{local.minute:02d}"


def _travel(km: float, cfg: ContextConfig) -> float:
    """Estimated hours to cover a straight-line distance by road."""
    return km * cfg.road_factor / cfg.average_speed_kmh


def _travel_facts(km: float, hours: float, cfg: ContextConfig) -> dict[str, Any]:
    return {"distance_km": round(km, 3), "road_distance_km": round(km * cfg.road_factor, 3),
            "drive_minutes": round(hours * 60, 1), "average_speed_kmh": cfg.average_speed_kmh,
            "road_factor": cfg.road_factor}


def _where_facts(where: Whereabouts) -> dict[str, Any]:
    return {"location_recorded_at": format_ts(where.recorded_at), "location_age_minutes": round(where.age_minutes, 1),
            "speed_kmh": None if where.speed_kmh is None else round(where.speed_kmh, 1),
            "speed_measured": where.speed_measured, "recent_points": where.recent_points}


def _judged(confidence: float, cfg: ContextConfig, alert: pamd.Alert, reason: str, defer: bool) -> RuleOutcome:
    """The rule's outcome: its (deferred) ``alert`` if ``confidence`` reaches the minimum, its text made now
    unless ``defer``."""
    confidence = round(confidence, 2)
    if confidence < cfg.min_confidence:
        return RuleOutcome(confidence, None, f"{reason}, but confidence {confidence} < {cfg.min_confidence}")
    return RuleOutcome(confidence, alert if defer else alert.complete(), reason)


def _text(shown: str, confidence: float, title: str, body: str, facts: dict[str, Any],
          action: dict[str, str]) -> pamd.AlertText:
    """An alert's text, with the confidence and how the user reads distances and speeds (``shown``, for phrasing;
    the facts themselves are SI) as the last facts."""
    facts |= {"confidence": round(confidence, 2), "units": shown}
    return pamd.AlertText(title=title, body=body, facts=facts, actions=[action])


def _to_minute(moment: datetime) -> datetime:
    """``moment`` rounded to the nearest minute (the text shows minutes; the numbers must agree with it)."""
    return (moment + timedelta(seconds=30)).replace(second=0, microsecond=0)


def local_now(inp: ContextInput, now: datetime) -> datetime:
    """``now`` in the user's timezone."""
    return now.astimezone(zone(inp.timezone) or UTC)


def in_window(moment: datetime, start: str, end: str) -> bool:
    """True when the wall-clock time of ``moment`` is in ``[start, end)`` (the window may wrap past midnight)."""
    minute, lo, hi = moment.hour * 60 + moment.minute, parse_hhmm(start), parse_hhmm(end)
    return lo <= minute < hi if lo <= hi else minute >= lo or minute < hi


def _next_local(moment: datetime, hhmm: str) -> datetime:
    """The first local time ``hhmm`` after ``moment`` (aware, in ``moment``'s zone), as UTC."""
    minutes = parse_hhmm(hhmm)
    day = moment.date() + timedelta(days=minutes // (24 * 60))
    at = time((minutes % (24 * 60)) // 60, minutes % 60)
    candidate = datetime.combine(day, at, tzinfo=moment.tzinfo).astimezone(UTC)
    if candidate <= moment:
        candidate = datetime.combine(day + timedelta(days=1), at, tzinfo=moment.tzinfo).astimezone(UTC)
    return candidate


# -- the rules ---------------------------------------------------------------------------------------------------


def evening_arrival(inp: ContextInput, trip: ActiveTrip, where: Whereabouts | None, now: datetime,
                    cfg: ContextConfig, *, defer: bool = False) -> RuleOutcome:
    """Active trip, driving, evening, and the rest of the way would end after the evening: suggest a stop.
    ``defer``: the alert's text is made only if the pipeline needs it (:meth:`pamd.Alert.deferred`)."""
    if trip.dest_lat is None or trip.dest_lon is None:
        return RuleOutcome(0.0, None, "the trip's destination has no coordinates")
    if where is None:
        return RuleOutcome(0.0, None, "no recent location")
    confidence = freshness(where.age_minutes) * sampling(where.recent_points)
    confidence *= 1.0 if where.speed_measured else 0.9
    local = local_now(inp, now)
    if not in_window(local, cfg.evening_start, cfg.evening_end):
        return RuleOutcome(round(confidence, 2), None, f"not evening ({local.hour:02d}:{local.minute:02d} local)")
    if not where.moving(cfg):
        return RuleOutcome(round(confidence, 2), None, "not driving now")
    km = distance_km(where.lat, where.lon, trip.dest_lat, trip.dest_lon)
    hours = _travel(km, cfg)
    arrival = now + timedelta(hours=hours)
    late = _next_local(local, cfg.evening_end)
    if km < cfg.arrived_km or arrival <= late:
        return RuleOutcome(round(confidence, 2), None, f"arrives by {cfg.evening_end} ({km:.0f} km to go)")
    if arrival - late < HOUR:
        confidence *= 0.9
    eta = clock(arrival, inp.timezone)
    next_day = arrival.astimezone(local.tzinfo).date() > local.date()
    eta_text = f"{eta} tomorrow" if next_day else eta
    shown = inp.preferred_units  # compose() keeps only what it needs alive, not the user's whole track

    def compose() -> pamd.AlertText:
        imp = units.is_imperial(shown)
        place = trip.destination or "your destination"
        speed = units.speed(cfg.average_speed_kmh, imp)
        body = (f"{place} is about {units.distance(km, imp)} away in a straight line: roughly {duration(hours)} "
                f"more driving at an average {speed}, so you would arrive around {eta_text}, after "
                f"{cfg.evening_end}. Consider stopping for the night and driving on in daylight.")
        facts = {"trip_id": trip.id, "destination": trip.destination, "dest_lat": trip.dest_lat,
                 "dest_lon": trip.dest_lon, "eta": format_ts(arrival), "eta_local": eta, "eta_next_day": next_day,
                 "local_time": f"{local:%H:%M}", "evening_end": cfg.evening_end, **_travel_facts(km, hours, cfg),
                 **_where_facts(where)}
        return _text(shown, confidence, f"Arriving late: consider an overnight stop before {place}", body, facts,
                     {"action": "find_campground", "label": "Find a place to stay"})

    alert = pamd.Alert.deferred(
        compose, user_id=inp.user_id, kind="overnight_stop", priority=pamd.Priority.MEDIUM,
        subject=f"overnight_stop:{trip.id}:{local.date().isoformat()}",
        expires_at=now + timedelta(hours=cfg.expiry_hours))
    return _judged(confidence, cfg, alert, f"arrival around {eta_text}, after {cfg.evening_end}", defer)


def leave_by(inp: ContextInput, event: CalendarEvent, where: Whereabouts | None, now: datetime,
             cfg: ContextConfig, *, defer: bool = False) -> RuleOutcome:
    """A located event soon: the time to leave (start - travel time - buffer), when it is near or past.
    ``defer``: as for :func:`evening_arrival`."""
    if where is None:
        return RuleOutcome(0.0, None, "no recent location")
    confidence = freshness(where.age_minutes) * sampling(where.recent_points)
    if event.start_at <= now:
        return RuleOutcome(round(confidence, 2), None, "the event has started")
    km = distance_km(where.lat, where.lon, event.lat, event.lon)
    if km < cfg.arrived_km:
        return RuleOutcome(round(confidence, 2), None, "already at the event's location")
    hours = _travel(km, cfg)
    leave_at = _to_minute(event.start_at - timedelta(hours=hours, minutes=cfg.leave_by_buffer_minutes))
    until = (leave_at - now) / HOUR
    if until > cfg.leave_by_window_hours:
        return RuleOutcome(round(confidence, 2), None, f"leave-by time {duration(until)} away")
    priority = pamd.Priority.HIGH if until * 60 < cfg.leave_by_high_minutes else pamd.Priority.MEDIUM
    leave = clock(leave_at, inp.timezone)
    shown, timezone = inp.preferred_units, inp.timezone  # as in evening_arrival

    def compose() -> pamd.AlertText:
        imp = units.is_imperial(shown)
        start = clock(event.start_at, timezone)
        where_text = f" at {event.location_name}" if event.location_name else ""
        when = f"in {duration(until)}" if until > 0 else f"{duration(-until)} ago: leave now"
        body = (f"{event.title} starts at {start}{where_text}, about {units.distance(km, imp)} away in a straight "
                f"line. Allowing roughly {duration(hours)} of driving at an average "
                f"{units.speed(cfg.average_speed_kmh, imp)} and {cfg.leave_by_buffer_minutes:g} min to spare, leave "
                f"by {leave} ({when}).")
        facts = {"event_id": event.id, "title": event.title, "location_name": event.location_name,
                 "event_lat": event.lat, "event_lon": event.lon, "start_at": format_ts(event.start_at),
                 "start_local": start, "leave_by": format_ts(leave_at), "leave_by_local": leave,
                 "minutes_until_leave": round(until * 60, 1), "buffer_minutes": cfg.leave_by_buffer_minutes,
                 **_travel_facts(km, hours, cfg), **_where_facts(where)}
        return _text(shown, confidence, f"Leave by {leave} for {event.title}", body, facts,
                     {"action": "open_directions", "label": "Directions"})

    event_day = event.start_at.astimezone(zone(inp.timezone) or UTC).date().isoformat()
    alert = pamd.Alert.deferred(compose, user_id=inp.user_id, kind="leave_by", priority=priority,
                                subject=f"leave_by:{event.id}:{event_day}", expires_at=event.start_at)
    return _judged(confidence, cfg, alert, f"leave by {leave}", defer)


def driving_rest(inp: ContextInput, driving: DrivingToday, where: Whereabouts | None, now: datetime,
                 cfg: ContextConfig, *, defer: bool = False) -> RuleOutcome:
    """Driving now, and more than the user's daily limit driven since local midnight: suggest a rest.
    ``defer``: as for :func:`evening_arrival`."""
    if where is None or driving.points == 0:
        return RuleOutcome(0.0, None, "no location today")
    confidence = freshness(where.age_minutes) * (0.6 + 0.4 * driving.coverage)
    limit = inp.max_driving_hours or cfg.max_driving_hours
    if driving.hours <= limit:
        return RuleOutcome(round(confidence, 2), None,
                           f"{duration(driving.hours)} driven today, limit {duration(limit)}")
    if not where.moving(cfg):
        return RuleOutcome(round(confidence, 2), None, "not driving now")
    local = local_now(inp, now)
    shown, from_profile = inp.preferred_units, bool(inp.max_driving_hours)  # as in evening_arrival

    def compose() -> pamd.AlertText:
        source = "your profile's" if from_profile else "the default"
        body = (f"By your location history you have driven about {duration(driving.hours)} today, more than "
                f"{source} limit of {duration(limit)}. Stop somewhere safe and rest before driving on.")
        facts = {"driving_hours": round(driving.hours, 2), "max_driving_hours": limit,
                 "limit_source": "profile" if from_profile else "config", "points_today": driving.points,
                 "coverage": round(driving.coverage, 2), "local_date": local.date().isoformat(),
                 **_where_facts(where)}
        return _text(shown, confidence, f"Time for a rest: {duration(driving.hours)} driving today", body, facts,
                     {"action": "find_rest_area", "label": "Find a rest stop"})

    alert = pamd.Alert.deferred(
        compose, user_id=inp.user_id, kind="driving_rest", priority=pamd.Priority.HIGH,
        subject=f"driving_rest:{local.date().isoformat()}", expires_at=now + timedelta(hours=cfg.expiry_hours))
    return _judged(confidence, cfg, alert, f"{duration(driving.hours)} driven today, over {duration(limit)}",
                   defer)
