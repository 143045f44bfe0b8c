"""SQLite queries of the context monitor: active trips, calendar events, recent locations, driving time."""

from __future__ import annotations

from pamd.store.sqlite_base import SQLiteBase


class SQLiteContextQueries(SQLiteBase):
    """What the context monitor reads from SQLite."""
