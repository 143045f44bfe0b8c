"""Demo data for the context monitor: an active trip, calendar events, recent locations (:mod:`pamd.store.demo`)."""

from __future__ import annotations

from datetime import datetime

from pamd.store.demo_common import DemoUser, Row, at, day, row


def add(tables: dict[str, list[Row]], now: datetime, users: dict[str, DemoUser]) -> None:
    """Append the context monitor's demo rows to ``tables``."""
    tables["trips"] += [
        row("t", "u07", origin="Branson, MO", destination="Nashville, TN", dest_lat=36.1627, dest_lon=-86.7816,
            start_date=day(now, -1), end_date=day(now, 6), flex_days=1, status="active",
            route_data={"distance_km": 690}),
    ]
    tables["calendar_events"] += [
        row("c", "u03", title="Snorkel tour, Kahalu'u Bay", start_at=at(now, days=1), location_name="Kahalu'u Bay",
            lat=19.5797, lon=-155.9669),
        row("c", "u08", title="Dinner at the Drunken Duck", start_at=at(now, hours=6), location_name="Barngates",
            lat=54.4013, lon=-3.0093),
    ]
    for key, user in users.items():
        if key == "u06":
            continue
        for minutes, step, speed in ((60, 0.0, 0.0), (10, 0.05, 80.0 if key in ("u01", "u07") else 0.0)):
            tables["user_locations"].append({
                "user_id": user.user_id, "recorded_at": at(now, hours=-minutes / 60),
                "lat": round(user.lat + step, 4), "lon": round(user.lon + step, 4), "speed_kmh": speed,
            })
