"""End to end: ``pamd run`` SIGKILLed between storing alerts and delivering them delivers them after a restart."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

from tests.conftest import write_config
from tests.daemon_proc import DaemonProcess, wait_for
from tests.plugin_sources import plugin_dir

# A sink that hangs (as a dead receiver without a timeout would) while TEST_PAMD_SINK_HANGS is set, and otherwise
# appends each alert id to TEST_PAMD_SINK_LOG.
HANGING_SINK = '''
import os
import anyio
import pamd

class Hanging(pamd.Sink):
    name = "hanging"

    def __init__(self, options, state_dir):
        pass

    async def deliver(self, alert):
        if os.environ.get("TEST_PAMD_SINK_HANGS"):
            await anyio.sleep(3600)
        with open(os.environ["TEST_PAMD_SINK_LOG"], "a") as f:
            f.write(alert.id + "\\n")

@pamd.hookimpl
def register_sinks(register):
    register("hanging", Hanging)
'''


def alert_states(db: Path) -> dict[str, str]:
    try:
        with sqlite3.connect(db) as conn:
            return dict(conn.execute("SELECT id, state FROM pam_alerts").fetchall())
    except sqlite3.OperationalError:  # not migrated yet
        return {}


def test_alerts_stored_before_a_sigkill_are_delivered_after_restart(tmp_path: Path, port: int,
                                                                    daemons: list[DaemonProcess]) -> None:
    plugins = plugin_dir(tmp_path, hanging=HANGING_SINK)
    sink_log = tmp_path / "hanging.log"
    config = write_config(tmp_path, port, "[sinks.hanging]\nenabled = true\n", daemon=f'plugin_dirs = ["{plugins}"]')
    db = tmp_path / "state" / "pamd.db"

    first = DaemonProcess(tmp_path, config, port, env={"TEST_PAMD_SINK_HANGS": "1",
                                                        "TEST_PAMD_SINK_LOG": str(sink_log)})
    daemons.append(first)
    # fuel runs at startup: its alerts are stored, then the delivery hangs in the third sink.
    wait_for(lambda: db.exists() and "pending" in alert_states(db).values(), 15,
             lambda: f"no pending alert:\n{first.stderr()[-3000:]}")
    first.signal(signal.SIGKILL)
    first.proc.wait(10)
    stored = alert_states(db)
    assert stored and "pending" in stored.values()
    assert not sink_log.exists()

    second = DaemonProcess(tmp_path, config, port, env={"TEST_PAMD_SINK_LOG": str(sink_log)})
    daemons.append(second)
    wait_for(lambda: all(alert_states(db).get(a) == "delivered" for a in stored), 15,
             lambda: f"states {alert_states(db)}\n{second.stderr()[-3000:]}")
    delivered = sink_log.read_text().split()
    assert sorted(delivered) == sorted(stored)  # each stored alert reached the sink, once
    assert "resuming" in second.stderr() and "never delivered" in second.stderr()
    assert second.stop() == 0
