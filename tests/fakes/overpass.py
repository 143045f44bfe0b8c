"""A fake Overpass API (``POST /interpreter``) on 127.0.0.1 that answers from an in-memory list of OSM elements.

It understands the subset of Overpass QL that :mod:`pamd.providers.places` sends: ``[out:json][timeout:N];``, a
union ``( ... );`` of ``nwr|node|way|relation(around:RADIUS_M,LAT,LON)`` statements with tag filters
(``["k"="v"]``, ``["k"!="v"]``, ``["k"~"re"]``, ``["k"!~"re"]``, ``["k"]``, ``[!"k"]``, ``[~"key re"~"value re"]``)
and ``out [center] tags;``. Anything else is answered like the real server answers a syntax error (HTTP 400, HTML).
Replies use the real JSON shape; ways and relations carry ``center`` only when ``out center`` was asked for.

Failures can be scripted: :meth:`FakeOverpass.rate_limit` (429) and :meth:`FakeOverpass.gateway_timeout` (504)
reply with the HTML pages Overpass sends, :meth:`FakeOverpass.runtime_error` with HTTP 200, a ``remark`` and
partial elements; ``server.delay`` slows every reply.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pamd.config import PlacesProviderSection, ProvidersSection
from pamd.providers import ProviderHub
from tests.fakes.server import FakeServer, Reply, Request

GENERATOR = "Overpass API 0.7.62.4 2390de5a"
OSM3S = {
    "timestamp_osm_base": "2026-03-15T11:58:21Z",
    "copyright": "The data included in this document is from www.openstreetmap.org. The data is made available "
                 "under ODbL.",
}

_HTML = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN"
    "http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">
<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="en" lang="en">
<head>
  <meta http-equiv="content-type" content="text/html; charset=utf-8" lang="en"/>
  <title>OSM3S Response</title>
</head>
<body>

<p>The data included in this document is from www.openstreetmap.org. The data is made available under ODbL.</p>
<p><strong style="color:#FF0000">Error</strong>: {message} </p>

</body>
</html>
"""
RATE_LIMITED = _HTML.format(message="runtime error: open64: 0 Success /osm3s_osm_base "
                            "Dispatcher_Client::request_read_and_idx::rate_limited. Please check /api/status for the "
                            "quota of your IP address.")
GATEWAY_TIMEOUT = _HTML.format(message="runtime error: open64: 0 Success /osm3s_osm_base "
                               "Dispatcher_Client::request_read_and_idx::timeout. The server is probably too busy to "
                               "handle your request.")

_STATEMENT = re.compile(
    r'(nwr|node|way|relation)\(around:([0-9.]+),(-?[0-9.]+),(-?[0-9.]+)\)((?:\[(?:[^\]"]|"[^"]*")*\])*)\s*;')
_FILTER = re.compile(r'\[(!?)(~?)"([^"]*)"(?:(!=|=|!~|~)"([^"]*)")?\]')
_HEADER = re.compile(r"^\s*\[out:json\](\[timeout:[0-9]+\])?;")
_OUT = re.compile(r"\bout( center)? tags;\s*$")


def node(osm_id: int, lat: float, lon: float, tags: dict[str, str] | None = None, **more: str) -> dict[str, Any]:
    """An OSM node as Overpass returns it. ``more`` adds tags whose keys are Python names."""
    return {"type": "node", "id": osm_id, "lat": lat, "lon": lon, "tags": {**(tags or {}), **more}}


def way(osm_id: int, lat: float, lon: float, tags: dict[str, str] | None = None, **more: str) -> dict[str, Any]:
    """An OSM way (an area mapped as a polygon) whose centre is (lat, lon)."""
    return {"type": "way", "id": osm_id, "center": {"lat": lat, "lon": lon}, "tags": {**(tags or {}), **more}}


def offset(lat: float, lon: float, north_km: float = 0.0, east_km: float = 0.0) -> tuple[float, float]:
    """The point ``north_km`` north and ``east_km`` east of (lat, lon) (small distances)."""
    return lat + north_km / 111.195, lon + east_km / (111.195 * math.cos(math.radians(lat)))


def _distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * 6371008.8 * math.asin(min(1.0, math.sqrt(a)))


def _position(element: dict[str, Any]) -> tuple[float, float]:
    where = element if element["type"] == "node" else element["center"]
    return where["lat"], where["lon"]


def _tag_matches(tags: dict[str, str], negate: str, key_regex: str, key: str, op: str, value: str) -> bool:
    if key_regex:  # [~"key re"~"value re"]
        return any(re.search(key, k) and re.search(value, v) for k, v in tags.items())
    if not op:  # ["k"] or [!"k"]
        return (key in tags) != bool(negate)
    present = tags.get(key)
    if op == "=":
        return present == value
    if op == "!=":
        return present != value
    if op == "~":
        return present is not None and re.search(value, present) is not None
    return present is None or re.search(value, present) is None  # !~


class FakeOverpass:
    """See the module docstring. ``elements`` may be changed between requests."""

    def __init__(self, elements: list[dict[str, Any]] | None = None) -> None:
        self.initial = list(elements or [])
        self.elements = list(self.initial)
        self.server = FakeServer(self._handle)
        self.url = self.server.url

    def reset(self) -> None:
        """Forget requests, scripted failures, delay and element changes (to share one server between tests)."""
        with self.server._lock:
            self.server.requests.clear()
            self.server.failures.clear()
        self.server.delay = 0.0
        self.elements = list(self.initial)

    @property
    def requests(self) -> list[Request]:
        return self.server.requests

    def queries(self) -> list[str]:
        """The Overpass QL text of every request so far."""
        return [r.form().get("data", [""])[0] for r in self.server.requests]

    def rate_limit(self, count: int = 1, retry_after: str | None = None) -> None:
        """Answer the next ``count`` requests with 429 Too Many Requests (HTML)."""
        headers = {"Content-Type": "text/html; charset=utf-8"}
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        self.server.fail_next(count, 429, RATE_LIMITED, **headers)

    def gateway_timeout(self, count: int = 1) -> None:
        """Answer the next ``count`` requests with 504 Gateway Timeout (HTML)."""
        self.server.fail_next(count, 504, GATEWAY_TIMEOUT, **{"Content-Type": "text/html; charset=utf-8"})

    def runtime_error(self, count: int = 1, partial: int = 1) -> None:
        """Answer the next ``count`` requests with HTTP 200, a ``runtime error`` remark and at most ``partial``
        of the elements (what Overpass does when a query runs out of time or memory)."""
        body = {"version": 0.6, "generator": GENERATOR, "osm3s": OSM3S,
                "elements": [e for e in self.elements if e["type"] == "node"][:partial],
                "remark": 'runtime error: Query timed out in "query" at line 3 after 25 seconds.'}
        self.server.fail_next(count, 200, body)

    def _handle(self, request: Request) -> Reply:
        if request.method != "POST" or request.path != "/interpreter":
            return Reply(404, _HTML.format(message="no such endpoint"), {"Content-Type": "text/html"})
        query = request.form().get("data", [""])[0]
        statements = _STATEMENT.findall(query)
        out = _OUT.search(query)
        if not _HEADER.match(query) or not statements or out is None:
            return Reply(400, _HTML.format(message="line 1: parse error: unexpected query"),
                         {"Content-Type": "text/html; charset=utf-8"})
        found: dict[tuple[str, int], dict[str, Any]] = {}
        for kind, radius, lat, lon, filters in statements:
            for element in self.elements:
                if kind != "nwr" and element["type"] != kind:
                    continue
                if _distance_m(float(lat), float(lon), *_position(element)) > float(radius):
                    continue
                tags = element.get("tags", {})
                if all(_tag_matches(tags, *f) for f in _FILTER.findall(filters)):
                    found.setdefault((element["type"], element["id"]), element)
        elements = []
        for element in found.values():
            shown = {k: v for k, v in element.items() if k != "center" or out.group(1)}
            elements.append(shown)
        return Reply(200, {"version": 0.6, "generator": GENERATOR, "osm3s": OSM3S, "elements": elements})

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()


@contextmanager
def serve_overpass(elements: list[dict[str, Any]] | None = None) -> Iterator[FakeOverpass]:
    """Run a :class:`FakeOverpass` for the duration of a ``with`` block."""
    fake = FakeOverpass(elements)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


def places_hub(url: str, **settings: Any) -> ProviderHub:
    """A :class:`ProviderHub` whose places provider is the fake at ``url``: no cross-tick cache, a 2 s timeout and
    no retries unless ``settings`` say otherwise. Close it after use."""
    options: dict[str, Any] = {"cache_ttl": 0, "timeout": 2.0, "retries": 0} | settings
    return ProviderHub(ProvidersSection(places=PlacesProviderSection(base_url=url, **options)))
