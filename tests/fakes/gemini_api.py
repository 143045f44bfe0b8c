"""A fake Gemini API (``POST /v1/models/{model}:generateContent``, or v1beta) on 127.0.0.1, for ``google-genai``.

The key goes in the ``x-goog-api-key`` header or the ``key`` query parameter. As the real API does, a request without
one gets 403 PERMISSION_DENIED and a wrong one 400 INVALID_ARGUMENT with an ``ErrorInfo`` detail whose reason is
``API_KEY_INVALID``. A reply (https://ai.google.dev/api/generate-content)::

    {"candidates": [{"content": {"parts": [{"text": "..."}], "role": "model"}, "finishReason": "STOP", "index": 0}],
     "usageMetadata": {"promptTokenCount": 42, "candidatesTokenCount": 17, "totalTokenCount": 59, ...},
     "modelVersion": "<the model asked for>", "responseId": "..."}

Errors (https://ai.google.dev/gemini-api/docs/troubleshooting) are ``{"error": {"code": 429, "message": "...",
"status": "RESOURCE_EXHAUSTED", "details": [...]}}``; the status name follows the code: 400 INVALID_ARGUMENT,
403 PERMISSION_DENIED, 404 NOT_FOUND, 429 RESOURCE_EXHAUSTED, 500 INTERNAL, 503 UNAVAILABLE, 504 DEADLINE_EXCEEDED.
``Error.retry_after`` (seconds) is sent the way Gemini sends it, as a ``google.rpc.RetryInfo`` detail
(``"retryDelay": "2s"``); a ``Retry-After`` header (as a proxy in front may add) goes in ``Error.headers``.
``Answer.thoughts_tokens`` adds ``thoughtsTokenCount`` (thinking models bill those as output).

Scripting: :mod:`tests.fakes.model_api`. The ``gemini_api`` fixture serves one for a test.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.model_api import Answer, Error, ModelRequest, ScriptedModelAPI, header, running
from tests.fakes.server import Reply, Request

API_KEY = "AIzaTest0123456789"
STATUSES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
            429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
MESSAGES = {400: "Request contains an invalid argument.", 403: "The caller does not have permission",
            404: "Requested entity was not found.", 429: "You exceeded your current quota, please check your plan "
            "and billing details.", 500: "An internal error has occurred. Please retry or report in "
            "https://developers.generativeai.google/guide/troubleshooting", 503: "The model is overloaded. Please "
            "try again later.", 504: "The request timed out. Please try again."}
_PATH = re.compile(r"^/(v1beta|v1|v1alpha)/models/([^/:]+):generateContent$")


def _error_reply(code: int, message: str = "", details: list[dict[str, Any]] | None = None,
                 headers: dict[str, str] | None = None) -> Reply:
    error: dict[str, Any] = {"code": code, "message": message or MESSAGES.get(code, "Unknown error."),
                             "status": STATUSES.get(code, "UNKNOWN")}
    if details:
        error["details"] = details
    return Reply(code, {"error": error}, headers or {})


def _texts(content: Any) -> str:
    """The text of a ``Content`` (``{"parts": [{"text": ...}], "role": ...}``)."""
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list):
        return ""
    return "".join(p["text"] for p in parts if isinstance(p, dict) and isinstance(p.get("text"), str))


class GeminiWire:
    """The generateContent request, reply and error shapes."""

    def __init__(self, api: GeminiAPI) -> None:
        self._api = api

    def parse(self, request: Request) -> ModelRequest | Reply:
        match = _PATH.match(request.path)
        if request.method != "POST" or not match:
            return _error_reply(404, f"Method not found: {request.method} {request.path}")
        key = header(request, "x-goog-api-key") or (request.query.get("key") or [""])[-1]
        if not key:
            return _error_reply(403, "Method doesn't allow unregistered callers (callers without established "
                                     "identity). Please use API Key or other form of API consumer identity to call "
                                     "this API.")
        if key != self._api.api_key:
            return _error_reply(400, "API key not valid. Please pass a valid API key.", [{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}}])
        try:
            body = json.loads(request.body)
        except ValueError:
            return _error_reply(400, "Invalid JSON payload received.")
        contents = body.get("contents") if isinstance(body, dict) else None
        if not isinstance(contents, list) or not contents:
            return _error_reply(400, "* GenerateContentRequest.contents: contents is not specified")
        config = body.get("generationConfig") or {}
        max_tokens = config.get("maxOutputTokens") if isinstance(config, dict) else None
        return ModelRequest(model=match[2], system=_texts(body.get("systemInstruction")),
                            prompt=_texts(contents[-1]), max_tokens=max_tokens, api_key=key, json=body,
                            http=request)

    def answer(self, request: ModelRequest, answer: Answer) -> Reply:
        usage: dict[str, Any] = {
            "promptTokenCount": answer.input_tokens, "candidatesTokenCount": answer.output_tokens,
            "totalTokenCount": answer.input_tokens + answer.output_tokens + answer.thoughts_tokens,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": answer.input_tokens}],
        }
        if answer.thoughts_tokens:
            usage["thoughtsTokenCount"] = answer.thoughts_tokens
        return Reply(200, {
            "candidates": [{"content": {"parts": [{"text": answer.text}], "role": "model"},
                            "finishReason": "STOP", "index": 0}],
            "usageMetadata": usage, "modelVersion": request.model, "responseId": secrets.token_urlsafe(16),
        })

    def error(self, error: Error) -> Reply:
        details = None
        if error.retry_after is not None:
            details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{error.retry_after}s"}]
        return _error_reply(error.status, error.message, details, dict(error.headers))


class GeminiAPI(ScriptedModelAPI):
    """The fake Gemini API (see the module docstring); accepts ``api_key`` only."""

    def __init__(self, api_key: str = API_KEY) -> None:
        super().__init__(GeminiWire(self), api_key)


@pytest.fixture
def gemini_api() -> Iterator[GeminiAPI]:
    """A running :class:`GeminiAPI`; point the SDK's ``base_url`` at ``gemini_api.url``."""
    with running(GeminiAPI()) as api:
        yield api
