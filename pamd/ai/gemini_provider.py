"""Google's Gemini API through the official ``google-genai`` SDK (imported when a provider is built, not before).

One ``generateContent`` per completion, asking for a JSON reply, with the SDK's retries off (one attempt: that also
stops its implicit reconnect-and-retry when aiohttp is installed). The SDK lets HTTP-layer exceptions (httpx2's, or
aiohttp's) and JSON errors through; they become :class:`~pamd.ai.provider.ProviderError` kinds here.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import anyio

from pamd.ai.failures import kind_for_status, retry_after_seconds
from pamd.ai.provider import Completion, ProviderError, ProviderSettings

if TYPE_CHECKING:
    from google.genai import errors

__all__ = ["GeminiProvider"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")  # a google.protobuf.Duration in JSON: "2s", "0.5s"


class GeminiProvider:
    """:class:`~pamd.ai.provider.AIProvider` for Gemini models. Raises ``ImportError`` without the SDK."""

    name = "gemini"

    def __init__(self, settings: ProviderSettings) -> None:
        from google import genai  # lazy: only a configured key pays for the SDK (and google-auth, requests...)
        from google.genai import types

        self._timeout = settings.timeout
        # vertexai=False: GOOGLE_GENAI_USE_VERTEXAI in the environment must not send the key elsewhere.
        self._client = genai.Client(api_key=settings.api_key, vertexai=False, http_options=types.HttpOptions(
            base_url=settings.base_url or None, timeout=max(1, round(settings.timeout * 1000)),  # milliseconds
            retry_options=types.HttpRetryOptions(attempts=1)))

    async def complete(self, *, model: str, system: str, prompt: str, max_tokens: int) -> Completion:
        """One generateContent call; see :meth:`pamd.ai.provider.AIProvider.complete`."""
        import httpx2  # google-genai's HTTP client
        from google.genai import errors, types

        config = types.GenerateContentConfig(
            system_instruction=system, max_output_tokens=max_tokens, response_mime_type="application/json")
        try:
            # The SDK's timeout bounds each read, not the whole call; a reply that trickles in must not hold a job.
            with anyio.fail_after(self._timeout):
                response = await self._client.aio.models.generate_content(model=model, contents=prompt, config=config)
        except errors.APIError as exc:
            raise _provider_error(exc) from exc
        except (json.JSONDecodeError, errors.UnknownApiResponseError) as exc:
            raise ProviderError("bad_response", f"reply is not JSON: {exc}") from exc
        except (httpx2.TimeoutException, TimeoutError) as exc:  # TimeoutError: ours, or aiohttp's
            raise ProviderError("timeout", f"no reply within {self._timeout:g} s: {exc!r}") from exc
        except (httpx2.TransportError, OSError) as exc:  # OSError: aiohttp's connection errors derive from it
            raise ProviderError("connection", f"{type(exc).__name__}: {exc}") from exc
        return _completion(response, model)

    async def aclose(self) -> None:
        """Close the SDK's HTTP connections."""
        await self._client.aio.aclose()
        self._client.close()


def _provider_error(exc: errors.APIError) -> ProviderError:
    status = exc.code if isinstance(exc.code, int) else 0
    details = _details(exc.details)
    kind = kind_for_status(status)
    if status == 400 and any(d.get("reason") == "API_KEY_INVALID" for d in details):
        kind = "auth"  # Gemini answers a wrong key with 400 INVALID_ARGUMENT, not 401
    response: Any = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    retry_after = retry_after_seconds(headers.get("retry-after")) if headers is not None else None
    if retry_after is None:  # Gemini says how long to wait in a google.rpc.RetryInfo detail
        delays = [d.get("retryDelay") for d in details if str(d.get("@type", "")).endswith("google.rpc.RetryInfo")]
        match = _DURATION.match(delays[0]) if delays and isinstance(delays[0], str) else None
        retry_after = float(match[1]) if match else None
    return ProviderError(kind, f"{exc.status or status}: {exc.message or exc}", status=status or None,
                         retry_after=retry_after)


def _details(body: object) -> list[dict[str, Any]]:
    """The ``error.details`` list of an error body, as far as it is one."""
    error = body.get("error", body) if isinstance(body, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def _completion(response: Any, model: str) -> Completion:
    """The reply's text and billed tokens; the SDK gives ``None`` for what an odd body lacks."""
    try:
        text = response.text  # the first candidate's text parts (thoughts excluded)
    except (AttributeError, TypeError, ValueError) as exc:
        raise ProviderError("bad_response", f"reply has no readable text: {exc}") from exc
    if not isinstance(text, str) or not text:
        raise ProviderError("bad_response", "reply has no text (blocked, or not a generateContent reply)")
    usage = getattr(response, "usage_metadata", None)
    prompt_tokens = getattr(usage, "prompt_token_count", None)
    output_tokens = getattr(usage, "candidates_token_count", None)
    thoughts = getattr(usage, "thoughts_token_count", None)
    if not isinstance(prompt_tokens, int) or not isinstance(output_tokens, int):
        raise ProviderError("bad_response", "reply has no token usage")
    # Thinking models bill their thoughts as output tokens: the spend cap must count them.
    output_tokens += thoughts if isinstance(thoughts, int) else 0
    version = getattr(response, "model_version", None)
    return Completion(text, prompt_tokens, output_tokens, version if isinstance(version, str) and version else model)
