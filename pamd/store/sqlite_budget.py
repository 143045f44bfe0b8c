"""SQLite queries of the budget monitor: budgets and the expenses of their current periods.

Per page of users: one query for the page's profiles and budgets; the current period of every budget is computed in
Python (:func:`pamd.store.records_budget.current_period`, in each user's timezone); then one query sums, per budget
and category, the expenses of all those periods up to each user's local today, with a VALUES table of ``(budget,
user, first day, last day, today, category)`` joined to ``expenses`` through its ``(user_id, date)`` index. The same
query counts the rows it had to leave out; only when there are some does another query fetch them, to skip and
count each with its reason (amount NULL, negative or not a number, date unparsable, or dated after the user's local
today). A last cheap query finds the users' expenses with no date at all.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping, Sequence
from contextlib import aclosing
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

from pamd.store.records import Units, finite_or_none, zone
from pamd.store.records_budget import (
    ALL_CATEGORIES,
    RECURRING_PERIODS,
    Budget,
    BudgetInput,
    BudgetStatus,
    CategorySpend,
    Period,
    current_period,
    parse_date,
)
from pamd.store.sqlite_base import _INACTIVE_SQL, SQLiteBase

_PAGE_SQL = """
WITH page AS (
    SELECT id, full_name, timezone, preferred_units, currency FROM profiles
    WHERE {where} AND COALESCE(status, 'active') NOT IN ({inactive})
    ORDER BY id LIMIT ?
)
SELECT page.id, page.full_name, page.timezone, page.preferred_units, page.currency,
       b.id, b.category, b.amount, b.period, b.start_date, b.end_date
FROM page LEFT JOIN budgets AS b ON b.user_id = page.id
ORDER BY page.id, b.id
"""

# A usable expense: a finite, non-negative number, and a real YYYY-MM-DD date (SQLite's date() accepts Feb 30;
# adding 0 days normalises it, so the comparison rejects it).
_VALID = (
    "typeof(e.amount) IN ('integer', 'real') AND e.amount BETWEEN 0 AND 1e15"
    " AND length(e.date) = 10 AND date(e.date, '+0 days') = e.date"
)

_GOOD = f"{_VALID} AND e.date <= sel.today"
_JOIN = """
FROM sel JOIN expenses AS e ON e.user_id = sel.user_id AND e.date >= sel.lo AND e.date <= sel.hi
WHERE (sel.cat IS NULL OR lower(trim(e.category)) = sel.cat)
"""

# Per budget and category: the sum and number of usable expenses, and the number of all rows in the range (text
# comparison: a malformed date like "2026-03-05T10:00" sorts inside it too, hence ``hi`` = last day + "~").
_SPEND_SQL = f"""
WITH sel(k, user_id, lo, hi, today, cat) AS (VALUES {{values}})
SELECT sel.k, COALESCE(lower(trim(e.category)), ''), SUM(e.amount) FILTER (WHERE {_GOOD}),
       COUNT(*) FILTER (WHERE {_GOOD}), COUNT(*)
{_JOIN}
GROUP BY sel.k, COALESCE(lower(trim(e.category)), '')
"""

# The bad rows, fetched only for budgets whose range holds some.
_BAD_SQL = f"""
WITH sel(k, user_id, lo, hi, today, cat) AS (VALUES {{values}})
SELECT e.id, e.amount, e.date, sel.today {_JOIN} AND NOT ({_GOOD})
"""

_UNDATED_SQL = """
SELECT id FROM expenses WHERE user_id IN (SELECT value FROM json_each(?)) AND date IS NULL
"""

_CHUNK = 4000  # VALUES rows per statement: 6 parameters each stays below SQLite's 32766-variable limit


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for first in range(0, len(items), _CHUNK):
        yield items[first : first + _CHUNK]


@functools.lru_cache(maxsize=4096)
def _budget_fields(
    category: object, amount: object, period: object, start_date: object, end_date: object
) -> tuple[str | None, float, str, date | None, date | None] | str:
    """The normalised fields of a ``budgets`` row, or why it is unusable (cached: rows repeat a lot)."""
    value = finite_or_none(amount)
    kind = str(period or "monthly").strip().lower()
    start, end = parse_date(start_date), parse_date(end_date)
    if value is None or value <= 0:
        return f"amount {amount!r} is not a positive number"
    if start_date is not None and start is None:
        return f"unparsable start_date {start_date!r}"
    if end_date is not None and end is None:
        return f"unparsable end_date {end_date!r}"
    if start is not None and end is not None and end < start:
        return f"end_date {end} is before start_date {start}"
    if kind not in RECURRING_PERIODS and (start is None or end is None):
        return f"period {period!r} is not weekly, monthly or yearly and the dates are incomplete"
    label = str(category).strip().lower() if category is not None else ""
    return (None if label in ALL_CATEGORIES else label), value, kind, start, end


class _User(NamedTuple):
    user_id: str
    full_name: str | None
    timezone: str
    units: Units
    currency: str
    today: date
    active: list[tuple[Budget, Period]]
    inactive: list[str]


class SQLiteBudgetQueries(SQLiteBase):
    """What the budget monitor reads from SQLite (:class:`pamd.store.records_budget.BudgetInputSource`)."""

    async def iter_budget_inputs(
        self, now: datetime, batch_size: int = 500, user_id: str | None = None, *, top_categories: int = 3
    ) -> AsyncGenerator[list[BudgetInput], None]:
        """Stream monitored users with their budgets' current periods and spend as of ``now``, a batch at a time.

        Users are paged by id (keyset pagination) and every user of a page is yielded, with or without budgets.
        Each batch costs three queries (profiles with budgets, spend, bad rows), whatever the number of
        budgets. ``top_categories`` is how many categories each :class:`BudgetStatus` lists. Bad budget rows
        (amount NULL or <= 0, unparsable dates, an explicit range without both dates), bad expenses and unknown
        timezones (taken as UTC) are skipped and counted.
        """
        if batch_size < 1 or top_categories < 0:
            raise ValueError("batch_size must be >= 1 and top_categories >= 0")

        pages = self._method_pages("_budget_page", (batch_size, user_id, now, top_categories), BudgetInput,
                                   user_id is None)
        async with aclosing(pages):
            async for batch in pages:
                yield batch

    def _budget_page(
        self, conn: sqlite3.Connection, after: str | None, batch_size: int, user_id: str | None, now: datetime,
        top: int,
    ) -> tuple[list[BudgetInput], str | None]:
        batch, count = self._budget_batch(conn, after, batch_size, user_id, now, top)
        return batch, batch[-1].user_id if count >= batch_size and batch else None

    def _budget_batch(
        self, conn: sqlite3.Connection, after: str | None, limit: int, user_id: str | None, now: datetime, top: int,
        *, ids: list[str] | None = None,
    ) -> tuple[list[BudgetInput], int]:
        # ``ids``: exactly these users (the candidates of pamd.store.sqlite_budget_candidates) instead of a page.
        if ids is not None:
            where, params = "id IN (SELECT value FROM json_each(?))", [json.dumps(ids)]
        else:
            where, params = self.profile_where(after, user_id)
        cursor = conn.cursor()
        cursor.row_factory = None  # plain tuples: faster than sqlite3.Row
        rows = cursor.execute(_PAGE_SQL.format(where=where, inactive=_INACTIVE_SQL), [*params, limit]).fetchall()
        users = self._budget_users(rows, now)
        sums = self._budget_spend(cursor, [(budget, period, user) for user in users for budget, period in user.active])
        return budget_inputs(users, sums, top), len(users)

    def _budget_users(self, rows: list[tuple[Any, ...]], now: datetime) -> list[_User]:
        return budget_users(rows, now, self._skip)

    def _budget_spend(
        self, cursor: sqlite3.Cursor, selected: list[tuple[Budget, Period, _User]]
    ) -> dict[str, list[tuple[CategorySpend, int]]]:
        """Per budget id: ``(category spend, expense count)`` for each category of its period up to today.

        Bad rows in the periods (and expenses without a date) are skipped and counted, each once."""
        sums: dict[str, list[tuple[CategorySpend, int]]] = {}
        for chunk in _chunks(selected):
            params: list[object] = []
            for index, (budget, period, user) in enumerate(chunk):
                params += (index, user.user_id, period.start.isoformat(), period.end.isoformat() + "~",
                           user.today.isoformat(), budget.category)
            spoiled: set[int] = set()
            sql = _SPEND_SQL.format(values=", ".join(["(?, ?, ?, ?, ?, ?)"] * len(chunk)))
            for index, label, total, count, rows in cursor.execute(sql, params):
                if rows > count:
                    spoiled.add(index)
                if count:
                    sums.setdefault(chunk[index][0].id, []).append(
                        (CategorySpend(label or "uncategorised", float(total)), count))
            if spoiled:
                self._budget_skip_bad(cursor, [chunk[index] for index in sorted(spoiled)])
        users = list({user.user_id: None for _, _, user in selected})
        if users:
            for (row_id,) in cursor.execute(_UNDATED_SQL, [json.dumps(users)]):
                self._skip("expenses", row_id, "date is NULL")
        return sums

    def _budget_skip_bad(self, cursor: sqlite3.Cursor, chunk: Sequence[tuple[Budget, Period, _User]]) -> None:
        params: list[object] = []
        for index, (budget, period, user) in enumerate(chunk):
            params += (index, user.user_id, period.start.isoformat(), period.end.isoformat() + "~",
                       user.today.isoformat(), budget.category)
        sql = _BAD_SQL.format(values=", ".join(["(?, ?, ?, ?, ?, ?)"] * len(chunk)))
        seen: set[object] = set()
        for row_id, amount, day, today in cursor.execute(sql, params):
            if row_id not in seen:
                seen.add(row_id)
                self._skip("expenses", row_id, _why_bad(amount, day, today))


def _rank(item: tuple[CategorySpend, int]) -> tuple[float, str]:
    return -item[0].amount, item[0].category


def _why_bad(amount: object, day: object, today: str) -> str:
    number = finite_or_none(amount)
    if amount is None:
        return "amount is NULL"
    if number is None:
        return f"amount {amount!r} is not a number"
    if number < 0 or number > 1e15:
        return f"amount {amount!r} is out of range"
    if not isinstance(day, str) or len(day) != 10 or parse_date(day) is None:
        return f"unparsable date {day!r}"
    return f"dated {day}, after the user's local today {today}"


def budget_inputs(
    users: Sequence[_User], sums: Mapping[str, Sequence[tuple[CategorySpend, int]]], top: int
) -> list[BudgetInput]:
    """The users' inputs, given each active budget's ``(category spend, expense count)`` per category (by budget
    id; none: nothing spent). Shared by the SQLite and Postgres stores."""
    batch = []
    for user in users:
        statuses = []
        for budget, period in user.active:
            found = sums.get(budget.id, ())
            statuses.append(BudgetStatus(
                budget=budget, period=period, spent=sum(c.amount for c, _ in found),
                expense_count=sum(n for _, n in found),
                top_categories=tuple(c for c, _ in sorted(found, key=_rank)[:top]) if top else (),
            ))
        batch.append(BudgetInput(
            user_id=user.user_id, full_name=user.full_name, timezone=user.timezone,
            preferred_units=user.units, currency=user.currency, today=user.today,
            budgets=tuple(statuses), inactive=tuple(user.inactive),
        ))
    return batch


def budget_users(
    rows: Sequence[Sequence[Any]], now: datetime, skip: Callable[[str, object, str], None]
) -> list[_User]:
    """Group a page's rows (one per budget, ordered by user) into users with their current periods; bad
    budgets and unknown timezones go to ``skip(table, id, reason)``. Shared by the SQLite and Postgres stores."""
    days: dict[str, tuple[str, date]] = {}  # timezone name -> (usable name, local today)
    users: list[_User] = []
    for uid, full_name, raw_tz, units, currency, b_id, *fields in rows:
        if not users or users[-1].user_id != uid:
            tz_name = raw_tz or "UTC"
            local = days.get(tz_name)
            if local is None:
                tz = zone(tz_name)
                local = (tz_name, now.astimezone(tz).date()) if tz else ("UTC", now.astimezone(UTC).date())
                days[tz_name] = local
            if local[0] != tz_name:
                skip("profiles", uid, f"unknown timezone {tz_name!r}, using UTC")
            users.append(_User(
                user_id=str(uid), full_name=full_name, timezone=local[0],
                units="imperial" if str(units).lower() == "imperial" else "metric",
                currency=str(currency or "USD").upper(), today=local[1], active=[], inactive=[]))
        if b_id is None:
            continue
        user = users[-1]
        parsed = _budget_fields(*fields)
        if isinstance(parsed, str):
            skip("budgets", b_id, parsed)
            continue
        category, amount, kind, start, end = parsed
        budget = Budget(id=str(b_id), category=category, amount=amount, period=kind, start_date=start,
                        end_date=end)
        period = current_period(budget, user.today)
        if period is None:
            user.inactive.append(budget.id)
        else:
            user.active.append((budget, period))
    return users
