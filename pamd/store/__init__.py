"""Stores: where users' data and pamd's own state live."""

from __future__ import annotations

from collections.abc import Mapping

from pamd.store.base import Store
from pamd.store.mapping import TableMap

__all__ = ["Store", "open_store", "prepare_store"]

SUPPORTED_SCHEMES = ("sqlite", "postgresql", "postgres", "supabase+https", "supabase+http")


def open_store(
    url: str, *, tables: Mapping[str, TableMap] | None = None, read_process_min_users: int | None = None
) -> Store:
    """Build the store for ``url`` (``[store] url``). Nothing is opened until first use.

    Supported: ``sqlite:///relative.db``, ``sqlite:////absolute.db``, and ``postgresql://user@host:5432/db`` (or
    ``postgres://``; see :mod:`pamd.store.pg_base` for its parameters, e.g. ``?pgbouncer=true``), and
    ``supabase+https://<project>.supabase.co`` (the Supabase REST API, key from the environment; see
    :mod:`pamd.store.supabase_client`; ``[store] url = "supabase"`` with ``supabase_url`` builds it). Raises
    :class:`ValueError` for any other scheme. asyncpg is imported only for a Postgres URL, the Supabase client
    (postgrest) only for a Supabase one. ``tables``: the column mapping (``[store.tables]``,
    :mod:`pamd.store.mapping`), Postgres only. ``read_process_min_users``: SQLite's page reader process
    threshold (``0``: never; default :data:`pamd.store.sqlite_base.READ_PROCESS_MIN_USERS`).
    """
    if tables and not url.lower().startswith(("postgresql:", "postgres:")):
        raise ValueError("column mapping ([store.tables]) needs a postgresql:// store")
    scheme = url.split(":", 1)[0].lower() if ":" in url else url
    if scheme == "sqlite":
        from pamd.store.sqlite import SQLiteStore

        if read_process_min_users is None:
            return SQLiteStore(url)
        return SQLiteStore(url, read_process=read_process_min_users > 0,
                           read_process_min_users=read_process_min_users)
    if scheme in ("postgresql", "postgres"):
        from pamd.store.pg import PostgresStore

        return PostgresStore(url, tables=tables)
    if scheme in ("supabase+https", "supabase+http"):
        from pamd.store.supabase import SupabaseStore

        return SupabaseStore(url)
    if scheme == "supabase":
        raise ValueError('store url "supabase" needs [store] supabase_url (e.g. https://<project>.supabase.co)')
    raise ValueError(f"unsupported store url scheme {scheme!r} (supported: {', '.join(SUPPORTED_SCHEMES)})")


async def prepare_store(
    url: str, seed_demo: bool, *, tables: Mapping[str, TableMap] | None = None,
    read_process_min_users: int | None = None,
) -> Store:
    """Open the store, apply migrations, and seed the demo users into it if it is empty and ``seed_demo``."""
    import logging
    from datetime import UTC, datetime

    store = open_store(url, tables=tables, read_process_min_users=read_process_min_users)
    await store.migrate()
    if seed_demo and await store.is_empty():
        count = await store.seed_demo(datetime.now(UTC))
        logging.getLogger("pamd.store").info("seeded the empty store with %d demo rows", count)
    return store
