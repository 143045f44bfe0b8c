"""Routing, fallback, circuit breaker, spend cap and cache of AI phrasing, with scripted providers.

These drive :class:`pamd.ai.router.Phraser` through the provider contract; tests/test_ai_e2e.py runs it through the
real SDKs against servers on 127.0.0.1 that speak the providers' wire formats.
"""

from __future__ import annotations

import json
from collections import deque
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from pamd.ai.metrics import AIMetrics
from pamd.ai.prompt import read_prompt
from pamd.ai.provider import Completion, ProviderError
from pamd.ai.router import Phraser
from pamd.config import AISection
from pamd.model import Alert, Priority

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


GOOD = json.dumps({"title": "Budget at 85%", "body": "You have spent 850 of your 1000 USD food budget.",
                   "actions": [{"index": 0}]})


class Scripted:
    """A provider that answers from a script: a reply text, or a ProviderError to raise."""

    def __init__(self, name: str, *script: str | ProviderError, default: str | ProviderError = GOOD) -> None:
        self.name = name
        self.script: deque[str | ProviderError] = deque(script)
        self.default = default
        self.calls: list[str] = []

    async def complete(self, *, model: str, system: str, prompt: str, max_tokens: int) -> Completion:
        self.calls.append(model)
        step = self.script.popleft() if self.script else self.default
        if isinstance(step, ProviderError):
            raise step
        alerts = len(read_prompt(prompt))
        if alerts > 1:  # the same entry for every alert of the request
            step = json.dumps({"alerts": [{**json.loads(step), "n": n} for n in range(alerts)]})
        return Completion(step, input_tokens=1000, output_tokens=100 * alerts, model=model)

    async def aclose(self) -> None:
        pass


def alert(monitor: str = "budget", fingerprint: str = "fp", spent: float = 850.0,
          priority: Priority = Priority.HIGH) -> Alert:
    return Alert(user_id="u1", kind="budget_high", priority=priority, title="Rule title", body="Rule body.",
                 monitor=monitor, fingerprint=fingerprint,
                 facts={"spent": spent, "budget": 1000.0, "percent": spent / 10, "currency": "USD"},
                 actions=[{"action": "view_budget", "label": "View budget"}])


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def phraser(*providers: Scripted, clock: Clock | None = None, **settings: object) -> tuple[Phraser, AIMetrics]:
    metrics = AIMetrics(CollectorRegistry())
    p = Phraser(AISection(**settings), {s.name: s for s in providers}, metrics,  # type: ignore[arg-type]
                clock=clock or Clock())
    return p, metrics


def count(metrics: AIMetrics, name: str, **labels: str) -> float:
    return float(metrics.registry.get_sample_value(name, labels) or 0.0)


async def test_the_tier_picks_the_provider_and_the_reply_replaces_the_rule_text() -> None:
    claude, gemini = Scripted("anthropic"), Scripted("gemini")
    p, m = phraser(claude, gemini)
    budget, fuel = alert("budget"), alert("fuel", "fp2")
    assert (await p.phrase([budget]))[0] == "anthropic/claude-sonnet-5-5"
    assert (await p.phrase([fuel]))[0] == "gemini/gemini-3.5-flash"
    assert (claude.calls, gemini.calls) == (["claude-sonnet-5-5"], ["gemini-3.5-flash"])
    assert budget.title == "Budget at 85%" and budget.actions == [{"action": "view_budget", "label": "View budget"}]
    assert count(m, "pamd_ai_requests_total", provider="anthropic", model="claude-sonnet-5-5", outcome="success") == 1
    assert count(m, "pamd_ai_tokens_total", provider="anthropic", kind="input") == 1000
    assert count(m, "pamd_ai_cost_usd_total", provider="anthropic") == pytest.approx((1000 * 3 + 100 * 15) / 1e6)
    assert count(m, "pamd_ai_cost_usd_total", provider="gemini") == pytest.approx((1000 * 0.3 + 100 * 2.5) / 1e6)


async def test_medium_and_low_alerts_of_an_analysis_monitor_take_the_fast_tier() -> None:
    claude, gemini = Scripted("anthropic"), Scripted("gemini")
    p, _ = phraser(claude, gemini, batch_size=10)
    alerts = [alert(fingerprint=f"r{i}", priority=priority) for i, priority in enumerate(Priority)]
    await p.phrase_all(alerts)
    # One request per route: low and medium together to Gemini, high and urgent together to Claude.
    assert (claude.calls, gemini.calls) == (["claude-sonnet-5-5"], ["gemini-3.5-flash"])
    assert [p.tier("budget", priority) for priority in Priority] == ["fast", "fast", "analysis", "analysis"]
    assert p.tier("fuel", Priority.URGENT) == "fast"  # a fast monitor's urgent alert is not promoted
    medium = p.preview(alert(priority=Priority.MEDIUM))
    assert medium is not None and medium.provider == "gemini"
    # A failing fast provider sends a medium alert to the analysis one, as any fallback.
    down = Scripted("gemini", ProviderError("server_error", "boom", status=500))
    q, _ = phraser(Scripted("anthropic"), down)
    assert (await q.phrase([alert(priority=Priority.MEDIUM)]))[0] == "anthropic/claude-sonnet-5-5"


async def test_a_route_s_requests_each_hold_alerts_of_one_kind_when_the_batch_size_allows() -> None:
    claude = Scripted("anthropic")
    prompts: list[str] = []
    complete = claude.complete

    async def recording(*, model: str, system: str, prompt: str, max_tokens: int) -> Completion:
        prompts.append(prompt)
        return await complete(model=model, system=system, prompt=prompt, max_tokens=max_tokens)

    claude.complete = recording  # type: ignore[method-assign]
    p, _ = phraser(claude, batch_size=2)
    alerts = [alert(fingerprint=f"r{i}") for i in range(4)]
    for a in alerts[1::2]:
        a.kind = "budget_exceeded"
    await p.phrase_all(alerts)
    kinds = sorted(tuple(sorted({a["kind"] for a in read_prompt(text)})) for text in prompts)
    assert kinds == [("budget_exceeded",), ("budget_high",)]
    assert all(a.title == "Budget at 85%" for a in alerts)


async def test_analysis_min_priority_low_keeps_every_alert_on_its_monitor_s_tier() -> None:
    claude, gemini = Scripted("anthropic"), Scripted("gemini")
    p, _ = phraser(claude, gemini, analysis_min_priority=Priority.LOW)
    assert (await p.phrase([alert(priority=Priority.LOW)]))[0] == "anthropic/claude-sonnet-5-5"
    assert gemini.calls == []


async def test_fallback_chain_to_the_other_provider_then_to_the_rule_text() -> None:
    claude = Scripted("anthropic", ProviderError("overloaded", "busy", status=529))
    gemini = Scripted("gemini", ProviderError("server_error", "boom", status=500))
    p, m = phraser(claude, gemini)
    first = alert()
    assert (await p.phrase([first]))[0] == "rule:server_error"
    assert first.title == "Rule title"  # untouched
    assert count(m, "pamd_ai_fallbacks_total", reason="overloaded") == 1
    assert count(m, "pamd_ai_fallbacks_total", reason="server_error") == 1
    second = alert(fingerprint="fp2")
    claude.script.append(ProviderError("timeout", "slow"))
    assert (await p.phrase([second]))[0] == "gemini/gemini-3.5-flash"
    assert second.title == "Budget at 85%"


async def test_the_circuit_opens_after_repeated_failures_and_a_trial_closes_it() -> None:
    clock = Clock()
    claude = Scripted("anthropic", default=ProviderError("server_error", "down", status=500))
    gemini = Scripted("gemini")
    p, m = phraser(claude, gemini, clock=clock, breaker_failures=3, breaker_cooloff=60.0)
    for i in range(5):
        assert ((await p.phrase([alert(fingerprint=f"a{i}")]))[0]).startswith("gemini/")
    assert len(claude.calls) == 3  # the 4th and 5th skipped it
    assert count(m, "pamd_ai_fallbacks_total", reason="circuit_open") == 2
    clock.t = 61.0
    claude.default = GOOD
    assert ((await p.phrase([alert(fingerprint="trial")]))[0]).startswith("anthropic/")  # half-open trial succeeds
    assert p.breakers["anthropic"].state == "closed"


async def test_the_daily_cap_switches_to_rule_text_mid_day_until_the_next_day(tmp_path: Path) -> None:
    day = [datetime(2026, 11, 29, 10, 0, tzinfo=UTC)]
    claude = Scripted("anthropic")
    metrics = AIMetrics(CollectorRegistry())
    settings = AISection(daily_budget_usd=0.02)  # each request costs ~0.0045 USD billed, ~0.004 estimated
    p = Phraser(settings, {"anthropic": claude}, metrics, ledger_path=tmp_path / "spend.json",
                now=lambda: day[0])
    outcomes = [(await p.phrase([alert(fingerprint=f"f{i}")]))[0] for i in range(8)]
    spent = p.ledger.spent_usd
    assert outcomes[:4] == ["anthropic/claude-sonnet-5-5"] * 4 and set(outcomes[4:]) == {"rule:budget"}
    assert spent <= 0.02 and len(claude.calls) == 4
    p.ledger.flush()
    # a restart the same day does not reopen the budget
    again = Phraser(settings, {"anthropic": claude}, metrics, ledger_path=tmp_path / "spend.json",
                    now=lambda: day[0])
    assert again.ledger.spent_usd == pytest.approx(spent)
    assert (await again.phrase([alert(fingerprint="g")]))[0] == "rule:budget"
    day[0] += timedelta(days=1)
    assert (await again.phrase([alert(fingerprint="h")]))[0] == "anthropic/claude-sonnet-5-5"


async def test_the_cache_makes_repeats_free_but_new_facts_ask_again() -> None:
    at_90 = json.dumps({"title": "Budget at 90%", "body": "You have spent 900 of your 1000 USD food budget."})
    claude = Scripted("anthropic", GOOD, at_90)
    p, m = phraser(claude)
    assert ((await p.phrase([alert()]))[0]).startswith("anthropic/")
    assert (await p.phrase([alert()]))[0] == "cache"
    assert len(claude.calls) == 1 and count(m, "pamd_ai_cache_hits_total") == 1
    assert ((await p.phrase([alert(spent=900.0)]))[0]).startswith("anthropic/")  # the facts changed
    preview = p.preview(alert())
    assert preview is not None and preview.cached and preview.cost_usd == 0.0


async def test_a_hallucinated_number_is_discarded_for_the_rule_text() -> None:
    lie = json.dumps({"title": "Budget at 85%", "body": "You spent 850 USD; 3 cheaper shops are near you."})
    claude = Scripted("anthropic", lie)
    p, m = phraser(claude, Scripted("gemini"))
    a = alert()
    assert (await p.phrase([a]))[0] == "rule:ungrounded"
    assert a.title == "Rule title" and a.body == "Rule body."
    assert count(m, "pamd_ai_requests_total", provider="anthropic", model="claude-sonnet-5-5",
                 outcome="rejected") == 1
    assert count(m, "pamd_ai_fallbacks_total", reason="ungrounded") == 1
    assert (await p.phrase([alert()]))[0] != "cache"  # a rejected reply is not cached


async def test_a_short_retry_after_is_honoured_once_a_long_one_falls_back() -> None:
    claude = Scripted("anthropic", ProviderError("rate_limited", "slow down", status=429, retry_after=0.01))
    gemini = Scripted("gemini")
    p, m = phraser(claude, gemini, max_retry_after=1.0)
    assert ((await p.phrase([alert()]))[0]).startswith("anthropic/")
    assert len(claude.calls) == 2 and not gemini.calls
    claude.script.append(ProviderError("rate_limited", "slow down", status=429, retry_after=30.0))
    assert ((await p.phrase([alert(fingerprint="x")]))[0]).startswith("gemini/")
    assert count(m, "pamd_ai_requests_total", provider="anthropic", model="claude-sonnet-5-5",
                 outcome="rate_limited") == 2


async def test_requests_in_flight_are_bounded() -> None:
    import anyio

    in_flight, peak = [0], [0]

    class Slow(Scripted):
        async def complete(self, *, model: str, system: str, prompt: str, max_tokens: int) -> Completion:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
            await anyio.sleep(0.02)
            in_flight[0] -= 1
            return await super().complete(model=model, system=system, prompt=prompt, max_tokens=max_tokens)

    p, _ = phraser(Slow("anthropic"), max_concurrency=3, batch_size=1)
    alerts = [alert(fingerprint=f"c{i}") for i in range(12)]
    await p.phrase_all(alerts)
    assert peak[0] == 3 and all(a.title == "Budget at 85%" for a in alerts)


async def test_a_tick_s_alerts_go_in_batches_and_a_bad_entry_costs_only_its_alert() -> None:
    claude = Scripted("anthropic")
    p, m = phraser(claude, batch_size=5)
    alerts = [alert(fingerprint=f"b{i}") for i in range(12)]
    alerts[7].facts["spent"] = 700.0  # the scripted reply says 850: ungrounded for this one only
    await p.phrase_all(alerts)
    assert len(claude.calls) == 3  # 5 + 5 + 2
    assert [a.title == "Budget at 85%" for a in alerts] == [True] * 7 + [False] + [True] * 4
    assert count(m, "pamd_ai_fallbacks_total", reason="ungrounded") == 1
    assert count(m, "pamd_ai_requests_total", provider="anthropic", model="claude-sonnet-5-5", outcome="success") == 2
    assert count(m, "pamd_ai_requests_total", provider="anthropic", model="claude-sonnet-5-5",
                 outcome="rejected") == 1


async def test_no_provider_keeps_the_rule_text() -> None:
    p, _ = phraser()
    assert not p.active
    preview = p.preview(alert())
    assert preview is not None and not preview.key_set and preview.provider == "anthropic"
    assert (await p.phrase([alert()]))[0] == "rule:no_provider"


async def test_a_cancelled_request_releases_its_reservation_and_its_trial() -> None:
    import anyio

    class Hangs(Scripted):
        async def complete(self, *, model: str, system: str, prompt: str, max_tokens: int) -> Completion:
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

    clock = Clock()
    p, _ = phraser(Hangs("anthropic"), clock=clock, breaker_failures=1, breaker_cooloff=10.0)
    p.breakers["anthropic"].failure()  # open
    clock.t = 11.0  # half-open: the next request is the trial
    with anyio.move_on_after(0.05):
        await p.phrase([alert()])
    assert p.ledger.reserved_usd == 0.0 and p.ledger.spent_usd == 0.0
    assert p.breakers["anthropic"].state == "half_open"  # no verdict: another trial may go
