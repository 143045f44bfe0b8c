"""AI phrasing end to end: the pipeline, the router and the real ``anthropic`` and ``google-genai`` SDKs, talking to
servers on 127.0.0.1 that speak the Anthropic Messages and Gemini generateContent wire formats (tests/fakes)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pamd.ai.prompt import read_prompt
from pamd.ai.setup import build_phraser
from pamd.config import Config, load_config
from pamd.metrics import Metrics
from pamd.model import Alert, Priority
from pamd.pipeline import AlertPipeline
from pamd.sinks.base import Sink
from pamd.store.sqlite import SQLiteStore
from tests.fakes.anthropic_api import AnthropicAPI
from tests.fakes.gemini_api import GeminiAPI
from tests.fakes.model_api import Answer, Compose, Error, Malformed

pytestmark = pytest.mark.anyio
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Inbox(Sink):
    name = "inbox"

    def __init__(self) -> None:
        self.got: list[Alert] = []

    async def deliver(self, alert: Alert) -> None:
        self.got.append(alert)


def config(tmp_path: Path, anthropic: AnthropicAPI, gemini: GeminiAPI, **ai: object) -> Config:
    lines = [f'[daemon]\nstate_dir = "{tmp_path}"\n[ai]']
    lines += [f"{k} = {_toml(v)}" for k, v in ai.items()]
    lines += [f'[ai.anthropic]\nbase_url = "{anthropic.url}"\ntimeout = 2.0',
              f'[ai.gemini]\nbase_url = "{gemini.url}"\ntimeout = 2.0']
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return load_config(path, environ={})


def _toml(value: object) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def keys(anthropic: AnthropicAPI | None, gemini: GeminiAPI | None) -> dict[str, str]:
    env = {}
    if anthropic is not None:
        env["ANTHROPIC_API_KEY"] = anthropic.api_key
    if gemini is not None:
        env["GEMINI_API_KEY"] = gemini.api_key
    return env


def budget_alert(user: str = "u1", spent: float = 850.0) -> Alert:
    return Alert(user_id=user, kind="budget_threshold", priority=Priority.HIGH, title="Budget 85% used",
                 body="Rule text.", facts={"spent": spent, "budget": 1000.0, "percent": spent / 10,
                                           "currency": "USD", "units": "metric"},
                 actions=[{"action": "review_budget", "label": "Review budget"}])


def entry(n: int, title: str, body: str) -> dict[str, object]:
    return {"n": n, "title": title, "body": body, "actions": [{"index": 0, "label": "Review"}]}


async def pipeline_with(cfg: Config, env: dict[str, str], tmp_path: Path) -> tuple[AlertPipeline, Inbox, Metrics,
                                                                                  SQLiteStore]:
    store = SQLiteStore(f"sqlite:///{tmp_path}/s.db")
    await store.migrate()
    metrics = Metrics()
    inbox = Inbox()
    phraser = build_phraser(cfg, metrics, env)
    return AlertPipeline({"inbox": inbox}, metrics, book=store, phraser=phraser), inbox, metrics, store


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return float(metrics.registry.get_sample_value(name, labels) or 0.0)


async def test_the_analysis_tier_goes_to_anthropic_and_the_stored_alert_carries_its_words(
        tmp_path: Path, anthropic_api: AnthropicAPI, gemini_api: GeminiAPI) -> None:
    cfg = config(tmp_path, anthropic_api, gemini_api)
    pipeline, inbox, metrics, store = await pipeline_with(cfg, keys(anthropic_api, gemini_api), tmp_path)
    anthropic_api.queue(Answer(json.dumps({"alerts": [
        entry(0, "You've used 85% of your budget", "850 of 1,000 USD spent so far this month."),
        entry(1, "Budget at 90%", "900 of 1,000 USD spent: slow down a little.")]}),
        input_tokens=700, output_tokens=90))
    await pipeline.submit("budget", [budget_alert("u1"), budget_alert("u2", 900.0)], epoch=0, now=NOW)
    assert [a.title for a in inbox.got] == ["You've used 85% of your budget", "Budget at 90%"]
    assert inbox.got[0].actions == [{"action": "review_budget", "label": "Review"}]
    (request,) = anthropic_api.requests
    assert request.model == "claude-sonnet-5-5" and "RV-travel assistant" in request.system
    assert [a["n"] for a in read_prompt(request.prompt)] == [0, 1]
    assert request.max_tokens == 800 and not gemini_api.requests
    stored = await store.due_held_alerts(NOW)  # nothing was held for quiet hours
    assert stored == []
    with sqlite3.connect(tmp_path / "s.db") as db:  # what the outbox would deliver again: the AI's words
        rows = db.execute("SELECT user_id, title, body FROM pam_alerts ORDER BY user_id").fetchall()
    assert rows == [("u1", "You've used 85% of your budget", "850 of 1,000 USD spent so far this month."),
                    ("u2", "Budget at 90%", "900 of 1,000 USD spent: slow down a little.")]
    assert sample(metrics, "pamd_ai_tokens_total", provider="anthropic", kind="input") == 700
    assert sample(metrics, "pamd_ai_cost_usd_total", provider="anthropic") == pytest.approx(
        (700 * 3.0 + 90 * 15.0) / 1e6)
    await pipeline.aclose()
    await store.aclose()


async def test_the_fast_tier_goes_to_gemini(tmp_path: Path, anthropic_api: AnthropicAPI,
                                            gemini_api: GeminiAPI) -> None:
    cfg = config(tmp_path, anthropic_api, gemini_api, tiers={"budget": "fast"})
    pipeline, inbox, metrics, store = await pipeline_with(cfg, keys(anthropic_api, gemini_api), tmp_path)
    gemini_api.queue(Answer(json.dumps({"alerts": [entry(0, "Budget: 85% used", "850 USD of 1000 spent.")]}),
                            input_tokens=500, output_tokens=40, thoughts_tokens=10))
    await pipeline.submit("budget", [budget_alert()], epoch=0, now=NOW)
    assert inbox.got[0].title == "Budget: 85% used" and not anthropic_api.requests
    assert gemini_api.requests[0].model == "gemini-3.5-flash"
    assert sample(metrics, "pamd_ai_tokens_total", provider="gemini", kind="output") == 50  # thinking is billed
    await pipeline.aclose()
    await store.aclose()


@pytest.mark.parametrize(("first", "second", "reason"), [
    (Error(529), Error(500), "server_error"),
    (Error(429, retry_after=30), Malformed(), "bad_response"),
    (Answer(delay=3.0), Error(503), "overloaded"),  # past the 2-s timeout
])
async def test_both_providers_failing_leaves_the_rule_text(
        tmp_path: Path, anthropic_api: AnthropicAPI, gemini_api: GeminiAPI,
        first: object, second: object, reason: str) -> None:
    cfg = config(tmp_path, anthropic_api, gemini_api)
    pipeline, inbox, metrics, store = await pipeline_with(cfg, keys(anthropic_api, gemini_api), tmp_path)
    anthropic_api.queue(first)  # type: ignore[arg-type]
    gemini_api.queue(second)  # type: ignore[arg-type]
    await pipeline.submit("budget", [budget_alert()], epoch=0, now=NOW)
    assert inbox.got[0].title == "Budget 85% used"  # delivered all the same, in its rule text
    assert len(anthropic_api.requests) == 1 and len(gemini_api.requests) == 1  # no SDK retries of their own
    assert sample(metrics, "pamd_ai_fallbacks_total", reason=reason) == 1
    await pipeline.aclose()
    await store.aclose()


async def test_a_short_retry_after_is_waited_for_then_the_other_provider_is_not_needed(
        tmp_path: Path, anthropic_api: AnthropicAPI, gemini_api: GeminiAPI) -> None:
    cfg = config(tmp_path, anthropic_api, gemini_api, max_retry_after=1.0)
    pipeline, inbox, metrics, store = await pipeline_with(cfg, keys(anthropic_api, gemini_api), tmp_path)
    anthropic_api.queue(Error(429, retry_after=0.2), Compose())
    await pipeline.submit("budget", [budget_alert()], epoch=0, now=NOW)
    assert inbox.got[0].title == "Budget threshold" and len(anthropic_api.requests) == 2
    assert not gemini_api.requests
    assert sample(metrics, "pamd_ai_requests_total", provider="anthropic", model="claude-sonnet-5-5",
                  outcome="rate_limited") == 1
    await pipeline.aclose()
    await store.aclose()


async def test_a_hallucinated_number_is_never_delivered(tmp_path: Path, anthropic_api: AnthropicAPI,
                                                        gemini_api: GeminiAPI) -> None:
    cfg = config(tmp_path, anthropic_api, gemini_api)
    pipeline, inbox, metrics, store = await pipeline_with(cfg, keys(anthropic_api, gemini_api), tmp_path)
    anthropic_api.queue(Answer(json.dumps({"alerts": [
        entry(0, "Budget at 85%", "850 USD spent; camping at Moab costs 45 USD a night.")]})))
    await pipeline.submit("budget", [budget_alert()], epoch=0, now=NOW)
    assert inbox.got[0].body == "Rule text."
    assert sample(metrics, "pamd_ai_fallbacks_total", reason="ungrounded") == 1
    assert not gemini_api.requests  # a model that invents is not asked twice
    await pipeline.aclose()
    await store.aclose()


async def test_repeats_come_from_the_cache_and_the_cap_stops_spending_mid_day(
        tmp_path: Path, anthropic_api: AnthropicAPI, gemini_api: GeminiAPI) -> None:
    cfg = config(tmp_path, anthropic_api, gemini_api, daily_budget_usd=0.01, batch_size=1)
    metrics = Metrics()
    phraser = build_phraser(cfg, metrics, keys(anthropic_api, None))
    anthropic_api.default = Answer(json.dumps({"title": "Budget at 85%", "body": "850 of 1000 USD spent."}),
                                   input_tokens=600, output_tokens=100)  # 0.0033 USD billed each
    first = [budget_alert(f"u{i}") for i in range(5)]
    for a in first:
        a.monitor, a.fingerprint = "budget", f"fp-{a.user_id}"
    outcomes = [(await phraser.phrase([a]))[0] for a in first]
    assert outcomes[:3] == ["anthropic/claude-sonnet-5-5"] * 3 and outcomes[3:] == ["rule:budget"] * 2
    assert len(anthropic_api.requests) == 3
    again = budget_alert("u0")
    again.monitor, again.fingerprint = "budget", "fp-u0"
    assert (await phraser.phrase([again]))[0] == "cache"  # unchanged facts: free even past the cap
    assert len(anthropic_api.requests) == 3
    await phraser.aclose()
    assert json.loads((tmp_path / "ai_spend.json").read_text())["spent_usd"] == pytest.approx(3 * 0.0033)


def test_without_keys_no_sdk_is_imported_and_trigger_says_ai_is_off(tmp_path: Path) -> None:
    code = (
        "import sys, anyio\n"
        "from pamd.config import load_config\n"
        "from pamd.metrics import Metrics\n"
        "from pamd.ai.setup import build_phraser\n"
        "p = build_phraser(load_config(None, {}), Metrics(), {})\n"
        "assert not p.active\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('anthropic', 'google')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.stdout.strip() == "[]"
    run = subprocess.run([sys.executable, "-m", "pamd", "trigger", "budget", "--dry-run"], check=False,
                         capture_output=True,
                         text=True, cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert "AI phrasing: off" in run.stderr, run.stderr


def test_a_dry_run_with_a_key_shows_the_prompt_and_its_cost_and_sends_nothing(
        tmp_path: Path, anthropic_api: AnthropicAPI, gemini_api: GeminiAPI) -> None:
    (tmp_path / "config.toml").write_text(
        f'[ai.anthropic]\nbase_url = "{anthropic_api.url}"\n[ai.gemini]\nbase_url = "{gemini_api.url}"\n'
        '[providers.places]\nenabled = false\n')
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), **keys(anthropic_api, gemini_api)}
    run = subprocess.run([sys.executable, "-m", "pamd", "trigger", "budget", "--dry-run"], check=False,
                         capture_output=True,
                         text=True, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr
    assert "AI: anthropic claude-sonnet-5-5, ~" in run.stderr
    assert '    prompt: {"groups":[{"monitor":"budget",' in run.stderr
    assert "would cost about $" in run.stderr
    assert not anthropic_api.requests and not gemini_api.requests
