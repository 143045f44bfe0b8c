"""Candidate scans over every user, split into id ranges read side by side.

The candidate statements (:mod:`pamd.store.pg_fuel_candidates`, :mod:`pamd.store.pg_budget_candidates`) do the
work on the server and send little back, so one connection leaves the client idle and the server on one core.
:func:`scan_ranges` cuts the users into ``parts`` id ranges (boundaries from an index-only walk of
``profiles_pkey``) and runs one keyset stream per range on its own pooled connection, yielding pages as they come.
Pages arrive out of id order across ranges; each page is whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import Any, TypeVar

from pamd.store.pg_base import PostgresBase

R = TypeVar("R")

RangeStep = Callable[[Any, str | None, str | None], Awaitable[tuple[list[R], str | None]]]
"""``async def step(conn, after, upto) -> (records, next_after | None)``: one page of ids in ``(after, upto]``."""

ZONES_SQL = "SELECT DISTINCT COALESCE(NULLIF(timezone, ''), 'UTC') FROM profiles"
"""Every time zone name the profiles use (an empty or NULL one read as UTC, as the stores read it)."""

_DONE = object()


async def range_bounds(store: PostgresBase, parts: int) -> list[str | None]:
    """``parts - 1`` ids cutting ``profiles`` into ranges of about equal size, then ``None`` (no upper bound).

    The size comes from the planner's row estimate (``pg_class.reltuples``, kept by ANALYZE and autovacuum; a
    count when the table was never analysed), each boundary from a walk of ``profiles_pkey`` past the one before:
    about 0.1 s at a million users, against 0.5 s for numbering every row. A stale estimate only unbalances the
    ranges; together they always cover every id."""
    if parts <= 1:
        return [None]

    async def query(conn: Any) -> list[str | None]:
        estimate = await conn.fetchval("SELECT reltuples FROM pg_class WHERE oid = 'profiles'::regclass")
        if not estimate or estimate <= 0:
            estimate = await conn.fetchval("SELECT count(*) FROM profiles")
        step = int(estimate) // parts
        if step == 0:
            return [None]
        bounds: list[str | None] = [await conn.fetchval("SELECT id FROM profiles ORDER BY id OFFSET $1 LIMIT 1",
                                                         step - 1)]
        while bounds[-1] is not None and len(bounds) < parts - 1:
            bounds.append(await conn.fetchval("SELECT id FROM profiles WHERE id > $1 ORDER BY id OFFSET $2 LIMIT 1",
                                              bounds[-1], step - 1))
        return [*(b for b in bounds if b is not None), None]

    return await store._call(query)


def page_where(store: PostgresBase, after: str | None, upto: str | None, slots: str) -> tuple[str, list[Any],
                                                                                        dict[str, str]]:
    """For a candidate statement's page of ids in ``(after, upto]``: the WHERE clause on ``profiles`` and its
    parameters, and the placeholder number of each letter of ``slots`` (the statement's own parameters, which
    follow those, in that order: ``{a}`` in ``$...{a}`` becomes the first one's number)."""
    where, params = store.profile_where(after, None)
    if upto is not None:
        params.append(upto)
        where += f" AND id <= ${len(params)}"
    return where, params, {key: f"{len(params) + i}" for i, key in enumerate(slots, start=1)}


async def fetch_page(store: PostgresBase, conn: Any, sql: str, *args: Any) -> Any:
    """The one row of a candidate statement. Postgres would JIT-compile such a statement on every page (its
    estimated cost is high), which takes longer than running it, and spill its hashes at the default ``work_mem``:
    the pool's connections have JIT off and more ``work_mem`` (:data:`~pamd.store.pg_base.SCAN_WORK_MEM`), except
    behind PgBouncer, where both are set for this statement's own transaction only (``SET LOCAL``)."""
    if not store.scan_settings:
        return await conn.fetchrow(sql, *args)
    async with conn.transaction():
        await conn.execute(store.scan_settings)
        return await conn.fetchrow(sql, *args)


async def scan_batches(
    store: PostgresBase, step: RangeStep[R], parallel: int, batch_size: int
) -> AsyncGenerator[list[R], None]:
    """:func:`scan_ranges`' pages cut into batches of at most ``batch_size``."""
    async with aclosing(scan_ranges(store, step, parallel)) as pages:  # closed with this one: its walks end too
        async for found in pages:
            for start in range(0, len(found), batch_size):
                yield found[start : start + batch_size]


async def scan_ranges(store: PostgresBase, step: RangeStep[R], parts: int = 2) -> AsyncGenerator[list[R], None]:
    """Run ``step`` over each id range on its own connection, ``parts`` at once, and yield every page."""
    bounds = await range_bounds(store, parts)
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=2 * len(bounds))

    async def walk(lower: str | None, upper: str | None) -> None:
        after = lower
        while True:
            batch, after = await store._call(step, after, upper)
            if batch:
                await queue.put(batch)
            if after is None:
                return

    async def run(lower: str | None, upper: str | None) -> None:
        try:
            await walk(lower, upper)
        except asyncio.CancelledError:
            # The consumer stopped (a failed tick closes this generator): nobody reads the queue any more, and
            # waiting for room in it would keep this task, and the consumer's close, from ever ending.
            raise
        except BaseException as exc:  # handed to the consumer, which re-raises it
            await queue.put(exc)
            raise
        await queue.put(_DONE)

    tasks = [asyncio.create_task(run(lower, upper)) for lower, upper in zip([None, *bounds[:-1]], bounds, strict=True)]
    try:
        running = len(tasks)
        while running:
            item = await queue.get()
            if item is _DONE:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
