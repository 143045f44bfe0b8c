"""SQLite queries of the weather monitor: planned trips within the forecast horizon."""

from __future__ import annotations

from pamd.store.sqlite_base import SQLiteBase


class SQLiteWeatherQueries(SQLiteBase):
    """What the weather monitor reads from SQLite."""
