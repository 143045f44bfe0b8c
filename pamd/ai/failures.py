"""What the providers share to turn an HTTP failure into a :class:`~pamd.ai.provider.ProviderError`."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from pamd.ai.provider import ErrorKind

__all__ = ["kind_for_status", "retry_after_seconds"]


def kind_for_status(status: int) -> ErrorKind:
    """The error kind of an HTTP status the API answered with (a 2xx here is one the SDK did not accept)."""
    if status == 429:
        return "rate_limited"
    if status in (503, 529):  # Anthropic says 529 when overloaded, Google 503 UNAVAILABLE
        return "overloaded"
    if status in (401, 403):
        return "auth"
    if status == 408:
        return "timeout"
    if 400 <= status < 500:
        return "bad_request"
    if status >= 500:
        return "server_error"
    return "bad_response"


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """A ``Retry-After`` header in seconds: delta-seconds (a float is tolerated) or an HTTP date (RFC 9110 10.2.3).

    ``None`` when absent or unreadable; a date in the past gives 0.
    """
    if not value or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # an HTTP date is GMT, but parsedate gives "-0000" dates no zone
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)
