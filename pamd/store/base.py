"""The Store protocol shared by every backend."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class StoreError(RuntimeError):
    """A store failure whose message alone tells the operator what is wrong and what to do (the CLI prints it as
    one line, without a traceback)."""


class Store(Protocol):
    """A data store. Backends: SQLite (embedded default), Postgres, Supabase (over its REST API).

    Monitors use backend-specific query methods (e.g. ``iter_fuel_inputs``); the daemon needs only these.
    """

    url: str

    async def ping(self) -> None:
        """Raise if the store is unreachable."""

    async def migrate(self) -> int:
        """Create or update pamd's tables (idempotent); returns how many migrations were applied."""

    async def is_empty(self) -> bool:
        """True when the store holds no user profiles (a fresh embedded store)."""

    async def seed_demo(self, now: datetime) -> int:
        """Insert the demo users relative to ``now`` (idempotent); returns the number of rows written."""

    async def aclose(self) -> None:
        """Close connections."""
