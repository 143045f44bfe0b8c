"""Postgres schema management: pamd's migrations and the column-mapping views (:mod:`pamd.store.mapping`).

One transaction under an advisory lock per schema, so replicas starting together apply each migration once (the
second waits for the first, then finds nothing to do) and agree on the views.

The app's tables that already exist outside pamd's schema (the first of the ``search_path``), or that are mapped,
are the app's: the migration creates only the rest (on a fresh database, all of them) and pamd's own tables.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import resources

import asyncpg

from pamd.store.mapping import APP_COLUMNS, VIEW_COMMENT, MappingError, TableMap, strip_tables, view_sql

log = logging.getLogger("pamd.store.pg")

MIGRATIONS: tuple[tuple[int, str], ...] = ((1, "schema_pg.sql"),)
"""(version, SQL resource in pamd.store), applied in order; each version at most once."""

_LOCK = "SELECT pg_advisory_xact_lock(hashtext('pamd.migrate:' || current_schema()))"
# Where each app table name resolves through the search_path now: its schema and kind ('r' table, 'v' view...).
_RESOLVE = """
SELECT t.name, n.nspname, c.relkind::text, obj_description(c.oid, 'pg_class')
FROM unnest($1::text[]) AS t(name)
JOIN pg_class AS c ON c.oid = to_regclass(quote_ident(t.name))
JOIN pg_namespace AS n ON n.oid = c.relnamespace
"""
_COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute AS a
WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
"""


async def migrate(conn: asyncpg.Connection, tables: Mapping[str, TableMap]) -> int:
    """Apply the migrations not yet recorded in ``pamd_migrations`` and (re)create the mapping views, in the
    caller's transaction; return how many migrations were applied. Raises :class:`MappingError`."""
    await conn.execute(_LOCK)
    schema = str(await conn.fetchval("SELECT current_schema()"))
    await conn.execute("CREATE TABLE IF NOT EXISTS pamd_migrations (version integer PRIMARY KEY, "
                       "applied_at timestamptz NOT NULL)")
    external = await _prepare_views(conn, schema, tables)
    applied = {row[0] for row in await conn.fetch("SELECT version FROM pamd_migrations")}
    count = 0
    for version, resource in MIGRATIONS:
        if version in applied:
            continue
        script = resources.files("pamd.store").joinpath(resource).read_text(encoding="utf-8")
        await conn.execute(strip_tables(script, external))
        await conn.execute("INSERT INTO pamd_migrations (version, applied_at) VALUES ($1, $2) "
                           "ON CONFLICT DO NOTHING", version, datetime.now(UTC))
        log.info("applied store migration %d (%s)", version, resource)
        count += 1
    for table, mapping in tables.items():
        await _create_view(conn, schema, table, mapping)
    return count


async def _prepare_views(conn: asyncpg.Connection, schema: str, tables: Mapping[str, TableMap]) -> set[str]:
    """Drop the mapping views of tables no longer mapped; check that each mapped name is free in ``schema``.
    Returns the app tables the migration must leave alone: mapped ones and those found in another schema."""
    external = set(tables)
    for name, where, kind, comment in await conn.fetch(_RESOLVE, list(APP_COLUMNS)):
        ours = where == schema and kind == "v" and comment == VIEW_COMMENT
        if ours and name not in tables:
            await conn.execute(f'DROP VIEW "{schema}"."{name}"')
            log.info("dropped the mapping view %s.%s: %s is no longer mapped", schema, name, name)
        elif where == schema and name in tables and not ours:
            raise MappingError((name,), f"schema {schema} already has a {_KINDS.get(kind, 'relation')} {name}, so "
                               f"pamd cannot put its view there: if it is pamd's own empty copy, drop it; else run "
                               f"pamd in a schema of its own (e.g. ?search_path=pamd,public in [store] url)")
        elif where != schema:
            external.add(name)
    return external


_KINDS = {"r": "table", "v": "view", "m": "materialized view", "p": "table", "f": "foreign table"}


async def _create_view(conn: asyncpg.Connection, schema: str, table: str, mapping: TableMap) -> None:
    src_schema, src_table = mapping.source(table)
    qualified = f'"{src_schema}"."{src_table}"'
    if await conn.fetchval("SELECT to_regclass($1)", qualified) is None:
        raise MappingError((table, "name"), f"no table {src_schema}.{src_table}")
    available = {row[0]: row[1] for row in await conn.fetch(_COLUMNS, qualified)}
    sql, missing = view_sql(schema, table, mapping, available)
    await conn.execute(sql)
    await conn.execute(f"COMMENT ON VIEW \"{schema}\".\"{table}\" IS '{VIEW_COMMENT}'")
    if missing:
        log.info("%s: %s.%s has no %s: read as NULL", table, src_schema, src_table, ", ".join(missing))
