"""Both provider fakes, stocked for the demo data set: what ``bench/monitors_scale.py`` (and a local demo with
``[providers.*] base_url`` pointed at them) runs against. Forecasts are scripted for the demo trips; every demo
position gets three fuel stations (diesel, petrol, unconfirmed) and two repair shops within a few km."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from pamd.store.demo import demo_rows
from pamd.store.demo_weather import demo_forecasts
from tests.fakes.openmeteo import serve_openmeteo
from tests.fakes.overpass import node, offset, serve_overpass, way


def demo_places(now: datetime) -> list[dict[str, Any]]:
    """OSM elements near every position in the demo data (locations and fill-ups)."""
    rows = demo_rows(now)
    positions = {(round(r["lat"], 2), round(r["lon"], 2)) for table in ("user_locations", "fuel_log")
                 for r in rows[table] if r.get("lat") is not None and r.get("lon") is not None}
    elements: list[dict[str, Any]] = []
    for index, (lat, lon) in enumerate(sorted(positions)):
        base = 1_000_000 + index * 10
        elements += [
            node(base + 1, *offset(lat, lon, 1.2, 0.4), {"amenity": "fuel", "name": f"Diesel Stop {index}",
                                                         "fuel:diesel": "yes", "fuel:HGV_diesel": "yes"}),
            node(base + 2, *offset(lat, lon, -2.5, 1.0), {"amenity": "fuel", "name": f"Corner Gas {index}",
                                                          "fuel:octane_95": "yes", "fuel:diesel": "yes"}),
            way(base + 3, *offset(lat, lon, 4.0, -3.0), {"amenity": "fuel", "name": f"Roadhouse {index}"}),
            node(base + 4, *offset(lat, lon, 3.0, 2.0), {"shop": "car_repair", "name": f"Auto Care {index}"}),
            node(base + 5, *offset(lat, lon, -6.0, 0.5), {"shop": "truck_repair", "name": f"RV & Truck {index}"}),
        ]
    return elements


@contextmanager
def serve_bench_providers(now: datetime | None = None) -> Iterator[tuple[str, str]]:
    """``(weather_url, places_url)`` of running fakes stocked for the demo data at ``now``."""
    now = now or datetime.now(UTC)
    with serve_openmeteo(now, demo_forecasts(now)) as weather, serve_overpass(demo_places(now)) as places:
        yield weather.url, places.url
