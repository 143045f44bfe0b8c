"""Places from OpenStreetMap through the Overpass API: fuel stations by fuel type, and vehicle repair shops.

One :class:`OverpassPlaces` lives for one tick (``ctx.providers.places``). Queries are made per ~0.05° cell (about
5.5 km) around the cell's centre, with the radius widened by the cell's half-diagonal, so every user in the cell can
share the answer: results are then filtered and sorted by great-circle distance from each caller's own position.
Answers are cached per cell and query kind for the run, identical concurrent lookups share one HTTP request, at most
``max_concurrent`` requests run at once (overpass-api.de grants a client only a couple of slots), and after
``max_failures`` failed requests in a run the remaining lookups fail at once instead of piling onto a struggling
server.

OpenStreetMap tagging used (https://wiki.openstreetmap.org/wiki/Key:fuel and the shop=* pages):

* Fuel stations are ``amenity=fuel``. A fuel type is *confirmed* by a ``yes`` on one of its keys: petrol
  ``fuel:octane_<N>``, ``fuel:e5``, ``fuel:e10``, ``fuel:petrol``, ``fuel:gasoline``; diesel ``fuel:diesel``,
  ``fuel:GTL_diesel``, ``fuel:HGV_diesel`` (truck pumps), ``fuel:diesel:class2``; LPG ``fuel:lpg``; CNG
  ``fuel:cng``. Biodiesel (B100) and E85 are not counted: not every engine takes them.
* Most stations carry no fuel tags at all. For petrol and diesel such a station is returned with
  ``fuel_confirmed=False`` (it very likely sells them, but OpenStreetMap does not say so); a station that has fuel
  tags but none confirming the requested fuel is left out, and LPG/CNG are only ever returned when confirmed.
* Repair: ``shop=car_repair`` always; for RVs also ``shop=truck_repair`` (heavy vehicles: large motorhomes) and
  ``shop=caravan`` with ``service:vehicle:caravan_repair=yes`` (caravan/motorhome dealers that repair). Dealers
  without that tag mostly only sell, and ``amenity=vehicle_inspection`` stations inspect but do not service, so
  neither is included.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from typing import Any, Literal, Protocol

import anyio
import msgspec

from pamd import units
from pamd.geo import great_circle_km
from pamd.providers.cache import TTLCache
from pamd.providers.http import JsonHttp, ProviderError

FuelKind = Literal["petrol", "diesel", "lpg", "cng"]
Category = Literal["fuel", "car_repair", "truck_repair", "caravan_repair"]

CELL_DEGREES = 0.05

_CONFIRMING_KEYS: dict[str, str] = {
    "petrol": r"^fuel:(octane_[0-9]+|e5|e10|petrol|gasoline)$",
    "diesel": r"^fuel:(diesel|GTL_diesel|HGV_diesel|diesel:class2)$",
    "lpg": r"^fuel:lpg$",
    "cng": r"^fuel:cng$",
}
_CONFIRMING = {kind: re.compile(pattern) for kind, pattern in _CONFIRMING_KEYS.items()}
_UNTAGGED_OK = frozenset({"petrol", "diesel"})
# The server narrows "no fuel tags" down with the commonest keys; the exact check is done here (_untagged).
_COMMON_FUEL_KEYS = ("fuel:diesel", "fuel:octane_95", "fuel:octane_91", "fuel:octane_98", "fuel:e10", "fuel:lpg")
_NOT_A_FUEL_TYPE = ("fuel:discount", "fuel:price", "fuel:adblue")  # fuel:* keys that say nothing about fuels sold

_FUEL_ALIASES: dict[str, FuelKind] = {
    "petrol": "petrol", "gasoline": "petrol", "gas": "petrol", "unleaded": "petrol", "benzin": "petrol",
    "essence": "petrol", "e5": "petrol", "e10": "petrol",
    "diesel": "diesel", "gasoil": "diesel", "hvo": "diesel",
    "lpg": "lpg", "autogas": "lpg", "propane": "lpg",
    "cng": "cng",
}

_UNNAMED = {"fuel": "unnamed station", "car_repair": "unnamed garage", "truck_repair": "unnamed truck garage",
            "caravan_repair": "unnamed RV dealer"}


class UnsupportedFuelError(ValueError):
    """The vehicle's fuel is not sold at ``amenity=fuel`` stations as far as this provider knows (electric...)."""


def fuel_kind(fuel_type: str | None) -> FuelKind | None:
    """Normalise a ``vehicles.fuel_type`` value: ``"Gasoline"`` -> ``"petrol"``; ``None`` (unknown) -> ``None``.

    Raises :class:`UnsupportedFuelError` for fuels this provider cannot look up (``"electric"``, ``"hydrogen"``...).
    """
    if fuel_type is None or not fuel_type.strip():
        return None
    key = fuel_type.strip().lower().replace("-", "_").replace(" ", "_")
    if key not in _FUEL_ALIASES:
        raise UnsupportedFuelError(f"no fuel station lookup for fuel type {fuel_type!r}")
    return _FUEL_ALIASES[key]


class Place(msgspec.Struct, frozen=True, kw_only=True):
    """A mapped place near the caller: a fuel station or a repair shop.

    ``name`` is the OSM ``name`` (else ``brand``, else e.g. "unnamed station"; ``named`` says which).
    ``distance_km`` is the great-circle distance from the caller's position, not a road distance.
    ``fuel_confirmed`` (fuel stations): ``True`` when the requested fuel is tagged, ``False`` when the station has
    no fuel tags at all, ``None`` when no fuel type was asked for.
    """

    name: str
    named: bool
    category: Category
    lat: float
    lon: float
    distance_km: float
    osm_type: str
    osm_id: int
    brand: str | None = None
    opening_hours: str | None = None
    fuel_confirmed: bool | None = None

    @property
    def url(self) -> str:
        """The element's page on openstreetmap.org."""
        return f"https://www.openstreetmap.org/{self.osm_type}/{self.osm_id}"

    def fact(self) -> dict[str, Any]:
        """A JSON-friendly dict for alert facts (with ``url``, distance rounded to metres)."""
        out: dict[str, Any] = msgspec.to_builtins(self)
        out["distance_km"] = round(self.distance_km, 3)
        out["url"] = self.url
        return out


class PlacesProvider(Protocol):
    """What monitors use from ``ctx.providers.places`` (:class:`OverpassPlaces` is the OpenStreetMap backend)."""

    async def fuel_stations(
        self, lat: float, lon: float, fuel_type: str | None, radius_km: float = 25, limit: int = 3
    ) -> list[Place]:
        """Up to ``limit`` stations selling ``fuel_type`` within ``radius_km``, nearest first."""
        ...

    async def repair_shops(
        self, lat: float, lon: float, radius_km: float = 40, limit: int = 3, rv: bool = True
    ) -> list[Place]:
        """Up to ``limit`` repair shops within ``radius_km`` (RV-capable ones too when ``rv``), nearest first."""
        ...


class _Entry:
    """One cached (or in-flight) Overpass answer."""

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.elements: list[dict[str, Any]] = []
        self.error: ProviderError | None = None


class OverpassPlaces:
    """Fuel stations and repair shops from the Overpass API at ``client.base_url`` (``POST /interpreter``).

    One instance per tick: its own cache lasts one run; ``shared`` (optional) keeps successful answers across
    runs. Raises :class:`ProviderError` when Overpass cannot answer
    (unreachable, timed out, 429/504 after retries, a ``runtime error`` remark, a malformed reply).
    """

    def __init__(
        self,
        client: JsonHttp,
        *,
        cell_degrees: float = CELL_DEGREES,
        max_concurrent: int = 2,
        max_failures: int = 3,
        shared: TTLCache[list[dict[str, Any]]] | None = None,
    ) -> None:
        self.client = client
        self.shared = shared  # answers kept across runs (``[providers.places] cache_ttl``)
        self.cell_degrees = cell_degrees
        self.max_failures = max_failures
        self.requests = 0  # HTTP lookups started by this instance (each may be retried by the client)
        self.failures = 0
        self._limiter = anyio.CapacityLimiter(max(1, max_concurrent))
        self._cache: dict[tuple[Any, ...], _Entry] = {}
        self._parsed: dict[tuple[Any, ...], tuple[list[dict[str, Any]], list[Place]]] = {}
        self._answers: dict[tuple[Any, ...], list[Place]] = {}  # by exact position: travellers often share one

    @property
    def provider(self) -> str:
        return self.client.provider

    # -- public API -----------------------------------------------------------------------------------------

    async def fuel_stations(
        self, lat: float, lon: float, fuel_type: str | None, radius_km: float = 25, limit: int = 3
    ) -> list[Place]:
        """Up to ``limit`` ``amenity=fuel`` stations within ``radius_km`` selling ``fuel_type`` (see the module
        docstring for the tags), nearest first. ``fuel_type=None`` means any station.

        Raises :class:`UnsupportedFuelError` for fuels without stations here (electric...), ProviderError on failure.
        """
        kind = fuel_kind(fuel_type)
        memo = ("fuel", kind, radius_km, limit, lat, lon)
        if (answer := self._answers.get(memo)) is not None:
            return answer

        def stations(elements: list[dict[str, Any]]) -> list[Place]:
            found: list[Place] = []
            for element, tags, (plat, plon) in _located(elements):
                if tags.get("amenity") != "fuel":
                    continue
                confirmed: bool | None = None
                if kind is not None:
                    if any(_CONFIRMING[kind].match(k) and v == "yes" for k, v in tags.items()):
                        confirmed = True
                    elif kind in _UNTAGGED_OK and _untagged(tags):
                        confirmed = False
                    else:
                        continue
                found.append(self._place(element, tags, plat, plon, "fuel", confirmed))
            return found

        candidates = await self._candidates(("fuel", kind or "any", radius_km), lat, lon, radius_km,
                                            self._fuel_statements(kind), stations)
        answer = self._answers[memo] = _nearest(candidates, lat, lon, radius_km, limit)
        return answer

    async def repair_shops(
        self, lat: float, lon: float, radius_km: float = 40, limit: int = 3, rv: bool = True
    ) -> list[Place]:
        """Up to ``limit`` vehicle repair shops within ``radius_km``, nearest first: ``shop=car_repair``, and for
        RVs (``rv``) also truck garages and caravan dealers tagged as repairing caravans."""
        memo = ("repair", rv, radius_km, limit, lat, lon)
        if (answer := self._answers.get(memo)) is not None:
            return answer
        statements = ['["shop"="car_repair"]']
        if rv:
            statements += ['["shop"="truck_repair"]', '["shop"="caravan"]["service:vehicle:caravan_repair"="yes"]']

        def shops(elements: list[dict[str, Any]]) -> list[Place]:
            found: list[Place] = []
            for element, tags, (plat, plon) in _located(elements):
                category = _repair_category(tags, rv)
                if category is not None:
                    found.append(self._place(element, tags, plat, plon, category, None))
            return found

        candidates = await self._candidates(("repair", rv, radius_km), lat, lon, radius_km, statements, shops)
        answer = self._answers[memo] = _nearest(candidates, lat, lon, radius_km, limit)
        return answer

    # -- queries --------------------------------------------------------------------------------------------

    @staticmethod
    def _fuel_statements(kind: FuelKind | None) -> list[str]:
        if kind is None:
            return ['["amenity"="fuel"]']
        statements = [f'["amenity"="fuel"][~"{_CONFIRMING_KEYS[kind]}"~"^yes$"]']
        if kind in _UNTAGGED_OK:
            statements.append('["amenity"="fuel"]' + "".join(f'[!"{key}"]' for key in _COMMON_FUEL_KEYS))
        return statements

    def query(self, lat: float, lon: float, radius_m: int, statements: Iterable[str]) -> str:
        """The Overpass QL text: a union of ``nwr(around:...)`` statements, with centres for ways/relations."""
        timeout = max(5, min(60, int(self.client.timeout * 0.8)))
        around = f"nwr(around:{radius_m},{lat:.5f},{lon:.5f})"
        body = "".join(f"\n  {around}{filters};" for filters in statements)
        return f"[out:json][timeout:{timeout}];\n({body}\n);\nout center tags;"

    def _cell(self, lat: float, lon: float) -> tuple[int, int, float, float]:
        i, j = round(lat / self.cell_degrees), round(lon / self.cell_degrees)
        return i, j, max(-90.0, min(90.0, i * self.cell_degrees)), ((j * self.cell_degrees + 180) % 360) - 180

    async def _candidates(
        self, kind: tuple[Any, ...], lat: float, lon: float, radius_km: float, statements: list[str],
        build: Callable[[list[dict[str, Any]]], list[Place]],
    ) -> list[Place]:
        """The cell's places for query ``kind`` (``distance_km`` 0), parsed once per run by ``build``."""
        elements = await self._elements(kind, lat, lon, radius_km, statements)
        key = (*kind, *self._cell(lat, lon)[:2])
        parsed = self._parsed.get(key)
        if parsed is None or parsed[0] is not elements:
            parsed = self._parsed[key] = (elements, build(elements))
        return parsed[1]

    async def _elements(
        self, kind: tuple[Any, ...], lat: float, lon: float, radius_km: float, statements: list[str]
    ) -> list[dict[str, Any]]:
        """The raw elements for the query ``kind`` in the cell of (lat, lon), fetched at most once per run."""
        if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
            raise ValueError(f"not a position: {lat!r}, {lon!r}")
        i, j, clat, clon = self._cell(lat, lon)
        half = self.cell_degrees / 2
        margin = great_circle_km(clat, clon, min(90.0, clat + half), clon + half)
        key = (*kind, i, j)
        entry = self._cache.get(key)
        if entry is None and self.shared is not None and (kept := self.shared.get(key)) is not None:
            return kept
        if entry is None:
            entry = self._cache[key] = _Entry()
            query = self.query(clat, clon, math.ceil((radius_km + margin) * 1000), statements)
            try:
                entry.elements = await self._fetch(query)
                if self.shared is not None:
                    self.shared.put(key, entry.elements)
            except ProviderError as exc:
                entry.error = exc
            except BaseException:  # cancelled: waiters get an error, a later lookup tries again
                del self._cache[key]
                entry.error = ProviderError(self.provider, "lookup cancelled")
                raise
            finally:
                entry.done.set()
        else:
            await entry.done.wait()
        if entry.error is not None:
            raise ProviderError(entry.error.provider, entry.error.problem)
        return entry.elements

    async def _fetch(self, query: str) -> list[dict[str, Any]]:
        if self.failures >= self.max_failures:
            raise ProviderError(self.provider, f"not queried: {self.failures} requests already failed in this run")
        async with self._limiter:
            self.requests += 1
            try:
                return _parse(self.provider, await self.client.post_form("/interpreter", {"data": query}))
            except ProviderError:
                self.failures += 1
                raise

    @staticmethod
    def _place(element: dict[str, Any], tags: dict[str, str], plat: float, plon: float, category: Category,
               confirmed: bool | None) -> Place:
        name = tags.get("name") or tags.get("brand") or _UNNAMED[category]
        return Place(
            name=name, named=bool(tags.get("name")), category=category, lat=plat, lon=plon,
            distance_km=0.0, osm_type=str(element["type"]),
            osm_id=int(element["id"]), brand=tags.get("brand") or None,
            opening_hours=tags.get("opening_hours") or None, fuel_confirmed=confirmed,
        )


def _parse(provider: str, body: object) -> list[dict[str, Any]]:
    if not isinstance(body, dict) or not isinstance(body.get("elements"), list):
        raise ProviderError(provider, "reply has no elements list")
    remark = body.get("remark")
    if isinstance(remark, str) and "error" in remark.lower():
        # Overpass reports timeouts and out-of-memory inside an HTTP 200; the elements are then incomplete.
        raise ProviderError(provider, f"Overpass {remark.strip()}")
    return [e for e in body["elements"] if isinstance(e, dict)]


def _located(elements: list[dict[str, Any]]) -> Iterable[tuple[dict[str, Any], dict[str, str], tuple[float, float]]]:
    """Elements with a usable position (nodes' lat/lon, ways' and relations' center), an id and string tags;
    each element once."""
    seen: set[tuple[str, int]] = set()
    for element in elements:
        if element.get("type") not in ("node", "way", "relation") or not isinstance(element.get("id"), int):
            continue
        if (element["type"], element["id"]) in seen:
            continue
        seen.add((element["type"], element["id"]))
        where = element if element["type"] == "node" else element.get("center")
        if not isinstance(where, dict):
            continue
        plat, plon = where.get("lat"), where.get("lon")
        if not (isinstance(plat, int | float) and isinstance(plon, int | float)):
            continue
        if not (-90 <= plat <= 90 and -180 <= plon <= 180):
            continue
        raw = element.get("tags")
        tags = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
        yield element, tags, (float(plat), float(plon))


def _untagged(tags: dict[str, str]) -> bool:
    """True when a station says nothing about the fuels it sells."""
    return not any(k.startswith("fuel:") and not k.startswith(_NOT_A_FUEL_TYPE) for k in tags)


def _repair_category(tags: dict[str, str], rv: bool) -> Category | None:
    shop = tags.get("shop")
    if shop == "car_repair":
        return "car_repair"
    if rv and shop == "truck_repair":
        return "truck_repair"
    if rv and shop == "caravan" and tags.get("service:vehicle:caravan_repair") == "yes":
        return "caravan_repair"
    return None


def _nearest(places: list[Place], lat: float, lon: float, radius_km: float, limit: int) -> list[Place]:
    """The ``limit`` nearest of ``places`` within ``radius_km`` of (lat, lon), with their ``distance_km``."""
    measured = (msgspec.structs.replace(p, distance_km=great_circle_km(lat, lon, p.lat, p.lon)) for p in places)
    within = [p for p in measured if p.distance_km <= radius_km]
    within.sort(key=lambda p: (p.distance_km, p.osm_type, p.osm_id))
    return within[: max(0, limit)]


# -- text helpers for monitors ------------------------------------------------------------------------------


def describe_places(places: Iterable[dict[str, Any]], imperial: bool, unconfirmed: str = "") -> str:
    """``"Shell (0.4 km), Mike's Garage (2.1 km)"`` from :meth:`Place.fact` dicts; a place whose
    ``fuel_confirmed`` is ``False`` gets ``unconfirmed`` appended inside its parentheses."""
    parts = []
    for place in places:
        extra = f", {unconfirmed}" if unconfirmed and place.get("fuel_confirmed") is False else ""
        parts.append(f"{place['name']} ({units.short_distance(place['distance_km'], imperial)}{extra})")
    return ", ".join(parts)
