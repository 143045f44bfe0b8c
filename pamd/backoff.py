"""Exponential backoff with full jitter, shared by tick retries and provider requests."""

from __future__ import annotations

import random

RETRY_BASE_SECONDS = 1.0
RETRY_MAX_SECONDS = 60.0


def backoff(attempt: int, base: float = RETRY_BASE_SECONDS, cap: float = RETRY_MAX_SECONDS) -> float:
    """Seconds to wait after failed attempt number ``attempt``: exponential with full jitter."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))
