"""Demo trips for the weather monitor, and the scripted forecasts they are meant to be judged against.

The weather monitor's outcome depends on a real forecast, which no demo can fix. So this module also holds the
*scripted* daily forecast of each demo destination (:func:`demo_forecasts`), keyed by destination coordinates,
with dates relative to each trip's planned departure day. The test fake of Open-Meteo (``tests/fakes/openmeteo.py``)
serves exactly these forecasts, in Open-Meteo's JSON shape, for the destinations' 0.1° cells; days not scripted get
the destination's ``default`` (light showers: neither good nor severe). Against that fake, with the default
``[monitors.weather]`` settings and at any ``now``:

=========  ===========================  ============================================  ===========================
user       planned trip                 scripted forecast at the destination          weather outcome
=========  ===========================  ============================================  ===========================
demo-u01   Denver -> Moab, +3 d, +-2    planned day moderate rain; from +2 d on,      medium: leave 2 days later
                                        4 good days                                   (``weather_window``)
demo-u02   none                         -                                             none
demo-u03   Hilo -> Kona, in 30 days     -                                             none (beyond the horizon)
demo-u04   Rotorua -> Wanaka, +5 d, +-3 planned day thunderstorm, gusts 85 km/h;     high (``weather_severe``),
                                        +1 d heavy rain; from +2 d on, 3 good days    naming the better day +2 d
demo-u05   Annecy -> Chamonix, done     (completed trip)                              none
demo-u06   Munich -> Riva del Garda,    planned day starts 4 good days                none (planned day is good)
           +6 d, +-1
demo-u07   Nashville -> Gatlinburg,     planned day dry, then rain; 3 good days       low: leave 2 days earlier
           +8 d, +-2                    from -2 d                                     (``weather_window``)
demo-u08   Keswick -> Isle of Skye      no destination coordinates                    none (explained: no forecast)
=========  ===========================  ============================================  ===========================

("+3 d, +-2": departure 3 days after ``now`` (UTC date), 2 flexible days either side.) Against the real
Open-Meteo the same trips are evaluated with whatever the weather really is. demo-u05 has opted out of weather
alerts (``notification_preferences``); that is the pipeline's business, not the monitor's.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import NamedTuple

from pamd.store.demo_common import DemoUser, Row, day, row


class DemoDay(NamedTuple):
    """One scripted forecast day, in Open-Meteo's units (WMO code, °C, mm, %, km/h); ``None`` is a null."""

    code: int | None
    tmin_c: float | None
    tmax_c: float | None
    precipitation_mm: float | None
    precipitation_probability_pct: float | None
    wind_max_kmh: float | None
    gust_max_kmh: float | None


CLEAR = DemoDay(0, 9.0, 24.0, 0.0, 0.0, 14.0, 25.0)
SUNNY = DemoDay(1, 10.0, 23.0, 0.0, 5.0, 16.0, 28.0)
PARTLY_CLOUDY = DemoDay(2, 11.0, 21.0, 0.2, 15.0, 18.0, 32.0)
SHOWERS = DemoDay(80, 7.0, 16.0, 3.5, 60.0, 22.0, 40.0)
RAIN = DemoDay(63, 6.0, 13.0, 9.0, 80.0, 28.0, 45.0)
HEAVY_RAIN = DemoDay(65, 5.0, 11.0, 31.0, 95.0, 35.0, 60.0)
THUNDERSTORM = DemoDay(95, 8.0, 17.0, 22.0, 90.0, 45.0, 85.0)


class DemoForecast(NamedTuple):
    """The scripted forecast of one destination: ``days`` by local date, ``default`` for every other day."""

    lat: float
    lon: float
    timezone: str
    days: dict[date, DemoDay]
    default: DemoDay


class _Trip(NamedTuple):
    id_prefix: str
    key: str
    origin: str
    destination: str
    coords: tuple[float, float] | None
    start_in_days: int
    length_days: int
    flex_days: int
    status: str
    timezone: str
    forecast: dict[int, DemoDay]  # by day relative to the planned start
    route_km: float | None = None


_TRIPS: tuple[_Trip, ...] = (
    _Trip("t", "u01", "Denver, CO", "Moab, UT", (38.5733, -109.5498), 3, 7, 2, "planned", "America/Denver",
          {0: RAIN, 1: SHOWERS, 2: SUNNY, 3: CLEAR, 4: CLEAR, 5: PARTLY_CLOUDY}, 570.0),
    _Trip("tw", "u03", "Hilo, HI", "Kailua-Kona, HI", (19.6400, -155.9969), 30, 3, 1, "planned",
          "Pacific/Honolulu", {}),
    _Trip("t", "u04", "Rotorua", "Wanaka", (-44.7032, 169.1320), 5, 7, 3, "planned", "Pacific/Auckland",
          {0: THUNDERSTORM, 1: HEAVY_RAIN, 2: CLEAR, 3: SUNNY, 4: CLEAR}),
    _Trip("t", "u05", "Annecy", "Chamonix", (45.9237, 6.8694), -20, 5, 0, "completed", "Europe/Paris", {}),
    _Trip("tw", "u06", "Munich", "Riva del Garda", (45.8858, 10.8414), 6, 5, 1, "planned", "Europe/Rome",
          {-1: SHOWERS, 0: CLEAR, 1: SUNNY, 2: SUNNY, 3: PARTLY_CLOUDY}),
    _Trip("tw", "u07", "Nashville, TN", "Gatlinburg, TN", (35.7143, -83.5102), 8, 4, 2, "planned",
          "America/New_York", {-2: CLEAR, -1: SUNNY, 0: SUNNY, 1: RAIN, 2: SHOWERS}),
    _Trip("tw", "u08", "Keswick", "Isle of Skye", None, 4, 6, 1, "planned", "Europe/London", {}),
)


def add(tables: dict[str, list[Row]], now: datetime, users: dict[str, DemoUser]) -> None:
    """Append the weather monitor's demo rows (planned and completed trips) to ``tables``."""
    for trip in _TRIPS:
        lat, lon = trip.coords or (None, None)
        tables["trips"].append(row(
            trip.id_prefix, trip.key, origin=trip.origin, destination=trip.destination, dest_lat=lat,
            dest_lon=lon, start_date=day(now, trip.start_in_days),
            end_date=day(now, trip.start_in_days + trip.length_days), flex_days=trip.flex_days,
            status=trip.status, route_data={"distance_km": trip.route_km} if trip.route_km else None,
        ))


def demo_forecasts(now: datetime) -> list[DemoForecast]:
    """The scripted forecast of every demo destination with coordinates, for a store seeded at ``now``."""
    found = []
    for trip in _TRIPS:
        if trip.coords is None:
            continue
        start = date.fromisoformat(day(now, trip.start_in_days))
        days = {start + timedelta(days=offset): weather for offset, weather in trip.forecast.items()}
        found.append(DemoForecast(trip.coords[0], trip.coords[1], trip.timezone, days, SHOWERS))
    return found
