"""Demo planned trips for the weather monitor (:mod:`pamd.store.demo`)."""

from __future__ import annotations

from datetime import datetime

from pamd.store.demo_common import DemoUser, Row, day, row


def add(tables: dict[str, list[Row]], now: datetime, users: dict[str, DemoUser]) -> None:
    """Append the weather monitor's demo rows (planned and completed trips) to ``tables``."""
    tables["trips"] += [
        row("t", "u01", origin="Denver, CO", destination="Moab, UT", dest_lat=38.5733, dest_lon=-109.5498,
            start_date=day(now, 3), end_date=day(now, 10), flex_days=2, status="planned",
            route_data={"distance_km": 570}),
        row("t", "u04", origin="Rotorua", destination="Wanaka", dest_lat=-44.7032, dest_lon=169.1320,
            start_date=day(now, 5), end_date=day(now, 12), flex_days=3, status="planned", route_data=None),
        row("t", "u05", origin="Annecy", destination="Chamonix", dest_lat=45.9237, dest_lon=6.8694,
            start_date=day(now, -20), end_date=day(now, -15), flex_days=0, status="completed", route_data=None),
    ]
