"""Anthropic's Messages API through the official ``anthropic`` SDK (imported when a provider is built, not before).

One ``messages.create`` per completion, with the SDK's own retries off: the router decides whether and where to try
again. SDK exceptions become :class:`~pamd.ai.provider.ProviderError` kinds; a 2xx whose body is not a message with
text and usage is ``bad_response`` (the SDK does not validate replies, so this module checks what it reads).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import anyio

from pamd.ai.failures import kind_for_status, retry_after_seconds
from pamd.ai.provider import Completion, ProviderError, ProviderSettings

if TYPE_CHECKING:
    import anthropic

__all__ = ["AnthropicProvider"]


class AnthropicProvider:
    """:class:`~pamd.ai.provider.AIProvider` for Claude models. Raises ``ImportError`` without the SDK."""

    name = "anthropic"

    def __init__(self, settings: ProviderSettings) -> None:
        import anthropic  # lazy: only a configured key pays for the SDK

        self._timeout = settings.timeout
        self._client = anthropic.AsyncAnthropic(
            api_key=settings.api_key, base_url=settings.base_url or None, timeout=settings.timeout, max_retries=0)

    async def complete(self, *, model: str, system: str, prompt: str, max_tokens: int) -> Completion:
        """One Messages API call; see :meth:`pamd.ai.provider.AIProvider.complete`."""
        import anthropic

        try:
            # The SDK's timeout bounds each read, not the whole call; a reply that trickles in must not hold a job.
            with anyio.fail_after(self._timeout):
                message = await self._client.messages.create(
                    model=model, max_tokens=max_tokens, system=system,
                    messages=[{"role": "user", "content": prompt}])
        except TimeoutError as exc:
            raise ProviderError("timeout", f"no reply within {self._timeout:g} s") from exc
        except anthropic.APIError as exc:
            raise _provider_error(exc) from exc
        except json.JSONDecodeError as exc:  # the SDK parses a 2xx JSON body and lets this through
            raise ProviderError("bad_response", f"reply is not JSON: {exc}") from exc
        return _completion(message, model)

    async def aclose(self) -> None:
        """Close the SDK's HTTP connections."""
        await self._client.close()


def _provider_error(exc: anthropic.APIError) -> ProviderError:
    import anthropic

    if isinstance(exc, anthropic.APITimeoutError):  # before APIConnectionError: it is a subclass
        return ProviderError("timeout", str(exc))
    if isinstance(exc, anthropic.APIConnectionError):
        return ProviderError("connection", str(exc) if exc.__cause__ is None else f"{exc} ({exc.__cause__!r})")
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        kind = "overloaded" if exc.type == "overloaded_error" else kind_for_status(status)
        headers = exc.response.headers
        retry_after = retry_after_seconds(headers.get("retry-after"))
        if headers.get("retry-after-ms"):  # Anthropic's finer-grained variant, when sent
            retry_ms = retry_after_seconds(headers.get("retry-after-ms"))
            retry_after = retry_after if retry_ms is None else retry_ms / 1000
        return ProviderError(kind, exc.api_message or str(exc), status=status, retry_after=retry_after)
    if isinstance(exc, anthropic.APIResponseValidationError):
        return ProviderError("bad_response", str(exc), status=exc.status_code)
    return ProviderError("bad_response", str(exc))


def _completion(message: object, model: str) -> Completion:
    """The text blocks and token counts of a reply, which the SDK does not check (an odd body gives ``None``s)."""
    content = getattr(message, "content", None)
    usage = getattr(message, "usage", None)
    if not isinstance(content, list):
        raise ProviderError("bad_response", f"reply has no content list: {str(message)[:200]}")
    texts = [block.text for block in content
             if getattr(block, "type", None) == "text" and isinstance(getattr(block, "text", None), str)]
    if not texts:
        raise ProviderError("bad_response", "reply has no text block")
    input_tokens = getattr(usage, "input_tokens", None)
    output_tokens = getattr(usage, "output_tokens", None)
    if not isinstance(input_tokens, int) or not isinstance(output_tokens, int):
        raise ProviderError("bad_response", "reply has no token usage")
    replied_model = getattr(message, "model", None)
    return Completion("".join(texts), input_tokens, output_tokens,
                      replied_model if isinstance(replied_model, str) and replied_model else model)
