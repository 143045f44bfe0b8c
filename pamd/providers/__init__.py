"""External data providers (weather forecasts, places), shared by monitors through ``ctx.providers``.

:class:`ProviderHub` lives as long as a daemon generation and owns the HTTP connections; every tick gets a fresh
:class:`Providers` view from it, so provider caches last exactly one run ("one request per cell per run").
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from pamd.providers.cache import TTLCache
from pamd.providers.http import JsonHttp, ProviderError

if TYPE_CHECKING:
    from pamd.config import ProvidersSection
    from pamd.metrics import Metrics
    from pamd.providers.places import OverpassPlaces
    from pamd.providers.weather import OpenMeteoWeather

__all__ = ["JsonHttp", "ProviderError", "ProviderHub", "Providers"]


class ProviderHub:
    """Long-lived HTTP clients for each configured provider (created on first use)."""

    def __init__(self, config: ProvidersSection, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self._clients: dict[str, JsonHttp] = {}
        self.places_cache: TTLCache[list[dict[str, Any]]] = TTLCache(config.places.cache_ttl)

    def client(self, name: str) -> JsonHttp:
        """The HTTP client of provider ``name`` ("weather" or "places"); raises ProviderError if disabled."""
        section = getattr(self.config, name)
        if not section.enabled:
            raise ProviderError(name, "disabled in [providers]")
        if name not in self._clients:
            self._clients[name] = JsonHttp(
                name, section.base_url, timeout=section.timeout, retries=section.retries,
                user_agent=self.config.user_agent, metrics=self.metrics,
            )
        return self._clients[name]

    def for_tick(self) -> Providers:
        """A per-tick view whose caches are empty."""
        return Providers(self)

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


class Providers:
    """What a monitor sees as ``ctx.providers``: lazily built provider objects with per-tick caches."""

    def __init__(self, hub: ProviderHub) -> None:
        self.hub = hub

    @cached_property
    def weather(self) -> OpenMeteoWeather:
        """Daily forecasts from Open-Meteo (``[providers.weather]``)."""
        from pamd.providers.weather import OpenMeteoWeather

        return OpenMeteoWeather(self.hub.client("weather"))

    @cached_property
    def places(self) -> OverpassPlaces:
        """Fuel stations and repair shops from OpenStreetMap's Overpass API (``[providers.places]``)."""
        from pamd.providers.places import OverpassPlaces

        return OverpassPlaces(self.hub.client("places"), shared=self.hub.places_cache)
