"""Demo maintenance records (:mod:`pamd.store.demo`). Due dates are the users' local dates relative to ``now``.

Expected maintenance monitor outcomes with the default config (14 days / 800 km medium, 3 days / 150 km high,
overdue urgent; cost table in USD):

=========  =======================================================================  ============================
user       records                                                                  outcome
=========  =======================================================================  ============================
demo-u01   oil change due in 10 days (or at 45,000 km; odometer 43,180 km); two      medium (by date); cost: median
           earlier oil changes (resolved by the later ones), $380 / $395 / $420      of 3 past costs, $395
demo-u02   tyre rotation due at 90,196 km, odometer 90,096 km                       high (100 km to go); cost:
                                                                                    last time's A$120
demo-u03   no records                                                               none
demo-u04   oil change due in 150 days or at 158,000 km (odometer 151,070 km)        none (not due yet)
demo-u05   cambelt due at 60,500 km (odometer 60,000 km); no cost, EUR              medium (500 km); no cost
demo-u06   no vehicle                                                               none
demo-u07   brake inspection was due 5 days ago, no cost logged                       urgent; table cost $120
           (a tyre rotation was done 20 days ago, next due in 200 days)
demo-u08   habitation check due in 60 days                                          none
=========  =======================================================================  ============================

Every demo user but demo-u06 has recent ``user_locations`` rows (:mod:`pamd.store.demo_context`), so nearby
repair shops are searched around them.
"""

from __future__ import annotations

from datetime import datetime

from pamd.store.demo_common import DemoUser, Row, day, row


def add(tables: dict[str, list[Row]], now: datetime, users: dict[str, DemoUser]) -> None:
    """Append the maintenance monitor's demo rows to ``tables``."""

    def due(key: str, days: float) -> str:
        return users[key].local_date(now, days)

    tables["maintenance_records"] += [
        row("m", "u01", 1, vehicle_id="demo-v01", task="Oil change", date=day(now, -530), odometer_km=21000.0,
            cost=380.0, next_due_date=day(now, -350), next_due_odometer_km=29000.0),
        row("m", "u01", 2, vehicle_id="demo-v01", task="Oil & filter", date=day(now, -350), odometer_km=29000.0,
            cost=395.0, next_due_date=day(now, -170), next_due_odometer_km=37000.0),
        row("m", "u01", vehicle_id="demo-v01", task="Oil and filter change", date=day(now, -170),
            odometer_km=37000.0, cost=420.0, next_due_date=due("u01", 10), next_due_odometer_km=45000.0),
        row("m", "u02", vehicle_id="demo-v02", task="Tyre rotation", date=day(now, -120), odometer_km=80196.0,
            cost=120.0, next_due_date=None, next_due_odometer_km=90196.0),
        row("m", "u04", vehicle_id="demo-v04", task="Oil change", date=day(now, -30), odometer_km=148000.0,
            cost=180.0, next_due_date=due("u04", 150), next_due_odometer_km=158000.0),
        row("m", "u05", vehicle_id="demo-v05", task="Cambelt replacement", date=day(now, -1400),
            odometer_km=0.0, cost=None, next_due_date=None, next_due_odometer_km=60500.0),
        row("m", "u07", vehicle_id="demo-v07", task="Brake inspection", date=day(now, -365), odometer_km=55000.0,
            cost=None, next_due_date=due("u07", -5), next_due_odometer_km=None),
        row("m", "u07", 2, vehicle_id="demo-v07", task="Tire rotation", date=day(now, -20), odometer_km=70000.0,
            cost=90.0, next_due_date=due("u07", 200), next_due_odometer_km=None),
        row("m", "u08", vehicle_id="demo-v08", task="Habitation check", date=day(now, -305), odometer_km=None,
            cost=250.0, next_due_date=due("u08", 60), next_due_odometer_km=None),
    ]
