"""Demo budgets and expenses (:mod:`pamd.store.demo`)."""

from __future__ import annotations

from datetime import datetime

from pamd.store.demo_common import DemoUser, Row, day, row


def add(tables: dict[str, list[Row]], now: datetime, users: dict[str, DemoUser]) -> None:
    """Append the budget monitor's demo rows to ``tables``."""
    month_start = day(now, 0)[:8] + "01"
    tables["budgets"] += [
        row("b", "u01", category="fuel", amount=800.0, period="monthly", start_date=month_start),
        row("b", "u02", category="total", amount=3000.0, period="monthly", start_date=month_start),
        row("b", "u04", category="food", amount=250.0, period="weekly", start_date=day(now, -now.weekday())),
        row("b", "u08", category="campsites", amount=600.0, period="monthly", start_date=month_start),
    ]
    for n, (key, days, amount, category, text) in enumerate((
        ("u01", 3, 94.5, "fuel", "Diesel, Loveland"), ("u01", 2, 45.0, "campsites", "Cherry Creek SP"),
        ("u01", 1, 62.3, "food", "Groceries"), ("u02", 2, 82.0, "fuel", "Top-up, Gympie"),
        ("u02", 1, 310.0, "repairs", "Trailer bearing"), ("u04", 1, 96.4, "food", "Pak'nSave Rotorua"),
        ("u04", 0, 38.0, "campsites", "Holiday park"), ("u08", 1, 32.5, "campsites", "Castlerigg Farm"),
    ), start=1):
        tables["expenses"].append(row("e", key, n, amount=amount, category=category, description=text,
                                      date=users[key].local_date(now, -days)))
