"""What becomes of one alert candidate: delivered now, held for quiet hours, or suppressed, and why. Pure.

The checks run in this order: dedupe (cooldown unless the priority escalates), opt-out, the daily cap (urgent
alerts are exempt), quiet hours (urgent alerts are exempt). Dedupe comes first because it needs nothing about the
user: the pipeline reads preferences and today's counts only for alerts not in cooldown (on a steady tick, none).
The reason text is what ``pamd explain`` shows.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Literal

import msgspec

from pamd.alerts.prefs import Preferences, quiet_until
from pamd.model import Alert, Priority

Outcome = Literal["delivered", "held", "cooldown", "opted_out", "capped"]
SENDING: frozenset[str] = frozenset({"delivered", "held"})
"""Outcomes that accept the alert (it is stored, counted against the cap and remembered for dedupe)."""


class AlertState(msgspec.Struct, kw_only=True):
    """What pamd remembers about a fingerprint: the last alert it sent (or held) for that condition."""

    fingerprint: str
    user_id: str
    monitor: str
    kind: str
    priority: Priority
    last_alert_id: str
    last_sent_at: datetime
    epoch: int = 0


class Decision(msgspec.Struct, kw_only=True):
    """The pipeline's verdict on one alert."""

    alert: Alert
    outcome: Outcome
    reason: str
    release_at: datetime | None = None

    @property
    def accepted(self) -> bool:
        return self.outcome in SENDING


def decide(
    alert: Alert,
    prefs: Preferences,
    previous: AlertState | None,
    sent_today: int,
    now: datetime,
    cooldown: timedelta,
) -> Decision:
    """Decide what happens to ``alert`` (already stamped with its fingerprint)."""
    if previous is not None and in_cooldown(alert, previous, now, cooldown):
        return Decision(alert=alert, outcome="cooldown",
                        reason=f"same condition alerted at {previous.priority.value} priority "
                               f"{_ago(now - previous.last_sent_at)} ago; cooldown until "
                               f"{_utc(previous.last_sent_at + cooldown)}")
    if not prefs.enabled:
        return Decision(alert=alert, outcome="opted_out", reason=f"the user turned off {alert.monitor} alerts")
    why = "new condition"
    if previous is not None:
        if alert.priority > previous.priority:
            why = f"escalation from {previous.priority.value} to {alert.priority.value}"
        else:
            why = f"reminder: last alerted {_ago(now - previous.last_sent_at)} ago (cooldown {_ago(cooldown)})"
    urgent = alert.priority >= Priority.URGENT
    if not urgent and prefs.max_per_day is not None and sent_today >= prefs.max_per_day:
        scope = "all monitors" if prefs.cap_scope == "*" else f"{prefs.cap_scope} alerts"
        return Decision(alert=alert, outcome="capped",
                        reason=f"daily cap reached: {sent_today} of {prefs.max_per_day} ({scope}) sent today")
    if not urgent:
        release = quiet_until(now, prefs)
        if release is not None:
            local = release.astimezone(prefs.tz)
            return Decision(alert=alert, outcome="held", release_at=release,
                            reason=f"{why}; held for quiet hours until {local:%H:%M} {prefs.timezone}")
    return Decision(alert=alert, outcome="delivered", reason=why + (" (urgent: exempt from cap and quiet hours)"
                                                                     if urgent else ""))


def in_cooldown(alert: Alert, previous: AlertState | None, now: datetime, cooldown: timedelta) -> bool:
    """Whether ``alert`` repeats ``previous`` (the condition's last alert) within ``cooldown``, without escalating."""
    return (previous is not None and not alert.priority > previous.priority
            and now - previous.last_sent_at < cooldown)


@functools.lru_cache(maxsize=1024)  # a tick's states share few send times: one per earlier tick
def _ago(delta: timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


@functools.lru_cache(maxsize=1024)
def _utc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")
