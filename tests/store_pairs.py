"""The same data on SQLite and Postgres: fixtures and helpers for the tests that compare the two stores.

tests/conftest.py loads this module as a plugin, so ``lite`` and ``pg`` are fixtures everywhere; each test module keeps
its own ``both`` fixture, since it seeds the demo data at that module's ``NOW``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from pamd.store.pg import PostgresStore
from pamd.store.sqlite import SQLiteStore

Stores = tuple[SQLiteStore, PostgresStore]


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[PostgresStore]:
    """A migrated Postgres store in a fresh schema of its own."""
    store = PostgresStore(pg_url)
    await store.migrate()
    yield store
    await store.aclose()


@pytest.fixture
async def lite(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """A migrated SQLite store in the test's temporary directory."""
    store = SQLiteStore(f"sqlite:///{tmp_path}/lite.db")
    await store.migrate()
    yield store
    await store.aclose()


async def add(stores: Stores, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write the same ``rows`` into ``table`` of both stores."""
    await stores[0].add_rows(table, rows)
    await stores[1].add_rows(table, rows)
