"""The budget monitor's candidates on Postgres: only users with a budget that could be in a band come back.

Per page of users (keyset on ``profiles.id``, ``scan_size`` at a time) one statement computes each budget's current
period in SQL (:func:`pamd.store.records_budget.current_period`'s calendar rules: weekly on the start date's
weekday, monthly on its day clamped to short months, yearly on its month and day, or the explicit range), sums the
usable expenses of the period up to the user's local today, and keeps the users with a budget whose percentage or
projection could reach a band (the monitor's own arithmetic, with a margin for floating point). Each user's local
today and time of day are computed in Python, per time zone, exactly as the full stream computes them (an unknown
zone is read as UTC), and passed in; the candidates' full inputs are then read as
:meth:`~pamd.store.pg_budget.PostgresBudgetQueries.iter_budget_inputs` reads them, and the monitor decides as before.

A user also comes back, whatever the spend, when the full stream would skip and report something of theirs (a bad
budget or expense row, an undated expense, an unknown time zone) or when a category's spelling might normalise
differently in SQL and Python (surrounding whitespace, non-ASCII letters): the candidates then log the same skips.
"""

from __future__ import annotations

import calendar
from collections.abc import AsyncGenerator, Sequence
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pamd.store.pg_budget import PostgresBudgetQueries
from pamd.store.pg_scan import ZONES_SQL, fetch_page, page_where, scan_batches
from pamd.store.records_budget import BudgetBands, BudgetInput, zone_day
from pamd.store.sqlite_base import INACTIVE_STATUSES

if TYPE_CHECKING:
    import asyncpg


_DIM = "extract(day FROM ({0} + interval '1 month' - interval '1 day'))::int"  # days in the month starting at {0}
_CLAMP = "({0} + least({1}, " + _DIM + ") - 1)"  # day {1} of the month starting at {0}, clamped to its length


def _clamp(month_start: str, day: str) -> str:
    return _CLAMP.format(month_start, day)


_Y0 = "make_date(extract(year FROM b.today)::int, b.mo, 1)"

# The first day of a budget's current period (NULL: none), over a row ``b`` of the budget (kind, s, e, dd, mo) and
# its user's zone (today; m0, pm0: the first of today's and the previous month, dim0, dimp: their lengths). Weekly
# and monthly periods, most budgets, take date-and-integer arithmetic on the zone's months, computed in Python:
# Postgres's interval arithmetic and date_trunc cost about 3 us a row. A week starts on the weekday of the start
# date (Monday, 2000-01-03, without one).
_PERIOD_START = f"""CASE
        WHEN b.kind NOT IN ('weekly', 'monthly', 'yearly') THEN CASE WHEN b.s <= b.today AND b.today <= b.e THEN b.s END
        WHEN b.today < b.s OR b.today > b.e THEN NULL
        WHEN b.kind = 'weekly' THEN b.today - (((b.today - COALESCE(b.s, DATE '2000-01-03')) % 7 + 7) % 7)
        WHEN b.kind = 'monthly' THEN CASE WHEN b.m0 + least(b.dd, b.dim0) - 1 <= b.today
                                          THEN b.m0 + least(b.dd, b.dim0) - 1 ELSE b.pm0 + least(b.dd, b.dimp) - 1 END
        ELSE CASE WHEN {_clamp(_Y0, "b.dd")} <= b.today THEN {_clamp(_Y0, "b.dd")}
                  ELSE {_clamp(f"({_Y0} - interval '1 year')::date", "b.dd")} END
    END"""
# Its last day, over the same row with the first day as ``lo`` (nm0, dimn: the next month's first day and length).
_PERIOD_END = f"""CASE
        WHEN p.kind NOT IN ('weekly', 'monthly', 'yearly') THEN p.e
        WHEN p.kind = 'weekly' THEN p.lo + 6
        WHEN p.kind = 'monthly' THEN CASE WHEN p.lo >= p.m0 THEN p.nm0 + least(p.dd, p.dimn) - 2
                                          ELSE p.m0 + least(p.dd, p.dim0) - 2 END
        ELSE {_clamp("(date_trunc('month', p.lo) + interval '1 year')::date", "p.dd")} - 1
    END"""
# A spelling that SQL's lower/btrim may normalise differently from Python's: surrounding whitespace or non-ASCII
# (more bytes than characters in UTF-8); cheaper than a regular expression on every row.
_ODD_TEXT = "COALESCE(octet_length({0}) <> length({0}) OR btrim({0}, E' \\t\\n\\r\\f\\v') <> {0}, false)"

# {where}: profile_where()'s clause (its parameter first when paging). Then: $a inactive statuses, $b page size,
# $c/$d/$e/$f time zones (name, local today, fraction of the day, known), $g high %, $h pace %, $i pace minimum days,
# $j pace minimum % of the period, $k..$p the zones' months (see _PERIOD_START and _PERIOD_END).
_SCAN_SQL = f"""
WITH page AS (
    SELECT id, COALESCE(NULLIF(timezone, ''), 'UTC') AS tz FROM profiles
    WHERE {{where}} AND COALESCE(status, 'active') <> ALL(${{a}}::text[]) ORDER BY id LIMIT ${{b}}
),
span AS (SELECT min(id) AS lo, max(id) AS hi, count(*) AS n FROM page),
t AS (SELECT * FROM unnest(${{c}}::text[], ${{d}}::date[], ${{e}}::float8[], ${{f}}::bool[], ${{k}}::date[],
                            ${{l}}::int[], ${{m}}::date[], ${{n}}::int[], ${{o}}::date[], ${{p}}::int[])
      AS t(name, today, frac, known, m0, dim0, pm0, dimp, nm0, dimn)),
b AS (
    SELECT page.id AS user_id, x.id AS b_id, x.amount, x.period,
           lower(btrim(COALESCE(NULLIF(x.period, ''), 'monthly'))) AS kind,
           x.start_date AS s, x.end_date AS e, x.category, lower(btrim(x.category)) AS label,
           COALESCE(extract(day FROM x.start_date)::int, 1) AS dd, COALESCE(extract(month FROM x.start_date)::int, 1)
           AS mo, t.today, t.frac, t.known, t.m0, t.dim0, t.pm0, t.dimp, t.nm0, t.dimn
    FROM span JOIN budgets AS x ON x.user_id BETWEEN span.lo AND span.hi JOIN page ON page.id = x.user_id
    LEFT JOIN t ON t.name = page.tz
),
-- OFFSET 0 keeps p and q subquery scans, each CASE evaluated once a row: inlined, every reference computed them
-- again (3x slower); MATERIALIZED wrote every row to a tuplestore first (31 against 26 ms a page).
p AS (SELECT b.*, {_PERIOD_START} AS lo FROM b OFFSET 0),
q AS (
    SELECT p.*, {_PERIOD_END} AS hi,
    NOT COALESCE(p.amount > 0 AND p.amount < 'Infinity'::float8, false) OR COALESCE(p.e < p.s, false)
        OR (p.kind NOT IN ('weekly', 'monthly', 'yearly') AND (p.s IS NULL OR p.e IS NULL))
        OR {_ODD_TEXT.format("p.category")} OR {_ODD_TEXT.format("p.period")} OR p.known IS NOT TRUE AS odd
    FROM p OFFSET 0
),
spend AS (  -- per budget, one aggregate over its period's index range (no sort of the page's rows by budget)
    SELECT q.user_id, q.odd, q.amount, q.lo, q.hi, q.today, q.frac, x.spent, x.bad
    FROM q CROSS JOIN LATERAL (
        SELECT SUM(e.amount) FILTER (WHERE e.amount BETWEEN 0 AND 1e15 AND e.date <= q.today) AS spent,
               COUNT(e.id) FILTER (WHERE NOT COALESCE(e.amount BETWEEN 0 AND 1e15 AND e.date <= q.today, false)) AS bad
        FROM expenses AS e WHERE e.user_id = q.user_id AND e.date BETWEEN q.lo AND q.hi
            AND (q.label IS NULL OR q.label IN ('', 'total', 'all') OR lower(trim(e.category)) = q.label)
    ) AS x
),
judged AS (
    SELECT user_id, odd OR bad > 0 OR (lo IS NOT NULL AND (
        COALESCE(spent, 0) / amount * 100 >= ${{g}}::float8 - 1e-6
        OR (el > 0 AND el >= ${{i}}::float8 - 1e-9 AND el * 100 >= ${{j}}::float8 * days - 1e-9
            AND COALESCE(spent, 0) / el * days / amount * 100 >= ${{h}}::float8 - 1e-6)
        OR EXISTS (SELECT 1 FROM expenses AS u WHERE u.user_id = spend.user_id AND u.date IS NULL))) AS maybe
    FROM spend CROSS JOIN LATERAL (
        SELECT (hi - lo + 1)::float8 AS days, least(greatest((today - lo) + frac, 0), (hi - lo + 1)::float8) AS el
    ) AS d
)
SELECT (SELECT hi FROM span), (SELECT n FROM span),
       COALESCE(array_agg(DISTINCT user_id) FILTER (WHERE maybe), '{{{{}}}}')
FROM judged
"""


def _days(now: datetime, names: Sequence[str]) -> tuple[list[str], list[date], list[float], list[bool]]:
    """For each time zone name: the local date and fraction of the day at ``now`` as the budget monitor computes
    them (an unknown zone is read as UTC, and flagged, so its users come back to have that reported)."""
    days = [zone_day(now, name) for name in names]
    return list(names), [d[0] for d in days], [d[1] for d in days], [d[2] for d in days]


def zone_months(todays: Sequence[date]) -> list[list[Any]]:
    """For each local today: the first day and length of its month, of the month before and of the month after
    (the six columns ``m0, dim0, pm0, dimp, nm0, dimn`` of :data:`_PERIOD_START` and :data:`_PERIOD_END`)."""
    columns: list[list[Any]] = [[], [], [], [], [], []]
    for today in todays:
        first = today.replace(day=1)
        before = (first - timedelta(days=1)).replace(day=1)
        after = (first + timedelta(days=31)).replace(day=1)
        for column, value in zip(columns, (first, _length(first), before, _length(before), after, _length(after)),
                                 strict=True):
            column.append(value)
    return columns


def _length(first: date) -> int:
    return calendar.monthrange(first.year, first.month)[1]


class PostgresBudgetCandidates(PostgresBudgetQueries):
    """The budget candidates on Postgres (see the module docstring)."""

    async def iter_budget_candidates(
        self, bands: BudgetBands, now: datetime, batch_size: int = 500, *, top_categories: int = 3,
        scan_size: int = 5000, parallel: int = 2,
    ) -> AsyncGenerator[list[BudgetInput], None]:
        """Stream the monitored users with a budget whose current period could be in a band at ``now``, with
        their full inputs (as :meth:`iter_budget_inputs` gives them), at most ``batch_size`` at a time. Users are
        scanned ``scan_size`` at a time in ``parallel`` id ranges side by side
        (:func:`pamd.store.pg_scan.scan_ranges`)."""
        if batch_size < 1 or scan_size < 1 or top_categories < 0:
            raise ValueError("batch_size and scan_size must be >= 1, top_categories >= 0")

        async def zones(conn: asyncpg.Connection) -> list[str]:
            return [row[0] for row in await conn.fetch(ZONES_SQL)]

        days = _days(now, await self._call(zones))
        months = zone_months(days[1])

        async def step(
            conn: asyncpg.Connection, after: str | None, upto: str | None
        ) -> tuple[list[BudgetInput], str | None]:
            where, params, names = page_where(self, after, upto, "abcdefghijklmnop")
            last, count, ids = await fetch_page(
                self, conn, _SCAN_SQL.format(where=where, **names), *params, list(INACTIVE_STATUSES), scan_size, *days,
                bands.high_pct, bands.pace_pct, bands.pace_min_elapsed_days, bands.pace_min_elapsed_pct, *months)
            batch: list[BudgetInput] = []
            if ids:
                batch, _ = await self._budget_batch(conn, None, len(ids), None, now, top_categories, ids=list(ids))
            return batch, last if count == scan_size else None

        async for batch in scan_batches(self, step, parallel, batch_size):
            yield batch
