"""Phrasing accepted alerts with a model: routing, fallback, the circuit breaker, the spend cap and the cache.

Each monitor has a tier (``[ai] tiers``); each provider serves one tier (``[ai.<provider>] tier``). An alert of an
"analysis" monitor below ``[ai] analysis_min_priority`` (default: medium and low ones) takes the "fast" tier. An
alert goes to its tier's provider, then to the other one, then keeps its rule text, which every alert already has:
the AI only rewrites the words of an alert the pipeline has accepted, so it never decides whether an alert exists,
and a reply is shown only if :func:`pamd.ai.grounding.check_reply` finds every number in the alert's facts. Every
step away from the preferred provider is counted in ``pamd_ai_fallbacks_total{reason}``.
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
from pamd.config import AIProviderSection, AISection, Tier
from pamd.model import Alert, Priority

__all__ = ["Phraser", "Preview", "Route"]

log = logging.getLogger("pamd.ai")

MAX_REQUEST_TOKENS = 8192  # reply budget of one request, however many alerts it carries


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

    def tier(self, monitor: str, priority: Priority) -> Tier:
        """The tier that phrases ``monitor``'s alerts of ``priority``."""
        tier = self.settings.tiers.get(monitor, self.settings.default_tier)
        if tier == "analysis" and priority < self.settings.analysis_min_priority:
            return "fast"
        return tier

    def routes(self, monitor: str, priority: Priority = Priority.URGENT) -> list[Route]:
        """The enabled providers in the order ``monitor``'s alerts of ``priority`` try them: their tier's first."""
        tier = self.tier(monitor, priority)
        sections = [(name, s) for name, s in self.settings.providers().items() if s.enabled]
        sections.sort(key=lambda item: item[1].tier != tier)  # stable: the tier's provider first
        return [Route(name, self.providers.get(name), s) for name, s in sections]

    def preview(self, alert: Alert) -> Preview | None:
        """The request phrasing ``alert`` alone would make first, or ``None`` if no provider is enabled."""
        routes = self.routes(alert.monitor, alert.priority)
        live = [r for r in routes if r.provider is not None] or routes
        if not live:
            return None
        route = live[0]
        prompt = build_prompt([alert], route.settings.max_tokens)
        cached = self.cache.get(_cache_key(alert, facts_digest(alert), route)) is not None
        cost = prompt.cost_usd(route.settings.input_usd_per_mtok, route.settings.output_usd_per_mtok)
        return Preview(route.name, route.settings.model, SYSTEM, prompt.text, prompt.input_tokens,
                       prompt.output_tokens, 0.0 if cached else cost, cached, route.provider is not None)

    async def phrase_all(self, alerts: Sequence[Alert]) -> None:
        """Phrase ``alerts`` in place: those of one route together, ``[ai] batch_size`` to a request, at most
        ``max_concurrency`` requests in flight. An alert whose phrasing fails keeps its rule text; never raises for
        one alert's or one request's failure."""
        if not self.active or not alerts:
            return
        groups: dict[tuple[str, ...], list[Alert]] = {}
        for alert in alerts:
            names = tuple(r.name for r in self.routes(alert.monitor, alert.priority) if r.provider is not None)
            groups.setdefault(names, []).append(alert)
        size = self.settings.batch_size
        async with anyio.create_task_group() as tg:
            for group in groups.values():
                group.sort(key=_same_kind)  # a request's alerts of one kind share one list of fact names
                for start in range(0, len(group), size):
                    tg.start_soon(self._phrase_safely, group[start:start + size])
        self.metrics.budget_remaining.set(self.ledger.remaining_usd)

    async def _phrase_safely(self, alerts: list[Alert]) -> None:
        try:
            await self.phrase(alerts)
        except Exception:  # a bug here must cost the alerts their AI text, never the alerts
            log.exception("phrasing %d alert(s) failed; they keep their rule text", len(alerts))

    async def phrase(self, alerts: Sequence[Alert]) -> list[str]:
        """Phrase ``alerts`` (of one route: the first alert's monitor and priority choose it) in place, in one
        request per provider tried; return what phrased each: ``"<provider>/<model>"``, ``"cache"`` or
        ``"rule:<reason>"``."""
        if not alerts:
            return []
        routes = [r for r in self.routes(alerts[0].monitor, alerts[0].priority) if r.provider is not None]
        outcomes = ["rule:no_provider"] * len(alerts)
        if not routes:
            self.metrics.fallbacks.labels("no_provider").inc(len(alerts))
            return outcomes
        digests = [facts_digest(a) for a in alerts]
        remaining = list(range(len(alerts)))
        for route in routes:
            remaining = self._from_cache(alerts, digests, remaining, route, outcomes)
            if not remaining:
                break
            batch = [alerts[i] for i in remaining]
            prompt = build_prompt(batch, route.settings.max_tokens)
            estimate = prompt.cost_usd(route.settings.input_usd_per_mtok, route.settings.output_usd_per_mtok)
            if not self.ledger.reserve(estimate):
                self._fell_back("budget", remaining, outcomes)  # the cap is for all providers together
                log.info("AI daily budget of $%.2f reached: rule text until tomorrow (UTC)", self.ledger.cap_usd)
                break
            breaker = self.breakers[route.name]
            if not breaker.allow():
                self.ledger.settle(estimate, 0.0)
                self._fell_back("circuit_open", remaining, outcomes)
                continue
            try:
                completion = await self._ask(route, prompt, estimate, len(batch))
            except ProviderError as exc:
                breaker.failure()
                log.warning("AI provider %s failed (%s): %s", route.name, exc.kind, exc)
                self._fell_back(exc.kind, remaining, outcomes)
                continue
            except BaseException:  # cancelled (shutdown) or a bug: no verdict on the provider
                breaker.abandon()
                raise
            self.breakers[route.name].success()
            self._use(completion, route, batch, [digests[i] for i in remaining], remaining, outcomes)
            break
        return outcomes

    def _from_cache(self, alerts: Sequence[Alert], digests: list[str], indices: list[int], route: Route,
                    outcomes: list[str]) -> list[int]:
        """Apply cached phrasings of ``route``'s model; return the indices still to ask for."""
        left = []
        for i in indices:
            cached = self.cache.get(_cache_key(alerts[i], digests[i], route))
            if cached is None:
                left.append(i)
            else:
                _apply(alerts[i], cached)
                outcomes[i] = "cache"
                self.metrics.cache_hits.inc()
        return left

    def _use(self, completion: Completion, route: Route, batch: list[Alert], digests: list[str],
             indices: list[int], outcomes: list[str]) -> None:
        """Check each alert's entry of a reply: apply and cache the good ones; the others keep their rule text."""
        rejected = 0
        for i, alert, digest, result in zip(indices, batch, digests, check_reply(completion.text, batch),
                                            strict=True):
            if isinstance(result, GroundingError):
                rejected += 1
                self._fell_back(result.reason, [i], outcomes)
                log.warning("AI text for alert %s discarded (%s): %s", alert.id, result.reason, result)
                continue
            self.cache.put(_cache_key(alert, digest, route), result)
            _apply(alert, result)
            outcomes[i] = f"{route.name}/{completion.model or route.settings.model}"
        self.metrics.requests.labels(route.name, route.settings.model, "rejected" if rejected else "success").inc()

    def _fell_back(self, reason: str, indices: list[int], outcomes: list[str]) -> None:
        self.metrics.fallbacks.labels(reason).inc(len(indices))
        for i in indices:
            outcomes[i] = f"rule:{reason}"

    async def _ask(self, route: Route, prompt: Prompt, estimate: float, alerts: int) -> Completion:
        """One request for ``alerts`` alerts (and one retry after a short ``Retry-After``), with the spend settled
        and metrics counted."""
        try:
            return await self._ask_once_or_twice(route, prompt, estimate, alerts)
        except BaseException:
            self.ledger.settle(estimate, 0.0)  # nothing billed that we know of; the reservation is released
            raise

    async def _ask_once_or_twice(self, route: Route, prompt: Prompt, estimate: float, alerts: int) -> Completion:
        assert route.provider is not None
        s = route.settings
        max_tokens = min(s.max_tokens * alerts, MAX_REQUEST_TOKENS)
        for attempt in (1, 2):
            started = time.monotonic()
            try:
                async with self._limiter:
                    with anyio.fail_after(s.timeout * 2 + 1):  # the SDK's own timeout should fire first
                        completion = await route.provider.complete(
                            model=s.model, system=SYSTEM, prompt=prompt.text, max_tokens=max_tokens)
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
            raise error
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        """Record the day's spend (if there can be any) and close the providers."""
        if self.active:
            self.ledger.flush()
        for provider in self.providers.values():
            try:
                await provider.aclose()
            except Exception as exc:
                log.warning("closing AI provider %s failed: %s", provider.name, exc)


def _cache_key(alert: Alert, digest: str, route: Route) -> tuple[str, str, str]:
    return alert.fingerprint, digest, route.settings.model


def _apply(alert: Alert, phrasing: Phrasing) -> None:
    alert.title, alert.body, alert.actions = phrasing.title, phrasing.body, [dict(a) for a in phrasing.actions]


def _same_kind(alert: Alert) -> tuple[str, str]:
    return alert.monitor, alert.kind
