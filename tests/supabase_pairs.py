"""Fixtures of the Supabase store tests: a fake PostgREST (tests/fakes/postgrest.py) over the test's own Postgres
schema with pamd's Supabase SQL installed (what ``pamd db sql`` prints), and a :class:`SupabaseStore` on it.

The Supabase test modules import these fixtures by name (``pg`` among them: it hands the Postgres store's comparison
tests, imported from tests/test_store_pg*.py, a Supabase store instead), so they apply to those modules only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import pytest

from pamd.store.supabase import SupabaseStore
from pamd.store.supabase_client import DEFAULT_KEY_ENV
from pamd.store.supabase_sql import install_sql
from tests.fakes.postgrest import FakePostgrest, serve_postgrest

KEY = "test-service-role-key"
BACKING: dict[str, str] = {}
"""Supabase store URL -> the Postgres URL of the schema behind its fake (to look at the tables directly)."""


def run_sql(pg_url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run ``sql`` on ``pg_url`` directly (not through the fake), from sync or async code; its rows as tuples."""

    async def run() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(pg_url)
        try:
            if not args and ";" in sql:  # a script
                await conn.execute(sql)
                return []
            return [tuple(row) for row in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


@pytest.fixture
def postgrest(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakePostgrest]:
    """A fake PostgREST over ``pg_url``'s fresh schema with pamd's Supabase SQL installed; the key is in the
    environment as an operator would set it."""
    run_sql(pg_url, install_sql())
    monkeypatch.setenv(DEFAULT_KEY_ENV, KEY)
    with serve_postgrest(pg_url, KEY) as fake:
        yield fake


def store_url(fake: FakePostgrest) -> str:
    return f"supabase+{fake.url}"


@pytest.fixture
async def supabase(postgrest: FakePostgrest) -> AsyncIterator[SupabaseStore]:
    """A checked (``migrate``) Supabase store on the fake; quick retries."""
    store = SupabaseStore(store_url(postgrest), retry_base=0.01)
    BACKING[store.url] = postgrest.pg_url
    await store.migrate()
    yield store
    await store.aclose()


@pytest.fixture
def pg(supabase: SupabaseStore) -> SupabaseStore:
    """The Supabase store where the Postgres store's comparison tests ask for ``pg``."""
    return supabase


def comparison_tests(module: object) -> dict[str, object]:
    """The test functions and module-specific fixtures (``both``, the provider fakes) of one of the Postgres store's
    comparison modules, to run again in a Supabase module (``globals().update(...)``): pytest collects them there,
    where ``pg`` is the Supabase store."""
    names = [n for n in vars(module) if n.startswith("test_") or n in ("both", "server", "hub", "overpass")]
    return {n: getattr(module, n) for n in names}
