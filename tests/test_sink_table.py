"""The table sink: alerts become rows of the store's notifications table, once per alert id."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pamd.alerts.delivery import BATCH
from pamd.config import ConfigError, load_config
from pamd.jobs import resolve_sinks
from pamd.metrics import Metrics
from pamd.model import Alert, Priority
from pamd.pipeline import AlertPipeline
from pamd.plugins import load_plugins
from pamd.sinks.base import BatchSink
from pamd.sinks.table import TableSink
from pamd.store.sqlite import SQLiteStore

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(f"sqlite:///{tmp_path}/t.db")
    await s.migrate()
    await s.add_rows("profiles", [{"id": "ann", "timezone": "UTC"}])
    yield s
    await s.aclose()


def rows(store: SQLiteStore, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(store.path) as conn:
        return conn.execute(sql).fetchall()


def alert(subject: str = "v1") -> Alert:
    return Alert(user_id="ann", kind="fuel_low", priority=Priority.URGENT, title="Fuel critically low",
                 body="About 4% left.", facts={"level_pct": 4.2}, actions=[{"action": "log_fuel"}], subject=subject,
                 expires_at=T0 + timedelta(hours=6))


@pytest.mark.anyio
async def test_each_accepted_alert_becomes_one_notification(store: SQLiteStore) -> None:
    sink = TableSink({}, None)
    sink.bind_store(store)
    pipeline = AlertPipeline({"table": sink}, Metrics(), book=store)
    result = await pipeline.submit("fuel", [alert("v1"), alert("v2")], epoch=1, now=T0, cooldown=timedelta(hours=1))
    assert result.accepted == 2
    found = rows(store, "SELECT id, alert_id, user_id, type, priority, title, body, data, created_at, expires_at "
                        "FROM notifications ORDER BY id")
    ids = [r[0] for r in rows(store, "SELECT id FROM pam_alerts ORDER BY id")]
    assert [r[0] for r in found] == [r[1] for r in found] == ids
    first = found[0]
    assert first[2:7] == ("ann", "fuel_low", "urgent", "Fuel critically low", "About 4% left.")
    data = json.loads(str(first[7]))
    assert data["monitor"] == "fuel" and data["facts"] == {"level_pct": 4.2} and data["fingerprint"]
    assert first[8] == "2026-03-02T12:00:00.000Z" and first[9] == "2026-03-02T18:00:00.000Z"



@pytest.mark.anyio
async def test_a_burst_is_written_a_batch_at_a_time(store: SQLiteStore) -> None:
    """A tick's alerts reach the table in statements of up to BATCH rows, not one round trip per alert."""
    calls: list[int] = []

    class Counting:
        async def add_notifications(self, alerts: Sequence[Alert], table: str) -> int:
            calls.append(len(alerts))
            return await store.add_notifications(alerts, table)

    sink = TableSink({}, None)
    sink.bind_store(Counting())
    assert isinstance(sink, BatchSink)
    pipeline = AlertPipeline({"table": sink}, Metrics(), book=store)
    burst = [Alert(user_id=f"u{i:03}", kind="fuel_low", priority=Priority.HIGH, title="Fuel low", body="b",
                   subject="v1") for i in range(BATCH * 2 + 50)]
    result = await pipeline.submit("fuel", burst, epoch=1, now=T0, cooldown=timedelta(hours=1))
    assert result.accepted == len(burst)
    assert calls == [BATCH, BATCH, 50]
    assert rows(store, "SELECT COUNT(*) FROM notifications") == [(len(burst),)]
    assert rows(store, "SELECT DISTINCT state FROM pam_alerts") == [("delivered",)]


@pytest.mark.anyio
async def test_a_refused_row_fails_its_batch_then_only_itself(store: SQLiteStore) -> None:
    """A batch is all or none: a row the table refuses holds the others back once, then they go one at a time
    and only it stays pending."""
    with sqlite3.connect(store.path) as conn:
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON notifications WHEN NEW.title = 'poison' "
                     "BEGIN SELECT RAISE(ABORT, 'refused by the app'); END")
    sink = TableSink({}, None)
    sink.bind_store(store)
    pipeline = AlertPipeline({"table": sink}, Metrics(), book=store)
    burst = [Alert(user_id=user, kind="fuel_low", priority=Priority.HIGH, title=title, body="b", subject="v1")
             for user, title in (("ann", "ok"), ("bob", "poison"), ("cy", "ok"))]
    await pipeline.submit("fuel", burst, epoch=1, now=T0, cooldown=timedelta(hours=1))
    assert rows(store, "SELECT COUNT(*) FROM notifications") == [(0,)]
    assert rows(store, "SELECT state, COUNT(*) FROM pam_deliveries GROUP BY state") == [("pending", 3)]
    assert await pipeline.deliverer.retry_due(T0 + timedelta(minutes=5)) == 2
    assert rows(store, "SELECT user_id FROM notifications ORDER BY user_id") == [("ann",), ("cy",)]
    assert rows(store, "SELECT a.user_id, a.state FROM pam_alerts AS a ORDER BY a.user_id") == [
        ("ann", "delivered"), ("bob", "pending"), ("cy", "delivered")]


@pytest.mark.anyio
async def test_a_retried_delivery_inserts_nothing(store: SQLiteStore) -> None:
    sink = TableSink({"table": "notifications"}, None)
    sink.bind_store(store)
    a = alert()
    a.id, a.monitor, a.fingerprint, a.created_at = "01JTEST0000000000000000000", "fuel", "f" * 32, T0
    await sink.deliver(a)
    await sink.deliver(a)
    assert rows(store, "SELECT COUNT(*) FROM notifications") == [(1,)]
    assert await store.add_notifications([a], "notifications") == 0


@pytest.mark.anyio
async def test_another_table_name_and_bad_bindings(store: SQLiteStore) -> None:
    with sqlite3.connect(store.path) as conn:
        conn.execute("CREATE TABLE app_alerts AS SELECT * FROM notifications WHERE 0")
    sink = TableSink({"table": "app_alerts"}, None)
    sink.bind_store(store)
    a = alert()
    a.id, a.created_at = "01JTEST0000000000000000001", T0
    await sink.deliver(a)
    assert rows(store, "SELECT alert_id FROM app_alerts") == [("01JTEST0000000000000000001",)]
    unbound = TableSink({}, None)
    with pytest.raises(RuntimeError, match="no store"):
        await unbound.deliver(a)
    with pytest.raises(TypeError, match="needs a store that writes notifications; object does not"):
        unbound.bind_store(object())


def test_config_tables(tmp_path: Path) -> None:
    plugins = load_plugins([], {})
    path = tmp_path / "config.toml"
    path.write_text("")
    assert "table" not in resolve_sinks(load_config(path, {}), plugins)  # not on by default
    path.write_text('[sinks.table]\ntable = "app_notifications"\n')
    sink = resolve_sinks(load_config(path, {}), plugins)["table"]
    assert isinstance(sink, TableSink) and sink.options.table == "app_notifications"
    path.write_text('[sinks.table]\ntable = "x; DROP TABLE profiles"\n')
    with pytest.raises(ConfigError, match=r"sinks\.table\.table: not a plain table name"):
        resolve_sinks(load_config(path, {}), plugins)
