"""Column mapping (``[store.tables]``): pamd on an existing Postgres schema whose tables and columns have other names.

The app's schema is the demo data renamed the way a real app might have it (other table names, other column names,
a numeric odometer, no ``created_at``); pamd runs in a schema of its own before it in the ``search_path``. Its
monitors must alert exactly as on the PAM-named demo data, its table sink must write the app's notifications, and
the migration must leave the app's tables alone.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest

from pamd.config import ConfigError, load_config
from pamd.model import Alert, Priority
from pamd.store import open_store
from pamd.store.mapping import MappingError, TableMap, check_mapping, strip_tables, view_sql
from pamd.store.pg import PostgresStore
from pamd.store.sqlite import SQLiteStore
from pamd.testing import run_tick
from tests.conftest import PG_URL

if TYPE_CHECKING:  # mypy sees the source tree; at run time the package is installed as pamd_plugins
    from plugins import budget, fuel, maintenance
else:
    from pamd_plugins import budget, fuel, maintenance

NOW = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)

# How the app names things, applied to the demo data with ALTER TABLE ... RENAME.
RENAMES = {
    "fuel_log": ("refuels", {"volume_l": "litres", "logged_at": "filled_at", "is_full_tank": "full"}),
    "vehicles": ("rigs", {"fuel_capacity_l": "tank_litres", "is_primary": "main"}),
    "profiles": ("users", {"timezone": "tz", "preferred_units": "units"}),
    "notifications": ("app_notifications", {"type": "kind", "data": "payload"}),
}
MAPPING = {table: TableMap(f"{{app}}.{name}", {ours: theirs for ours, theirs in columns.items()})
           for table, (name, columns) in RENAMES.items()}


# -- names and SQL, no database ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("tables", "where", "problem"), [
    ({"fuel_logs": TableMap()}, ("fuel_logs",), "not a table pamd reads"),
    ({"fuel_log": TableMap("a.b.c")}, ("fuel_log", "name"), "is not a table name"),
    ({"fuel_log": TableMap("x", {"litres": "l"})}, ("fuel_log", "columns", "litres"), "fuel_log has no column"),
    ({"fuel_log": TableMap("x", {"volume_l": "l; drop"})}, ("fuel_log", "columns", "volume_l"), "not a column"),
    ({"fuel_log": TableMap("x", {"user_id": ""})}, ("fuel_log", "columns", "user_id"), "is needed"),
])
def test_bad_mappings_are_refused_with_their_key(tables: dict[str, TableMap], where: tuple[str, ...],
                                                 problem: str) -> None:
    with pytest.raises(MappingError) as err:
        check_mapping(tables)
    assert err.value.key == where and problem in err.value.problem


def test_views_rename_cast_and_fill_in_nulls() -> None:
    available = {"id": "text", "user_id": "text", "vehicle_id": "text", "filled_at": "timestamp with time zone",
                 "litres": "numeric(6,2)", "odometer_km": "double precision", "full": "boolean"}
    sql, missing = view_sql("pamd", "fuel_log", TableMap("app.refuels", {"volume_l": "litres",
                                                                         "logged_at": "filled_at",
                                                                         "is_full_tank": "full"}), available)
    assert sql.startswith('CREATE OR REPLACE VIEW "pamd"."fuel_log" AS SELECT "id", "user_id", "vehicle_id", '
                          '"filled_at" AS "logged_at", "litres"::double precision AS "volume_l", ')
    assert sql.endswith('FROM "app"."refuels"')
    assert missing == ["total_cost", "lat", "lon", "created_at"]
    assert 'NULL::double precision AS "lat"' in sql
    with pytest.raises(MappingError, match=r"app\.refuels has no column 'litre'"):
        view_sql("pamd", "fuel_log", TableMap("app.refuels", {"volume_l": "litre"}), available)
    with pytest.raises(MappingError, match="no column 'user_id'"):
        view_sql("pamd", "fuel_log", TableMap("app.refuels"), {"id": "text"})


def test_the_migration_leaves_the_apps_tables_alone() -> None:
    script = Path(__file__).parents[1].joinpath("pamd", "store", "schema_pg.sql").read_text()
    stripped = strip_tables(script, {"profiles", "fuel_log"})
    assert "CREATE TABLE IF NOT EXISTS fuel_log" not in stripped
    assert "fuel_log_user_time_idx" not in stripped
    assert "REFERENCES profiles" not in stripped
    assert "REFERENCES vehicles (id) ON DELETE CASCADE" in stripped  # vehicles is pamd's to create here
    assert stripped.count("CREATE TABLE") == script.count("CREATE TABLE") - 2
    assert strip_tables(script, set()) == script


def test_config_errors_are_located(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[store]\nurl = "postgresql://localhost/app"\n\n[store.tables.fuel_log]\nname = "refuels"\n'
                    'columns = { litres = "volume" }\n')
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert "store.tables.fuel_log.columns.litres: fuel_log has no column 'litres'" in str(err.value)
    assert str(path) in str(err.value)
    path.write_text('[store.tables.fuel_log]\nname = "refuels"\n')
    with pytest.raises(ConfigError, match=r"store\.tables: column mapping is for an existing Postgres schema"):
        load_config(path, environ={})
    with pytest.raises(ValueError, match="needs a postgresql:// store"):
        open_store("sqlite:///x.db", tables={"fuel_log": TableMap("refuels")})


# -- on a real database ------------------------------------------------------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _sql(sql: str, *args: Any) -> Any:
    conn = await asyncpg.connect(PG_URL)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


@pytest.fixture
async def app_schema(pg_url: str) -> AsyncIterator[str]:
    """The demo data in a schema of its own, renamed per ``RENAMES``, with a numeric odometer and no
    ``created_at`` on fill-ups: an app that was not built for pamd."""
    app = f"app_{secrets.token_hex(6)}"
    await _sql(f'CREATE SCHEMA "{app}"')
    seeder = PostgresStore(f"{PG_URL}?search_path={app}")
    await seeder.seed_demo(NOW)
    await seeder.aclose()
    statements = [f'ALTER TABLE "{app}".fuel_log DROP COLUMN created_at',
                  f'ALTER TABLE "{app}".vehicles ALTER COLUMN odometer_km TYPE numeric(9, 1)',
                  f'DROP TABLE "{app}".pam_alerts, "{app}".pam_alert_state, "{app}".pam_deliveries, '
                  f'"{app}".pamd_fence, "{app}".pamd_migrations']
    for table, (name, columns) in RENAMES.items():
        statements += [f'ALTER TABLE "{app}".{table} RENAME COLUMN {ours} TO "{theirs}"'
                       for ours, theirs in columns.items()]
        statements.append(f'ALTER TABLE "{app}".{table} RENAME TO {name}')
    for statement in statements:
        await _sql(statement)
    yield app
    await _sql(f'DROP SCHEMA "{app}" CASCADE')


def mapped(pg_url: str, app: str, **overrides: TableMap) -> PostgresStore:
    """pamd in the test's own schema, the app's schema after it in the search_path."""
    tables = {table: TableMap(m.name.format(app=app), m.columns) for table, m in MAPPING.items()}
    return PostgresStore(f"{pg_url},{app}", tables={**tables, **overrides})


def _alerts(alerts: list[Alert]) -> list[tuple[str, str, Priority, str, str]]:
    return sorted((a.user_id, a.kind, a.priority, a.title, a.body) for a in alerts)


@pytest.mark.anyio
async def test_monitors_alert_on_the_mapped_schema_as_on_pam_names(
        pg_url: str, app_schema: str, tmp_path: Path) -> None:
    store = mapped(pg_url, app_schema)
    assert await store.migrate() == 1
    assert await store.migrate() == 0  # idempotent, the views replaced in place
    schema = pg_url.rsplit("=", 1)[1]
    own = {r[0]: r[1] for r in await _sql("SELECT table_name, table_type FROM information_schema.tables "
                                          "WHERE table_schema = $1", schema)}
    # pamd's own tables and the views; none of the app's tables (expenses, trips... are found in the app schema)
    assert own == {**dict.fromkeys(MAPPING, "VIEW"), **dict.fromkeys(
        ["pam_alerts", "pam_alert_state", "pam_deliveries", "pamd_fence", "pamd_migrations"], "BASE TABLE")}

    lite = SQLiteStore(f"sqlite:///{tmp_path}/lite.db")
    await lite.seed_demo(NOW)
    for monitor in (fuel.FuelMonitor(), budget.BudgetMonitor(), maintenance.MaintenanceMonitor()):
        results = [await run_tick(monitor, store=s, now=NOW, retries=0) for s in (lite, store)]
        assert [r.outcome for r in results] == ["success", "success"], [r.error for r in results]
        assert _alerts(results[1].alerts) == _alerts(results[0].alerts) != []
    assert store.skipped_rows == lite.skipped_rows == {}
    await lite.aclose()

    # the table sink writes the app's own notifications table through the view, once per alert
    alert = results[1].alerts[0]
    assert await store.add_notifications([alert]) == 1
    assert await store.add_notifications([alert]) == 0
    rows = await _sql(f'SELECT kind, payload->>\'fingerprint\' FROM "{app_schema}".app_notifications')
    assert [tuple(r) for r in rows] == [(alert.kind, alert.fingerprint)]
    await store.aclose()


@pytest.mark.anyio
async def test_an_unmapped_table_drops_its_view_and_a_taken_name_is_refused(pg_url: str, app_schema: str) -> None:
    store = mapped(pg_url, app_schema)
    await store.migrate()
    await store.aclose()
    schema = pg_url.rsplit("=", 1)[1]
    tables = {table: TableMap(m.name.format(app=app_schema), m.columns) for table, m in MAPPING.items()
              if table != "notifications"}
    again = PostgresStore(f"{pg_url},{app_schema}", tables=tables)
    await again.migrate()
    await again.aclose()
    views = {r[0] for r in await _sql("SELECT table_name FROM information_schema.views WHERE table_schema = $1",
                                      schema)}
    assert views == set(tables)

    await _sql(f'CREATE TABLE "{schema}".notifications (id text)')
    clash = mapped(pg_url, app_schema)
    with pytest.raises(MappingError, match=f"schema {schema} already has a table notifications"):
        await clash.migrate()
    await clash.aclose()
    await _sql(f'DROP TABLE "{schema}".notifications')

    wrong = mapped(pg_url, app_schema, fuel_log=TableMap(f"{app_schema}.refuels", {"volume_l": "liters"}))
    with pytest.raises(MappingError, match=f"{app_schema}.refuels has no column 'liters'"):
        await wrong.migrate()
    await wrong.aclose()
