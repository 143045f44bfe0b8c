"""Preferences and quiet hours (pure): merging rows, windows across midnight, DST days, far-off timezones."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from pamd.alerts.decide import AlertState, decide
from pamd.alerts.prefs import PreferenceRow, Preferences, effective, local_midnight, parse_hhmm, quiet_until, zone
from pamd.model import Alert, Priority

P = Priority


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


@pytest.mark.parametrize(("tz", "start", "end", "now", "expected"), [
    # across midnight, Berlin winter (UTC+1): 22:00-07:00 local is 21:00-06:00 UTC
    ("Europe/Berlin", "22:00", "07:00", "2026-01-10T21:30:00+00:00", "2026-01-11T06:00:00+00:00"),
    ("Europe/Berlin", "22:00", "07:00", "2026-01-11T05:59:00+00:00", "2026-01-11T06:00:00+00:00"),
    ("Europe/Berlin", "22:00", "07:00", "2026-01-11T06:00:00+00:00", None),
    ("Europe/Berlin", "22:00", "07:00", "2026-01-10T20:59:59+00:00", None),
    # spring forward (29 Mar 2026, 02:00 -> 03:00): the night is an hour shorter; 07:00 CEST is 05:00 UTC
    ("Europe/Berlin", "22:00", "07:00", "2026-03-28T21:30:00+00:00", "2026-03-29T05:00:00+00:00"),
    # a quiet end inside the gap (02:30 does not exist) moves past it: 03:30 CEST = 01:30 UTC
    ("Europe/Berlin", "01:00", "02:30", "2026-03-29T00:30:00+00:00", "2026-03-29T01:30:00+00:00"),
    # fall back (25 Oct 2026, 03:00 -> 02:00): 07:00 CET is 06:00 UTC
    ("Europe/Berlin", "22:00", "07:00", "2026-10-25T01:30:00+00:00", "2026-10-25T06:00:00+00:00"),
    # New York spring forward (8 Mar 2026): 07:00 EDT = 11:00 UTC
    ("America/New_York", "22:00", "07:00", "2026-03-08T06:00:00+00:00", "2026-03-08T11:00:00+00:00"),
    # UTC-10 and UTC+13 (Auckland in January is NZDT, +13)
    ("Pacific/Honolulu", "21:00", "06:00", "2026-06-01T08:00:00+00:00", "2026-06-01T16:00:00+00:00"),
    ("Pacific/Auckland", "22:00", "07:00", "2026-01-15T10:00:00+00:00", "2026-01-15T18:00:00+00:00"),
    ("Pacific/Auckland", "22:00", "07:00", "2026-01-15T08:59:00+00:00", None),
    # a daytime window, and an empty one
    ("UTC", "12:00", "14:00", "2026-05-01T13:00:00+00:00", "2026-05-01T14:00:00+00:00"),
    ("UTC", "12:00", "12:00", "2026-05-01T12:00:00+00:00", None),
])
def test_quiet_until(tz: str, start: str, end: str, now: str, expected: str | None) -> None:
    prefs = Preferences(quiet_start=parse_hhmm(start), quiet_end=parse_hhmm(end), timezone=tz)
    result = quiet_until(at(now), prefs)
    assert result == (at(expected) if expected else None)


def test_effective_merges_monitor_row_over_star_row_over_defaults() -> None:
    rows = [PreferenceRow(user_id="u", monitor="*", enabled=True, quiet_start=time(22), quiet_end=time(7),
                          max_per_day=5),
            PreferenceRow(user_id="u", monitor="fuel", max_per_day=2),
            PreferenceRow(user_id="u", monitor="weather", enabled=False)]
    fuel = effective(rows, "fuel", "UTC", default_max_per_day=12)
    assert (fuel.enabled, fuel.quiet_start, fuel.max_per_day, fuel.cap_scope) == (True, time(22), 2, "fuel")
    budget = effective(rows, "budget", "UTC", default_max_per_day=12)
    assert (budget.max_per_day, budget.cap_scope) == (5, "*")
    assert not effective(rows, "weather", "UTC").enabled
    assert not effective([PreferenceRow(user_id="u", monitor="*", enabled=False)], "fuel", "UTC").enabled
    defaults = effective([], "fuel", "UTC", default_max_per_day=12, default_quiet=(time(23), time(6)))
    assert (defaults.max_per_day, defaults.quiet_start, defaults.quiet_end) == (12, time(23), time(6))


def test_zone_and_parsing_are_forgiving() -> None:
    assert zone("Not/AZone") is UTC
    assert zone("") is UTC
    assert parse_hhmm("25:00") is None and parse_hhmm("") is None and parse_hhmm(None) is None
    assert parse_hhmm("07:30") == time(7, 30)
    # 10:00 UTC on 15 Jan is 23:00 NZDT on 15 Jan; that day began at 11:00 UTC on 14 Jan
    assert local_midnight(at("2026-01-15T10:00:00+00:00"), zone("Pacific/Auckland")) == at("2026-01-14T11:00:00+00:00")


NOW = at("2026-05-01T12:00:00+00:00")


def alert(priority: Priority, monitor: str = "fuel") -> Alert:
    return Alert(user_id="u", kind="fuel_low", priority=priority, title="t", body="b", monitor=monitor,
                 fingerprint="fp")


def state(priority: Priority, hours_ago: float) -> AlertState:
    return AlertState(fingerprint="fp", user_id="u", monitor="fuel", kind="fuel_low", priority=priority,
                      last_alert_id="x", last_sent_at=NOW - timedelta(hours=hours_ago))


COOLDOWN = timedelta(hours=6)
QUIET = Preferences(quiet_start=time(11), quiet_end=time(13))  # NOW (12:00 UTC) is inside


@pytest.mark.parametrize(("case", "new", "prefs", "previous", "sent", "outcome", "reason"), [
    ("first time", P.MEDIUM, Preferences(), None, 0, "delivered", "new condition"),
    ("inside cooldown", P.MEDIUM, Preferences(), state(P.MEDIUM, 1), 0, "cooldown", "cooldown until"),
    ("lower inside cooldown", P.MEDIUM, Preferences(), state(P.HIGH, 1), 0, "cooldown", "at high priority"),
    ("escalation", P.HIGH, Preferences(), state(P.MEDIUM, 1), 0, "delivered", "escalation from medium to high"),
    ("after cooldown", P.MEDIUM, Preferences(), state(P.MEDIUM, 7), 0, "delivered", "reminder"),
    ("opted out", P.URGENT, Preferences(enabled=False), None, 0, "opted_out", "turned off fuel"),
    ("cap reached", P.HIGH, Preferences(max_per_day=3), None, 3, "capped", "3 of 3"),
    ("urgent ignores cap", P.URGENT, Preferences(max_per_day=3), None, 9, "delivered", "urgent"),
    ("quiet hours", P.HIGH, QUIET, None, 0, "held", "held for quiet hours until 13:00"),
    ("urgent ignores quiet", P.URGENT, QUIET, None, 0, "delivered", "exempt"),
    ("cooldown beats quiet", P.HIGH, QUIET, state(P.HIGH, 1), 0, "cooldown", "cooldown"),
])
def test_decide(case: str, new: Priority, prefs: Preferences, previous: AlertState | None, sent: int,
                outcome: str, reason: str) -> None:
    decision = decide(alert(new), prefs, previous, sent, NOW, COOLDOWN)
    assert decision.outcome == outcome, case
    assert reason in decision.reason, (case, decision.reason)
    assert (decision.release_at is not None) == (outcome == "held")
