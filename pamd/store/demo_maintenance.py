"""Demo maintenance records (:mod:`pamd.store.demo`)."""

from __future__ import annotations

from datetime import datetime

from pamd.store.demo_common import DemoUser, Row, day, row


def add(tables: dict[str, list[Row]], now: datetime, users: dict[str, DemoUser]) -> None:
    """Append the maintenance monitor's demo rows to ``tables``."""
    tables["maintenance_records"] += [
        row("m", "u01", vehicle_id="demo-v01", task="Oil and filter change", date=day(now, -170),
            odometer_km=37000.0, cost=420.0, next_due_date=day(now, 10), next_due_odometer_km=45000.0),
        row("m", "u02", vehicle_id="demo-v02", task="Tyre rotation", date=day(now, -120), odometer_km=80196.0,
            cost=120.0, next_due_date=None, next_due_odometer_km=90196.0),
        row("m", "u04", vehicle_id="demo-v04", task="Oil change", date=day(now, -30), odometer_km=148000.0,
            cost=180.0, next_due_date=day(now, 150), next_due_odometer_km=158000.0),
        row("m", "u07", vehicle_id="demo-v07", task="Brake inspection", date=day(now, -365), odometer_km=55000.0,
            cost=250.0, next_due_date=day(now, -5), next_due_odometer_km=None),
    ]
