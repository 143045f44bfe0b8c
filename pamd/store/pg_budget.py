"""Postgres queries of the budget monitor: budgets and the expenses of their current periods.

The same records and skips as :mod:`pamd.store.sqlite_budget`. Per page of users: one statement for the page's
profiles (keyset on ``profiles.id``, inactive statuses filtered in SQL) with their budgets; the current period of every
budget is computed in Python (:func:`pamd.store.records_budget.current_period`, in each user's timezone, shared with
the SQLite store so both agree on what "this month" means); then one statement sums, per budget and category, the
expenses of all those periods up to each user's local today: ``unnest`` of six parallel arrays ``(budget index, user,
first day, last day, today, category)`` joined to ``expenses`` through its ``(user_id, date)`` index, with ``SUM ...
FILTER`` over the usable rows and a count of all rows. ``date`` columns are real dates here, so a usable expense is
just a finite amount in ``0..1e15`` dated no later than the user's today (NaN and the infinities compare above
``1e15`` in Postgres). Only when a period holds bad rows does another statement fetch them, to skip and count each
with its reason; a last cheap one finds the users' expenses without a date.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from pamd.store.pg_base import PostgresBase
from pamd.store.records_budget import Budget, BudgetInput, CategorySpend, Period
from pamd.store.sqlite_base import INACTIVE_STATUSES
from pamd.store.sqlite_budget import _User, _why_bad, budget_inputs, budget_users

if TYPE_CHECKING:
    import asyncpg

# {where} is profile_where()'s clause on profiles (its parameters come first); then $n: inactive statuses,
# $n+1: page size.
_PAGE_SQL = """
WITH page AS (
    SELECT id, full_name, timezone, preferred_units, currency FROM profiles
    WHERE {where} AND COALESCE(status, 'active') <> ALL(${inactive}::text[])
    ORDER BY id LIMIT ${limit}
)
SELECT page.id, page.full_name, page.timezone, page.preferred_units, page.currency,
       b.id, b.category, b.amount, b.period, b.start_date, b.end_date
FROM page LEFT JOIN budgets AS b ON b.user_id = page.id
ORDER BY page.id, b.id
"""

_GOOD = "e.amount BETWEEN 0 AND 1e15 AND e.date <= sel.today"

_SEL = """
FROM unnest($1::int[], $2::text[], $3::date[], $4::date[], $5::date[], $6::text[])
     AS sel(k, user_id, lo, hi, today, cat)
JOIN expenses AS e ON e.user_id = sel.user_id AND e.date BETWEEN sel.lo AND sel.hi
WHERE (sel.cat IS NULL OR lower(trim(e.category)) = sel.cat)
"""

# Per budget and category: the sum and number of usable expenses, and the number of all rows in the period.
_SPEND_SQL = f"""
SELECT sel.k, COALESCE(lower(trim(e.category)), ''), SUM(e.amount) FILTER (WHERE {_GOOD}),
       COUNT(*) FILTER (WHERE {_GOOD}), COUNT(*)
{_SEL}
GROUP BY sel.k, COALESCE(lower(trim(e.category)), '')
"""

# The bad rows, fetched only for budgets whose period holds some.
_BAD_SQL = f"""
SELECT DISTINCT ON (e.id) e.id, e.amount, e.date, sel.today
{_SEL} AND NOT COALESCE({_GOOD}, false)
ORDER BY e.id
"""

_UNDATED_SQL = "SELECT id FROM expenses WHERE user_id = ANY($1::text[]) AND date IS NULL ORDER BY id"

_Selected = tuple[Budget, Period, _User]


def _arrays(selected: Sequence[_Selected]) -> list[list[Any]]:
    """The six parallel arrays ``_SEL`` unnests, for ``selected`` (indexed by position)."""
    columns: list[list[Any]] = [[], [], [], [], [], []]
    for index, (budget, period, user) in enumerate(selected):
        for column, value in zip(
            columns, (index, user.user_id, period.start, period.end, user.today, budget.category), strict=True
        ):
            column.append(value)
    return columns


class PostgresBudgetQueries(PostgresBase):
    """What the budget monitor reads from Postgres (:class:`pamd.store.records_budget.BudgetInputSource`)."""

    async def iter_budget_inputs(
        self, now: datetime, batch_size: int = 500, user_id: str | None = None, *, top_categories: int = 3
    ) -> AsyncGenerator[list[BudgetInput], None]:
        """Stream monitored users with their budgets' current periods and spend as of ``now``, a batch at a time.

        The semantics of :meth:`pamd.store.sqlite_budget.SQLiteBudgetQueries.iter_budget_inputs`: users paged by id
        (keyset), every user of a page yielded with or without budgets, spend summed in SQL per budget period and
        category up to the user's local today, bad budgets and expenses and unknown timezones skipped and counted.
        """
        if batch_size < 1 or top_categories < 0:
            raise ValueError("batch_size must be >= 1 and top_categories >= 0")

        async def step(conn: asyncpg.Connection, after: str | None) -> tuple[list[BudgetInput], str | None]:
            batch, count = await self._budget_batch(conn, after, batch_size, user_id, now, top_categories)
            return batch, batch[-1].user_id if count >= batch_size and batch else None

        async for batch in self._keyset(step):
            yield batch

    async def _budget_batch(
        self, conn: asyncpg.Connection, after: str | None, limit: int, user_id: str | None, now: datetime, top: int,
        *, ids: list[str] | None = None,
    ) -> tuple[list[BudgetInput], int]:
        # ``ids``: exactly these users (the candidates of pamd.store.pg_budget_candidates) instead of a page.
        where, params = ("id = ANY($1::text[])", [ids]) if ids is not None else self.profile_where(after, user_id)
        sql = _PAGE_SQL.format(where=where, inactive=len(params) + 1, limit=len(params) + 2)
        rows = await conn.fetch(sql, *params, list(INACTIVE_STATUSES), limit)
        users = self._budget_users(rows, now)
        selected = [(budget, period, user) for user in users for budget, period in user.active]
        return budget_inputs(users, await self._budget_spend(conn, selected), top), len(users)

    def _budget_users(self, rows: Sequence[Sequence[Any]], now: datetime) -> list[_User]:
        return budget_users(rows, now, self._skip)

    async def _budget_spend(
        self, conn: asyncpg.Connection, selected: list[_Selected]
    ) -> dict[str, list[tuple[CategorySpend, int]]]:
        """Per budget id: ``(category spend, expense count)`` for each category of its period up to today.

        Bad rows in the periods (and expenses without a date) are skipped and counted, each once."""
        sums: dict[str, list[tuple[CategorySpend, int]]] = {}
        if selected:
            spoiled: set[int] = set()
            for index, label, total, count, rows in await conn.fetch(_SPEND_SQL, *_arrays(selected)):
                if rows > count:
                    spoiled.add(index)
                if count:
                    sums.setdefault(selected[index][0].id, []).append(
                        (CategorySpend(label or "uncategorised", float(total)), count))
            if spoiled:
                bad = [selected[index] for index in sorted(spoiled)]
                for row_id, amount, day, today in await conn.fetch(_BAD_SQL, *_arrays(bad)):
                    shown = day.isoformat() if isinstance(day, date) else day
                    self._skip("expenses", row_id, _why_bad(amount, shown, today.isoformat()))
        # Like the SQLite store: the undated expenses of the users with a current budget.
        owners = list({user.user_id: None for _, _, user in selected})
        if owners:
            for (row_id,) in await conn.fetch(_UNDATED_SQL, owners):
                self._skip("expenses", row_id, "date is NULL")
        return sums
