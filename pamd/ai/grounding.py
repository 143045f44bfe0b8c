"""Checking a model's reply before a traveller reads it. Pure; no I/O.

An alert's entry in a reply is used only if the reply is the JSON object the prompt asked for, the entry is within
the lengths asked and chooses only offered actions, and every number in it is grounded: it is (after rounding to the
digits written) one of the numbers the model was shown, or one of the unit conversions the prompt allows (km to
miles, litres to US gallons, Celsius to Fahrenheit, km/h to mph), a share as a percentage, minutes as hours, or a
date's or time's parts. Numbers written as words (one to twelve) count too. Anything else is a hallucination: that
alert keeps its rule text.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from pamd.ai.prompt import MAX_ACTIONS, MAX_BODY, MAX_TITLE, dropped_key
from pamd.model import Alert

__all__ = ["GroundingError", "Phrasing", "allowed_numbers", "check_reply", "numbers_in"]

KM_TO_MI = 0.621371
L_TO_US_GAL = 0.264172
L_TO_IMP_GAL = 0.219969
M_TO_FT = 3.28084
RELATIVE_TOLERANCE = 0.015  # "about 116 mi" for 186.667 km * 0.621371 = 115.99 is fine; 120 is not

_NUMBER = re.compile(r"(?<![\w.])-?\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\w])|(?<![\w.])-?\d+(?:\.\d+)?")
_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
          "ten": 10, "eleven": 11, "twelve": 12, "twice": 2, "half": 0.5, "dozen": 12}
_WORD = re.compile(r"\b(" + "|".join(_WORDS) + r")\b", re.IGNORECASE)
_DIGITS = re.compile(r"\d+(?:\.\d+)?")
_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


class GroundingError(ValueError):
    """A reply that must not be shown; ``reason`` is ``malformed`` or ``ungrounded`` (a metric label)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Phrasing:
    """A checked reply: the text to show and the actions in the model's order."""

    title: str
    body: str
    actions: list[dict[str, Any]]


class _Choice(msgspec.Struct):
    index: int
    label: str | None = None


class _Entry(msgspec.Struct):
    title: str
    body: str
    actions: list[_Choice] | None = None
    n: int = 0


class _Batch(msgspec.Struct):
    alerts: list[_Entry]


def check_reply(text: str, alerts: Sequence[Alert]) -> list[Phrasing | GroundingError]:
    """Parse ``text`` (the model's reply to a request for ``alerts``) and check each alert's entry: a
    :class:`Phrasing` to show, or the :class:`GroundingError` that keeps that alert's rule text. A reply to a
    single alert may also be the bare entry object."""
    fenced = _FENCE.match(text)
    raw = (fenced[1] if fenced else text).strip().encode()
    try:
        entries = {e.n: e for e in msgspec.json.decode(raw, type=_Batch).alerts}
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        try:
            entries = {0: msgspec.json.decode(raw, type=_Entry)} if len(alerts) == 1 else {}
        except msgspec.DecodeError:
            entries = {}
        if not entries:
            error = GroundingError("malformed", f"not the requested JSON object: {exc}")
            return [error for _ in alerts]
    results: list[Phrasing | GroundingError] = []
    for n, alert in enumerate(alerts):
        entry = entries.get(n)
        try:
            if entry is None:
                raise GroundingError("malformed", f"no entry for alert {n}")
            results.append(_check_entry(entry, alert))
        except GroundingError as exc:
            results.append(exc)
    return results


def _check_entry(entry: _Entry, alert: Alert) -> Phrasing:
    title, body = " ".join(entry.title.split()), entry.body.strip()
    if not title or not body or len(title) > MAX_TITLE * 1.2 or len(body) > MAX_BODY * 1.2:
        raise GroundingError("malformed", f"title of {len(title)} or body of {len(body)} characters")
    actions = _actions(entry.actions, alert.actions)
    allowed = allowed_numbers(alert)
    labels = " ".join(str(a.get("label", "")) for a in actions)
    for number, written in numbers_in(f"{title}\n{body}\n{labels}"):
        if not _grounded(number, written, allowed):
            raise GroundingError("ungrounded", f"{written!r} is not in the alert's facts")
    return Phrasing(title, body, actions)


def _actions(choices: list[_Choice] | None, offered: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if choices is None:
        return [dict(a) for a in offered]
    chosen: list[dict[str, Any]] = []
    for choice in choices[:MAX_ACTIONS]:
        if not 0 <= choice.index < len(offered):
            raise GroundingError("ungrounded", f"action {choice.index} was not offered")
        if any(c is offered[choice.index] for c in chosen):
            continue
        action = dict(offered[choice.index])
        label = " ".join((choice.label or "").split())
        if label and len(label) <= 40:
            action["label"] = label
        chosen.append(action)
    return chosen or [dict(a) for a in offered]


def numbers_in(text: str) -> list[tuple[float, str]]:
    """Every number in ``text`` (digits, with thousands separators, or a word from one to twelve) and how it was
    written."""
    found = [(float(m[0].replace(",", "")), m[0]) for m in _NUMBER.finditer(text)]
    found += [(float(_WORDS[m[0].lower()]), m[0]) for m in _WORD.finditer(text)]
    return found


def allowed_numbers(alert: Alert) -> set[float]:
    """The numbers a reply may show for ``alert``: those of the facts the model saw, each with the conversions its
    key's unit allows (``_km``: miles; ``_l``: gallons; ``_c``: Fahrenheit; minutes and hours; a share: percent),
    plus how many actions are offered."""
    allowed: set[float] = set(map(float, range(len(alert.actions) + 1)))
    _collect(alert.facts, "", allowed)
    return allowed


def _collect(value: Any, key: str, allowed: set[float]) -> None:
    """Add to ``allowed`` every number of ``value`` as the model saw it (:func:`~pamd.ai.prompt.trim_facts`): values
    with their conversions, numbers inside strings (dates, times) and list lengths. One walk, no copy, exact type
    tests first: this runs for every phrased alert."""
    kind = type(value)
    if kind is float or kind is int or (kind is not bool and isinstance(value, int | float)):
        x = float(value)
        if math.isfinite(x):
            allowed.add(x)
            if x < 0:
                allowed.add(-x)
            scales, share = _conversion(key)
            for scale, offset in scales:
                allowed.add(x * scale + offset)
            if share and 0 <= x <= 1:  # a share or a confidence, shown as a percentage
                allowed.add(x * 100)
    elif isinstance(value, str):
        allowed.update(_numbers_in_string(value))
    elif isinstance(value, dict):
        for k, v in value.items():
            name = str(k)
            if v is not None and not dropped_key(name):
                _collect(v, name, allowed)
    elif isinstance(value, list | tuple):
        allowed.add(float(len(value)))
        for item in value:
            _collect(item, key, allowed)


@functools.lru_cache(maxsize=1024)  # a monitor's facts use a few dozen keys
def _conversion(key: str) -> tuple[tuple[tuple[float, float], ...], bool]:
    """How a number under ``key`` may be shown besides itself: (scale, offset) pairs, and whether it may be a share
    shown as a percentage."""
    key = key.lower()
    if key.endswith(("_km", "_kmh")) or key in ("km", "kmh"):
        return ((KM_TO_MI, 0.0),), False
    if key.endswith(("_l", "litres", "liters")):
        return ((L_TO_US_GAL, 0.0), (L_TO_IMP_GAL, 0.0)), False
    if key.endswith("per_l"):  # a price per litre as per gallon
        return ((1 / L_TO_US_GAL, 0.0), (1 / L_TO_IMP_GAL, 0.0)), False
    if key.endswith(("_c", "celsius")):
        return ((9 / 5, 32.0),), False
    if key.endswith("_m"):
        return ((M_TO_FT, 0.0),), False
    if "minutes" in key:
        return ((1 / 60, 0.0),), False
    if "hours" in key:
        return ((60.0, 0.0),), False
    return (), not key.endswith(("_pct", "percent"))


@functools.lru_cache(maxsize=4096)  # dates and times repeat across a tick's alerts
def _numbers_in_string(text: str) -> tuple[float, ...]:
    return tuple(float(n) for n in _DIGITS.findall(text))


def _grounded(number: float, written: str, allowed: set[float]) -> bool:
    if number in allowed:
        return True
    decimals = len(written.split(".", 1)[1]) if "." in written else 0
    half_digit = 0.5 * 10 ** -decimals
    return any(abs(number - x) <= max(half_digit, RELATIVE_TOLERANCE * abs(x)) + 1e-9 for x in allowed)
