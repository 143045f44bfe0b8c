"""Formatting SI values for people: the user's units (metric or imperial) and currency.

Stores hold SI units and UTC only; monitors convert at the edge, when they write an alert's text, with these
helpers. ``imperial`` means US customary units (US gallons, miles, °F, mph).
"""

from __future__ import annotations

import functools

L_PER_GALLON = 3.785411784  # US gallon
KM_PER_MILE = 1.609344
CURRENCY_SYMBOLS = {"USD": "$", "AUD": "A$", "NZD": "NZ$", "CAD": "C$", "EUR": "€", "GBP": "£", "JPY": "¥"}
_ZERO_DECIMAL_CURRENCIES = frozenset({"JPY", "KRW", "ISK", "CLP", "VND"})


def is_imperial(units: str) -> bool:
    """True for a profile's ``preferred_units == "imperial"`` (any case)."""
    return str(units).lower() == "imperial"


def volume(litres: float, imperial: bool) -> str:
    """``"42 L"`` or ``"11.1 gal"``."""
    return f"{litres / L_PER_GALLON:,.1f} gal" if imperial else f"{litres:,.0f} L"


def distance(km: float, imperial: bool) -> str:
    """``"1,080 km"`` or ``"671 mi"``."""
    return f"{km / KM_PER_MILE:,.0f} mi" if imperial else f"{km:,.0f} km"


def short_distance(km: float, imperial: bool) -> str:
    """A nearby distance, with a decimal under 10: ``"0.4 km"``, ``"12 km"``, ``"2.3 mi"``."""
    value, unit = (km / KM_PER_MILE, "mi") if imperial else (km, "km")
    return f"{value:.1f} {unit}" if value < 10 else f"{value:,.0f} {unit}"


def speed(kmh: float, imperial: bool) -> str:
    """``"50 km/h"`` or ``"31 mph"``."""
    return f"{kmh / KM_PER_MILE:,.0f} mph" if imperial else f"{kmh:,.0f} km/h"


def temperature(celsius: float, imperial: bool) -> str:
    """``"21°C"`` or ``"70°F"``."""
    return f"{celsius * 9 / 5 + 32:.0f}°F" if imperial else f"{celsius:.0f}°C"


def precipitation(mm: float, imperial: bool) -> str:
    """``"12 mm"`` or ``"0.5 in"``."""
    return f"{mm / 25.4:.1f} in" if imperial else f"{mm:.0f} mm"


def money(amount: float, currency: str) -> str:
    """``"$1,234.50"``, ``"€12.00"``, ``"¥1,200"`` or ``"1,234.50 CHF"`` for currencies without a symbol here."""
    prefix, spec, suffix = _money_format(currency)
    if amount < 0:
        return f"-{prefix}{-amount:{spec}}{suffix}"
    return f"{prefix}{amount:{spec}}{suffix}"


@functools.lru_cache(maxsize=256)
def _money_format(currency: str) -> tuple[str, str, str]:
    """``(symbol, format spec, " CODE")`` of a currency: an alert's text formats several amounts of one currency."""
    code = currency.upper()
    spec = ",.0f" if code in _ZERO_DECIMAL_CURRENCIES else ",.2f"
    symbol = CURRENCY_SYMBOLS.get(code)
    return (symbol, spec, "") if symbol else ("", spec, f" {code}")


def days_ago(days: float) -> str:
    """``"today"``, ``"yesterday"`` or ``"5 days ago"``."""
    return "today" if days < 1 else "yesterday" if days < 2 else f"{days:.0f} days ago"


def plural(count: int, noun: str, suffix: str = "s") -> str:
    """``"1 day"``, ``"3 days"``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}{suffix}"
