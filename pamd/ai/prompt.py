"""What pamd sends a model: fixed instructions and the alerts' facts, nothing else. Pure; no I/O.

One request carries up to ``[ai] batch_size`` alerts of one tick (the instructions, most of a lone alert's prompt,
are then paid once for all). The prompt carries only what each alert already holds (its kind, priority, facts and
the actions the app offers) and how its reader takes numbers (units, currency), so a model has nothing to phrase but
the truth; identifiers and coordinates, which a traveller never reads, are left out to save tokens. Token counts
here are estimates (about four characters a token, as both providers document for English) used for previews and
the spend reservation; the bill uses the providers' own counts.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from pamd.model import Alert

__all__ = ["SYSTEM", "Prompt", "build_prompt", "dropped_key", "estimate_tokens", "facts_digest", "read_prompt",
           "trim_facts"]

MAX_TITLE = 90
MAX_BODY = 500
MAX_ACTIONS = 3
EXPECTED_OUTPUT_TOKENS = 120  # a title, two or three sentences and the actions' JSON

SYSTEM = f"""You write the notifications of an RV-travel assistant. The JSON you get groups alerts by monitor and
kind; a group offers "actions" (index = place in the list) and names its "facts". Each alert is a row: its number n,
priority, traveller's units and currency, then the value of each fact in order (null: does not apply).

For each alert write a title (at most {MAX_TITLE} characters) and a body (at most {MAX_BODY} characters, two or three
sentences): plain, warm, specific English that tells the traveller what is happening and what to do next.

Rules:
- Use only that alert's facts. Do not add places, names, prices, distances, dates, causes or advice the facts do
  not support. Never say something is nearby, open or cheap unless a fact says so.
- Every number you write must come from the facts, rounded or converted to the traveller's units: metric means km,
  litres, km/h and degrees Celsius; imperial means miles, US gallons, mph and degrees Fahrenheit. Facts are stored in
  metric (SI) units; a key ending in _km is kilometres, _l litres, _kmh km/h, _c degrees Celsius, _pct a percentage.
- Show money in the alert's currency.
- Keep the urgency of the priority (low, medium, high, urgent); do not alarm more or less than it says.
- From the offered actions, choose and order up to {MAX_ACTIONS} by their index; you may give each a shorter label.

Reply with one JSON object and nothing else, one entry per alert:
{{"alerts": [{{"n": 0, "title": "...", "body": "...", "actions": [{{"index": 0, "label": "..."}}]}}]}}"""

_DROPPED_KEYS = ("lat", "lon")  # and every key ending in _id, _lat or _lon


@dataclass(frozen=True)
class Prompt:
    """The user message of one request (one or more alerts), and its estimated size."""

    text: str
    input_tokens: int  # estimated, system prompt included
    output_tokens: int  # estimated

    def cost_usd(self, input_usd_per_mtok: float, output_usd_per_mtok: float) -> float:
        """Estimated cost of sending this prompt at the given prices."""
        return (self.input_tokens * input_usd_per_mtok + self.output_tokens * output_usd_per_mtok) / 1e6


def build_prompt(alerts: Sequence[Alert], max_tokens: int) -> Prompt:
    """One request for ``alerts`` (numbered from 0 in order) as compact JSON: the alerts of one monitor, kind and
    set of offered actions share a group, which names the facts and actions once, and each alert is a row of its
    number, priority, reader's units and currency and its trimmed facts' values (null for a fact it lacks). Ten
    alerts of one kind take about a third fewer tokens than ten self-describing objects; :func:`read_prompt` gives
    the alerts back. ``max_tokens`` is the reply budget per alert."""
    groups: dict[tuple[str, str, tuple[str, ...]], list[tuple[int, Alert, dict[str, Any]]]] = {}
    for n, alert in enumerate(alerts):
        labels = tuple(str(a.get("label") or a.get("action")) for a in alert.actions)
        groups.setdefault((alert.monitor, alert.kind, labels), []).append((n, alert, trim_facts(alert.facts)))
    payload = {"groups": [_group(monitor, kind, labels, members)
                          for (monitor, kind, labels), members in groups.items()]}
    text = msgspec.json.encode(payload).decode()
    output = min(max_tokens, EXPECTED_OUTPUT_TOKENS) * len(alerts)
    return Prompt(text, estimate_tokens(SYSTEM) + estimate_tokens(text), output)


_ROW_START = ("n", "priority", "units", "currency")  # what a row holds before its facts' values


def _group(monitor: str, kind: str, labels: tuple[str, ...],
           members: list[tuple[int, Alert, dict[str, Any]]]) -> dict[str, Any]:
    keys = list(dict.fromkeys(key for _, _, facts in members for key in facts))  # first-seen order, no repeats
    rows = []
    for n, alert, facts in members:
        units = alert.facts.get("units")
        rows.append([n, alert.priority.value, units if units in ("metric", "imperial") else "metric",
                     alert.facts.get("currency") or None, *(facts.get(key) for key in keys)])
    return {"monitor": monitor, "kind": kind, "actions": list(labels), "facts": keys, "alerts": rows}


def read_prompt(text: str) -> list[dict[str, Any]]:
    """The alerts of a :func:`build_prompt` text, each as one object (``n``, ``monitor``, ``kind``, ``priority``,
    ``units``, ``currency``, ``facts`` without the facts it lacked, ``actions`` as ``{"index", "label"}``), in the
    order of ``n``: what a model reads in a row, spelt out (for previews, tests and fake models)."""
    alerts = []
    for group in msgspec.json.decode(text)["groups"]:
        keys = group["facts"]
        for row in group["alerts"]:
            alert = dict(zip(_ROW_START, row, strict=False))
            values = row[len(_ROW_START):]
            alert.update(monitor=group["monitor"], kind=group["kind"],
                         actions=[{"index": i, "label": label} for i, label in enumerate(group["actions"])],
                         facts={key: value for key, value in zip(keys, values, strict=True) if value is not None})
            alerts.append(alert)
    return sorted(alerts, key=lambda alert: alert["n"])


def estimate_tokens(text: str) -> int:
    """About four characters a token."""
    return math.ceil(len(text) / 4)


def facts_digest(alert: Alert) -> str:
    """A hash of what the phrasing depends on besides the model: facts, priority and offered actions."""
    raw = msgspec.json.encode([alert.kind, alert.priority.value, alert.facts, alert.actions], order="sorted")
    return hashlib.sha256(raw).hexdigest()[:32]


def trim_facts(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: trim_facts(v) for k, v in value.items() if v is not None and not dropped_key(str(k))}
    if isinstance(value, list):
        return [trim_facts(v) for v in value]
    return value


@functools.lru_cache(maxsize=1024)  # the facts of a tick use a few dozen keys, for every alert
def dropped_key(key: str) -> bool:
    """Whether facts under ``key`` stay out of prompts: identifiers, coordinates, and the units and currency (the
    prompt states those once per alert)."""
    return key in _DROPPED_KEYS or key.endswith(("_id", "_lat", "_lon")) or key in ("units", "currency")
