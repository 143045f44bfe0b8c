"""The JSON form of an alert that the webhook and Redis sinks send: one stable, documented object.

Fields, always present and in this order (``null`` where the alert has no value)::

    {"id": "01JH...", "user_id": "u1", "monitor": "fuel", "kind": "fuel_low", "priority": "urgent",
     "title": "...", "body": "...", "facts": {...}, "actions": [{...}], "fingerprint": "3f1c...",
     "created_at": "2026-01-15T00:00:00Z", "expires_at": null, "epoch": 7}

``id`` is a ULID (sortable, unique per alert, the idempotency key: a retried delivery carries the same one);
``priority`` is ``low``, ``medium``, ``high`` or ``urgent``; times are RFC 3339; ``epoch`` is the leadership term
that produced the alert (0 without replicas). New fields may be added; existing ones keep their meaning.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from pamd.model import Alert
from pamd.sinks.base import PermanentDeliveryError


class AlertPayload(msgspec.Struct, kw_only=True):
    """The sinks' JSON object for one alert (see the module docstring)."""

    id: str
    user_id: str
    monitor: str
    kind: str
    priority: str
    title: str
    body: str
    facts: dict[str, Any]
    actions: list[dict[str, Any]]
    fingerprint: str
    created_at: datetime | None
    expires_at: datetime | None
    epoch: int


PAYLOAD_FIELDS: tuple[str, ...] = AlertPayload.__struct_fields__

_encoder = msgspec.json.Encoder()


def alert_payload(alert: Alert) -> AlertPayload:
    """The payload object of ``alert``."""
    return AlertPayload(
        id=alert.id, user_id=alert.user_id, monitor=alert.monitor, kind=alert.kind, priority=alert.priority.value,
        title=alert.title, body=alert.body, facts=alert.facts, actions=alert.actions, fingerprint=alert.fingerprint,
        created_at=alert.created_at, expires_at=alert.expires_at, epoch=alert.epoch,
    )


def encode_alert(alert: Alert) -> bytes:
    """``alert`` as the JSON payload; :class:`PermanentDeliveryError` if its facts or actions hold a value JSON
    cannot represent (retrying would not change that)."""
    try:
        return _encoder.encode(alert_payload(alert))
    except (TypeError, ValueError, OverflowError) as exc:
        raise PermanentDeliveryError(f"alert {alert.id} cannot be encoded as JSON: {exc}") from exc
