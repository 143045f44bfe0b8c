"""Demo data for the context monitor: active trips, calendar events, location tracks (:mod:`pamd.store.demo`).

Every demo user except demo-u06 has a fix 10 minutes before ``now`` at home + 0.05 degrees (lat and lon): other
monitors use the latest fix as the user's position. Expected outcomes with the default config (evening window
17:00-22:00, 80 km/h x road factor 1.2, leave-by buffer 15 min, window 3 h):

=========  ============================================  ========================================================
user       data                                          context outcome
=========  ============================================  ========================================================
demo-u01   active trip Denver -> West Yellowstone        ``overnight_stop`` (medium) when Denver local time is
           (~740 km); driving at 85 km/h for 7 h up to   17:00-21:59; ``driving_rest`` (high) when it is after
           10 min ago (fixes every 10 min); limit 6 h    06:10 (more than 6 h driven since local midnight)
demo-u02   active trip Brisbane -> Sydney (~740 km);     ``overnight_stop`` when Brisbane local time is
           driving for 9 h up to 10 min ago; limit 8 h   17:00-21:59; ``driving_rest`` when it is after 08:10
demo-u03   stopped near home (Hilo); snorkel tour at     ``leave_by`` high (leave in ~16 min) and ``leave_by``
           Kahalu'u Bay (~99 km) in 2 h; luau at Hilo    medium (leave in ~2 h 10 min), at any ``now``
           Bayfront (~5.5 km) in 2 h 30 min
demo-u04   active trip Rotorua -> Wellington (~380 km);  ``overnight_stop`` when Auckland local time is
           driving for the last 30 min                   17:00-21:59
demo-u05   active trip Annecy -> Bordeaux (~540 km);     ``overnight_stop`` when Paris local time is 17:00-21:59
           driving for the last 30 min
demo-u06   no location; a concert in Salzburg in 21 h    nothing (no location to leave from)
demo-u07   active trip Branson -> Nashville (~575 km);   ``overnight_stop`` when Chicago local time is
           driving for the last 30 min                   17:00-21:59
demo-u08   active trip Keswick -> Penzance (~530 km);    ``overnight_stop`` when London local time is
           driving for the last 30 min; dinner at        17:00-21:59; the dinner gives nothing (leave-by
           Barngates (~28 km) in 6 h                     ~5 h 20 min away)
=========  ============================================  ========================================================

Coverage over the UTC day: ``leave_by`` fires (high and medium) at every ``now``; so does ``driving_rest``
(demo-u01 after 06:10 Denver time or demo-u02 after 08:10 Brisbane time: one of them always holds, DST or not).
``overnight_stop`` fires whenever one of the six travellers is in their evening. No demo user is in UTC hours
12:00-15:59 and 22:00-22:59 in January, and 04:00-04:59, 12:00-14:59 and 21:00-21:59 in July (the demo users live
in UTC-10..-5, UTC+0..+2 and UTC+10..+13: nobody's evening falls there), so it cannot fire then with the default
window. ``tests/test_context.py`` checks all of this every half hour of several days, DST changes included.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from pamd.store.demo_common import DemoUser, Row, at, row

SPEED_KMH = 85.0
STEP_MINUTES = 10
LAST_FIX_MINUTES = 10  # the latest fix of every user is this old (other monitors' demos rely on it)

# user -> (origin, destination, lat, lon, hours of driving up to the last fix)
_TRIPS: dict[str, tuple[str, str, float, float, float]] = {
    "u01": ("Denver, CO", "West Yellowstone, MT", 44.6621, -111.1041, 7.0),
    "u02": ("Brisbane", "Sydney", -33.8688, 151.2093, 9.0),
    "u04": ("Rotorua", "Wellington", -41.2865, 174.7762, 0.5),
    "u05": ("Annecy", "Bordeaux", 44.8378, -0.5792, 0.5),
    "u07": ("Branson, MO", "Nashville, TN", 36.1627, -86.7816, 0.5),
    "u08": ("Keswick", "Penzance", 50.1186, -5.5371, 0.5),
}

# user, n, title, hours from now, place, lat, lon
_EVENTS: tuple[tuple[str, int, str, float, str, float, float], ...] = (
    ("u03", 1, "Snorkel tour", 2.0, "Kahalu'u Bay", 19.5797, -155.9669),
    ("u03", 2, "Luau", 2.5, "Hilo Bayfront", 19.7241, -155.0780),
    ("u06", 1, "Concert", 21.0, "Felsenreitschule, Salzburg", 47.7981, 13.0430),
    ("u08", 1, "Dinner at the Drunken Duck", 6.0, "Barngates", 54.4013, -3.0093),
)


def _fix(user: DemoUser, now: datetime, minutes: float, lat: float, lon: float, speed: float) -> Row:
    return {"user_id": user.user_id, "recorded_at": at(now, hours=-minutes / 60), "lat": lat, "lon": lon,
            "speed_kmh": speed}


def _track(user: DemoUser, now: datetime, dest: tuple[float, float], hours: float) -> list[Row]:
    """Fixes every 10 minutes over ``hours``, driving at 85 km/h towards ``dest``; the last one 10 minutes before
    ``now`` at the user's position (home + 0.05 degrees)."""
    end_lat, end_lon = round(user.lat + 0.05, 4), round(user.lon + 0.05, 4)
    km_lat = 111.2
    km_lon = 111.2 * math.cos(math.radians(end_lat))
    north, east = (dest[0] - end_lat) * km_lat, (dest[1] - end_lon) * km_lon
    norm = math.hypot(north, east) or 1.0
    step = SPEED_KMH * STEP_MINUTES / 60
    return [
        _fix(user, now, LAST_FIX_MINUTES + k * STEP_MINUTES, round(end_lat - k * step * north / norm / km_lat, 5),
             round(end_lon - k * step * east / norm / km_lon, 5), SPEED_KMH)
        for k in range(round(hours * 60 / STEP_MINUTES), -1, -1)
    ]


def add(tables: dict[str, list[Row]], now: datetime, users: dict[str, DemoUser]) -> None:
    """Append the context monitor's demo rows to ``tables``."""
    for key, (origin, destination, lat, lon, hours) in _TRIPS.items():
        user = users[key]
        local_today = now.astimezone(user.tz).date()
        tables["trips"].append(row(
            "ta", key, origin=origin, destination=destination, dest_lat=lat, dest_lon=lon,
            start_date=(local_today - timedelta(days=1)).isoformat(),
            end_date=(local_today + timedelta(days=5)).isoformat(), flex_days=1, status="active", route_data=None))
        tables["user_locations"] += _track(user, now, (lat, lon), hours)
    for key, n, title, hours, place, lat, lon in _EVENTS:
        tables["calendar_events"].append(row("c", key, n, title=title, start_at=at(now, hours=hours),
                                             location_name=place, lat=lat, lon=lon))
    user = users["u03"]  # stopped: at home an hour ago, nearby now
    tables["user_locations"] += [_fix(user, now, 60, user.lat, user.lon, 0.0),
                                 _fix(user, now, LAST_FIX_MINUTES, round(user.lat + 0.05, 4),
                                      round(user.lon + 0.05, 4), 0.0)]
