"""The SQL that the Supabase store needs on the server, and how each of the Postgres store's reads maps onto it.

Over PostgREST no SQL can be sent, only ``POST /rest/v1/rpc/<function>``. The Supabase store therefore runs the
Postgres store's own read statements (the constants of :mod:`pamd.store.pg_base`, ``pg_fuel``... ``pg_alerts``),
each wrapped server-side in a SQL function: ``pamd_q_<name>(p1, p2, ...)`` takes the statement's ``$1, $2...`` as
named parameters and returns its rows as one JSON array of arrays. Both stores execute the very same SQL, so they
cannot drift apart in what they select; the rows are turned back into the Python types asyncpg would hand back
(:data:`DECODERS`), so the Postgres modules' row rules, skips and records apply unchanged.

:data:`STATEMENTS` maps each statement's exact text to its :class:`Statement` (function name, parameter and column
types). A statement missing from it fails loudly (:class:`LookupError`): a change to a Postgres query shows up as a
failing Supabase test, never as a silent mismatch; ``tests/test_store_supabase.py`` also checks the declared types
against what Postgres infers for each statement.

The writes that must be atomic are hand-written PL/pgSQL functions in ``schema_supabase.sql``. :func:`install_sql`
renders everything an operator runs once in the Supabase SQL editor (or pipes into psql): the tables
(``schema_pg.sql``), the functions, their grants, and ``pamd_supabase_version()`` (:data:`SCHEMA_VERSION` and a
:func:`digest` of the functions), which ``migrate()`` checks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import date
from importlib import resources
from typing import Any

import msgspec

from pamd.store import pg_alerts, pg_base, pg_budget, pg_context, pg_fuel, pg_maintenance, pg_weather
from pamd.store.records import parse_ts

SCHEMA_VERSION = 1
"""Bumped when the functions change incompatibly; the digest in :func:`install_sql` catches any other change."""

# The profile filter the Supabase store uses instead of PostgresBase.profile_where's variants: one statement text
# whatever the page (after NULL on the first page, user_id NULL for all users), so one function serves every page.
PROFILE_WHERE = "($1::text IS NULL OR id > $1::text) AND ($2::text IS NULL OR id = $2::text)"


class Statement(msgspec.Struct, frozen=True):
    """A read statement of the Postgres store wrapped as ``pamd_q_<name>``: its ``$n`` parameter types (the names
    Postgres infers for them, e.g. ``int8`` for a LIMIT) and its result columns as ``(name, type code)`` (see
    :data:`DECODERS`)."""

    name: str
    sql: str
    params: tuple[str, ...]
    columns: tuple[tuple[str, str], ...]

    @property
    def function(self) -> str:
        return f"pamd_q_{self.name}"


def _date(value: object) -> date:
    text = str(value)
    if text in ("infinity", "-infinity"):  # as asyncpg reads them
        return date.max if text == "infinity" else date.min
    return date.fromisoformat(text)


DECODERS: dict[str, Callable[[Any], object]] = {
    "t": str,
    "f": float,  # also reads "NaN", "Infinity" and "-Infinity", which Postgres writes as JSON strings
    "i": int,
    "b": bool,
    "ts": parse_ts,  # ISO text with the session's offset -> an aware UTC datetime, like asyncpg's
    "d": _date,
}
"""How a JSON value of each column type code comes back as what asyncpg returns (``None`` stays ``None``)."""


def _cols(spec: str) -> tuple[tuple[str, str], ...]:
    """``"id:t name:t lat:f"`` -> ``(("id", "t"), ("name", "t"), ("lat", "f"))``."""
    return tuple((name, code) for name, code in (item.split(":") for item in spec.split()))


_ALERT_COLS = "id:t user_id:t monitor:t kind:t priority:t title:t body:t facts:t actions:t fingerprint:t epoch:i " \
              "created_at:ts expires_at:ts"
_DELIVERY_COLS = "alert_id:t sink:t user_id:t state:t attempts:i next_attempt_at:ts last_error:t"
_PROFILE_COLS = "id:t full_name:t timezone:t preferred_units:t currency:t"
_A = pg_alerts._ALERT_COLUMNS

_STATEMENTS = (
    # pamd.store.pg_base: a page of monitored profiles.
    Statement("profiles", pg_base._PROFILES_SQL.format(where=PROFILE_WHERE, limit="$3"), ("text", "text", "int8"),
              _cols(f"{_PROFILE_COLS} vehicle_type:t max_driving_hours:f")),
    # pamd.store.pg: the column types add_rows converts values to.
    Statement("column_types", "SELECT column_name, udt_name FROM information_schema.columns "
              "WHERE table_schema = current_schema() AND table_name = $1", ("name",),
              _cols("column_name:t udt_name:t")),
    # pamd.store.pg_fuel
    Statement("fuel_page", pg_fuel._PAGE_SQL.format(where=PROFILE_WHERE, inactive=3, limit=4, since=5),
              ("text", "text", "text[]", "int8", "timestamptz"),
              _cols(f"{_PROFILE_COLS} vehicle_type:t v_id:t v_name:t v_type:t v_fuel:t v_capacity:f "
                    "v_consumption:f v_odometer:f recorded_at:ts lat:f lon:f")),
    Statement("fuel_fills", pg_fuel._FILLS_SQL, ("text[]", "text[]", "int8"),
              _cols("id:t user_id:t vehicle_id:t logged_at:ts volume_l:f total_cost:f odometer_km:f "
                    "is_full_tank:b lat:f lon:f")),
    # pamd.store.pg_budget
    Statement("budget_page", pg_budget._PAGE_SQL.format(where=PROFILE_WHERE, inactive=3, limit=4),
              ("text", "text", "text[]", "int8"),
              _cols(f"{_PROFILE_COLS} b_id:t category:t amount:f period:t start_date:d end_date:d")),
    Statement("budget_spend", pg_budget._SPEND_SQL, ("int4[]", "text[]", "date[]", "date[]", "date[]", "text[]"),
              _cols("k:i label:t total:f good:i rows:i")),
    Statement("budget_bad", pg_budget._BAD_SQL, ("int4[]", "text[]", "date[]", "date[]", "date[]", "text[]"),
              _cols("id:t amount:f date:d today:d")),
    Statement("budget_undated", pg_budget._UNDATED_SQL, ("text[]",), _cols("id:t")),
    # pamd.store.pg_weather
    Statement("weather_trips", pg_weather._TRIPS_SQL, ("text[]", "date", "date"),
              _cols("id:t user_id:t origin:t destination:t dest_lat:f dest_lon:f start_date:d end_date:d "
                    "flex_days:i")),
    # pamd.store.pg_maintenance
    Statement("maintenance_records", pg_maintenance._RECORDS_SQL, ("text[]", "int8"),
              _cols("id:t user_id:t vehicle_id:t task:t date:d odometer_km:f cost:f next_due_date:d "
                    "next_due_odometer_km:f")),
    Statement("maintenance_vehicles", pg_maintenance._VEHICLES_SQL, ("text[]",),
              _cols("id:t user_id:t name:t vehicle_type:t odometer_km:f is_primary:b")),
    Statement("maintenance_fills", pg_maintenance._FILLS_SQL, ("text[]", "int8"),
              _cols("id:t user_id:t vehicle_id:t logged_at:ts odometer_km:f lat:f lon:f")),
    Statement("maintenance_locations", pg_maintenance._LOCATIONS_SQL, ("text[]", "timestamptz"),
              _cols("user_id:t recorded_at:ts lat:f lon:f")),
    # pamd.store.pg_context
    Statement("context_trips", pg_context._TRIPS_SQL, ("text[]",),
              _cols("id:t user_id:t origin:t destination:t dest_lat:f dest_lon:f start_date:d end_date:d")),
    Statement("context_events", pg_context._EVENTS_SQL, ("text[]", "timestamptz", "timestamptz"),
              _cols("id:t user_id:t title:t start_at:ts location_name:t lat:f lon:f")),
    Statement("context_fixes", pg_context._FIXES_SQL, ("text[]", "timestamptz", "timestamptz", "timestamptz"),
              _cols("id:t recorded_at:ts seconds:f lat:f lon:f speed:f usable:b")),
    # pamd.store.pg_alerts: the alert book's and the outbox's reads (their writes are in schema_supabase.sql).
    Statement("alert_timezones", "SELECT id, timezone FROM profiles WHERE id = ANY($1::text[])", ("text[]",),
              _cols("id:t timezone:t")),
    Statement("alert_preferences",
              "SELECT user_id, monitor, enabled, quiet_start, quiet_end, max_per_day FROM notification_preferences"
              " WHERE user_id = ANY($1::text[]) AND monitor IN ('*', $2) ORDER BY user_id, monitor",
              ("text[]", "text"), _cols("user_id:t monitor:t enabled:b quiet_start:t quiet_end:t max_per_day:i")),
    Statement("alert_sent_today", pg_alerts._SENT_TODAY, ("text[]", "timestamptz[]", "text[]"),
              _cols("user_id:t monitor:t n:i")),
    Statement("alert_states", "SELECT fingerprint, user_id, monitor, kind, priority, last_alert_id, last_sent_at, "
              "epoch FROM pam_alert_state WHERE fingerprint = ANY($1::text[])", ("text[]",),
              _cols("fingerprint:t user_id:t monitor:t kind:t priority:t last_alert_id:t last_sent_at:ts epoch:i")),
    Statement("held_alerts", f"SELECT {_A} FROM pam_alerts AS a WHERE a.state = 'held' AND a.deliver_after <= $1 "
              "ORDER BY a.deliver_after, a.id LIMIT $2", ("timestamptz", "int8"), _cols(_ALERT_COLS)),
    Statement("queued_users", "SELECT DISTINCT sink, user_id FROM pam_deliveries WHERE state = 'pending' AND "
              "sink = ANY($1::text[]) AND user_id = ANY($2::text[])", ("text[]", "text[]"),
              _cols("sink:t user_id:t")),
    Statement("due_heads", pg_alerts._DUE_HEADS, ("timestamptz", "int8"), _cols("sink:t user_id:t head:t")),
    Statement("delivery_queue", f"SELECT {pg_alerts._DELIVERY_COLUMNS} FROM pam_deliveries WHERE state = 'pending' "
              "AND sink = $1 AND user_id = $2 ORDER BY alert_id LIMIT $3", ("text", "text", "int8"),
              _cols(_DELIVERY_COLS)),
    Statement("alerts_by_id", f"SELECT {_A} FROM pam_alerts AS a WHERE a.id = ANY($1::text[])", ("text[]",),
              _cols(_ALERT_COLS)),
    Statement("stuck_alerts", f"SELECT {_A} FROM pam_alerts AS a WHERE a.state = 'pending' AND a.created_at < $1 "
              "AND NOT EXISTS (SELECT 1 FROM pam_deliveries AS d WHERE d.alert_id = a.id) "
              "ORDER BY a.created_at, a.id LIMIT $2", ("timestamptz", "int8"), _cols(_ALERT_COLS)),
    Statement("outbox_size", "SELECT COUNT(*) FROM pam_alerts WHERE state = 'pending'", (), _cols("n:i")),
)

STATEMENTS: dict[str, Statement] = {s.sql: s for s in _STATEMENTS}
"""Statement text (exactly as the Postgres store formats it) -> its function."""
if len(STATEMENTS) != len(_STATEMENTS):
    raise RuntimeError("two Supabase statements have the same text")


def _function(s: Statement) -> str:
    params = ", ".join(f"p{n} {kind}" for n, kind in enumerate(s.params, start=1))
    names = ", ".join(f"c{n}" for n in range(len(s.columns)))
    # row_number() numbers the rows as the statement returns them (the window has no order of its own), and
    # json_agg(... ORDER BY it) keeps that order in the array: the statement's ORDER BY holds over REST too.
    return (f"CREATE OR REPLACE FUNCTION {s.function}({params}) RETURNS json LANGUAGE sql STABLE AS $pamd$\n"
            f"SELECT COALESCE(json_agg(json_build_array({names}) ORDER BY q.n), '[]'::json)\n"
            f"FROM (SELECT row_number() OVER () AS n, s.* FROM (\n{s.sql.strip()}\n) AS s({names})) AS q\n"
            "$pamd$;\n")


def _signature(s: Statement) -> str:
    return f"{s.function}({', '.join(s.params)})"


def functions_sql() -> str:
    """The functions (generated reads, hand-written writes, the version function with ``%DIGEST%`` in place of its
    digest) and their grants."""
    writes = resources.files("pamd.store").joinpath("schema_supabase.sql").read_text(encoding="utf-8")
    reads = "\n".join(_function(s) for s in _STATEMENTS)
    signatures = [_signature(s) for s in _STATEMENTS] + WRITE_FUNCTIONS
    # Supabase grants EXECUTE on new public functions to anon and authenticated: these read and write every user's
    # data, so only the service role may call them (the DO block keeps the script valid on a plain Postgres).
    grants = "\n".join(
        f"    REVOKE ALL ON FUNCTION {sig} FROM PUBLIC;\n"
        f"    IF has_anon THEN REVOKE ALL ON FUNCTION {sig} FROM anon, authenticated; END IF;\n"
        f"    IF has_service THEN GRANT EXECUTE ON FUNCTION {sig} TO service_role; END IF;"
        for sig in [*signatures, "pamd_supabase_version()"])
    return (f"-- Reads: the Postgres store's statements, one function each (pamd.store.supabase_sql).\n{reads}\n"
            f"{writes}\n{_version_function('%DIGEST%')}\n"
            "DO $pamd$\nDECLARE\n"
            "    has_anon boolean := EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon');\n"
            "    has_service boolean := EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role');\n"
            f"BEGIN\n{grants}\nEND\n$pamd$;\n")


WRITE_FUNCTIONS = [
    "pamd_record_decisions(json, json, text[], timestamptz, text, boolean, text, bigint)",
    "pamd_mark_alerts(text[], text, timestamptz)",
    "pamd_save_deliveries(json)",
    "pamd_settle_alerts(text[], timestamptz)",
]
"""The signatures of the hand-written functions of ``schema_supabase.sql`` (for the grants)."""


def _version_function(digest: str) -> str:
    return ("CREATE OR REPLACE FUNCTION pamd_supabase_version() RETURNS json LANGUAGE sql IMMUTABLE AS $pamd$\n"
            f"SELECT json_build_object('version', {SCHEMA_VERSION}, 'digest', '{digest}')\n$pamd$;\n")


def digest() -> str:
    """A short hash of the functions this pamd version needs: ``migrate()`` compares it with the installed one."""
    return hashlib.sha256(functions_sql().encode()).hexdigest()[:16]


def install_sql() -> str:
    """Everything to run once on the Supabase database (idempotent): pamd's tables, row-level security on pamd's own
    tables (the service role bypasses it; the anon key sees nothing), the functions and their grants."""
    tables = resources.files("pamd.store").joinpath("schema_pg.sql").read_text(encoding="utf-8")
    rls = "\n".join(f"ALTER TABLE {t} ENABLE ROW LEVEL SECURITY;"
                    for t in ("pamd_migrations", "pam_alerts", "pam_alert_state", "pamd_fence", "pam_deliveries"))
    body = functions_sql().replace("'%DIGEST%'", f"'{digest()}'")
    return (f"-- pamd {SCHEMA_VERSION}: the schema and functions of the Supabase store. Run once (again after an "
            "upgrade) in the\n-- Supabase SQL editor, or: pamd db sql | psql \"$DATABASE_URL\"\nBEGIN;\n\n"
            f"{tables}\nINSERT INTO pamd_migrations (version, applied_at) VALUES (1, now()) ON CONFLICT DO NOTHING;\n"
            f"{rls}\n\n{body}\nCOMMIT;\n"
            "-- PostgREST serves only what its schema cache knows: have it reload now.\n"
            "NOTIFY pgrst, 'reload schema';\n")
