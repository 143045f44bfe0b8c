"""Set-based generation of demo-shaped users in Postgres for ``bench/pg_scale.py``.

The demo data set (:mod:`pamd.store.demo`, 8 travellers) is seeded into a template schema; ``users / 8`` copies of
it are then made with one ``INSERT ... SELECT ... CROSS JOIN generate_series`` per table (no COPY, no rows through
Python). Copy ``g`` of demo user ``demo-u01`` is ``u0000123-u01``, so archetypes interleave in id order.

Copies are not identical: a deterministic per-copy draw (``hashint4`` of the copy number and a salt, uniform in
[0, 1)) varies what decides the alerts, so that each monitor alerts for a realistic share of users rather than the
demo's 37-63 % (every figure below is the draw's range):

* fuel: tank capacity x 0.85-3.0 (the same fill-ups in a bigger tank leave a higher level): about 5 % below 20 %;
* budget: budget amounts x 0.8-3.0: about 9 % of users in a band;
* weather: planned trips kept for 20 % of copies (others have none);
* context: 15 % of copies are travelling (active trip and the full track of fixes), the rest keep only their newest
  fix (still the position fuel and maintenance use); calendar events kept for 15 %;
* maintenance: next due date pushed 0-180 days and due odometer 0-7,000 km later.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import asyncpg

UID = "'u' || lpad(g::text, 7, '0') || '-' || substr(t.user_id, 6)"  # demo-u01 -> u0000123-u01
ID = "t.{0} || '-' || lpad(g::text, 7, '0')"


def draw(salt: int) -> str:
    """SQL for copy ``g``'s deterministic draw in [0, 1) for ``salt`` (one per varied quantity)."""
    return f"((hashint4(g * 16 + {salt}) & 2147483647)::float8 / 2147483648.0)"


TRAVELLING = f"{draw(4)} < 0.15"

# table -> (column -> SQL expression over the template row t and the copy number g; others copied as is), WHERE
_COPIES: dict[str, tuple[dict[str, str], str]] = {
    "profiles": ({"id": UID.replace("t.user_id", "t.id"), "email": "g || '.' || t.email"}, "TRUE"),
    "vehicles": ({"id": ID.format("id"), "user_id": UID,
                  "fuel_capacity_l": f"t.fuel_capacity_l * (0.85 + 2.15 * {draw(1)})"}, "TRUE"),
    "fuel_log": ({"id": ID.format("id"), "user_id": UID, "vehicle_id": ID.format("vehicle_id")}, "TRUE"),
    "budgets": ({"id": ID.format("id"), "user_id": UID, "amount": f"t.amount * (0.8 + 2.2 * {draw(2)})"}, "TRUE"),
    "expenses": ({"id": ID.format("id"), "user_id": UID}, "TRUE"),
    "trips": ({"id": ID.format("id"), "user_id": UID},
              f"(t.status = 'planned' AND {draw(3)} < 0.2) OR (t.status = 'active' AND {TRAVELLING}) "
              "OR t.status NOT IN ('planned', 'active')"),
    "maintenance_records": ({"id": ID.format("id"), "user_id": UID, "vehicle_id": ID.format("vehicle_id"),
                             "next_due_date": f"t.next_due_date + ({draw(5)} * 180)::int",
                             "next_due_odometer_km": f"t.next_due_odometer_km + {draw(5)} * 7000"}, "TRUE"),
    "calendar_events": ({"id": ID.format("id"), "user_id": UID}, f"{draw(6)} < 0.15"),
    "user_locations": ({"user_id": UID}, f"{TRAVELLING} OR (t.user_id, t.recorded_at) IN (SELECT m.user_id, "
                                         "max(m.recorded_at) FROM {tpl}.user_locations AS m GROUP BY m.user_id)"),
    "notification_preferences": ({"user_id": UID}, "TRUE"),
}


async def _columns(conn: asyncpg.Connection, schema: str, table: str) -> list[str]:
    rows = await conn.fetch("SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND "
                            "table_name = $2 ORDER BY ordinal_position", schema, table)
    return [row[0] for row in rows]


async def generate(dsn: str, schema: str, users: int, now: datetime) -> dict[str, Any]:
    """Fill the migrated, empty ``schema`` with ``users`` (rounded down to whole copies of the demo set) demo-shaped
    users at ``now``, then VACUUM (ANALYZE). Returns the rows per table and the seconds taken by each step."""
    from pamd.store.pg import PostgresStore

    template = f"{schema}_tpl"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{template}" CASCADE; CREATE SCHEMA "{template}"')
        store = PostgresStore(f"{dsn}?search_path={template}")
        await store.seed_demo(now)
        await store.aclose()
        copies = max(1, users // 8)
        counts: dict[str, int] = {}
        seconds: dict[str, float] = {}
        # The rows are consistent by construction: skip the per-row foreign key triggers (superuser only). The
        # secondary indexes are dropped and built again afterwards: a sorted build is several times faster than
        # as many B-tree inserts.
        await conn.execute("SET session_replication_role = replica; SET maintenance_work_mem = '256MB'")
        indexes = [row[0] for row in await conn.fetch(
            "SELECT i.indexdef FROM pg_indexes AS i JOIN pg_class AS c ON c.relname = i.indexname "
            "JOIN pg_index AS x ON x.indexrelid = c.oid WHERE i.schemaname = $1 AND c.relnamespace = $1::regnamespace "
            "AND NOT x.indisunique AND i.tablename = ANY($2::text[])", schema, list(_COPIES))]
        for name in [d.split()[2] for d in indexes]:
            await conn.execute(f'DROP INDEX "{schema}".{name}')
        for table, (exprs, where) in _COPIES.items():
            started = time.perf_counter()
            columns = await _columns(conn, schema, table)
            select = ", ".join(exprs.get(c, f't."{c}"') for c in columns)
            names = ", ".join(f'"{c}"' for c in columns)
            status = await conn.execute(
                f'INSERT INTO "{schema}"."{table}" ({names}) SELECT {select} FROM "{template}"."{table}" AS t '
                f"CROSS JOIN generate_series(0, {copies - 1}) AS g WHERE {where.format(tpl=template)}")
            counts[table] = int(status.split()[-1])
            seconds[table] = time.perf_counter() - started
        await conn.execute("RESET session_replication_role")
        started = time.perf_counter()
        for definition in indexes:
            await conn.execute(definition)
        seconds["indexes"] = time.perf_counter() - started
        # VACUUM as well as ANALYZE: a real database's autovacuum would have set the visibility map and hint bits
        # of data this old, and a server running with autovacuum = off (as this machine's does) never would:
        # without it every index-only scan also reads the heap (maintenance's candidate statement, 5,625 heap
        # fetches a page of 5,000 users; its tick 28.2 -> 22.2 s once vacuumed).
        started = time.perf_counter()
        for table in _COPIES:
            await conn.execute(f'VACUUM (ANALYZE) "{schema}"."{table}"')
        seconds["analyze"] = time.perf_counter() - started
        await conn.execute(f'DROP SCHEMA "{template}" CASCADE')
    finally:
        await conn.close()
    return {"users": counts["profiles"], "rows": counts, "seconds": seconds}
