"""A webhook receiver down for a while, then back: every alert arrives (once, after dedupe by id), in order per user.

The real webhook sink, the real outbox on SQLite, and a real HTTP receiver on 127.0.0.1 that first does not exist
(connection refused), then answers 500 twice, then accepts.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pamd.metrics import Metrics
from pamd.model import Alert, Priority
from pamd.pipeline import AlertPipeline
from pamd.sinks.webhook import WebhookSink
from pamd.store.sqlite import SQLiteStore
from tests.conftest import free_port
from tests.fakes.server import FakeServer, Reply

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
USERS = ("ann", "bob", "cat")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(f"sqlite:///{tmp_path}/w.db")
    await s.migrate()
    await s.add_rows("profiles", [{"id": user, "timezone": "UTC"} for user in USERS])
    yield s
    await s.aclose()


@pytest.mark.anyio
async def test_a_receiver_down_for_a_while_gets_every_alert_once_in_order(store: SQLiteStore) -> None:
    port = free_port()
    sink = WebhookSink({"url": f"http://127.0.0.1:{port}/hook", "timeout": 2.0})
    pipeline = AlertPipeline({"webhook": sink}, Metrics(), book=store)
    try:
        for minute in range(4):  # four ticks while nothing listens on the port
            alerts = [Alert(user_id=user, kind="fuel_low", priority=Priority.HIGH, title=f"{user} #{minute}",
                            body="b", subject=f"s{minute}") for user in USERS]
            await pipeline.submit("fuel", alerts, epoch=1, now=T0 + timedelta(minutes=minute),
                                  cooldown=timedelta(hours=1))
        now = T0 + timedelta(minutes=5)
        assert await pipeline.deliverer.retry_due(now) == 0  # still down
        with sqlite3.connect(store.path) as conn:
            stored = [r[0] for r in conn.execute("SELECT id FROM pam_alerts ORDER BY id")]
        assert len(stored) == 12

        receiver = FakeServer(lambda request: Reply(204), port=port)
        receiver.fail_next(2, 500)  # back, but not quite healthy yet
        receiver.start()
        try:
            for _ in range(30):
                now += timedelta(minutes=10)
                await pipeline.deliverer.retry_due(now)
                if await store.outbox_size() == 0:
                    break
        finally:
            receiver.stop()
    finally:
        await sink.aclose()

    accepted = receiver.requests[2:]  # the first two got a 500
    ids = [r.headers["Idempotency-Key"] for r in accepted]
    assert sorted(set(ids)) == stored  # every alert, none lost
    assert len(ids) == len(set(ids))  # and no duplicates beyond the refused attempts
    for user in USERS:
        titles = [json.loads(r.body)["title"] for r in accepted if json.loads(r.body)["user_id"] == user]
        assert titles == [f"{user} #{minute}" for minute in range(4)]  # per-user order kept
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("SELECT DISTINCT state FROM pam_alerts").fetchall() == [("delivered",)]
