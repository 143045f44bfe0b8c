"""The budget monitor's candidates on SQLite: only users with a budget that could be in a band come back.

The port of :mod:`pamd.store.pg_budget_candidates`. Per page of users (keyset on ``profiles.id``, ``scan_size`` at a
time, on the store's reader thread with read-ahead) one statement computes each budget's current period in SQL
(:func:`pamd.store.records_budget.current_period`'s calendar rules: weekly on the start date's weekday, monthly on
its day clamped to short months, yearly on its month and day, or the explicit range), sums the usable expenses of
the period up to the user's local today (the full stream's own filter: :data:`pamd.store.sqlite_budget._VALID`,
joined the same way), and keeps the users with a budget whose percentage or projection could reach a band (the
monitor's arithmetic, with a margin for floating point). Each user's local today and time of day are computed in
Python, per time zone, as the full stream computes them, and passed in as JSON; the candidates' full inputs are then
read by :meth:`~pamd.store.sqlite_budget.SQLiteBudgetQueries.iter_budget_inputs`'s own code, and the monitor
decides as before.

A user also comes back, whatever the spend, when the full stream would skip and report something of theirs, or
when SQL might read a row differently from Python: an unknown (or non-text) time zone, even without budgets; a
budget whose amount is not a finite positive number of SQLite type integer or real; a start or end date that is
not exactly a real ``YYYY-MM-DD`` (an ISO timestamp, which Python would accept, included); an explicit range
without both dates or ending before it starts; a category or period that is not plain printable ASCII (SQLite's
``lower``/``trim`` agree with Python's ``strip().lower()`` only there); a bad expense in a current period; an
undated expense of a user with a current budget.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from datetime import datetime

import anyio.to_thread

from pamd.store.records_budget import BudgetBands, BudgetInput, zone_day
from pamd.store.sqlite_base import _INACTIVE_SQL
from pamd.store.sqlite_budget import _VALID, SQLiteBudgetQueries

_DATE = "{0} GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]' AND {0} >= '0001-01-01' AND date({0}, '+0 days') = {0}"
_PLAIN = "({0} IS NULL OR (typeof({0}) = 'text' AND {0} NOT GLOB '*[^ -~]*'))"  # printable ASCII (or NULL)


def _dim(first: str) -> str:
    """The number of days of the month starting on the date ``first``."""
    return f"CAST(strftime('%d', {first}, '+1 month', '-1 day') AS INTEGER)"


def _clamp(first: str, day: str) -> str:
    """Day ``day`` of the month starting on the date ``first``, clamped to the month's length."""
    return f"date({first}, '+' || (min({day}, {_dim(first)}) - 1) || ' days')"


# From ``b(kind, s, e, today, odd)`` (dates as ``YYYY-MM-DD`` text, checked unless ``odd``): ``q`` adds ``lo``..``hi``,
# the current period (``lo`` NULL when there is none, or when ``odd``). ``dd``/``mo``/``wd``: the start's day, month and
# weekday (Monday = 0), or 1, 1, 0 without a start.
_PERIOD_CTES = f"""
a AS (
    SELECT b.*, COALESCE(CAST(substr(b.s, 9, 2) AS INTEGER), 1) AS dd,
           COALESCE(CAST(substr(b.s, 6, 2) AS INTEGER), 1) AS mo,
           COALESCE((CAST(strftime('%w', b.s) AS INTEGER) + 6) % 7, 0) AS wd
    FROM b
),
m AS (
    SELECT a.*, date(a.today, 'start of month') AS m0,
           date(a.today, 'start of year', '+' || (a.mo - 1) || ' months') AS y0
    FROM a
),
p AS MATERIALIZED (
    SELECT m.*, CASE
        WHEN m.odd THEN NULL
        WHEN m.kind NOT IN ('weekly', 'monthly', 'yearly') THEN CASE WHEN m.s <= m.today AND m.today <= m.e
                                                                     THEN m.s END
        WHEN m.today < m.s OR m.today > m.e THEN NULL
        WHEN m.kind = 'weekly' THEN
            date(m.today, '-' || (((CAST(strftime('%w', m.today) AS INTEGER) + 6 - m.wd) % 7 + 7) % 7) || ' days')
        WHEN m.kind = 'monthly' THEN CASE WHEN {_clamp("m.m0", "m.dd")} <= m.today THEN {_clamp("m.m0", "m.dd")}
                                          ELSE {_clamp("date(m.m0, '-1 month')", "m.dd")} END
        ELSE CASE WHEN {_clamp("m.y0", "m.dd")} <= m.today THEN {_clamp("m.y0", "m.dd")}
                  ELSE {_clamp("date(m.y0, '-1 year')", "m.dd")} END
    END AS lo
    FROM m
),
q AS MATERIALIZED (
    SELECT p.*, CASE
        WHEN p.lo IS NULL THEN NULL
        WHEN p.kind NOT IN ('weekly', 'monthly', 'yearly') THEN p.e
        WHEN p.kind = 'weekly' THEN date(p.lo, '+6 days')
        WHEN p.kind = 'monthly' THEN date({_clamp("date(p.lo, 'start of month', '+1 month')", "p.dd")}, '-1 day')
        ELSE date({_clamp("date(p.lo, 'start of month', '+1 year')", "p.dd")}, '-1 day')
    END AS hi
    FROM p
),
w AS MATERIALIZED (
    SELECT q.*, q.hi || '~' AS hx, julianday(q.hi) - julianday(q.lo) + 1 AS days,
           julianday(q.today) - julianday(q.lo) AS gone
    FROM q
)"""

_GOOD = f"COALESCE({_VALID} AND e.date <= w.today, 0)"

# {where}: profile_where()'s clause (its parameters first). Then: the page size; the time zones as JSON
# ``[[name, local today, fraction of the day], ...]`` (known zones only); high %, pace %, pace minimum days, pace
# minimum % of the period. Returns the page's last id, its size and the candidates as a JSON array.
_SCAN_SQL = f"""
WITH page AS MATERIALIZED (
    SELECT id, CASE WHEN typeof(timezone) IN ('text', 'null') THEN COALESCE(NULLIF(timezone, ''), 'UTC') END AS tz
    FROM profiles WHERE {{where}} AND COALESCE(status, 'active') NOT IN ({_INACTIVE_SQL}) ORDER BY id LIMIT ?
),
t AS MATERIALIZED (
    SELECT value ->> 0 AS name, value ->> 1 AS today, value ->> 2 AS frac FROM json_each(?)
),
k AS MATERIALIZED (SELECT ? AS high, ? AS pace, ? AS min_days, ? AS min_pct),
r AS MATERIALIZED (
    SELECT page.id AS uid, x.id AS bid, x.amount, x.period, x.category, x.start_date AS s, x.end_date AS e,
           t.today, t.frac, t.name IS NULL AS unknown
    FROM page LEFT JOIN budgets AS x ON x.user_id = page.id LEFT JOIN t ON t.name = page.tz
),
c AS MATERIALIZED (SELECT DISTINCT period, category, s, e, today FROM r WHERE bid IS NOT NULL),
v AS (
    SELECT c.*, lower(trim(COALESCE(NULLIF(c.period, ''), 'monthly'))) AS kind, lower(trim(c.category)) AS label,
           COALESCE((c.s IS NULL OR ({_DATE.format("c.s")})) AND (c.e IS NULL OR ({_DATE.format("c.e")}))
                    AND {_PLAIN.format("c.category")} AND {_PLAIN.format("c.period")}
                    AND COALESCE(c.s <= c.e, 1), 0) AS ok
    FROM c
),
b AS MATERIALIZED (
    SELECT v.*, NOT (v.ok AND (v.kind IN ('weekly', 'monthly', 'yearly') OR (v.s IS NOT NULL AND v.e IS NOT NULL)))
               AS odd,
           CASE WHEN v.category IS NULL OR v.label IN ('', 'total', 'all') THEN NULL ELSE v.label END AS cat
    FROM v
),
{_PERIOD_CTES},
-- A bad row in the period adds -1e300 (good amounts are 0..1e15), so ``spent`` is negative exactly when the full
-- stream would skip one of the period's rows.
spend AS MATERIALIZED (
    SELECT r.uid, w.lo, w.days, min(max(w.gone + r.frac, 0), w.days) AS el, r.amount,
           r.unknown OR (r.bid IS NOT NULL AND (COALESCE(w.odd, 1) OR NOT COALESCE(
               typeof(r.amount) IN ('integer', 'real') AND r.amount > 0 AND r.amount <= 1.7976931348623157e308, 0)))
               AS bad,
           CASE WHEN w.lo IS NOT NULL THEN (
               SELECT total(iif({_GOOD}, e.amount, -1e300)) FROM expenses AS e
               WHERE e.user_id = r.uid AND e.date >= w.lo AND e.date <= w.hx
                     AND (w.cat IS NULL OR lower(trim(e.category)) = w.cat)) END AS spent
    FROM r LEFT JOIN w ON r.bid IS NOT NULL AND w.period IS r.period AND w.category IS r.category AND w.s IS r.s
                          AND w.e IS r.e AND w.today IS r.today
),
judged AS (
    SELECT uid, bad OR spent < 0 OR (lo IS NOT NULL AND (
        COALESCE(spent, 0) / amount * 100 >= k.high - 1e-6
        OR (el > 0 AND el >= k.min_days - 1e-9 AND el * 100 >= k.min_pct * days - 1e-9
            AND COALESCE(spent, 0) / el * days / amount * 100 >= k.pace - 1e-6)
        OR EXISTS (SELECT 1 FROM expenses AS u WHERE u.user_id = uid AND u.date IS NULL))) AS maybe
    FROM spend, k
)
SELECT (SELECT max(id) FROM page), (SELECT count(*) FROM page),
       (SELECT json_group_array(uid) FROM judged WHERE maybe)
"""


def _days(now: datetime, names: Sequence[object]) -> str:
    """The known time zones among ``names`` with their local date and fraction of the day at ``now``, as the
    budget monitor computes them, as JSON (an unknown zone is left out: its users come back to have it reported)."""
    zones = []
    for name in names:
        today, fraction, known = zone_day(now, name)
        if known:
            zones.append([name, today.isoformat(), fraction])
    return json.dumps(zones)


_Scan = tuple[str | None, tuple[str, ...], bool]
"""Where a candidate scan stands: the last id scanned, candidates found but not yet read, whether users remain."""


class SQLiteBudgetCandidates(SQLiteBudgetQueries):
    """The budget candidates on SQLite (see the module docstring)."""

    async def iter_budget_candidates(
        self, bands: BudgetBands, now: datetime, batch_size: int = 500, *, top_categories: int = 3,
        scan_size: int = 5000,
    ) -> AsyncGenerator[list[BudgetInput], None]:
        """Stream the monitored users with a budget whose current period could be in a band at ``now``, with
        their full inputs (as :meth:`iter_budget_inputs` gives them), at most ``batch_size`` at a time. Users are
        scanned ``scan_size`` at a time, one statement per page, and the candidates read ``batch_size`` at a time,
        all on the reader thread, each step while the caller works on the previous batch."""
        if batch_size < 1 or scan_size < 1 or top_categories < 0:
            raise ValueError("batch_size and scan_size must be >= 1, top_categories >= 0")

        def zones(conn: sqlite3.Connection) -> str:
            rows = conn.execute("SELECT DISTINCT COALESCE(NULLIF(timezone, ''), 'UTC') FROM profiles").fetchall()
            return _days(now, [row[0] for row in rows])

        days = await anyio.to_thread.run_sync(self._locked_read, zones)
        limits = (bands.high_pct, bands.pace_pct, bands.pace_min_elapsed_days, bands.pace_min_elapsed_pct)

        args = (days, limits, now, batch_size, top_categories, scan_size)
        pages = self._method_pages("_budget_candidate_page", args, BudgetInput, True)
        async with aclosing(pages):
            async for batch in pages:
                yield batch

    def _budget_candidate_page(
        self, conn: sqlite3.Connection, after: _Scan | None, days: str, limits: tuple[float, ...], now: datetime,
        batch_size: int, top_categories: int, scan_size: int,
    ) -> tuple[list[BudgetInput], _Scan | None]:
        """The next ``batch_size`` candidates' inputs, scanning pages of ``scan_size`` users until there are some;
        ``after`` (``None`` at first) is where the scan stands and the candidates found but not yet read."""
        last, pending, more = after if after is not None else (None, (), True)
        found = list(pending)
        while not found and more:
            where, params = self.profile_where(last, None)
            cursor = conn.cursor()
            cursor.row_factory = None
            last, count, ids = cursor.execute(
                _SCAN_SQL.format(where=where), [*params, scan_size, days, *limits]).fetchone()
            found = sorted(set(json.loads(ids)))
            more = count == scan_size
        ids, rest = found[:batch_size], tuple(found[batch_size:])
        batch = self._budget_batch(conn, None, len(ids), None, now, top_categories, ids=ids)[0] if ids else []
        return batch, (last, rest, more) if rest or more else None
