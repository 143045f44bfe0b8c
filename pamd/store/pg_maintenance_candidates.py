"""The maintenance monitor's candidates on Postgres: only users with a task that could be due come back.

Per page of users (keyset on ``profiles.id``, ``scan_size`` at a time) one statement groups each user's records as
the monitor does (by the vehicle a record resolves to, a NULL one being the primary, and by the monitor's task key
of the task text, :attr:`MaintenanceBands.task_key`, computed in Python for each distinct text and passed in), takes
the newest record of each group, and keeps the users for whom one of them could be in a band
(:func:`plugins.maintenance.assess`'s tests, made conservative):

* by date: due within the band's days of the user's local date (computed per time zone in Python, as the monitor
  computes it);
* by odometer: due within the band's kilometres of the highest odometer the user has anywhere (any vehicle's own,
  any fill-up's, any record's), which is at least the vehicle's current odometer as the monitor takes it.

Task texts beyond :data:`MAX_TASK_NAMES`, or a store asked without ``task_key``, group by the text itself: finer
than the monitor's grouping, so every record the monitor judges is still judged here (the newest of a merged group
is the newest of its own).

Users are also brought back, whatever their dates, when the full stream would skip and report something of theirs:
a bad record (no task, no or a future date, a negative or non-finite number, an unknown vehicle), a vehicle's bad
odometer, a fill-up without a time or with a bad odometer, an unusable newest position, an unknown time zone (which
the full stream reports for users without records too). The candidates' full inputs are then read as the full
stream reads them (:meth:`~pamd.store.pg_maintenance.PostgresMaintenanceQueries.iter_maintenance_inputs`), and the
monitor decides exactly as before. A complete tick resolves every condition it did not produce
(:mod:`pamd.pipeline`), so a superset is safe; tests/test_store_pg_maintenance_prefilter.py checks that the alerts
are those of the full stream.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from pamd.store.pg_maintenance import PostgresMaintenanceQueries, _Rules
from pamd.store.pg_scan import ZONES_SQL, fetch_page, page_where, scan_batches
from pamd.store.records import POSITION_MAX_AGE, zone
from pamd.store.records_maintenance import MaintenanceBands, MaintenanceInput
from pamd.store.sqlite_base import INACTIVE_STATUSES
from pamd.store.sqlite_fuel import CLOCK_SKEW

if TYPE_CHECKING:
    import asyncpg

MAX_TASK_NAMES = 100_000  # distinct task texts mapped to the monitor's keys; beyond, each text is its own group
_BAD = "({0} IS NOT NULL AND NOT ({0} >= 0 AND {0} < 'Infinity'::float8))"  # NaN sorts above Infinity in Postgres
_GOOD = "CASE WHEN {0} >= 0 AND {0} < 'Infinity'::float8 THEN {0} END"

# {where}: profile_where()'s clause (its parameter first when paging). Then: $a inactive statuses, $b page size,
# $c/$d/$e time zones (name, local today, known), $f the last date a record may have (UTC tomorrow), $g/$h the
# band (days, km), $i/$j the oldest and newest usable position times, $k/$l task names and the monitor's key of each,
# $m the latest local today anywhere (for a zone added since the list was made).
_SCAN_SQL = f"""
WITH page AS (
    SELECT p.id, COALESCE(NULLIF(p.timezone, ''), 'UTC') AS tz FROM profiles AS p
    WHERE {{where}} AND COALESCE(p.status, 'active') <> ALL(${{a}}::text[]) ORDER BY p.id LIMIT ${{b}}
),
span AS (SELECT min(id) AS lo, max(id) AS hi, count(*) AS n FROM page),
r AS MATERIALIZED (
    SELECT x.* FROM span JOIN maintenance_records AS x ON x.user_id BETWEEN span.lo AND span.hi
    JOIN page ON page.id = x.user_id
),
vs AS MATERIALIZED (  -- the span's vehicles, scanned once by range (not looked up per record and per user)
    SELECT x.user_id, x.id, x.odometer_km FROM span JOIN vehicles AS x ON x.user_id BETWEEN span.lo AND span.hi
),
garage AS (  -- per user: any vehicle's bad odometer, the highest good one
    SELECT user_id, bool_or({_BAD.format("odometer_km")}) AS odd, max({_GOOD.format("odometer_km")}) AS odo
    FROM vs GROUP BY user_id
),
fills AS (  -- per user: any fill-up without a time or with a bad odometer, the highest good odometer
    SELECT x.user_id, bool_or(x.logged_at IS NULL OR {_BAD.format("x.odometer_km")}) AS odd,
           max({_GOOD.format("x.odometer_km")}) AS odo
    FROM span JOIN fuel_log AS x ON x.user_id BETWEEN span.lo AND span.hi GROUP BY x.user_id
),
owners AS (  -- per user with records: any bad record or vehicle, the highest odometer of records and vehicles
    SELECT r.user_id,
           bool_or(r.task IS NULL OR r.task !~ '[[:alnum:]]' OR r.date IS NULL OR r.date > ${{f}}::date
                   OR {_BAD.format("r.odometer_km")} OR {_BAD.format("r.cost")}
                   OR {_BAD.format("r.next_due_odometer_km")}
                   -- no vehicle the record resolves to: none at all for a NULL one, else none of that id
                   OR CASE WHEN r.vehicle_id IS NULL THEN g.user_id IS NULL ELSE m.id IS NULL END
                   OR COALESCE(g.odd, false)) AS odd,
           greatest(max({_GOOD.format("r.odometer_km")}), max(g.odo)) AS odo
    FROM r LEFT JOIN garage AS g ON g.user_id = r.user_id
    LEFT JOIN vs AS m ON m.user_id = r.user_id AND m.id = r.vehicle_id
    GROUP BY r.user_id
),
keyed AS (  -- the monitor's grouping: the vehicle a record resolves to (NULL: the primary) and the task's key
    SELECT r.user_id, r.date, r.id, r.next_due_date, r.next_due_odometer_km,
           COALESCE(r.vehicle_id, (SELECT v.id FROM vehicles AS v WHERE v.user_id = r.user_id
                                   ORDER BY v.is_primary DESC, v.id COLLATE "C" LIMIT 1)) AS vehicle,
           COALESCE('k:' || t.key, 'r:' || r.task) AS task
    FROM r LEFT JOIN unnest(${{k}}::text[], ${{l}}::text[]) AS t(name, key) ON t.name = r.task
),
newest AS (
    SELECT DISTINCT ON (user_id, vehicle, task) user_id, next_due_date, next_due_odometer_km
    FROM keyed ORDER BY user_id, vehicle, task, date DESC NULLS LAST, id COLLATE "C" DESC
),
soonest AS (  -- per user, the earliest due date and odometer of those records
    SELECT user_id, min(next_due_date) AS due_date, min(next_due_odometer_km) AS due_km FROM newest GROUP BY user_id
),
found AS (  -- per user with records: anything odd (a bad fill-up or newest position too), due date, km left
    SELECT o.user_id, o.odd OR COALESCE(f.odd, false) OR COALESCE(l.odd, false) AS odd, n.due_date,
           n.due_km - greatest(o.odo, f.odo) AS km_left
    FROM owners AS o JOIN soonest AS n ON n.user_id = o.user_id LEFT JOIN fills AS f ON f.user_id = o.user_id
    LEFT JOIN LATERAL (
        SELECT x.recorded_at > ${{j}} OR NOT (x.lat BETWEEN -90 AND 90 AND x.lon BETWEEN -180 AND 180)
               OR (x.lat = 0 AND x.lon = 0) AS odd
        FROM user_locations AS x
        WHERE x.user_id = o.user_id AND x.recorded_at >= ${{i}} AND x.lat IS NOT NULL AND x.lon IS NOT NULL
        ORDER BY x.recorded_at DESC LIMIT 1
    ) AS l ON true
),
judged AS (  -- the zone joined after the page's LIMIT (a hash join, not a nested loop per profile)
    SELECT p.id AS user_id, z.known IS NOT TRUE OR COALESCE(w.odd, false)
        OR COALESCE(w.due_date - COALESCE(z.today, ${{m}}::date) <= ${{g}}::int, false)
        OR COALESCE(w.km_left <= ${{h}}::float8 + 1e-6, false) AS maybe
    FROM page AS p LEFT JOIN unnest(${{c}}::text[], ${{d}}::date[], ${{e}}::bool[]) AS z(name, today, known)
        ON z.name = p.tz
    LEFT JOIN found AS w ON w.user_id = p.id
)
SELECT (SELECT hi FROM span), (SELECT n FROM span),
       COALESCE(array_agg(user_id ORDER BY user_id) FILTER (WHERE maybe), '{{{{}}}}')
FROM judged
"""


class PostgresMaintenanceCandidates(PostgresMaintenanceQueries):
    """:class:`pamd.store.records_maintenance.MaintenanceCandidateSource` on Postgres (see the module docstring)."""

    async def iter_maintenance_candidates(
        self, bands: MaintenanceBands, batch_size: int = 500, *, now: datetime | None = None,
        position_max_age: timedelta = POSITION_MAX_AGE, max_records: int = 200, max_fills: int = 30,
        scan_size: int = 5000, parallel: int = 2,
    ) -> AsyncGenerator[list[MaintenanceInput], None]:
        """Stream the monitored users with a task that could be due within ``bands`` at ``now``, with their full
        inputs (as :meth:`iter_maintenance_inputs` gives them), at most ``batch_size`` at a time. Users are
        scanned ``scan_size`` at a time in ``parallel`` id ranges side by side
        (:func:`pamd.store.pg_scan.scan_ranges`). Batches come in id order within a range, not across ranges."""
        if batch_size < 1 or scan_size < 1:
            raise ValueError("batch_size and scan_size must be at least 1")
        at = now or datetime.now(UTC)
        rules = _Rules(self._skip)

        async def names(conn: asyncpg.Connection) -> tuple[list[str], list[str]]:
            zones = await conn.fetch(ZONES_SQL)
            tasks = await conn.fetch("SELECT DISTINCT task FROM maintenance_records WHERE task IS NOT NULL LIMIT $1",
                                     MAX_TASK_NAMES + 1)
            return [row[0] for row in zones], [row[0] for row in tasks]

        zones, tasks = await self._call(names)
        if bands.task_key is None or len(tasks) > MAX_TASK_NAMES:
            tasks = []  # each task text is its own group: finer than the monitor's, so still a superset
        known = [zone(name) for name in zones]
        days = [at.astimezone(z or UTC).date() for z in known]
        fixed = (zones, days, [z is not None for z in known], (at + timedelta(days=1)).date(), bands.due_soon_days,
                 bands.due_soon_km, at - position_max_age, at + CLOCK_SKEW, tasks,
                 [bands.task_key(t.strip()) for t in tasks] if bands.task_key else [],
                 (at.astimezone(UTC) + timedelta(days=1)).date())

        async def step(
            conn: asyncpg.Connection, after: str | None, upto: str | None
        ) -> tuple[list[MaintenanceInput], str | None]:
            where, params, slots = page_where(self, after, upto, "abcdefghijklm")
            last, count, ids = await fetch_page(
                self, conn, _SCAN_SQL.format(where=where, **slots), *params, list(INACTIVE_STATUSES), scan_size, *fixed)
            batch: list[MaintenanceInput] = []
            if ids:
                profiles = await self._profiles_by_id(conn, list(ids))
                batch = await self._maintenance_batch(conn, rules, profiles, at, position_max_age, max_records,
                                                      max_fills)
            return batch, last if count == scan_size else None

        async for batch in scan_batches(self, step, parallel, batch_size):
            yield batch
