"""The Supabase store: URLs and config, the installed SQL, seeding and add_rows, the alert pipeline and outbox
scenarios of tests/test_store_pg.py (the same expected outcomes as SQLite and Postgres), and what goes wrong over
REST: a missing or outdated schema, a wrong or missing key, a server that answers 503 for a while, or not at all.

Runs against the fake PostgREST of tests/fakes/postgrest.py (no PostgREST server can run here), backed by the test's
own Postgres schema; each monitor's equivalence is in tests/test_store_supabase_<monitor>.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import httpx
import pytest

from pamd import cli
from pamd.config import ConfigError, load_config
from pamd.store import open_store, prepare_store
from pamd.store.supabase import SupabaseStore
from pamd.store.supabase_client import (
    DEFAULT_KEY_ENV,
    SupabaseAuthError,
    SupabaseError,
    SupabaseSchemaError,
    SupabaseUnavailableError,
    split_supabase_url,
    store_url,
)
from pamd.store.supabase_sql import STATEMENTS, install_sql
from tests import test_store_pg as pg_tests
from tests.fakes.postgrest import FakePostgrest, serve_postgrest
from tests.supabase_pairs import BACKING, KEY, pg, postgrest, run_sql, supabase

__all__ = ["pg", "postgrest", "supabase"]  # fixtures, used by name

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
_SCHEMA_CACHE_503 = {"code": "PGRST002", "details": None, "hint": None,
                     "message": "Could not query the database for the schema cache. Retrying."}


# -- the alert pipeline and the outbox: tests/test_store_pg.py's scenarios on Supabase --------------------------------


@pytest.fixture
async def store(supabase: SupabaseStore) -> SupabaseStore:
    """The Supabase store with users ann (Auckland) and bob (Honolulu), as tests/test_store_pg.py's ``store``."""
    await supabase.add_rows("profiles", [{"id": "ann", "timezone": "Pacific/Auckland"},
                                         {"id": "bob", "timezone": "Pacific/Honolulu"}])
    return supabase


async def rows(store: SupabaseStore, sql: str) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` in the Postgres schema behind the store's fake (nothing runs arbitrary SQL over REST)."""
    return await anyio.to_thread.run_sync(run_sql, BACKING[store.url], sql)


@pytest.fixture(autouse=True)
def _rows_from_the_schema_behind_the_fake(monkeypatch: pytest.MonkeyPatch) -> None:
    """tests/test_store_pg.py's ``rows(store, sql)`` looks into a store's tables: for a Supabase store, through
    :func:`rows`."""
    original = pg_tests.rows

    async def either(store: Any, sql: str) -> list[tuple[Any, ...]]:
        return await (rows(store, sql) if isinstance(store, SupabaseStore) else original(store, sql))

    monkeypatch.setattr(pg_tests, "rows", either)


_SHARED = [name for name in vars(pg_tests) if name.startswith("test_") and name not in (
    "test_urls_and_pgbouncer", "test_migrate_is_idempotent_and_creates_everything",  # Postgres URLs and DDL
    "test_concurrent_migrates_apply_once", "test_add_rows_converts_and_handles_conflicts",  # (asyncpg errors)
    "test_staged_writes_on_reused_connections_stay_separate",  # the Postgres store's COPY staging
    "test_the_sweep_stays_hashed_when_the_statistics_are_stale")]  # and its sweep's plan
globals().update({name: getattr(pg_tests, name) for name in _SHARED})


def test_the_shared_scenarios_are_all_here() -> None:
    assert len(_SHARED) == 15 and "test_concurrent_terms_race_on_the_fence_and_the_newest_wins" in _SHARED


# -- URLs and config ----------------------------------------------------------------------------------------------


def test_urls() -> None:
    assert split_supabase_url("supabase+https://abc.supabase.co/") == ("https://abc.supabase.co", DEFAULT_KEY_ENV)
    assert split_supabase_url("supabase+http://127.0.0.1:54321?key_env=MY_KEY") == ("http://127.0.0.1:54321",
                                                                                   "MY_KEY")
    assert store_url("https://abc.supabase.co/") == "supabase+https://abc.supabase.co"
    assert store_url("https://abc.supabase.co", "MY_KEY") == "supabase+https://abc.supabase.co?key_env=MY_KEY"
    for bad in ("supabase+ftp://x", "supabase+https://", "supabase+https://u:pw@x", "supabase+https://x?apikey=1",
                "supabase+https://x?key_env=not-a-name"):
        with pytest.raises(ValueError):
            split_supabase_url(bad)
    opened = open_store("supabase+https://abc.supabase.co")
    assert isinstance(opened, SupabaseStore) and repr(opened) == "SupabaseStore('supabase+https://abc.supabase.co')"
    with pytest.raises(ValueError, match="supabase_url"):
        open_store("supabase")


def _config(tmp_path: Path, store: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f"[store]\n{store}\n", encoding="utf-8")
    return path


def test_config(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, 'url = "supabase"\nsupabase_url = "https://abc.supabase.co"'), {})
    assert config.store_url == "supabase+https://abc.supabase.co"
    config = load_config(_config(tmp_path, 'supabase_url = "http://127.0.0.1:54321"'),
                         {"PAMD_STORE__SUPABASE_KEY_ENV": "LOCAL_KEY"})
    assert config.store_url == "supabase+http://127.0.0.1:54321?key_env=LOCAL_KEY"
    for store, where, problem in (
        ('url = "supabase"', "config.toml:2: store.url", "needs [store] supabase_url"),
        ('supabase_url = "abc.supabase.co"', "config.toml:2: store.supabase_url", "expected the project URL"),
        ('url = "postgresql://h/db"\nsupabase_url = "https://a.supabase.co"', "store.url", "conflicts with"),
        ('supabase_url = "https://a.supabase.co"\nsupabase_key_env = "a b"', "store.supabase_key_env", "variable"),
    ):
        with pytest.raises(ConfigError, match="store") as caught:
            load_config(_config(tmp_path, store), {})
        assert where in str(caught.value) and problem in str(caught.value), caught.value


# -- the SQL pamd ships -----------------------------------------------------------------------------------------------

_TYPES = {"t": {"text", "varchar", "name"}, "f": {"float8"}, "i": {"int4", "int8"}, "b": {"bool"},
          "ts": {"timestamptz"}, "d": {"date"}}


async def test_each_statement_is_declared_with_the_types_postgres_infers(pg_url: str) -> None:
    """The wrappers' parameter and column types (supabase_sql) are what Postgres makes of the Postgres store's SQL:
    a changed statement cannot be served by a stale wrapper."""
    await anyio.to_thread.run_sync(run_sql, pg_url, install_sql())
    conn = await asyncpg.connect(pg_url)
    try:
        for statement in STATEMENTS.values():
            prepared = await conn.prepare(statement.sql)
            assert [t.name for t in prepared.get_parameters()] == list(statement.params), statement.name
            found = [a.type.name for a in prepared.get_attributes()]
            assert len(found) == len(statement.columns), statement.name
            for (name, code), kind in zip(statement.columns, found, strict=True):
                assert kind in _TYPES[code], (statement.name, name, kind)
            assert await conn.fetchval("SELECT to_regprocedure($1) IS NOT NULL",
                                       f"{statement.function}({', '.join(statement.params)})")
    finally:
        await conn.close()


async def test_the_install_sql_is_idempotent_and_keeps_functions_private(pg_url: str) -> None:
    await anyio.to_thread.run_sync(run_sql, pg_url, install_sql())
    await anyio.to_thread.run_sync(run_sql, pg_url, install_sql())
    acls = await anyio.to_thread.run_sync(run_sql, pg_url, "SELECT proname, proacl::text[] FROM pg_proc "
                                          "WHERE pronamespace = current_schema()::regnamespace")
    assert len(acls) == len(STATEMENTS) + 5
    for name, acl in acls:
        assert name.startswith("pamd_") and acl is not None and not any(a.startswith("=") for a in acl), (name, acl)
    assert await anyio.to_thread.run_sync(run_sql, pg_url, "SELECT version FROM pamd_migrations") == [(1,)]


def test_pamd_db_sql_prints_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["db", "sql"]) == 0
    assert capsys.readouterr().out == install_sql()


# -- seeding and add_rows ---------------------------------------------------------------------------------------------


async def test_add_rows_converts_and_handles_conflicts(supabase: SupabaseStore) -> None:
    await supabase.add_rows("profiles", [{"id": "u1", "timezone": "Europe/Paris"}])
    when = datetime(2026, 3, 1, 8, 0, tzinfo=UTC) + timedelta(hours=1, microseconds=5432)
    trip = {"id": "t1", "user_id": "u1", "start_date": when.date(), "end_date": "2026-03-09",
            "route_data": {"km": [1, 2]}, "flex_days": 2}
    assert await supabase.add_rows("trips", [trip]) == 1
    with pytest.raises(SupabaseError, match="23505") as caught:
        await supabase.add_rows("trips", [trip])
    assert caught.value.code == "23505"
    assert await supabase.add_rows("trips", [{**trip, "flex_days": 5}], on_conflict="ignore") == 0
    assert await supabase.add_rows("trips", [{**trip, "flex_days": 7}], on_conflict="update") == 1
    await supabase.add_rows("fuel_log", [{"id": "f1", "user_id": "u1", "logged_at": when, "is_full_tank": False},
                                         {"id": "f2", "user_id": "u1", "logged_at": "2026-03-01T10:00:00.000Z",
                                          "volume_l": 40, "is_full_tank": 1}])
    assert await rows(supabase, "SELECT start_date::text, end_date::text, route_data::text, flex_days "
                                         "FROM trips") == [("2026-03-01", "2026-03-09", '{"km": [1, 2]}', 7)]
    assert await rows(supabase, "SELECT logged_at, volume_l, is_full_tank FROM fuel_log ORDER BY id") == [
        (datetime(2026, 3, 1, 9, 0, 0, 5000, tzinfo=UTC), None, False),  # milliseconds, like format_ts
        (datetime(2026, 3, 1, 10, 0, tzinfo=UTC), 40.0, True)]
    with pytest.raises(ValueError, match="unknown table"):
        await supabase.add_rows("pg_class", [{"relname": "x"}])
    with pytest.raises(ValueError, match="unknown column"):
        await supabase.add_rows("profiles", [{"id": "u2", "id; DROP TABLE profiles": 1}])
    with pytest.raises(ValueError, match="not a timestamp"):
        await supabase.add_rows("fuel_log", [{"id": "f3", "user_id": "u1", "logged_at": "yesterday"}])
    many = [{"id": f"m{n:04d}", "user_id": "u1", "volume_l": float(n)} for n in range(1234)]  # three requests
    assert await supabase.add_rows("fuel_log", many) == 1234


async def test_a_daemon_start_seeds_an_empty_project(postgrest: FakePostgrest) -> None:
    store = await prepare_store(f"supabase+{postgrest.url}", seed_demo=True)
    try:
        assert isinstance(store, SupabaseStore) and not await store.is_empty()
        assert [b async for b in store.iter_fuel_inputs(500, "demo-u01")] != []
    finally:
        await store.aclose()


# -- what goes wrong over REST ----------------------------------------------------------------------------------------


@pytest.fixture
def bare(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakePostgrest]:
    """A fake PostgREST over an empty schema: pamd's SQL not installed."""
    monkeypatch.setenv(DEFAULT_KEY_ENV, KEY)
    with serve_postgrest(pg_url, KEY) as fake:
        yield fake


async def test_a_missing_schema_is_one_clear_line(bare: FakePostgrest) -> None:
    store = SupabaseStore(f"supabase+{bare.url}", retry_base=0.01)
    assert await store.is_empty()
    with pytest.raises(SupabaseSchemaError) as caught:
        await store.migrate()
    message = str(caught.value)
    assert "\n" not in message and "not installed" in message and "pamd db sql" in message
    with pytest.raises(SupabaseSchemaError, match="PGRST202"):
        await store.ping()
    with pytest.raises(SupabaseSchemaError, match="pamd db sql"):
        await store.seed_demo(NOW)
    await store.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await store.ping()


def test_pamd_db_migrate_says_what_to_do(bare: FakePostgrest, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = _config(tmp_path, f'supabase_url = "{bare.url}"')
    assert cli.main(["db", "migrate", "--config", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("pamd: error: ") and "pamd db sql" in err and "\n" not in err


async def test_outdated_functions_are_refused(supabase: SupabaseStore, postgrest: FakePostgrest) -> None:
    await anyio.to_thread.run_sync(run_sql, postgrest.pg_url, "CREATE OR REPLACE FUNCTION pamd_supabase_version() "
                                   "RETURNS json LANGUAGE sql AS $$ SELECT '{\"version\": 1, \"digest\": \"old\"}'"
                                   "::json $$")
    with pytest.raises(SupabaseSchemaError, match=r"this pamd needs .*pamd db sql"):
        await supabase.migrate()


async def test_a_wrong_or_missing_key_is_named_never_shown(postgrest: FakePostgrest, monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(DEFAULT_KEY_ENV, "not-the-key")
    store = SupabaseStore(f"supabase+{postgrest.url}", retry_base=0.01)
    with caplog.at_level(logging.DEBUG), pytest.raises(SupabaseAuthError) as caught:
        await store.ping()
    assert f"${DEFAULT_KEY_ENV}" in str(caught.value) and "PGRST301" in str(caught.value)
    assert "not-the-key" not in str(caught.value) + caplog.text + repr(store)
    await store.aclose()
    monkeypatch.delenv(DEFAULT_KEY_ENV)
    store = SupabaseStore(f"supabase+{postgrest.url}")
    with pytest.raises(SupabaseAuthError, match=f"set \\${DEFAULT_KEY_ENV}"):
        await store.migrate()
    await store.aclose()
    monkeypatch.setenv("PAMD_TEST_SUPABASE_KEY", KEY)  # the variable is configurable
    store = SupabaseStore(f"supabase+{postgrest.url}?key_env=PAMD_TEST_SUPABASE_KEY")
    assert await store.migrate() == 0
    await store.aclose()


async def test_503_then_recovery(supabase: SupabaseStore, postgrest: FakePostgrest) -> None:
    await supabase.seed_demo(NOW)
    expected = [b async for b in supabase.iter_fuel_inputs(3, now=NOW)]
    postgrest.server.fail_next(3, 503, _SCHEMA_CACHE_503)  # PostgREST reloading its schema cache: nothing ran
    assert [b async for b in supabase.iter_fuel_inputs(3, now=NOW)] == expected
    before = len(postgrest.server.requests)
    postgrest.server.fail_next(2, 503, _SCHEMA_CACHE_503)
    assert await supabase.record_decisions("fuel", [], NOW, epoch=7, sweep=True) == []  # a write is retried too
    assert len(postgrest.server.requests) == before + 3
    assert await rows(supabase, "SELECT epoch FROM pamd_fence") == [(7,)]
    postgrest.server.fail_next(10, 503, _SCHEMA_CACHE_503)
    with pytest.raises(SupabaseUnavailableError, match="PGRST002"):
        await supabase.outbox_size()
    postgrest.server.failures.clear()
    assert await supabase.outbox_size() == 0


async def test_a_write_that_may_have_run_is_not_retried(supabase: SupabaseStore, postgrest: FakePostgrest) -> None:
    """A 502 from a proxy may come after the database committed: reads are retried, writes are not."""
    postgrest.server.fail_next(1, 502, "<html>Bad Gateway</html>")
    assert await supabase.outbox_size() == 0
    before = len(postgrest.server.requests)
    postgrest.server.fail_next(1, 502, "<html>Bad Gateway</html>")
    with pytest.raises(SupabaseUnavailableError, match="502"):
        await supabase.record_decisions("fuel", [], NOW, epoch=1)
    assert len(postgrest.server.requests) == before + 1


async def test_a_timeout_is_retried_for_reads_only(supabase: SupabaseStore, postgrest: FakePostgrest) -> None:
    slow = SupabaseStore(supabase.url, timeout=0.3, retries=1, retry_base=0.01)
    postgrest.server.delay = 0.6  # the answer comes after the work is done
    try:
        before = len(postgrest.server.requests)
        with pytest.raises(SupabaseUnavailableError, match="no answer"):
            await slow.outbox_size()
        assert len(postgrest.server.requests) == before + 2
        with pytest.raises(SupabaseUnavailableError, match="no answer"):
            await slow.record_decisions("fuel", [], NOW, epoch=3)
        assert len(postgrest.server.requests) == before + 3
    finally:
        postgrest.server.delay = 0.0
        await slow.aclose()
    assert await rows(supabase, "SELECT epoch FROM pamd_fence") == [(3,)]  # it did commit: why it is not retried


async def test_an_unreachable_server_is_retried_then_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DEFAULT_KEY_ENV, KEY)
    store = SupabaseStore("supabase+http://127.0.0.1:9", retries=2, retry_base=0.01)
    with pytest.raises(SupabaseUnavailableError, match=r"cannot reach http://127\.0\.0\.1:9"):
        await store.ping()
    await store.aclose()


# -- the fake itself: what it does not understand fails loudly ----------------------------------------------------


async def test_the_fake_refuses_what_it_does_not_understand(postgrest: FakePostgrest) -> None:
    headers = {"apikey": KEY, "Authorization": f"Bearer {KEY}"}
    async with httpx.AsyncClient(base_url=f"{postgrest.url}/rest/v1", headers=headers) as client:
        for method, path, kwargs, status, code in (
            ("GET", "/profiles", {"params": {"id": "like.a*"}}, 400, "PGRST100"),
            ("GET", "/profiles", {"params": {"select": "id,vehicles(*)"}}, 400, "42703"),
            ("GET", "/profiles", {"params": {"nope": "eq.1"}}, 400, "42703"),
            ("GET", "/profiles", {"headers": {"Prefer": "count=planned"}}, 400, "PGRST100"),
            ("GET", "/nowhere", {}, 404, "PGRST205"),
            ("GET", "/profiles", {"headers": {"Accept-Profile": "private"}}, 406, "PGRST106"),
            ("PATCH", "/profiles", {"params": {"id": "eq.a"}, "json": {"full_name": "x"}}, 405, "PGRST117"),
            ("DELETE", "/profiles", {}, 400, "21000"),
            ("POST", "/profiles", {"json": [{"id": "a"}, {"id": "b", "full_name": "B"}]}, 400, "PGRST102"),
            ("POST", "/rpc/pamd_nothing", {"json": {}}, 404, "PGRST202"),
            ("POST", "/rpc/pamd_mark_alerts", {"json": {"p_ids": []}}, 404, "PGRST202"),
            ("GET", "/rpc/pamd_supabase_version", {}, 400, "PGRST100"),
        ):
            reply = await client.request(method, path, **kwargs)
            assert (reply.status_code, reply.json()["code"]) == (status, code), (method, path, reply.text)
            assert set(reply.json()) == {"code", "message", "details", "hint"}
        reply = await client.get("/profiles", params={"select": "id", "limit": "1"},
                                 headers={"apikey": KEY, "Authorization": "Bearer other"})
        assert (reply.status_code, reply.json()["code"]) == (401, "PGRST301")
        reply = await client.post("/rpc/pamd_supabase_version", json={})
        assert reply.status_code == 200 and json.loads(reply.text)["version"] == 1
