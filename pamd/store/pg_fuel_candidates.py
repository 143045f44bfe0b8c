"""The fuel monitor's candidates on Postgres: only users whose estimated fuel could be in a band come back.

A tick over a million users cannot afford to bring every fill-up to Python. Per page of users (keyset on
``profiles.id``, ``scan_size`` at a time) one statement computes, in SQL, a *conservative* bound on each user's
estimated level (:func:`plugins.fuel.estimate_fuel`'s arithmetic with its two history-dependent figures replaced by
upper bounds) and returns only the ids of the users who could be under ``FuelBounds.below_pct``; their full inputs
are then read as :meth:`~pamd.store.pg_fuel.PostgresFuelQueries.iter_fuel_inputs` reads them, and the monitor decides
exactly as before. Leaving a user out needs proof that no alert is possible; everything else comes back:

* consumption: the estimate uses the median of the recent full-to-full figures, else the stated or type default
  figure. The bound is the largest full-to-full figure (>= any median of them); when no figure is safely inside
  the plausible range, also the stated or type figure (a type not found in SQL takes the largest of the table);
* daily distance: the user's odometer history rate (without its sanity checks) or the default, whichever is larger;
* distance since the last full tank and days extrapolated: computed as the estimate does (odometer readings since
  the last full tank, the vehicle's own odometer taken as current);
* users are left out only when they have no vehicle, no capacity, no full fill-up, an estimate that would be
  stale, or a lower bound on the level at or above the band. Any doubt brings the user back: a row the store would
  skip (bad volume, odometer, time, NULL flag, bad vehicle numbers), more fill-ups than ``max_fills``, a negative
  measured distance. Comparisons carry a small margin for floating point (sums in another order).

A complete tick resolves every condition it did not produce (:mod:`pamd.pipeline`), so a superset is safe; the
tests (tests/test_store_pg_prefilter.py) check that the alerts are those of the full stream, on demo, random and
edge-of-threshold data.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from pamd.store.pg_fuel import PostgresFuelQueries
from pamd.store.pg_scan import fetch_page, page_where, scan_batches
from pamd.store.records import POSITION_MAX_AGE, FuelBounds, FuelInput
from pamd.store.sqlite_base import INACTIVE_STATUSES

if TYPE_CHECKING:
    import asyncpg

_FINITE = "({0} >= 0 AND {0} < 'Infinity'::float8)"  # NaN sorts above Infinity in Postgres
_EPOCH_DAYS = "(extract(epoch FROM {0})::float8 / 86400)"

# {where}: profile_where()'s clause (its parameter first when paging). Then: $a inactive statuses, $b page size,
# $c now, $d max_fills, $e readings (history_pairs + 1), $f/$g plausible consumption range, $h/$i type table
# (keys, L/100km), $j the largest figure (for a type SQL may normalise differently), $k default daily km, $l stale
# days, $m band (%), $n the figure for a type not in the table.
#
# The page's fill-ups and primary vehicles are each read with one range scan of their user index, from the page's
# first id to its last (a lookup per user cost 5,000 index probes a page). In the windows, k counts the full tanks so
# far, cum the litres so far; at each full tank the previous one's cum and odometer give the full-to-full figure
# (max(ARRAY[k, odometer]) picks the latest earlier full tank). Fill-ups of a user at the same instant (the store
# breaks such ties by id) or of another vehicle than the primary one make the user come back.
_SCAN_SQL = f"""
WITH page AS (
    SELECT id, vehicle_type FROM profiles
    WHERE {{where}} AND COALESCE(status, 'active') <> ALL(${{a}}::text[]) ORDER BY id LIMIT ${{b}}
),
span AS (SELECT min(id) AS lo, max(id) AS hi, count(*) AS n FROM page),
r AS (
    SELECT x.user_id, x.logged_at, x.vehicle_id, x.volume_l AS vol, x.odometer_km AS odo, x.is_full_tank AS is_full,
           sum(x.volume_l) OVER w AS cum, count(*) FILTER (WHERE x.is_full_tank) OVER w AS k,
           lag(x.logged_at) OVER w AS prev_at,
           count(*) FILTER (WHERE x.is_full_tank) OVER (PARTITION BY x.user_id) AS n_full
    FROM span JOIN fuel_log AS x ON x.user_id BETWEEN span.lo AND span.hi
    WINDOW w AS (PARTITION BY x.user_id ORDER BY x.logged_at ROWS UNBOUNDED PRECEDING)
),
r2 AS (
    SELECT *, max(cum) FILTER (WHERE is_full) OVER p AS prev_cum,
           (max(ARRAY[k::float8, odo]) FILTER (WHERE is_full) OVER p)[2] AS prev_odo
    FROM r WINDOW p AS (PARTITION BY user_id ORDER BY logged_at ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
),
agg AS (
    SELECT user_id, count(*) AS n_all, max(n_full) AS n_full, min(vehicle_id) AS v_lo, max(vehicle_id) AS v_hi,
           bool_or(logged_at IS NULL OR is_full IS NULL OR NOT {_FINITE.format("vol")}
                   OR (odo IS NOT NULL AND NOT {_FINITE.format("odo")}) OR COALESCE(logged_at = prev_at, false)) AS bad,
           sum(vol) FILTER (WHERE k = n_full AND NOT is_full) AS partials,
           max(logged_at) FILTER (WHERE is_full AND k = n_full) AS last_full_at,
           max(odo) FILTER (WHERE is_full AND k = n_full) AS last_full_odo,
           max(odo) FILTER (WHERE k = n_full) AS since_km,
           max(logged_at) FILTER (WHERE k = n_full AND odo IS NOT NULL) AS since_at,
           max(fig) FILTER (WHERE fig BETWEEN ${{f}}::float8 - 1e-9 AND ${{g}}::float8 + 1e-9) AS fig_hi,
           count(*) FILTER (WHERE fig BETWEEN ${{f}}::float8 + 1e-9 AND ${{g}}::float8 - 1e-9) AS fig_sure,
           count(odo) AS n_read, min(odo) AS km0, max(odo) AS km1,
           min(logged_at) FILTER (WHERE odo IS NOT NULL) AS t0, max(logged_at) FILTER (WHERE odo IS NOT NULL) AS t1
    FROM (SELECT *, CASE WHEN is_full AND k >= 2 AND odo - prev_odo > 0
                         THEN (cum - prev_cum) / (odo - prev_odo) * 100 END AS fig FROM r2) AS r3
    GROUP BY user_id
),
est AS (
    SELECT page.id AS user_id, v.fuel_capacity_l AS cap, agg.n_all, agg.n_full, agg.n_read, agg.partials,
           agg.last_full_at, agg.last_full_odo,
           agg.bad OR agg.v_lo <> v.id OR agg.v_hi <> v.id
               OR NOT (COALESCE({_FINITE.format("v.fuel_capacity_l")}, true)
                       AND COALESCE({_FINITE.format("v.consumption_l_per_100km")}, true)
                       AND COALESCE({_FINITE.format("v.odometer_km")}, true)) AS bad,
           greatest(agg.fig_hi, CASE WHEN agg.fig_sure = 0 THEN
               CASE WHEN v.consumption_l_per_100km BETWEEN ${{f}}::float8 AND ${{g}}::float8
                    THEN v.consumption_l_per_100km
                    ELSE COALESCE((SELECT d.val FROM unnest(${{h}}::text[], ${{i}}::float8[]) AS d(key, val)
                                   WHERE d.key = replace(replace(lower(btrim(t.kind)), ' ', '_'), '-', '_')),
                                  CASE WHEN t.kind ~ '^[[:space:]]|[[:space:]]$|[^[:ascii:]]' THEN ${{j}}::float8
                                       ELSE ${{n}}::float8 END)
               END END) AS used_hi,
           greatest(${{k}}::float8, CASE WHEN agg.n_read >= 2 AND {_EPOCH_DAYS.format("agg.t1 - agg.t0")} >= 1 - 1e-9
               THEN (agg.km1 - agg.km0) / {_EPOCH_DAYS.format("agg.t1 - agg.t0")} END) * (1 + 1e-9) AS rate_hi,
           CASE WHEN v.odometer_km > agg.since_km OR (v.odometer_km IS NOT NULL AND agg.since_km IS NULL)
                THEN v.odometer_km ELSE agg.since_km END AS read_km,
           CASE WHEN v.odometer_km > agg.since_km OR (v.odometer_km IS NOT NULL AND agg.since_km IS NULL)
                THEN ${{c}}::timestamptz ELSE COALESCE(agg.since_at, agg.last_full_at) END AS read_at
    FROM page JOIN agg ON agg.user_id = page.id
    JOIN (
        SELECT DISTINCT ON (x.user_id) x.user_id, x.id, x.vehicle_type, x.fuel_capacity_l, x.consumption_l_per_100km,
               x.odometer_km
        FROM span JOIN vehicles AS x ON x.user_id BETWEEN span.lo AND span.hi
        ORDER BY x.user_id, x.is_primary DESC, x.id
    ) AS v ON v.user_id = page.id
    CROSS JOIN LATERAL (SELECT COALESCE(NULLIF(v.vehicle_type, ''), NULLIF(page.vehicle_type, ''), '') AS kind) AS t
),
dist AS (SELECT *, COALESCE(read_km - last_full_odo, 0) AS measured FROM est),
ext AS (
    SELECT *, greatest(0, {_EPOCH_DAYS.format("${c}::timestamptz - CASE WHEN measured > 0 THEN read_at "
                                             "ELSE last_full_at END")}) AS days
    FROM dist
)
SELECT (SELECT hi FROM span), (SELECT n FROM span), COALESCE(array_agg(user_id ORDER BY user_id) FILTER (
    WHERE bad OR n_all > ${{d}}::int OR measured < 0
       OR (cap > 0 AND n_full > 0 AND days <= ${{l}}::float8 + 1e-6
           AND ((n_read > ${{e}}::int AND days > 0)
                OR cap + COALESCE(partials, 0) - used_hi * (measured + days * rate_hi) / 100
                   < ${{m}}::float8 / 100 * cap + 1e-6 * (cap + 1)))), '{{{{}}}}')
FROM ext
"""


class PostgresFuelCandidates(PostgresFuelQueries):
    """:class:`pamd.store.records.FuelCandidateSource` on Postgres (see the module docstring)."""

    async def iter_fuel_candidates(
        self, bounds: FuelBounds, batch_size: int = 500, *, now: datetime | None = None,
        position_max_age: timedelta = POSITION_MAX_AGE, max_fills: int = 100, scan_size: int = 5000, parallel: int = 2,
    ) -> AsyncGenerator[list[FuelInput], None]:
        """Stream the monitored users whose estimated level could be below ``bounds.below_pct``, with their full
        inputs (as :meth:`iter_fuel_inputs` gives them), at most ``batch_size`` at a time. Users are scanned
        ``scan_size`` at a time (keyset on ``profiles.id``) in ``parallel`` id ranges side by side
        (:func:`pamd.store.pg_scan.scan_ranges`): one statement per page picks the candidates, one more pair reads
        them (see the module docstring). Batches come in id order within a range, not across ranges."""
        if batch_size < 1 or max_fills < 1 or scan_size < 1:
            raise ValueError("batch_size, max_fills and scan_size must be at least 1")
        at = now or datetime.now(UTC)
        table = bounds.type_l_per_100km
        miss = max([bounds.fallback_l_per_100km, *table.values()])

        async def step(
            conn: asyncpg.Connection, after: str | None, upto: str | None
        ) -> tuple[list[FuelInput], str | None]:
            where, params, names = page_where(self, after, upto, "abcdefghijklmn")
            sql = _SCAN_SQL.format(where=where, **names)
            last, count, ids = await fetch_page(
                self, conn, sql, *params, list(INACTIVE_STATUSES), scan_size, at, max_fills, bounds.history_pairs + 1,
                bounds.min_l_per_100km, bounds.max_l_per_100km, list(table), list(table.values()), miss,
                bounds.default_daily_km, bounds.stale_after_days, bounds.below_pct, bounds.fallback_l_per_100km)
            batch: list[FuelInput] = []
            if ids:
                batch, _ = await self._fuel_batch(conn, None, len(ids), None, max_fills, at, position_max_age,
                                                  ids=list(ids))
            return batch, last if count == scan_size else None

        async for batch in scan_batches(self, step, parallel, batch_size):
            yield batch
