"""A fake Supabase REST API (PostgREST) on 127.0.0.1, backed by a real Postgres schema.

No PostgREST server can run here, so this answers the PostgREST wire format for exactly the requests the Supabase
store issues, translating each into SQL against the test's own Postgres schema (so the semantics are Postgres's):

* ``POST /rest/v1/rpc/<fn>`` with a JSON object of named arguments: the function is looked up in the schema (as
  PostgREST's schema cache does), called with the arguments converted by ``json_to_record`` (as PostgREST does),
  in one transaction; the body is the function's result as JSON.
* ``/rest/v1/<table>``: ``GET`` (``select=`` plain columns, filters ``col=eq.|neq.|gt.|gte.|lt.|lte.|in.(...)|
  is.null``, ``order=col[.asc|.desc][.nullsfirst|.nullslast]``, ``limit``, ``offset``, ``Prefer: count=exact``,
  ``Content-Range``); ``POST`` (JSON array or object, ``columns=``, ``on_conflict=``, ``Prefer: return=minimal|
  representation, resolution=merge-duplicates|ignore-duplicates, count=exact``, rows through
  ``json_populate_recordset``); ``DELETE`` (filters required, as Supabase's safeupdate requires).
* ``apikey`` and ``Authorization: Bearer`` must both carry the key (else 401 ``PGRST301``);
  ``Accept-Profile``/``Content-Profile`` must be ``public`` (mapped to the test schema; else 406 ``PGRST106``).
* Errors are PostgREST's JSON shape ``{"code", "message", "details", "hint"}`` with its status codes; Postgres errors
  carry their SQLSTATE. Anything not understood is a 400 (``PGRST100``/``PGRST102``), so a request the real server
  would read differently cannot pass silently.

The HTTP side is :class:`tests.fakes.server.FakeServer` (threads; ``fail_next`` scripts failures such as a 503 while
the schema cache loads); the Postgres side runs on an asyncio loop of its own thread.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg

from tests.fakes.server import FakeServer, Reply, Request

_STATUS = {"23505": 409, "23503": 409, "42501": 403, "42883": 404, "42P01": 404, "57014": 500}
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_OPS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_PREFER = {"return": {"minimal", "representation"}, "resolution": {"merge-duplicates", "ignore-duplicates"},
           "count": {"exact"}}


class PostgrestError(Exception):
    """An error reply in PostgREST's shape."""

    def __init__(self, status: int, code: str, message: str, details: str | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message)
        self.reply = Reply(status, {"code": code, "details": details, "hint": hint, "message": message})


def _bad(message: str, details: str | None = None) -> PostgrestError:
    return PostgrestError(400, "PGRST100", message, details)


def _q(name: str) -> str:
    if not _NAME.match(name):
        raise _bad(f'"failed to parse" name {name!r}')
    return f'"{name}"'


def _split(text: str) -> list[str]:
    """``a,"b,c",d`` -> ``["a", "b,c", "d"]`` (PostgREST's list syntax, double quotes with backslash escapes)."""
    items, current, quoted, escaped = [], "", False, False
    for char in text:
        if escaped:
            current, escaped = current + char, False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            items.append(current)
            current = ""
        else:
            current += char
    return [*items, current]


class FakePostgrest:
    """See the module docstring. ``url`` is the project URL (``http://127.0.0.1:PORT``), ``key`` the accepted
    service-role key; ``server`` the underlying :class:`FakeServer` (``requests``, ``fail_next``)."""

    def __init__(self, pg_url: str, key: str) -> None:
        self.pg_url, self.key = pg_url, key
        self.server = FakeServer(self._handle)
        self.url = self.server.url
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-postgrest-pg", daemon=True)
        self._pool: asyncpg.Pool | None = None
        self._columns: dict[str, dict[str, str]] = {}

    def start(self) -> None:
        self._thread.start()
        async def create() -> asyncpg.Pool:
            return await asyncpg.create_pool(self.pg_url, min_size=1, max_size=4)

        self._pool = self._run(create())
        self.server.start()

    def stop(self) -> None:
        self.server.stop()
        if self._pool is not None:
            self._run(self._pool.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(60)

    def paths(self) -> list[str]:
        """``METHOD /path`` of every request received, in order."""
        return [f"{r.method} {r.path}" for r in self.server.requests]

    # -- dispatch -----------------------------------------------------------------------------------------------

    def _handle(self, request: Request) -> Reply:
        try:
            reply: Reply = self._run(self._serve(request))
            return reply
        except PostgrestError as err:
            return err.reply
        except asyncpg.PostgresError as err:
            code = err.sqlstate or "XX000"
            status = _STATUS.get(code, 500 if code.startswith(("08", "53", "54", "55", "57", "58", "XX")) else 400)
            return Reply(status, {"code": code, "details": getattr(err, "detail", None),
                                  "hint": getattr(err, "hint", None), "message": str(err)})

    async def _serve(self, request: Request) -> Reply:
        headers = {k.lower(): v for k, v in request.headers.items()}
        if headers.get("apikey") != self.key or headers.get("authorization") != f"Bearer {self.key}":
            return Reply(401, {"code": "PGRST301", "details": None, "hint": None, "message": "JWSError "
                               "JWSInvalidSignature"}, {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        for name in ("accept-profile", "content-profile"):
            if headers.get(name, "public") != "public":
                return Reply(406, {"code": "PGRST106", "details": None, "hint": None,
                                   "message": "The schema must be one of the following: public"})
        if not request.path.startswith("/rest/v1/"):
            raise PostgrestError(404, "PGRST125", f"Invalid path specified in request URL: {request.path}")
        target = request.path.removeprefix("/rest/v1/")
        query = {k: v[-1] for k, v in request.query.items()}
        if any(len(v) > 1 for v in request.query.values()):
            raise _bad("repeated query parameters are not understood by this fake")
        if target.startswith("rpc/"):
            if request.method != "POST" or query:
                raise _bad(f"only POST without query parameters is understood for {target}")
            return await self._rpc(target.removeprefix("rpc/"), request.body)
        prefer = self._prefer(headers.get("prefer", ""))
        if request.method == "GET":
            return await self._select(target, query, prefer)
        if request.method == "POST":
            return await self._insert(target, query, prefer, request.body)
        if request.method == "DELETE":
            return await self._delete(target, query, prefer)
        raise PostgrestError(405, "PGRST117", f"Unsupported HTTP method: {request.method}")

    @staticmethod
    def _prefer(header: str) -> dict[str, str]:
        prefer: dict[str, str] = {}
        for item in filter(None, (p.strip() for p in header.split(","))):
            name, _, value = item.partition("=")
            if value not in _PREFER.get(name, ()):
                raise _bad(f"Prefer {item!r} is not understood by this fake")
            prefer[name] = value
        return prefer

    # -- rpc ----------------------------------------------------------------------------------------------------

    async def _rpc(self, function: str, body: bytes) -> Reply:
        try:
            args = json.loads(body or b"{}")
        except ValueError:
            raise PostgrestError(400, "PGRST102", "Empty or invalid json") from None
        if not isinstance(args, dict):
            raise PostgrestError(400, "PGRST102", "Empty or invalid json")
        assert self._pool is not None
        async with self._pool.acquire() as conn, conn.transaction():
            found = await conn.fetch(
                "SELECT COALESCE(p.proargnames, '{}'), ARRAY(SELECT format_type(t, NULL) FROM unnest(p.proargtypes) "
                "AS t) FROM pg_proc AS p WHERE p.pronamespace = current_schema()::regnamespace AND p.proname = $1",
                function)
            match = [(list(names), list(kinds)) for names, kinds in found if sorted(names) == sorted(args)]
            if not match:
                raise PostgrestError(
                    404, "PGRST202", f"Could not find the function public.{function}({', '.join(sorted(args))}) in "
                    "the schema cache", f"Searched for the function public.{function} with parameters "
                    f"{', '.join(sorted(args))}, but no matches were found in the schema cache.")
            names, kinds = match[0]
            if names:
                calls = ", ".join(f"{_q(n)} := _.{_q(n)}" for n in names)
                record = ", ".join(f"{_q(n)} {k}" for n, k in zip(names, kinds, strict=True))
                sql = f"SELECT to_json({_q(function)}({calls}))::text FROM json_to_record($1::json) AS _({record})"
                result = await conn.fetchval(sql, json.dumps(args))
            else:
                result = await conn.fetchval(f"SELECT to_json({_q(function)}())::text")
        return Reply(200, (result or "null").encode(), {"Content-Type": "application/json; charset=utf-8"})

    # -- tables -------------------------------------------------------------------------------------------------

    async def _table(self, conn: asyncpg.Connection, table: str) -> dict[str, str]:
        if table not in self._columns:
            rows = await conn.fetch("SELECT column_name, udt_name FROM information_schema.columns "
                                    "WHERE table_schema = current_schema() AND table_name = $1", table)
            if not rows:
                raise PostgrestError(404, "PGRST205", f"Could not find the table 'public.{table}' in the schema cache")
            self._columns[table] = {r[0]: r[1] for r in rows}
        return self._columns[table]

    def _where(self, table: str, columns: dict[str, str], query: dict[str, str], args: list[Any]) -> str:
        clauses = []
        for column, spec in query.items():
            if column not in columns:
                raise PostgrestError(400, "42703", f"column {table}.{column} does not exist")
            op, _, value = spec.partition(".")
            if op in _OPS:
                args.append(value)
                clauses.append(f"{_q(column)} {_OPS[op]} (${len(args)}::text)::{columns[column]}")
            elif op == "in" and value.startswith("(") and value.endswith(")"):
                args.append(_split(value[1:-1]))
                clauses.append(f"{_q(column)} = ANY((${len(args)}::text[])::{columns[column]}[])")
            elif op == "is" and value == "null":
                clauses.append(f"{_q(column)} IS NULL")
            else:
                raise _bad(f'"failed to parse filter ({spec})"', f"unexpected filter on {column}")
        return " AND ".join(clauses) or "TRUE"

    async def _select(self, table: str, query: dict[str, str], prefer: dict[str, str]) -> Reply:
        if set(prefer) - {"count"}:
            raise _bad(f"Prefer {prefer} is not understood on GET")
        select = query.pop("select", "*")
        order = query.pop("order", "")
        limit, offset = query.pop("limit", None), query.pop("offset", None)
        assert self._pool is not None
        async with self._pool.acquire() as conn, conn.transaction(readonly=True):
            columns = await self._table(conn, table)
            chosen = list(columns) if select == "*" else _split(select)
            for column in chosen:
                if column not in columns:
                    raise PostgrestError(400, "42703", f"column {table}.{column} does not exist")
            args: list[Any] = []
            where = self._where(table, columns, query, args)
            sql = f"SELECT {', '.join(_q(c) for c in chosen)} FROM {_q(table)} WHERE {where}"
            if order:
                sql += " ORDER BY " + ", ".join(self._order(columns, item) for item in order.split(","))
            for word, value in (("LIMIT", limit), ("OFFSET", offset)):
                if value is not None:
                    if not value.isdigit():
                        raise _bad(f"bad {word.lower()} {value!r}")
                    sql += f" {word} {int(value)}"
            rows = await conn.fetchval(f"SELECT COALESCE(json_agg(t), '[]')::text FROM ({sql}) AS t", *args)
            count = len(json.loads(rows))
            total = "*"
            if prefer.get("count") == "exact":
                total = str(await conn.fetchval(f"SELECT COUNT(*) FROM {_q(table)} WHERE {where}", *args))
        start = int(offset or 0)
        span = f"{start}-{start + count - 1}" if count else "*"
        return Reply(200, rows.encode(), {"Content-Type": "application/json; charset=utf-8",
                                          "Content-Range": f"{span}/{total}"})

    @staticmethod
    def _order(columns: dict[str, str], item: str) -> str:
        name, *modifiers = item.split(".")
        words = {"asc": "ASC", "desc": "DESC", "nullsfirst": "NULLS FIRST", "nullslast": "NULLS LAST"}
        if name not in columns or any(m not in words for m in modifiers):
            raise _bad(f'"failed to parse order ({item})"')
        return " ".join([_q(name), *(words[m] for m in modifiers)])

    async def _insert(self, table: str, query: dict[str, str], prefer: dict[str, str], body: bytes) -> Reply:
        try:
            payload = json.loads(body)
        except ValueError:
            raise PostgrestError(400, "PGRST102", "Empty or invalid json") from None
        rows = payload if isinstance(payload, list) else [payload]
        if not rows or not all(isinstance(r, dict) for r in rows):
            raise PostgrestError(400, "PGRST102", "Empty or invalid json")
        listed = query.pop("columns", None)
        on_conflict = query.pop("on_conflict", None)
        if query:
            raise _bad(f"unexpected query parameters on POST: {sorted(query)}")
        if listed is None and any(set(r) != set(rows[0]) for r in rows):
            raise PostgrestError(400, "PGRST102", "All object keys must match")
        assert self._pool is not None
        async with self._pool.acquire() as conn, conn.transaction():
            columns = await self._table(conn, table)
            chosen = _split(listed) if listed is not None else list(rows[0])
            for column in chosen:
                if column not in columns:
                    raise PostgrestError(400, "PGRST204", f"Could not find the '{column}' column of '{table}' in the "
                                         "schema cache")
            names = ", ".join(_q(c) for c in chosen)
            sql = (f"INSERT INTO {_q(table)} ({names}) SELECT {names} "
                   f"FROM json_populate_recordset(NULL::{_q(table)}, $1)")
            resolution = prefer.get("resolution")
            if resolution is not None:
                keys = _split(on_conflict) if on_conflict else await self._primary_key(conn, table)
                target = ", ".join(_q(k) for k in keys)
                if resolution == "ignore-duplicates":
                    sql += f" ON CONFLICT ({target}) DO NOTHING"
                else:
                    sql += f" ON CONFLICT ({target}) DO UPDATE SET " + ", ".join(
                        f"{_q(c)} = EXCLUDED.{_q(c)}" for c in chosen)
            elif on_conflict is not None:
                raise _bad("on_conflict without Prefer: resolution is not understood by this fake")
            count, written = await conn.fetchrow(
                f"WITH w AS ({sql} RETURNING *) SELECT COUNT(*), COALESCE(json_agg(w), '[]')::text FROM w",
                json.dumps(rows))
        return self._written(201, prefer, count, written)

    async def _delete(self, table: str, query: dict[str, str], prefer: dict[str, str]) -> Reply:
        if not query:
            raise PostgrestError(400, "21000", "DELETE requires a WHERE clause")
        assert self._pool is not None
        async with self._pool.acquire() as conn, conn.transaction():
            columns = await self._table(conn, table)
            args: list[Any] = []
            where = self._where(table, columns, query, args)
            count, written = await conn.fetchrow(
                f"WITH w AS (DELETE FROM {_q(table)} WHERE {where} RETURNING *) "
                "SELECT COUNT(*), COALESCE(json_agg(w), '[]')::text FROM w", *args)
        return self._written(200 if prefer.get("return") == "representation" else 204, prefer, count, written)

    @staticmethod
    def _written(status: int, prefer: dict[str, str], count: int, rows: str) -> Reply:
        headers = {"Content-Range": f"*/{count}" if prefer.get("count") == "exact" else "*/*"}
        if prefer.get("return") == "representation":
            return Reply(status, rows.encode(), {**headers, "Content-Type": "application/json; charset=utf-8"})
        return Reply(status, b"", headers)

    @staticmethod
    async def _primary_key(conn: asyncpg.Connection, table: str) -> list[str]:
        rows = await conn.fetch(
            "SELECT a.attname FROM pg_index AS i JOIN pg_attribute AS a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = $1::regclass AND i.indisprimary", table)
        return [r[0] for r in rows]


@contextmanager
def serve_postgrest(pg_url: str, key: str) -> Iterator[FakePostgrest]:
    """Run a :class:`FakePostgrest` on ``pg_url``'s schema for the duration of a ``with`` block."""
    fake = FakePostgrest(pg_url, key)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
