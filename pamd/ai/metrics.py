"""The AI phrasing's Prometheus series (registered beside the daemon's own, see :class:`pamd.metrics.Metrics`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["FALLBACK_REASONS", "REQUEST_OUTCOMES", "AIMetrics"]

REQUEST_OUTCOMES = ("success", "rejected", "rate_limited", "overloaded", "server_error", "timeout", "connection",
                    "auth", "bad_request", "bad_response")
"""``rejected``: answered, but the reply failed validation; the others are :data:`pamd.ai.provider.ErrorKind`."""
FALLBACK_REASONS = ("rate_limited", "overloaded", "server_error", "timeout", "connection", "auth", "bad_request",
                    "bad_response", "circuit_open", "budget", "malformed", "ungrounded", "no_provider")
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)


class AIMetrics:
    """Requests, tokens, cost, latency, fallbacks and cache hits of AI phrasing; no per-user labels."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = self.registry = registry
        self.requests = Counter("pamd_ai_requests_total", "Requests to AI providers by outcome (success; rejected: "
                                "the reply failed validation; else the error kind)", ["provider", "model", "outcome"],
                                registry=r)
        self.tokens = Counter("pamd_ai_tokens_total", "Tokens billed by AI providers, by kind (input, output)",
                              ["provider", "kind"], registry=r)
        self.cost = Counter("pamd_ai_cost_usd_total", "Cost of AI requests in US dollars, from the billed tokens "
                            "and the configured prices", ["provider"], registry=r)
        self.latency = Histogram("pamd_ai_latency_seconds", "Wall time of one AI request", ["provider"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.fallbacks = Counter("pamd_ai_fallbacks_total", "Times phrasing fell back (to the other provider or to the "
                                 "rule text), by reason", ["reason"], registry=r)
        self.cache_hits = Counter("pamd_ai_cache_hits_total", "Alerts phrased from the cache (no request)",
                                  registry=r)
        self.budget_remaining = Gauge("pamd_ai_budget_remaining_usd", "What is left of today's AI spend cap",
                                      registry=r)
        for reason in FALLBACK_REASONS:
            self.fallbacks.labels(reason)

    def declare(self, provider: str, model: str) -> None:
        """Create a provider's series at 0."""
        self.latency.labels(provider)
        self.cost.labels(provider)
        for kind in ("input", "output"):
            self.tokens.labels(provider, kind)
        for outcome in REQUEST_OUTCOMES:
            self.requests.labels(provider, model, outcome)
