"""SQLite queries of the maintenance monitor: maintenance records with their due dates and odometers."""

from __future__ import annotations

from pamd.store.sqlite_base import SQLiteBase


class SQLiteMaintenanceQueries(SQLiteBase):
    """What the maintenance monitor reads from SQLite."""
