"""The Overpass places provider against a fake Overpass on 127.0.0.1, through the real HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import msgspec
import pytest

from pamd.config import PlacesProviderSection, ProvidersSection
from pamd.geo import great_circle_km
from pamd.providers import ProviderError, ProviderHub
from pamd.providers.http import JsonHttp
from pamd.providers.places import (
    OverpassPlaces,
    UnsupportedFuelError,
    describe_places,
    fuel_kind,
)
from pamd.units import short_distance
from tests.fakes.overpass import FakeOverpass, node, offset, serve_overpass, way

LAT, LON = 45.8992, 6.1294  # Annecy

DIESEL = {"amenity": "fuel", "fuel:diesel": "yes"}
PETROL = {"amenity": "fuel", "fuel:octane_95": "yes", "fuel:diesel": "no"}
UNTAGGED = {"amenity": "fuel"}


def at(north_km: float = 0.0, east_km: float = 0.0) -> tuple[float, float]:
    return offset(LAT, LON, north_km, east_km)


ELEMENTS = [
    node(1, *at(3), DIESEL, name="Total Energies", brand="TotalEnergies", opening_hours="24/7"),
    node(2, *at(0, 1), PETROL, name="Esso Express"),
    way(3, *at(-2), {"amenity": "fuel", "fuel:HGV_diesel": "yes", "fuel:octane_98": "yes"}, name="Relais Poids Lourds"),
    node(4, *at(0.5), UNTAGGED),
    node(5, *at(1, 1), {"amenity": "fuel", "fuel:lpg": "yes", "fuel:octane_95": "yes"}, name="GPL Annecy"),
    node(6, *at(24), DIESEL, name="Far but inside"),
    node(7, *at(27), DIESEL, name="Outside the radius"),
    node(8, *at(0.2), {"amenity": "fuel", "fuel:cng": "yes", "fuel:discount": "club"}, name="GNV"),
    node(9, *at(0.1), {"shop": "car_repair"}, name="Garage du Lac"),
    node(10, *at(4), {"shop": "truck_repair"}, name="PL Services"),
    way(11, *at(6), {"shop": "caravan", "service:vehicle:caravan_repair": "yes"}, name="Camping-Car Service"),
    node(12, *at(1.5), {"shop": "caravan"}, name="Caravan sales only"),
    node(13, *at(0.3), {"amenity": "vehicle_inspection"}, name="Controle Technique"),
]


@pytest.fixture(scope="module")
def overpass() -> Iterator[FakeOverpass]:
    with serve_overpass(ELEMENTS) as server:  # one server: stopping one takes half a second
        yield server


@pytest.fixture
def fake(overpass: FakeOverpass) -> FakeOverpass:
    overpass.reset()
    return overpass


@pytest.fixture
async def client(fake: FakeOverpass) -> AsyncIterator[JsonHttp]:
    http = JsonHttp("places", fake.url, timeout=2.0, retries=2, retry_base_seconds=0.01)
    yield http
    await http.aclose()


def names(places: list[Any]) -> list[str]:
    return [p.name for p in places]


# -- results ------------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_diesel_stations_sorted_limited_with_details(client: JsonHttp, fake: FakeOverpass) -> None:
    places = OverpassPlaces(client)
    found = await places.fuel_stations(LAT, LON, "diesel", radius_km=25, limit=3)
    assert names(found) == ["unnamed station", "Relais Poids Lourds", "Total Energies"]
    untagged, hgv, total = found
    assert untagged.fuel_confirmed is False and not untagged.named and untagged.osm_type == "node"
    assert hgv.osm_type == "way" and hgv.osm_id == 3 and hgv.fuel_confirmed is True  # centre of a way
    assert hgv.distance_km == pytest.approx(2.0, abs=0.01)
    assert total.brand == "TotalEnergies" and total.opening_hours == "24/7" and total.named
    assert total.distance_km == pytest.approx(3.0, abs=0.01)
    assert [p.distance_km for p in found] == sorted(p.distance_km for p in found)
    everything = await places.fuel_stations(LAT, LON, "diesel", radius_km=25, limit=10)
    assert names(everything)[3:] == ["Far but inside"]  # 27 km away is outside the 25 km radius
    assert len(fake.requests) == 1  # the second call was answered from the cache


@pytest.mark.parametrize(
    ("fuel", "expected"),
    [
        ("diesel", ["unnamed station", "Relais Poids Lourds", "Total Energies", "Far but inside"]),
        ("Gasoline", ["unnamed station", "Esso Express", "GPL Annecy", "Relais Poids Lourds"]),
        ("LPG", ["GPL Annecy"]),  # never an unconfirmed station for LPG
        ("cng", ["GNV"]),
        (None, ["GNV", "unnamed station", "Esso Express", "GPL Annecy", "Relais Poids Lourds",
                "Total Energies", "Far but inside"]),
    ],
)
@pytest.mark.anyio
async def test_fuel_type_filtering(client: JsonHttp, fuel: str | None, expected: list[str]) -> None:
    found = await OverpassPlaces(client).fuel_stations(LAT, LON, fuel, radius_km=25, limit=10)
    assert names(found) == expected
    if fuel is None:
        assert {p.fuel_confirmed for p in found} == {None}
    else:
        assert all((p.fuel_confirmed is False) == (p.name == "unnamed station") for p in found)


@pytest.mark.anyio
async def test_query_is_real_overpass_ql(client: JsonHttp, fake: FakeOverpass) -> None:
    await OverpassPlaces(client).fuel_stations(LAT, LON, "petrol")
    request = fake.requests[0]
    assert request.method == "POST" and request.path == "/interpreter"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    query = fake.queries()[0]
    assert query.startswith("[out:json][timeout:5];") and query.endswith("out center tags;")
    assert "nwr(around:" in query
    assert '["amenity"="fuel"][~"^fuel:(octane_[0-9]+|e5|e10|petrol|gasoline)$"~"^yes$"]' in query
    assert '[!"fuel:diesel"]' in query


@pytest.mark.anyio
async def test_repair_shops(client: JsonHttp) -> None:
    places = OverpassPlaces(client)
    rv = await places.repair_shops(LAT, LON, radius_km=40, limit=5, rv=True)
    assert [(p.name, p.category) for p in rv] == [
        ("Garage du Lac", "car_repair"), ("PL Services", "truck_repair"), ("Camping-Car Service", "caravan_repair")]
    car = await places.repair_shops(LAT, LON, radius_km=40, limit=5, rv=False)
    assert names(car) == ["Garage du Lac"]
    assert names(await places.repair_shops(LAT, LON, radius_km=5, limit=1)) == ["Garage du Lac"]


@pytest.mark.anyio
async def test_nothing_nearby_is_an_empty_list(client: JsonHttp) -> None:
    assert await OverpassPlaces(client).fuel_stations(-27.47, 153.02, "diesel") == []


@pytest.mark.anyio
async def test_tags_that_name_no_fuel_leave_a_station_untagged(client: JsonHttp, fake: FakeOverpass) -> None:
    fake.elements = [node(50, *at(1), {"amenity": "fuel", "fuel:adblue": "yes", "fuel:discount": "club"}),
                     node(51, *at(2), {"amenity": "fuel", "fuel:diesel": "no"}),
                     node(52, *at(3), {"amenity": "fuel", "fuel:biodiesel": "yes"})]
    found = await OverpassPlaces(client).fuel_stations(LAT, LON, "diesel")
    assert [(p.osm_id, p.fuel_confirmed) for p in found] == [(50, False)]


@pytest.mark.anyio
async def test_malformed_elements_are_ignored(client: JsonHttp, fake: FakeOverpass) -> None:
    elements = [
        {"type": "way", "id": 20, "tags": DIESEL},  # no centre
        {"type": "node", "id": "21", "lat": LAT, "lon": LON, "tags": DIESEL},  # id not a number
        {"type": "node", "id": 22, "lat": 91.0, "lon": LON, "tags": DIESEL},
        {"type": "area", "id": 24, "lat": LAT, "lon": LON, "tags": DIESEL},
        "junk",
        node(23, *at(1), DIESEL),
        node(23, *at(1), DIESEL),  # twice
    ]
    fake.server.fail_next(1, 200, {"version": 0.6, "generator": "Overpass API", "elements": elements})
    assert [p.osm_id for p in await OverpassPlaces(client).fuel_stations(LAT, LON, "diesel")] == [23]


def test_fuel_kinds_and_helpers() -> None:
    assert [fuel_kind(f) for f in ("Diesel", " petrol ", "gasoline", "Autogas", "cng", None, "")] == [
        "diesel", "petrol", "petrol", "lpg", "cng", None, None]
    with pytest.raises(UnsupportedFuelError, match="electric"):
        fuel_kind("electric")
    assert great_circle_km(LAT, LON, *at(10)) == pytest.approx(10.0, rel=1e-3)
    assert short_distance(0.42, False) == "0.4 km" and short_distance(16.2, True) == "10 mi"
    facts = [{"name": "A", "distance_km": 1.0, "fuel_confirmed": False}, {"name": "B", "distance_km": 12.3}]
    assert describe_places(facts, False, "diesel unconfirmed") == "A (1.0 km, diesel unconfirmed), B (12 km)"


@pytest.mark.anyio
async def test_place_facts_are_json(client: JsonHttp) -> None:
    place = (await OverpassPlaces(client).fuel_stations(LAT, LON, "diesel"))[1]
    fact = place.fact()
    assert fact["url"] == "https://www.openstreetmap.org/way/3" and fact["osm_id"] == 3
    msgspec.json.encode(fact)


# -- caching and coalescing ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_cache_per_cell_and_kind(client: JsonHttp, fake: FakeOverpass) -> None:
    places = OverpassPlaces(client)
    a = await places.fuel_stations(LAT, LON, "diesel")
    b = await places.fuel_stations(*at(0.5, 0.5), "diesel")  # same 0.05° cell: no new request
    assert len(fake.requests) == 1
    assert [p.osm_id for p in a] == [4, 3, 1] and b[0].distance_km != a[0].distance_km  # from each own position
    await places.fuel_stations(LAT, LON, "petrol")  # another kind
    await places.fuel_stations(*at(10), "diesel")  # another cell
    await places.repair_shops(LAT, LON)
    assert len(fake.requests) == 4
    assert places.requests == 4
    fresh = OverpassPlaces(client)  # a new tick starts with an empty cache
    await fresh.fuel_stations(LAT, LON, "diesel")
    assert len(fake.requests) == 5


@pytest.mark.anyio
async def test_cell_sharing_does_not_lose_stations_at_the_edge(client: JsonHttp, fake: FakeOverpass) -> None:
    # Two users at opposite corners of one cell; a station 24.5 km beyond each is still found for each.
    corner_a = (45.875 + 1e-6, 6.125 + 1e-6)
    corner_b = (45.925 - 1e-6, 6.175 - 1e-6)
    fake.elements = [node(30, *offset(*corner_a, -24.5), DIESEL), node(31, *offset(*corner_b, 24.5), DIESEL)]
    places = OverpassPlaces(client)
    assert [p.osm_id for p in await places.fuel_stations(*corner_a, "diesel", limit=1)] == [30]
    assert [p.osm_id for p in await places.fuel_stations(*corner_b, "diesel", limit=1)] == [31]
    assert len(fake.requests) == 1


@pytest.mark.anyio
async def test_concurrent_identical_lookups_share_one_request(client: JsonHttp, fake: FakeOverpass) -> None:
    fake.server.delay = 0.2
    places = OverpassPlaces(client)
    results: list[list[Any]] = []

    async def lookup(i: int) -> None:
        results.append(await places.fuel_stations(*at(i * 0.1), "diesel"))

    async with anyio.create_task_group() as tg:
        for i in range(10):
            tg.start_soon(lookup, i)
    assert len(fake.requests) == 1 and len(results) == 10 and all(results)


@pytest.mark.anyio
async def test_cancelled_lookup_lets_the_next_one_retry(client: JsonHttp, fake: FakeOverpass) -> None:
    fake.server.delay = 0.3
    places = OverpassPlaces(client)
    with anyio.move_on_after(0.05):
        await places.fuel_stations(LAT, LON, "diesel")
    fake.server.delay = 0.0
    assert len(await places.fuel_stations(LAT, LON, "diesel")) == 3
    assert places.failures == 0


# -- failures -----------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_rate_limit_and_gateway_timeout_are_retried(client: JsonHttp, fake: FakeOverpass) -> None:
    fake.rate_limit(1)
    fake.gateway_timeout(1)
    found = await OverpassPlaces(client).fuel_stations(LAT, LON, "diesel")
    assert len(found) == 3 and len(fake.requests) == 3


@pytest.mark.anyio
async def test_persistent_failure_raises_and_stops_querying(client: JsonHttp, fake: FakeOverpass) -> None:
    fake.rate_limit(100)
    places = OverpassPlaces(client, max_failures=2)
    with pytest.raises(ProviderError, match="HTTP 429") as info:
        await places.fuel_stations(LAT, LON, "diesel")
    assert info.value.provider == "places" and "after 3 attempts" in str(info.value)
    assert len(fake.requests) == 3
    with pytest.raises(ProviderError, match="HTTP 429"):  # the failure is cached for the cell
        await places.fuel_stations(LAT, LON, "diesel")
    with pytest.raises(ProviderError, match="HTTP 429"):
        await places.repair_shops(LAT, LON)
    assert len(fake.requests) == 6
    with pytest.raises(ProviderError, match="2 requests already failed"):  # the breaker is open
        await places.fuel_stations(*at(50), "petrol")
    assert len(fake.requests) == 6


@pytest.mark.anyio
async def test_runtime_error_remark_is_a_failure(client: JsonHttp, fake: FakeOverpass) -> None:
    fake.runtime_error(1, partial=2)
    with pytest.raises(ProviderError, match="runtime error: Query timed out"):
        await OverpassPlaces(client).fuel_stations(LAT, LON, "diesel")
    assert len(fake.requests) == 1
    assert len(await OverpassPlaces(client).fuel_stations(LAT, LON, "diesel")) == 3  # next run: fine again


@pytest.mark.anyio
async def test_informational_remark_is_not_a_failure(client: JsonHttp, fake: FakeOverpass) -> None:
    body = {"version": 0.6, "generator": "Overpass API", "elements": [node(40, *at(1), DIESEL)],
            "remark": "runtime remark: Timeout is 5 seconds"}
    fake.server.fail_next(1, 200, body)
    assert len(await OverpassPlaces(client).fuel_stations(LAT, LON, "diesel")) == 1


@pytest.mark.parametrize(
    ("status", "body", "problem"),
    [(200, "<html>not json</html>", "not JSON"), (200, {"version": 0.6}, "no elements list"),
     (400, "<p>Error: line 1: parse error</p>", "HTTP 400")],
)
@pytest.mark.anyio
async def test_bad_replies(client: JsonHttp, fake: FakeOverpass, status: int, body: Any, problem: str) -> None:
    fake.server.fail_next(1, status, body)
    with pytest.raises(ProviderError, match=problem):
        await OverpassPlaces(client).fuel_stations(LAT, LON, "diesel")
    assert len(fake.requests) == 1  # not retried


@pytest.mark.anyio
async def test_timeout(fake: FakeOverpass) -> None:
    fake.server.delay = 1.0
    http = JsonHttp("places", fake.url, timeout=0.2, retries=1, retry_base_seconds=0.01)
    try:
        with pytest.raises(ProviderError, match=r"timed out after 0\.2 s"):
            await OverpassPlaces(http).fuel_stations(LAT, LON, "diesel")
    finally:
        await http.aclose()
    assert len(fake.requests) == 2


@pytest.mark.anyio
async def test_through_the_hub(fake: FakeOverpass) -> None:
    section = PlacesProviderSection(cache_ttl=0, base_url=fake.url, timeout=2.0, retries=0)
    hub = ProviderHub(ProvidersSection(places=section))
    try:
        tick = hub.for_tick()
        assert tick.places is tick.places
        assert len(await tick.places.fuel_stations(LAT, LON, "diesel")) == 3
        await hub.for_tick().places.fuel_stations(LAT, LON, "diesel")
        assert len(fake.requests) == 2  # caches last one tick
        assert fake.requests[0].headers["User-Agent"].startswith("pamd")
    finally:
        await hub.aclose()
    off = ProviderHub(ProvidersSection(places=PlacesProviderSection(cache_ttl=0, base_url=fake.url, enabled=False)))
    with pytest.raises(ProviderError, match="disabled"):
        _ = off.for_tick().places


@pytest.mark.anyio
async def test_shared_cache_spans_ticks_but_never_keeps_failures(fake: FakeOverpass) -> None:
    hub = ProviderHub(ProvidersSection(places=PlacesProviderSection(base_url=fake.url, timeout=2.0, retries=0,
                                                              cache_ttl=3600)))
    try:
        fake.server.fail_next(1, 503, "<html>busy</html>")
        with pytest.raises(ProviderError):
            await hub.for_tick().places.fuel_stations(LAT, LON, "diesel")
        first = await hub.for_tick().places.fuel_stations(LAT, LON, "diesel")
        again = await hub.for_tick().places.fuel_stations(LAT + 0.001, LON, "diesel")  # same cell, next tick
        assert len(fake.requests) == 2 and len(first) == 3 and [p.osm_id for p in again] == [p.osm_id for p in first]
    finally:
        await hub.aclose()


@pytest.mark.anyio
async def test_bad_position_is_a_programming_error(client: JsonHttp) -> None:
    with pytest.raises(ValueError, match="not a position"):
        await OverpassPlaces(client).fuel_stations(float("nan"), LON, "diesel")


def test_ttl_cache_expires_and_evicts() -> None:
    from pamd.providers.cache import TTLCache

    now = [0.0]
    cache: TTLCache[int] = TTLCache(10, max_entries=2, clock=lambda: now[0])
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1
    cache.put("c", 3)  # evicts the oldest insertion, "a"
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, 2, 3)
    now[0] = 10.0
    assert cache.get("b") is None and len(cache) == 1
    off: TTLCache[int] = TTLCache(0)
    off.put("x", 1)
    assert off.get("x") is None
