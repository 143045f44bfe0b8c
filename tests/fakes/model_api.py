"""What the fake model APIs (:mod:`tests.fakes.anthropic_api`, :mod:`tests.fakes.gemini_api`) share: the script.

A test scripts each request's outcome with one of

* :class:`Answer` (a reply with this text and these token counts),
* :class:`Error` (an HTTP error in the API's own error shape; ``retry_after``: the wait it asks for, its way),
* :class:`Malformed` (a status and a raw body that is not what the API promises, e.g. truncated JSON),

each optionally ``delay``-ed (seconds before the server answers: longer than the client's timeout makes a timeout);
an :class:`Answer` can also ``trickle`` in (its body in ten chunks, this many seconds apart).
``fake.queue(outcome, ...)`` serves outcomes to the next requests in order; once the queue is empty every request
gets ``fake.default`` (an :class:`Answer` unless changed). ``fake.requests`` lists what the API received, parsed into
:class:`ModelRequest` (model, system, prompt, max tokens, the key sent, the raw HTTP request).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from tests.fakes.server import FakeServer, Reply, Request

DEFAULT_TEXT = '{"title": "Fuel low", "body": "Fill up in Green River: 74 km to the next station."}'


@dataclass(frozen=True)
class Answer:
    """A successful reply: ``text`` and the billed token counts."""

    text: str = DEFAULT_TEXT
    input_tokens: int = 42
    output_tokens: int = 17
    thoughts_tokens: int = 0  # Gemini's thinking tokens (``thoughtsTokenCount``, billed as output); Anthropic: unused
    delay: float = 0.0
    trickle: float = 0.0  # seconds between the body's ten chunks (a reply that is slow in total, not silent)


@dataclass(frozen=True)
class Error:
    """An HTTP error in the API's error shape (``message`` defaults to what the API says for ``status``)."""

    status: int
    message: str = ""
    retry_after: float | str | None = None  # how long to wait, said the API's way (see each fake)
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class Malformed:
    """A reply whose body is not the API's shape, sent as ``application/json`` (default: truncated JSON)."""

    body: str = '{"id": "msg_01", "content": [{"type": "te'
    status: int = 200
    delay: float = 0.0


@dataclass(frozen=True)
class Compose:
    """A faithful reply written from the request itself, like a model that follows pamd's instructions: for each
    alert of the prompt, a title from its kind and a body stating its first numeric fact; token counts estimated from
    the text (about four characters a token), so costs computed from them are realistic. ``jitter`` spreads the
    delay uniformly over ``delay * (1 +- jitter)`` (same mean), as a real API's latency varies from request to
    request; with none, requests sent together are answered together."""

    delay: float = 0.0
    jitter: float = 0.0

    def answer(self, request: ModelRequest) -> Answer:
        import json

        from pamd.ai.prompt import read_prompt

        alerts = read_prompt(request.prompt)
        entries = []
        for alert in alerts:
            numbers = [(k, v) for k, v in alert["facts"].items() if isinstance(v, int | float)
                       and not isinstance(v, bool)]
            said = f"{numbers[0][0].replace('_', ' ')} is {numbers[0][1]:g}" if numbers else "it needs a look"
            entries.append({"n": alert["n"], "title": alert["kind"].replace("_", " ").capitalize(),
                            "body": f"Heads up: {said}. Please check the app.", "actions": [{"index": 0}]
                            if alert["actions"] else []})
        text = json.dumps({"alerts": entries})
        return Answer(text, input_tokens=(len(request.system) + len(request.prompt)) // 4,
                      output_tokens=len(text) // 4,
                      delay=self.delay * (1 + _JITTER.uniform(-self.jitter, self.jitter)))


_JITTER = random.Random(0)  # reproducible spreads of Compose's delays

Outcome = Answer | Error | Malformed | Compose


@dataclass(frozen=True)
class ModelRequest:
    """One request the fake received, in the terms of :meth:`pamd.ai.provider.AIProvider.complete`."""

    model: str
    system: str
    prompt: str
    max_tokens: int | None
    api_key: str | None
    json: dict[str, Any]
    http: Request


def header(request: Request, name: str) -> str | None:
    """The value of header ``name`` (any case), if sent."""
    wanted = name.lower()
    return next((value for key, value in request.headers.items() if key.lower() == wanted), None)


class _Wire(Protocol):
    """How one API spells requests, replies and errors."""

    def parse(self, request: Request) -> ModelRequest | Reply: ...  # a Reply: the API's answer to a bad request

    def answer(self, request: ModelRequest, answer: Answer) -> Reply: ...

    def error(self, error: Error) -> Reply: ...


class ScriptedModelAPI:
    """A model API on 127.0.0.1 answering from a script (see the module docstring); ``url`` is its base URL."""

    def __init__(self, wire: _Wire, api_key: str) -> None:
        self.api_key = api_key  # a request with another key gets the API's authentication error
        self.default: Outcome = Answer()
        self.requests: list[ModelRequest] = []
        self._wire = wire
        self._queue: list[Outcome] = []
        self._lock = threading.Lock()
        self.server = FakeServer(self._handle, keep_alive=True)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def http_requests(self) -> list[Request]:
        """Every HTTP request, including those rejected before the script was consulted."""
        return self.server.requests

    def queue(self, *outcomes: Outcome) -> None:
        """Serve ``outcomes`` to the next requests, in order, before ``default`` again."""
        with self._lock:
            self._queue.extend(outcomes)

    def reset(self) -> None:
        """Forget requests and queued outcomes; restore the default answer (one server can serve many tests)."""
        with self._lock:
            self._queue.clear()
            self.requests.clear()
            self.server.requests.clear()
            self.server.service_seconds.clear()
        self.default = Answer()

    def _handle(self, http: Request) -> Reply:
        parsed = self._wire.parse(http)
        if isinstance(parsed, Reply):
            return parsed
        with self._lock:
            self.requests.append(parsed)
            outcome = self._queue.pop(0) if self._queue else self.default
        if isinstance(outcome, Compose):
            outcome = outcome.answer(parsed)
        if outcome.delay:
            time.sleep(outcome.delay)  # this request's thread only: other requests are answered meanwhile
        if isinstance(outcome, Answer):
            return replace(self._wire.answer(parsed, outcome), trickle=outcome.trickle)
        if isinstance(outcome, Error):
            return self._wire.error(outcome)
        return Reply(outcome.status, outcome.body.encode(), {"Content-Type": "application/json"})


API = TypeVar("API", bound=ScriptedModelAPI)


@contextmanager
def running(api: API) -> Iterator[API]:
    """Serve ``api`` for the duration of a ``with`` block."""
    api.server.start()
    try:
        yield api
    finally:
        api.server.stop()
