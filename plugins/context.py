"""The built-in context monitor (DESIGN.md section 7): suggestions from where a user is, the local time, their
active trip, their calendar and how long they have driven today.

Rules (each a pure function in :mod:`.context_rules`, with a confidence; emitted only at or above
``min_confidence``, 0.7 by default):

- ``overnight_stop`` (medium): an active trip, the user driving now, local time in the evening window (17:00-22:00)
  and the rest of the way (straight line x ``road_factor`` at ``average_speed_kmh``) would end after the window:
  suggest stopping for the night. Subject: trip id + local date; expires after 24 h.
- ``leave_by`` (high when less than an hour away or past, else medium): a calendar event with coordinates starting
  within 24 h whose leave-by time (start - travel time from the latest location - buffer) is within 3 hours.
  Subject: event id + the event's local date; expires at the event's start.
- ``driving_rest`` (high): driving now, and more than the profile's ``max_driving_hours`` (else the config's)
  driven since local midnight, counted from the intervals between location fixes. Subject: local date; expires
  after 24 h.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from datetime import datetime

import pamd
from pamd.store.records_context import ContextBounds, ContextCandidateSource, ContextInput, ContextInputSource

from .context_rules import (
    ContextConfig,
    DrivingToday,
    RuleOutcome,
    driving_rest,
    evening_arrival,
    freshness,
    leave_by,
    local_now,
    parse_hhmm,
    whereabouts,
)

__all__ = ["ContextConfig", "ContextMonitor", "bounds", "evaluate"]

HISTORY_HOURS = 27.0
"""Hours of location history read: local midnight is at most 25 hours back (a DST day), plus the fix before it."""


def _max_age_minutes(min_confidence: float) -> float | None:
    """The oldest latest fix (minutes) whose :func:`freshness` can still give ``min_confidence`` (every other
    factor is at most 1; a hundredth of margin for the rounding of confidences), or ``None`` when any age can."""
    floor = min_confidence - 0.01
    longest = round(HISTORY_HOURS * 60)
    if freshness(longest + 1) >= floor:
        return None
    lo, hi = 0, longest  # freshness never rises with age: the last whole minute at or above the floor, plus one
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if freshness(mid) >= floor else (lo, mid - 1)
    return lo + 1.0


def bounds(cfg: ContextConfig) -> ContextBounds:
    """The thresholds a store needs to leave out users no rule can fire for (:class:`ContextCandidateSource`)."""
    return ContextBounds(
        evening_start_minute=parse_hhmm(cfg.evening_start), evening_end_minute=parse_hhmm(cfg.evening_end),
        max_age_minutes=_max_age_minutes(cfg.min_confidence), max_driving_hours=cfg.max_driving_hours,
        average_speed_kmh=cfg.average_speed_kmh, road_factor=cfg.road_factor,
        leave_by_buffer_minutes=cfg.leave_by_buffer_minutes, leave_by_window_hours=cfg.leave_by_window_hours)


def evaluate(inp: ContextInput, now: datetime, cfg: ContextConfig,
             explain: Callable[..., None] | None = None, *, defer: bool = False) -> list[pamd.Alert]:
    """Apply every rule to one user at ``now`` (pure). ``explain(user_id, step, **data)`` sees each outcome;
    ``defer``: alerts whose text is made only if the pipeline needs it (most repeats are in cooldown)."""
    where = whereabouts(inp.track, now)
    outcomes: list[tuple[str, RuleOutcome]] = []
    for trip in inp.trips:
        outcomes.append((f"overnight_stop {trip.id}", evening_arrival(inp, trip, where, now, cfg, defer=defer)))
    for event in inp.events:
        outcomes.append((f"leave_by {event.id}", leave_by(inp, event, where, now, cfg, defer=defer)))
    driving = DrivingToday.of(inp.track)
    outcomes.append(("driving_rest", driving_rest(inp, driving, where, now, cfg, defer=defer)))
    if explain is not None:
        local = local_now(inp, now)
        explain(inp.user_id, "context", local_time=local.isoformat(timespec="minutes"),
                location=where, driving_hours=round(driving.hours, 2), active_trips=len(inp.trips),
                upcoming_events=len(inp.events))
        for step, outcome in outcomes:
            explain(inp.user_id, step, confidence=outcome.confidence, reason=outcome.reason,
                    outcome=outcome.alert.priority.value if outcome.alert else "no alert")
    return [outcome.alert for _, outcome in outcomes if outcome.alert is not None]


class ContextMonitor(pamd.Monitor):
    """Suggests an overnight stop, a leave-by time or a rest, from location, local time, trip and calendar."""

    name = "context"
    description = "Context: evening arrival -> overnight stop, calendar event -> leave-by time, long drive -> rest"
    schedule = "*/15 * * * *"
    config_type = ContextConfig

    async def run(self, ctx: pamd.MonitorContext) -> AsyncIterator[pamd.Alert]:
        """Yield the alerts of every rule that fires for a user."""
        store = ctx.store
        if not isinstance(store, ContextInputSource):
            raise TypeError(f"the context monitor needs a store with iter_context_inputs(), got "
                            f"{type(store).__name__}")
        cfg = ctx.config if isinstance(ctx.config, ContextConfig) else ContextConfig()
        now = ctx.now()
        explain = ctx.explain if ctx.explaining else None
        if ctx.user_id is None and not ctx.explaining and isinstance(store, ContextCandidateSource):
            # Only users for whom a rule could fire (the store filters in SQL; a superset).
            batches = store.iter_context_candidates(
                bounds(cfg), now, cfg.batch_size, lookahead_hours=cfg.event_lookahead_hours,
                history_hours=HISTORY_HOURS, moving_speed_kmh=cfg.moving_speed_kmh,
                max_gap_minutes=cfg.max_gap_minutes)
        else:
            batches = store.iter_context_inputs(
                now, cfg.batch_size, ctx.user_id, lookahead_hours=cfg.event_lookahead_hours,
                history_hours=HISTORY_HOURS, moving_speed_kmh=cfg.moving_speed_kmh,
                max_gap_minutes=cfg.max_gap_minutes)
        async with aclosing(batches) as stream:
            async for batch in stream:
                for inp in batch:
                    for alert in evaluate(inp, now, cfg, explain, defer=True):
                        yield alert


@pamd.hookimpl
def register_monitors(register: Callable[[pamd.Monitor], None]) -> None:
    """Register the context monitor."""
    register(ContextMonitor())
