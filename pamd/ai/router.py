"""Phrasing accepted alerts with a model: routing, fallback, the circuit breaker, the spend cap and the cache.

Each monitor has a tier (``[ai] tiers``); each provider serves one tier (``[ai.<provider>] tier``). An alert goes
to its tier's provider, then to the other one, then keeps its rule text, which every alert already has: the AI only
rewrites the words of an alert the pipeline has accepted, so it never decides whether an alert exists, and a reply
is shown only if :func:`pamd.ai.grounding.check_reply` finds every number in the alert's facts. Every step away
from the preferred provider is counted in ``pamd_ai_fallbacks_total{reason}``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import anyio

from pamd.ai.grounding import GroundingError, Phrasing, check_reply
from pamd.ai.guards import CircuitBreaker, PhrasingCache, SpendLedger
from pamd.ai.metrics import AIMetrics
from pamd.ai.prompt import SYSTEM, Prompt, build_prompt, facts_digest
from pamd.ai.provider import AIProvider, Completion, ProviderError
from pamd.config import AIProviderSection, AISection
from pamd.model import Alert

__all__ = ["Phraser", "Preview", "Route"]

log = logging.getLogger("pamd.ai")


@dataclass(frozen=True)
class Route:
    """One provider an alert may go to: its name, client (``None`` when its key is not set) and settings."""

    name: str
    provider: AIProvider | None
    settings: AIProviderSection


@dataclass(frozen=True)
class Preview:
    """What phrasing ``alert`` would send, without sending it (``pamd trigger --dry-run``, ``pamd explain``)."""

    provider: str
    model: str
    system: str
    prompt: str
    input_tokens: int  # estimated
    output_tokens: int  # estimated
    cost_usd: float  # estimated, at the configured prices
    cached: bool  # a phrasing for these facts is cached: it would cost nothing
    key_set: bool  # False: no key in the environment, the rule text would be used


class Phraser:
    """Rewrites accepted alerts' title, body and actions through the configured providers (see the module doc).

    ``providers``: clients by name (only those whose key is set); ``ledger_path`` keeps the day's spend across
    restarts. ``clock`` (monotonic seconds) drives the circuit breakers, ``now`` the spend day.
    """

    def __init__(
        self,
        settings: AISection,
        providers: Mapping[str, AIProvider],
        metrics: AIMetrics,
        *,
        ledger_path: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.providers = dict(providers)
        self.metrics = metrics
        self.ledger = SpendLedger(settings.daily_budget_usd, ledger_path, now)
        self.cache = PhrasingCache(settings.cache_size)
        self.breakers = {name: CircuitBreaker(settings.breaker_failures, settings.breaker_cooloff, clock)
                         for name in settings.providers()}
        self._limiter = anyio.CapacityLimiter(settings.max_concurrency)
        for name, section in settings.providers().items():
            if name in self.providers:
                metrics.declare(name, section.model)
        metrics.budget_remaining.set(self.ledger.remaining_usd)

    @property
    def active(self) -> bool:
        """True if any provider can be asked."""
        return bool(self.providers)

    def routes(self, monitor: str) -> list[Route]:
        """The enabled providers in the order ``monitor``'s alerts try them: its tier's first."""
        tier = self.settings.tiers.get(monitor, self.settings.default_tier)
        sections = [(name, s) for name, s in self.settings.providers().items() if s.enabled]
        sections.sort(key=lambda item: item[1].tier != tier)  # stable: the tier's provider first
        return [Route(name, self.providers.get(name), s) for name, s in sections]

    def preview(self, alert: Alert) -> Preview | None:
        """The request phrasing ``alert`` would make first, or ``None`` if no provider is enabled."""
        routes = self.routes(alert.monitor)
        live = [r for r in routes if r.provider is not None] or routes
        if not live:
            return None
        route = live[0]
        prompt = build_prompt(alert, route.settings.max_tokens)
        cached = self.cache.get((alert.fingerprint, facts_digest(alert), route.settings.model)) is not None
        cost = prompt.cost_usd(route.settings.input_usd_per_mtok, route.settings.output_usd_per_mtok)
        return Preview(route.name, route.settings.model, SYSTEM, prompt.text, prompt.input_tokens,
                       prompt.output_tokens, 0.0 if cached else cost, cached, route.provider is not None)

    async def phrase_all(self, alerts: Sequence[Alert]) -> None:
        """Phrase ``alerts`` concurrently (at most ``max_concurrency`` requests in flight); each keeps its rule text
        if its phrasing fails. Never raises for one alert's failure."""
        if not self.active or not alerts:
            return
        async with anyio.create_task_group() as tg:
            for alert in alerts:
                tg.start_soon(self._phrase_safely, alert)
        self.metrics.budget_remaining.set(self.ledger.remaining_usd)

    async def _phrase_safely(self, alert: Alert) -> None:
        try:
            await self.phrase(alert)
        except Exception:  # a bug here must cost the alert its AI text, never the alert
            log.exception("phrasing alert %s failed; it keeps its rule text", alert.id)

    async def phrase(self, alert: Alert) -> str:
        """Phrase one alert in place; return what phrased it: ``"<provider>/<model>"``, ``"cache"`` or
        ``"rule:<reason>"``."""
        routes = [r for r in self.routes(alert.monitor) if r.provider is not None]
        if not routes:
            return self._fallback("no_provider")
        digest = facts_digest(alert)
        outcome = "rule:no_provider"
        for route in routes:
            key = (alert.fingerprint, digest, route.settings.model)
            cached = self.cache.get(key)
            if cached is not None:
                self.metrics.cache_hits.inc()
                _apply(alert, cached)
                return "cache"
            if not self.breakers[route.name].allow():
                outcome = self._fallback("circuit_open", quiet=True)
                continue
            prompt = build_prompt(alert, route.settings.max_tokens)
            estimate = prompt.cost_usd(route.settings.input_usd_per_mtok, route.settings.output_usd_per_mtok)
            if not self.ledger.reserve(estimate):
                return self._fallback("budget")  # the cap is for all providers together
            try:
                completion = await self._ask(route, prompt, estimate)
            except ProviderError as exc:
                self.breakers[route.name].failure()
                log.warning("AI provider %s failed (%s: %s) for alert %s", route.name, exc.kind, exc, alert.id)
                outcome = self._fallback(exc.kind, quiet=True)
                continue
            self.breakers[route.name].success()
            try:
                phrasing = check_reply(completion.text, alert)
            except GroundingError as exc:
                self.metrics.requests.labels(route.name, route.settings.model, "rejected").inc()
                log.warning("AI reply for alert %s discarded (%s): %s", alert.id, exc.reason, exc)
                return self._fallback(exc.reason)
            self.metrics.requests.labels(route.name, route.settings.model, "success").inc()
            self.cache.put(key, phrasing)
            _apply(alert, phrasing)
            return f"{route.name}/{completion.model or route.settings.model}"
        return outcome  # every provider was skipped or failed: the rule text stays

    async def _ask(self, route: Route, prompt: Prompt, estimate: float) -> Completion:
        """One request (and one retry after a short ``Retry-After``), with the spend settled and metrics counted."""
        assert route.provider is not None
        s = route.settings
        for attempt in (1, 2):
            started = time.monotonic()
            try:
                async with self._limiter:
                    with anyio.fail_after(s.timeout * 2 + 1):  # the SDK's own timeout should fire first
                        completion = await route.provider.complete(
                            model=s.model, system=SYSTEM, prompt=prompt.text, max_tokens=s.max_tokens)
            except TimeoutError:
                error = ProviderError("timeout", f"no answer in {s.timeout * 2 + 1:g} s")
            except ProviderError as exc:
                error = exc
            else:
                self.metrics.latency.labels(route.name).observe(time.monotonic() - started)
                billed = (completion.input_tokens * s.input_usd_per_mtok
                          + completion.output_tokens * s.output_usd_per_mtok) / 1e6
                self.ledger.settle(estimate, billed)
                self.metrics.tokens.labels(route.name, "input").inc(completion.input_tokens)
                self.metrics.tokens.labels(route.name, "output").inc(completion.output_tokens)
                self.metrics.cost.labels(route.name).inc(billed)
                return completion
            self.metrics.latency.labels(route.name).observe(time.monotonic() - started)
            self.metrics.requests.labels(route.name, s.model, error.kind).inc()
            wait = error.retry_after
            if attempt == 1 and error.kind == "rate_limited" and wait is not None \
                    and wait <= self.settings.max_retry_after:
                await anyio.sleep(wait)
                continue
            self.ledger.settle(estimate, 0.0)
            raise error
        raise AssertionError("unreachable")

    def _fallback(self, reason: str, *, quiet: bool = False) -> str:
        self.metrics.fallbacks.labels(reason).inc()
        if not quiet:
            log.info("AI phrasing fell back to the rule text: %s", reason)
        return f"rule:{reason}"

    async def aclose(self) -> None:
        """Record the day's spend and close the providers."""
        self.ledger.flush()
        for provider in self.providers.values():
            try:
                await provider.aclose()
            except Exception as exc:
                log.warning("closing AI provider %s failed: %s", provider.name, exc)


def _apply(alert: Alert, phrasing: Phrasing) -> None:
    alert.title, alert.body, alert.actions = phrasing.title, phrasing.body, [dict(a) for a in phrasing.actions]
