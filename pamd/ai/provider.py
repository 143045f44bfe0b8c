"""The contract between pamd's AI phrasing and a model provider (Anthropic, Gemini, or a third party's).

A provider turns one prompt into one reply and reports the tokens it was billed for. It does not retry, route, cache
or validate: :mod:`pamd.ai.router` does. Failures are :class:`ProviderError` with a ``kind`` the router acts on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

__all__ = ["AIProvider", "Completion", "ErrorKind", "ProviderError", "ProviderSettings"]

ErrorKind = Literal[
    "rate_limited",  # 429: honour retry_after, else try the other provider
    "overloaded",  # Anthropic's 529 / a 503: the service is busy
    "server_error",  # other 5xx
    "timeout",  # no answer within the provider's timeout
    "connection",  # could not connect / connection dropped
    "auth",  # 401/403: the key is wrong; retrying cannot help
    "bad_request",  # other 4xx: the request (model name, max tokens...) is wrong
    "bad_response",  # 2xx whose body is not what the API promises (not JSON, no text, no usage)
]


class ProviderError(Exception):
    """A failed completion. ``retry_after``: seconds the server asked to wait (``Retry-After``), if any."""

    def __init__(self, kind: ErrorKind, message: str, *, status: int | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class Completion:
    """One reply: its text (pamd asks for a JSON object) and the tokens billed for it."""

    text: str
    input_tokens: int
    output_tokens: int
    model: str


@dataclass(frozen=True)
class ProviderSettings:
    """What a provider needs to connect (``[ai.anthropic]``, ``[ai.gemini]``); the key comes from the environment."""

    api_key: str
    base_url: str = ""  # empty: the SDK's default endpoint
    timeout: float = 20.0  # seconds per request


@runtime_checkable
class AIProvider(Protocol):
    """A model API. ``name`` labels metrics and logs (``anthropic``, ``gemini``)."""

    name: str

    async def complete(self, *, model: str, system: str, prompt: str, max_tokens: int) -> Completion:
        """Send ``system`` + ``prompt`` to ``model``; return the reply or raise :class:`ProviderError`."""
        ...

    async def aclose(self) -> None:
        """Close connections."""
        ...
