"""A deterministic demo data set, relative to a given ``now`` (``pamd demo seed``).

Eight travellers across the US, Europe and Oceania. Expected fuel monitor outcomes with the default thresholds
(20 / 10 / 5 %):

=========  ==================  ====================================================  ==========================
user       who                 vehicle and data                                      fuel outcome
=========  ==================  ====================================================  ==========================
demo-u01   Margaret, Denver    class A diesel, 380 L, 30 L/100km, odometer +1080 km  ~14.7 % -> medium
demo-u02   Jack, Brisbane      truck + trailer diesel, 200 L, partial fill-up        8 % -> high
demo-u03   Leilani, Honolulu   petrol campervan, 80 L, 6.5 days x 100 km/day         2.5 % -> urgent
demo-u04   Aroha, Auckland     diesel campervan, 90 L, odometer +270 km              70 % -> none
demo-u05   Sophie, Annecy      diesel campervan, one fill-up only (type defaults)    ~74 % -> none
demo-u06   Hans, Munich        no vehicle                                            none
demo-u07   Bob, Branson        petrol truck + fifth wheel, odometer +250 km          ~57 % -> none
demo-u08   Emily, Keswick      class C diesel, no odometer (stated consumption)      55 % -> none
=========  ==================  ====================================================  ==========================

Ids are fixed, so seeding again upserts instead of duplicating. Each other monitor's rows (and the table of what
they should produce) live in its own module: :mod:`pamd.store.demo_budget`, :mod:`~pamd.store.demo_weather`,
:mod:`~pamd.store.demo_maintenance` and :mod:`~pamd.store.demo_context`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pamd.store import demo_budget, demo_context, demo_maintenance, demo_weather
from pamd.store.demo_common import DemoUser, Row
from pamd.store.records import format_ts

# id, name, email, tz, units, currency, vehicle_type, (lat, lon), price per litre in the local currency
_USERS: tuple[tuple[str, str, str, str, str, str, str | None, tuple[float, float], float], ...] = (
    ("u01", "Margaret Ellis", "margaret", "America/Denver", "imperial", "USD", "rv_class_a",
     (39.7392, -104.9903), 1.05),
    ("u02", "Jack Thompson", "jack", "Australia/Brisbane", "metric", "AUD", "truck_trailer",
     (-27.4698, 153.0251), 2.05),
    ("u03", "Leilani Kahale", "leilani", "Pacific/Honolulu", "imperial", "USD", "campervan",
     (19.7071, -155.0885), 1.30),
    ("u04", "Aroha Ngata", "aroha", "Pacific/Auckland", "metric", "NZD", "campervan",
     (-38.1368, 176.2497), 2.10),
    ("u05", "Sophie Martin", "sophie", "Europe/Paris", "metric", "EUR", "campervan", (45.8992, 6.1294), 1.75),
    ("u06", "Hans Becker", "hans", "Europe/Berlin", "metric", "EUR", None, (48.1351, 11.5820), 1.80),
    ("u07", "Bob Carter", "bob", "America/Chicago", "imperial", "USD", "truck_trailer",
     (36.6437, -93.2185), 0.90),
    ("u08", "Emily Clarke", "emily", "Europe/London", "metric", "GBP", "rv_class_c", (54.6013, -3.1347), 1.50),
)

# user, name, type, fuel, capacity L, stated L/100km, odometer km (None: unknown)
_VEHICLES: tuple[tuple[str, str, str, str, float, float | None, float | None], ...] = (
    ("u01", "Big Sky", "rv_class_a", "diesel", 380.0, 32.0, 43180.0),
    ("u02", "Troopy + Jayco", "truck_trailer", "diesel", 200.0, None, 90096.0),
    ("u03", "Honu", "campervan", "petrol", 80.0, None, 21500.0),
    ("u04", "Kereru", "campervan", "diesel", 90.0, 11.0, 151070.0),
    ("u05", "Le Petit Nomade", "campervan", "diesel", 70.0, None, 60000.0),
    ("u07", "Ram 2500 + Grand Design", "truck_trailer", "petrol", 140.0, None, 70750.0),
    ("u08", "Wanderlust", "rv_class_c", "diesel", 100.0, 15.0, None),
)

# user -> fill-ups: (days ago, litres, odometer km or None, full tank)
_FILLS: dict[str, tuple[tuple[float, float, float | None, bool], ...]] = {
    # full-to-full: 300 km on 90 L = 30 L/100km; then 1080 km since the last full tank
    "u01": ((12, 250.0, 41200.0, True), (9, 90.0, 41500.0, True), (6, 90.0, 41800.0, True),
            (3, 90.0, 42100.0, True)),
    # 600 km on 150 L = 25 L/100km; a 40 L top-up; 896 km since the last full tank
    "u02": ((10, 120.0, 88000.0, True), (7, 150.0, 88600.0, True), (4, 150.0, 89200.0, True),
            (2, 40.0, 89600.0, False)),
    # 500 km every 5 days on 60 L = 12 L/100km and 100 km/day; no reading since the last fill (6.5 days ago)
    "u03": ((21.5, 55.0, 20000.0, True), (16.5, 60.0, 20500.0, True), (11.5, 60.0, 21000.0, True),
            (6.5, 60.0, 21500.0, True)),
    # 400 km on 40 L = 10 L/100km; 270 km since
    "u04": ((8, 70.0, 150000.0, True), (5, 40.0, 150400.0, True), (2, 40.0, 150800.0, True)),
    # a single fill-up: campervan default consumption, default daily distance
    "u05": ((1, 52.0, 60000.0, True),),
    # 500 km on 120 L = 24 L/100km; 250 km since
    "u07": ((4, 100.0, 70000.0, True), (1, 120.0, 70500.0, True)),
    # no odometer readings: stated 15 L/100km, default daily distance
    "u08": ((5, 80.0, None, True), (2, 60.0, None, True)),
}


def demo_user_ids() -> list[str]:
    """The ids of the demo users."""
    return [f"demo-{u[0]}" for u in _USERS]


def demo_rows(now: datetime) -> dict[str, list[Row]]:
    """Every demo row, by table, in an order that satisfies foreign keys. Pure and deterministic in ``now``."""
    now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    now = now.replace(microsecond=0)

    def ago(days: float = 0.0, hours: float = 0.0) -> str:
        return format_ts(now - timedelta(days=days, hours=hours))

    tables: dict[str, list[Row]] = {
        name: []
        for name in ("profiles", "vehicles", "fuel_log", "budgets", "expenses", "trips", "maintenance_records",
                     "calendar_events", "user_locations", "notification_preferences")
    }
    places: dict[str, tuple[float, float]] = {}
    prices: dict[str, float] = {}
    for key, name, email, tz, units, currency, vtype, place, price in _USERS:
        places[key], prices[key] = place, price
        tables["profiles"].append({
            "id": f"demo-{key}", "email": f"{email}@demo.pamd.invalid", "full_name": name, "status": "active",
            "timezone": tz, "preferred_units": units, "currency": currency, "vehicle_type": vtype,
            "max_driving_hours": 6.0 if key != "u02" else 8.0, "created_at": ago(days=90),
            "updated_at": ago(days=1),
        })
    for key, vname, vtype, fuel, capacity, consumption, odometer in _VEHICLES:
        tables["vehicles"].append({
            "id": f"demo-v{key[1:]}", "user_id": f"demo-{key}", "name": vname, "vehicle_type": vtype,
            "fuel_type": fuel, "fuel_capacity_l": capacity, "consumption_l_per_100km": consumption,
            "odometer_km": odometer, "is_primary": True, "created_at": ago(days=90), "updated_at": ago(days=1),
        })
    for key, fills in _FILLS.items():
        lat, lon = places[key]
        for index, (days, litres, odometer, full) in enumerate(fills, start=1):
            tables["fuel_log"].append({
                "id": f"demo-f{key[1:]}-{index:02d}", "user_id": f"demo-{key}", "vehicle_id": f"demo-v{key[1:]}",
                "logged_at": ago(days=days), "volume_l": litres, "total_cost": round(litres * prices[key], 2),
                "odometer_km": odometer, "is_full_tank": full, "lat": round(lat + index * 0.01, 4),
                "lon": round(lon - index * 0.01, 4), "created_at": ago(days=days),
            })
    users = {key: DemoUser(key=key, user_id=f"demo-{key}", timezone=tz, lat=place[0], lon=place[1],
                           vehicle_id=f"demo-v{key[1:]}" if any(v[0] == key for v in _VEHICLES) else None)
             for key, _name, _email, tz, *_rest, place, _price in _USERS}
    for extend in (demo_budget.add, demo_weather.add, demo_maintenance.add, demo_context.add):
        extend(tables, now, users)
    _add_preferences(tables)
    return tables


def _add_preferences(tables: dict[str, list[Row]]) -> None:
    tables["notification_preferences"] += [
        {"user_id": "demo-u08", "monitor": "*", "enabled": True, "quiet_start": "22:00", "quiet_end": "07:00",
         "max_per_day": 6},
        {"user_id": "demo-u05", "monitor": "weather", "enabled": False, "quiet_start": None, "quiet_end": None,
         "max_per_day": None},
    ]
