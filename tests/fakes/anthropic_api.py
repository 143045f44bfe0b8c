"""A fake Anthropic Messages API (``POST /v1/messages``) on 127.0.0.1, for the real ``anthropic`` SDK.

Requests need the fake's ``api_key`` (in ``x-api-key``, or as ``Authorization: Bearer``, which the 2.x SDK sends;
otherwise 401) and ``anthropic-version`` (otherwise 400), and a
JSON body with ``model``, ``max_tokens`` and ``messages`` (otherwise 400). A reply (https://docs.anthropic.com/en/api/
messages)::

    {"id": "msg_01...", "type": "message", "role": "assistant", "model": "<the model asked for>",
     "content": [{"type": "text", "text": "..."}], "stop_reason": "end_turn", "stop_sequence": null,
     "usage": {"input_tokens": 42, "output_tokens": 17, "cache_creation_input_tokens": 0, ...}}

Errors (https://docs.anthropic.com/en/api/errors) carry a ``request-id`` header and the body
``{"type": "error", "error": {"type": "rate_limit_error", "message": "..."}, "request_id": "req_..."}``; the type
follows the status: 400 invalid_request_error, 401 authentication_error, 403 permission_error, 404 not_found_error,
413 request_too_large, 429 rate_limit_error, 529 overloaded_error, other 5xx api_error. ``Error.retry_after`` is sent
as the ``retry-after`` header (seconds, or an HTTP date given as a string), as the API does on 429s.

Scripting: :mod:`tests.fakes.model_api`. The ``anthropic_api`` fixture serves one for a test.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.model_api import Answer, Error, ModelRequest, ScriptedModelAPI, header, running
from tests.fakes.server import Reply, Request

API_KEY = "sk-ant-test-0123456789"
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 529: "overloaded_error"}
MESSAGES = {400: "Invalid request", 401: "invalid x-api-key", 403: "Your API key does not have permission to use "
            "the specified resource.", 404: "Not found", 413: "Request exceeds the maximum allowed number of bytes.",
            429: "Number of request tokens has exceeded your per-minute rate limit", 500: "Internal server error",
            529: "Overloaded"}


def _error_reply(status: int, message: str = "", headers: dict[str, str] | None = None) -> Reply:
    request_id = f"req_{secrets.token_hex(12)}"
    body = {"type": "error", "request_id": request_id, "error": {
        "type": ERROR_TYPES.get(status, "api_error"), "message": message or MESSAGES.get(status, "Internal error")}}
    return Reply(status, body, {"request-id": request_id, **(headers or {})})


def _text(content: Any) -> str:
    """A string, or the text of a list of content blocks (``system`` and message ``content`` may be either)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


class AnthropicWire:
    """The Messages API's request, reply and error shapes."""

    def __init__(self, api: AnthropicAPI) -> None:
        self._api = api

    def parse(self, request: Request) -> ModelRequest | Reply:
        if request.method != "POST" or request.path != "/v1/messages":
            return _error_reply(404, f"Not found: {request.method} {request.path}")
        bearer = header(request, "authorization") or ""
        key = header(request, "x-api-key") or (bearer[7:] if bearer.lower().startswith("bearer ") else None)
        if not key:
            return _error_reply(401, "x-api-key header is required")
        if key != self._api.api_key:
            return _error_reply(401, "invalid x-api-key")
        if not header(request, "anthropic-version"):
            return _error_reply(400, "anthropic-version: header is required")
        try:
            body = json.loads(request.body)
        except ValueError:
            return _error_reply(400, "There was an error parsing the body of your request as JSON")
        if not isinstance(body, dict):
            return _error_reply(400, "body: Input should be an object")
        for name in ("model", "max_tokens", "messages"):
            if name not in body:
                return _error_reply(400, f"{name}: Field required")
        messages = body["messages"]
        if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
            return _error_reply(400, "messages: at least one message is required")
        return ModelRequest(model=str(body["model"]), system=_text(body.get("system", "")),
                            prompt=_text(messages[-1].get("content")), max_tokens=body["max_tokens"],
                            api_key=key, json=body, http=request)

    def answer(self, request: ModelRequest, answer: Answer) -> Reply:
        return Reply(200, {
            "id": f"msg_{secrets.token_hex(12)}", "type": "message", "role": "assistant", "model": request.model,
            "content": [{"type": "text", "text": answer.text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": answer.input_tokens, "output_tokens": answer.output_tokens,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "service_tier": "standard"},
        }, {"request-id": f"req_{secrets.token_hex(12)}"})

    def error(self, error: Error) -> Reply:
        headers = dict(error.headers)
        if error.retry_after is not None:
            headers["retry-after"] = str(error.retry_after)
        return _error_reply(error.status, error.message, headers)


class AnthropicAPI(ScriptedModelAPI):
    """The fake Anthropic API (see the module docstring); accepts ``api_key`` only."""

    def __init__(self, api_key: str = API_KEY) -> None:
        super().__init__(AnthropicWire(self), api_key)


@pytest.fixture
def anthropic_api() -> Iterator[AnthropicAPI]:
    """A running :class:`AnthropicAPI`; point the SDK's ``base_url`` at ``anthropic_api.url``."""
    with running(AnthropicAPI()) as api:
        yield api
