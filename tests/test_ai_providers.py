"""The AI providers through the real SDKs (``anthropic``, ``google-genai``) against fake APIs on 127.0.0.1 that speak
each API's wire format (tests/fakes/anthropic_api.py, tests/fakes/gemini_api.py): no mocks of the SDKs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from pamd.ai.anthropic_provider import AnthropicProvider
from pamd.ai.failures import kind_for_status, retry_after_seconds
from pamd.ai.gemini_provider import GeminiProvider
from pamd.ai.provider import AIProvider, Completion, ProviderError, ProviderSettings
from pamd.ai.providers import ProviderConfig, open_providers
from tests.conftest import REPO, free_port
from tests.fakes import anthropic_api, gemini_api
from tests.fakes.anthropic_api import AnthropicAPI
from tests.fakes.gemini_api import GeminiAPI
from tests.fakes.model_api import Answer, Error, Malformed, ScriptedModelAPI

TIMEOUT = 0.3  # the timeout cases' provider timeout (``hasty``)
PATIENCE = 10.0  # every other case's: a loaded CI machine must not turn a 429 or a reply into a timeout
SYSTEM = "You phrase pamd alerts. Reply with a JSON object {title, body}; use only the facts given."
PROMPT = '{"monitor": "fuel", "facts": {"range_km": 74, "next_station": "Green River"}}'


@dataclass
class Target:
    """One provider under test and the fake API it talks to."""

    fake: ScriptedModelAPI
    provider: AIProvider
    model: str
    overloaded_status: int  # how this API says "busy"


@asynccontextmanager
async def opened(provider: AIProvider) -> AsyncIterator[AIProvider]:
    try:
        yield provider
    finally:
        await provider.aclose()


def _provider(name: str, url: str, api_key: str = "", timeout: float = PATIENCE) -> AIProvider:
    if name == "anthropic":
        return AnthropicProvider(ProviderSettings(api_key or anthropic_api.API_KEY, url, timeout))
    return GeminiProvider(ProviderSettings(api_key or gemini_api.API_KEY, url, timeout))


@asynccontextmanager
async def _target(request: pytest.FixtureRequest, seconds: float) -> AsyncIterator[Target]:
    fake: ScriptedModelAPI = request.getfixturevalue(f"{request.param}_api")  # only the fake this case needs
    model, busy = ("claude-sonnet-test", 529) if request.param == "anthropic" else ("gemini-flash-test", 503)
    target = Target(fake, _provider(request.param, fake.url, timeout=seconds), model, busy)
    async with opened(target.provider):
        yield target


@pytest.fixture(params=["anthropic", "gemini"])
async def target(request: pytest.FixtureRequest) -> AsyncIterator[Target]:
    async with _target(request, PATIENCE) as target:
        yield target


@pytest.fixture(params=["anthropic", "gemini"])
async def hasty(request: pytest.FixtureRequest) -> AsyncIterator[Target]:
    """``target`` with a provider timeout of :data:`TIMEOUT`, for the timeout cases."""
    async with _target(request, TIMEOUT) as target:
        yield target


async def _complete(target: Target, max_tokens: int = 300) -> Completion:
    return await target.provider.complete(model=target.model, system=SYSTEM, prompt=PROMPT, max_tokens=max_tokens)


async def _failure(target: Target) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await _complete(target)
    return caught.value


# --- through the SDKs -------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_reply_gives_its_text_and_billed_tokens_and_the_request_carries_what_was_asked(target: Target) -> None:
    target.fake.queue(Answer('{"title": "Fuel low", "body": "74 km left"}', input_tokens=123, output_tokens=45))
    completion = await _complete(target, max_tokens=321)
    assert completion == Completion('{"title": "Fuel low", "body": "74 km left"}', 123, 45, target.model)
    [sent] = target.fake.requests
    assert (sent.model, sent.system, sent.prompt, sent.max_tokens) == (target.model, SYSTEM, PROMPT, 321)
    assert sent.api_key == target.fake.api_key


@pytest.mark.anyio
async def test_anthropic_request_is_the_messages_api_shape(anthropic_api: AnthropicAPI) -> None:
    async with opened(_provider("anthropic", anthropic_api.url)) as provider:
        await provider.complete(model="claude-sonnet-test", system=SYSTEM, prompt=PROMPT, max_tokens=200)
    [sent] = anthropic_api.requests
    assert sent.http.path == "/v1/messages"
    assert sent.json["messages"] == [{"role": "user", "content": PROMPT}]
    assert {name.lower() for name in sent.http.headers} >= {"anthropic-version", "authorization"}


@pytest.mark.anyio
async def test_gemini_request_asks_for_json(gemini_api: GeminiAPI) -> None:
    async with opened(_provider("gemini", gemini_api.url)) as provider:
        await provider.complete(model="gemini-flash-test", system=SYSTEM, prompt=PROMPT, max_tokens=200)
    [sent] = gemini_api.requests
    assert sent.http.path.endswith("/models/gemini-flash-test:generateContent")
    assert sent.json["generationConfig"]["responseMimeType"] == "application/json"
    assert sent.json["contents"] == [{"role": "user", "parts": [{"text": PROMPT}]}]


@pytest.mark.anyio
async def test_gemini_thinking_tokens_are_billed_as_output(gemini_api: GeminiAPI) -> None:
    gemini_api.queue(Answer("{}", input_tokens=10, output_tokens=5, thoughts_tokens=100))
    async with opened(_provider("gemini", gemini_api.url)) as provider:
        completion = await provider.complete(model="gemini-flash-test", system=SYSTEM, prompt=PROMPT, max_tokens=9)
    assert (completion.input_tokens, completion.output_tokens) == (10, 105)


@pytest.mark.anyio
async def test_rate_limit_with_retry_after_seconds(target: Target) -> None:
    # Anthropic sends the retry-after header; Gemini a RetryInfo detail ("2s")
    target.fake.queue(Error(429, retry_after=2))
    error = await _failure(target)
    assert (error.kind, error.status, error.retry_after) == ("rate_limited", 429, 2.0)
    assert len(target.fake.requests) == 1  # the SDK did not retry on its own


@pytest.mark.anyio
async def test_anthropic_retry_after_as_an_http_date(anthropic_api: AnthropicAPI) -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    anthropic_api.queue(Error(429, retry_after=format_datetime(when, usegmt=True)))
    async with opened(_provider("anthropic", anthropic_api.url)) as provider:
        with pytest.raises(ProviderError) as caught:
            await provider.complete(model="claude-sonnet-test", system=SYSTEM, prompt=PROMPT, max_tokens=9)
    assert caught.value.kind == "rate_limited"
    assert caught.value.retry_after is not None and 25 < caught.value.retry_after <= 30


@pytest.mark.anyio
async def test_gemini_retry_after_header_wins_over_retry_info(gemini_api: GeminiAPI) -> None:
    gemini_api.queue(Error(429, retry_after=30, headers={"Retry-After": "7"}))
    async with opened(_provider("gemini", gemini_api.url)) as provider:
        with pytest.raises(ProviderError) as caught:
            await provider.complete(model="gemini-flash-test", system=SYSTEM, prompt=PROMPT, max_tokens=9)
    assert (caught.value.kind, caught.value.retry_after) == ("rate_limited", 7.0)


@pytest.mark.anyio
async def test_rate_limit_without_retry_after(target: Target) -> None:
    target.fake.queue(Error(429))
    error = await _failure(target)
    assert (error.kind, error.retry_after) == ("rate_limited", None)


@pytest.mark.anyio
@pytest.mark.parametrize(("status", "kind"), [(500, "server_error"), (502, "server_error"), (401, "auth"),
                                              (403, "auth"), (400, "bad_request"), (404, "bad_request")])
async def test_http_errors_map_to_kinds_without_sdk_retries(target: Target, status: int, kind: str) -> None:
    target.fake.queue(Error(status), Error(status), Error(status))
    error = await _failure(target)
    assert (error.kind, error.status) == (kind, status)
    assert len(target.fake.requests) == 1  # both SDKs retry 5xx by default: ours must not


@pytest.mark.anyio
async def test_overloaded(target: Target) -> None:
    target.fake.queue(Error(target.overloaded_status))
    error = await _failure(target)
    assert (error.kind, error.status) == ("overloaded", target.overloaded_status)
    assert len(target.fake.requests) == 1


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["anthropic", "gemini"])
async def test_a_wrong_key_is_auth(name: str, anthropic_api: AnthropicAPI, gemini_api: GeminiAPI) -> None:
    # Anthropic answers 401; Gemini 400 INVALID_ARGUMENT with reason API_KEY_INVALID
    fake: ScriptedModelAPI = anthropic_api if name == "anthropic" else gemini_api
    async with opened(_provider(name, fake.url, api_key="not-the-key")) as provider:
        with pytest.raises(ProviderError) as caught:
            await provider.complete(model="m", system=SYSTEM, prompt=PROMPT, max_tokens=9)
    assert caught.value.kind == "auth"
    assert len(fake.http_requests) == 1 and not fake.requests


@pytest.mark.anyio
@pytest.mark.parametrize("body", [
    '{"id": "msg_01", "content": [{"type": "te', "<html>502 Bad Gateway</html>", '{"foo": 1}', "[1, 2]",
    '{"content": [{"type": "text", "text": "hi"}]}', '{"content": [], "usage": {"input_tokens": 1}}',
    '{"candidates": [{"content": {"parts": [{"text": "hi"}]}}]}',
])
async def test_a_2xx_that_is_not_the_api_shape_is_bad_response(target: Target, body: str) -> None:
    target.fake.queue(Malformed(body))
    error = await _failure(target)
    assert error.kind == "bad_response", error


@pytest.mark.anyio
async def test_a_reply_slower_than_the_timeout_is_a_timeout(hasty: Target) -> None:
    hasty.fake.queue(Answer(delay=TIMEOUT * 5))
    started = time.monotonic()
    error = await _failure(hasty)
    assert error.kind == "timeout"
    assert time.monotonic() - started < TIMEOUT * 4  # given up on time, not when the reply came
    assert len(hasty.fake.requests) == 1


@pytest.mark.anyio
async def test_a_reply_that_trickles_in_past_the_timeout_is_a_timeout(hasty: Target) -> None:
    # no read waits longer than the timeout (0.1 s gaps), but the whole reply takes 1 s
    hasty.fake.queue(Answer(trickle=TIMEOUT / 3))
    started = time.monotonic()
    error = await _failure(hasty)
    assert error.kind == "timeout"
    assert time.monotonic() - started < TIMEOUT * 3


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["anthropic", "gemini"])
async def test_connection_refused_is_connection(name: str) -> None:
    async with opened(_provider(name, f"http://127.0.0.1:{free_port()}")) as provider:
        with pytest.raises(ProviderError) as caught:
            await provider.complete(model="m", system=SYSTEM, prompt=PROMPT, max_tokens=9)
    assert caught.value.kind == "connection"


@pytest.mark.anyio
async def test_the_provider_works_on_after_a_failure(target: Target) -> None:
    target.fake.queue(Error(500), Malformed())
    for _ in range(2):
        await _failure(target)
    assert (await _complete(target)).text == Answer().text
    assert len(target.fake.requests) == 3


# --- failure helpers ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "kind"), [
    (429, "rate_limited"), (529, "overloaded"), (503, "overloaded"), (500, "server_error"), (504, "server_error"),
    (401, "auth"), (403, "auth"), (408, "timeout"), (400, "bad_request"), (413, "bad_request"),
    (201, "bad_response"),
])
def test_kind_for_status(status: int, kind: str) -> None:
    assert kind_for_status(status) == kind


def test_retry_after_seconds() -> None:
    now = datetime(2026, 3, 15, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds("2", now) == 2.0
    assert retry_after_seconds(" 1.5 ", now) == 1.5
    assert retry_after_seconds("Sun, 15 Mar 2026 12:00:42 GMT", now) == 42.0
    assert retry_after_seconds("Sun, 15 Mar 2026 11:00:00 GMT", now) == 0.0  # already past
    assert retry_after_seconds("-3", now) == 0.0
    for unreadable in (None, "", "soon", "nan", "inf"):
        assert retry_after_seconds(unreadable, now) is None


# --- building providers from the environment ----------------------------------------------------------------------

BOTH = {"anthropic": ProviderConfig(), "gemini": ProviderConfig()}


@pytest.mark.anyio
async def test_only_providers_with_a_key_are_built() -> None:
    built = open_providers(BOTH, {"GEMINI_API_KEY": "k", "ANTHROPIC_API_KEY": "  "})
    assert list(built) == ["gemini"] and isinstance(built["gemini"], GeminiProvider)
    await built["gemini"].aclose()


@pytest.mark.anyio
async def test_the_key_variable_is_configurable(anthropic_api: AnthropicAPI) -> None:
    config = {"anthropic": ProviderConfig(key_env="PAMD_CLAUDE_KEY", base_url=anthropic_api.url, timeout=PATIENCE)}
    assert open_providers(config, {"ANTHROPIC_API_KEY": anthropic_api.api_key}) == {}
    built = open_providers(config, {"PAMD_CLAUDE_KEY": anthropic_api.api_key})
    async with opened(built["anthropic"]) as provider:
        await provider.complete(model="claude-sonnet-test", system=SYSTEM, prompt=PROMPT, max_tokens=9)
    assert anthropic_api.requests[0].api_key == anthropic_api.api_key


def test_an_unknown_provider_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="openai"):
        open_providers({"openai": ProviderConfig()}, {})


_PROBE = """
import json, logging, sys
for name in {hide}:
    sys.modules[name] = None  # as if not installed: importing it raises ImportError
logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
from pamd.ai.providers import ProviderConfig, open_providers
import pamd.ai.anthropic_provider, pamd.ai.gemini_provider
built = open_providers({{"anthropic": ProviderConfig(), "gemini": ProviderConfig()}}, {env})
print(json.dumps({{"built": sorted(built), "anthropic": "anthropic" in sys.modules,
                  "genai": "google.genai" in sys.modules}}))
"""


def _probe(env: dict[str, str], hide: tuple[str, ...] = ()) -> tuple[dict[str, object], str]:
    environ = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    done = subprocess.run([sys.executable, "-c", _PROBE.format(env=env, hide=hide)], capture_output=True, text=True,
                          cwd=REPO, env=environ, timeout=60, check=True)
    result: dict[str, object] = json.loads(done.stdout)
    return result, done.stderr


def test_without_keys_no_sdk_is_imported() -> None:
    result, _ = _probe({})
    assert result == {"built": [], "anthropic": False, "genai": False}


def test_a_key_imports_only_its_own_sdk() -> None:
    result, _ = _probe({"ANTHROPIC_API_KEY": "k"})
    assert result == {"built": ["anthropic"], "anthropic": True, "genai": False}


@pytest.mark.parametrize(("missing", "variable", "other"), [("anthropic", "ANTHROPIC_API_KEY", "gemini"),
                                                             ("google.genai", "GEMINI_API_KEY", "anthropic")])
def test_a_missing_sdk_is_one_warning_not_a_crash(missing: str, variable: str, other: str) -> None:
    result, stderr = _probe({"ANTHROPIC_API_KEY": "k", "GEMINI_API_KEY": "k"}, hide=(missing,))
    assert result["built"] == [other]  # the other provider is still there
    warnings = [line for line in stderr.splitlines() if line.startswith("WARNING pamd.ai")]
    assert len(warnings) == 1 and variable in warnings[0] and "pamd[ai]" in warnings[0], stderr
