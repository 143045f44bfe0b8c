"""SQLite queries of the budget monitor: budgets and the expenses of their current periods."""

from __future__ import annotations

from pamd.store.sqlite_base import SQLiteBase


class SQLiteBudgetQueries(SQLiteBase):
    """What the budget monitor reads from SQLite."""
