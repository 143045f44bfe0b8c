"""Column mapping: pamd on an existing schema whose tables or columns have other names (``[store.tables]``).

For each mapped table pamd creates, in its own schema (the first of the connection's ``search_path``), a view with
the PAM name and columns (DESIGN.md section 6) over the app's table::

    [store.tables.fuel_log]
    name = "public.refuels"                      # the app's table; default: the same name, schema public
    columns = { volume_l = "litres", logged_at = "filled_at", lat = "" }   # "": the app has none (read as NULL)

so every query of every monitor stays what it is. Columns the mapping does not name keep their PAM name; a column
of another type is cast to pamd's (which keeps an index on it from being used: prefer mapping matching types for
ids); a missing optional column reads as NULL, a missing key column is an error. Views over one table are
updatable in Postgres, so the ``table`` sink writes the app's ``notifications`` through one (no casts there).

This module only builds SQL and checks names; :mod:`pamd.store.pg` runs it. The app's tables found elsewhere in
the ``search_path`` (mapped or not) are left alone by the migration: pamd then creates only its own tables.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["APP_COLUMNS", "MappingError", "TableMap", "check_mapping", "strip_tables", "view_sql"]

# The app's tables as pamd reads them (and writes notifications): column -> Postgres type, in schema order.
_T, _F, _D, _TS, _B, _I, _J = "text", "double precision", "date", "timestamp with time zone", "boolean", "integer", \
    "jsonb"
APP_COLUMNS: dict[str, dict[str, str]] = {
    "profiles": {"id": _T, "email": _T, "full_name": _T, "status": _T, "timezone": _T, "preferred_units": _T,
                 "currency": _T, "vehicle_type": _T, "max_driving_hours": _F, "created_at": _TS, "updated_at": _TS},
    "vehicles": {"id": _T, "user_id": _T, "name": _T, "vehicle_type": _T, "fuel_type": _T, "fuel_capacity_l": _F,
                 "consumption_l_per_100km": _F, "odometer_km": _F, "is_primary": _B, "created_at": _TS,
                 "updated_at": _TS},
    "fuel_log": {"id": _T, "user_id": _T, "vehicle_id": _T, "logged_at": _TS, "volume_l": _F, "total_cost": _F,
                 "odometer_km": _F, "is_full_tank": _B, "lat": _F, "lon": _F, "created_at": _TS},
    "budgets": {"id": _T, "user_id": _T, "category": _T, "amount": _F, "period": _T, "start_date": _D,
                "end_date": _D, "created_at": _TS},
    "expenses": {"id": _T, "user_id": _T, "amount": _F, "category": _T, "description": _T, "date": _D,
                 "created_at": _TS},
    "trips": {"id": _T, "user_id": _T, "origin": _T, "destination": _T, "dest_lat": _F, "dest_lon": _F,
              "start_date": _D, "end_date": _D, "flex_days": _I, "status": _T, "route_data": _J, "created_at": _TS},
    "maintenance_records": {"id": _T, "user_id": _T, "vehicle_id": _T, "task": _T, "date": _D, "odometer_km": _F,
                            "cost": _F, "next_due_date": _D, "next_due_odometer_km": _F, "created_at": _TS},
    "calendar_events": {"id": _T, "user_id": _T, "title": _T, "start_at": _TS, "location_name": _T, "lat": _F,
                        "lon": _F, "created_at": _TS},
    "user_locations": {"user_id": _T, "recorded_at": _TS, "lat": _F, "lon": _F, "speed_kmh": _F},
    "notification_preferences": {"user_id": _T, "monitor": _T, "enabled": _B, "quiet_start": _T, "quiet_end": _T,
                                 "max_per_day": _I},
    "notifications": {"id": _T, "user_id": _T, "alert_id": _T, "type": _T, "priority": _T, "title": _T,
                      "body": _T, "data": _J, "created_at": _TS, "expires_at": _TS, "read_at": _TS},
}
# Columns without which a table means nothing: they cannot read as NULL.
KEY_COLUMNS: dict[str, tuple[str, ...]] = {
    "user_locations": ("user_id", "recorded_at"),
    "notification_preferences": ("user_id", "monitor"),
    "notifications": ("id", "user_id", "alert_id", "type", "priority", "title", "body", "created_at"),
}
WRITTEN = frozenset({"notifications"})  # read and written through the view: renamed, never cast
VIEW_COMMENT = "pamd column mapping"  # marks the views pamd made, so a mapping removed later drops its view

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")


class MappingError(ValueError):
    """A mapping that cannot work; ``key`` is its path under ``[store.tables]`` (for a located message)."""

    def __init__(self, key: tuple[str, ...], message: str) -> None:
        super().__init__(f"store.tables.{'.'.join(key)}: {message}")
        self.key = key
        self.problem = message


@dataclass(frozen=True)
class TableMap:
    """One app table's mapping: ``name`` (``[schema.]table``, empty: the PAM name) and ``columns`` (PAM column ->
    the app's column, ``""`` for none)."""

    name: str = ""
    columns: Mapping[str, str] = field(default_factory=dict)

    def source(self, table: str) -> tuple[str, str]:
        """(schema, table) of the app's table; unqualified names are in ``public``."""
        schema, _, name = (self.name or table).rpartition(".")
        return schema or "public", name


def check_mapping(tables: Mapping[str, TableMap]) -> None:
    """Raise :class:`MappingError` for an unknown table or column or a name that is not a plain identifier."""
    for table, mapping in tables.items():
        if table not in APP_COLUMNS:
            raise MappingError((table,), f"not a table pamd reads (one of {', '.join(APP_COLUMNS)})")
        parts = mapping.name.split(".") if mapping.name else []
        if len(parts) > 2 or not all(_IDENT.match(p) for p in parts):
            raise MappingError((table, "name"), f"{mapping.name!r} is not a table name ([schema.]table)")
        for column, theirs in mapping.columns.items():
            if column not in APP_COLUMNS[table]:
                raise MappingError((table, "columns", column),
                                   f"{table} has no column {column!r} (its columns: {', '.join(APP_COLUMNS[table])})")
            if theirs and not _IDENT.match(theirs):
                raise MappingError((table, "columns", column), f"{theirs!r} is not a column name")
            if not theirs and column in KEY_COLUMNS.get(table, ("id", "user_id")):
                raise MappingError((table, "columns", column), f"{table}.{column} is needed: map it to a column")


def view_sql(schema: str, table: str, mapping: TableMap, available: Mapping[str, str]) -> tuple[str, list[str]]:
    """``CREATE VIEW`` of ``schema.table`` over the app's table, whose columns (name -> type, ``format_type``
    spelling) are ``available``. Returns the statement and the PAM columns that read as NULL. Raises
    :class:`MappingError` when a mapped or key column is not there."""
    src_schema, src_table = mapping.source(table)
    keys = KEY_COLUMNS.get(table, ("id", "user_id"))
    select: list[str] = []
    missing: list[str] = []
    for column, kind in APP_COLUMNS[table].items():
        theirs = mapping.columns.get(column, column)
        if theirs and theirs in available:
            expr = _quote(theirs)
            if available[theirs] != kind and table not in WRITTEN:
                expr = f"{expr}::{kind}"
            select.append(expr if theirs == column and expr == _quote(column) else f"{expr} AS {_quote(column)}")
        elif theirs and column in mapping.columns:
            raise MappingError((table, "columns", column), f"{src_schema}.{src_table} has no column {theirs!r}")
        elif column in keys:
            raise MappingError((table, "columns", column), f"{src_schema}.{src_table} has no column {column!r}: "
                               "map it to the column that holds it")
        else:
            select.append(f"NULL::{kind} AS {_quote(column)}")
            missing.append(column)
    sql = (f"CREATE OR REPLACE VIEW {_quote(schema)}.{_quote(table)} AS SELECT {', '.join(select)} "
           f"FROM {_quote(src_schema)}.{_quote(src_table)}")
    return sql, missing


_CREATE_TABLE = re.compile(r"^CREATE TABLE IF NOT EXISTS (\w+)", re.MULTILINE)
_CREATE_INDEX = re.compile(r"^CREATE (?:UNIQUE )?INDEX IF NOT EXISTS \w+ ON (\w+)", re.MULTILINE)
_REFERENCES = re.compile(r" REFERENCES (\w+) \(\w+\)(?: ON DELETE CASCADE)?")


def strip_tables(script: str, tables: set[str]) -> str:
    """``script`` (pamd's schema: statements ending in ``;`` at the end of a line) without the statements that
    create ``tables`` or their indexes, and without foreign keys to them (they are the app's, maybe views)."""
    if not tables:
        return script
    kept = []
    for statement in re.split(r";[ \t]*\n", script):
        target = _CREATE_TABLE.search(statement) or _CREATE_INDEX.search(statement)
        if target and target[1] in tables:
            continue
        kept.append(_REFERENCES.sub(lambda m: "" if m[1] in tables else m[0], statement))
    return ";\n".join(kept)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
