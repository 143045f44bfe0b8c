"""Alerts and priorities: the values that flow from monitors to sinks."""

from __future__ import annotations

import enum
import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import IO, Any

import msgspec


class Priority(enum.StrEnum):
    """How urgent an alert is. Ordered: ``LOW < MEDIUM < HIGH < URGENT``."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    URGENT = "urgent"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Priority):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Priority):
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Priority):
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Priority):
            return NotImplemented
        return self.rank >= other.rank


_RANK = {Priority.LOW: 0, Priority.MEDIUM: 1, Priority.HIGH: 2, Priority.URGENT: 3}


class AlertText(msgspec.Struct, kw_only=True):
    """An alert's words and data, as a deferred alert's ``compose`` returns them (:meth:`Alert.deferred`)."""

    title: str
    body: str
    facts: dict[str, Any] = msgspec.field(default_factory=dict)
    actions: list[dict[str, Any]] = msgspec.field(default_factory=list)


class Alert(msgspec.Struct, kw_only=True, dict=True):
    """A candidate alert produced by a monitor.

    A monitor fills in what it knows (user, kind, priority, text, facts); the runner stamps ``monitor``, ``id``,
    ``created_at``, ``epoch`` and, when empty, ``fingerprint``. A monitor that reports the same conditions tick
    after tick can leave the text for later (:meth:`deferred`): most of them are repeats in cooldown, dropped
    without it.

    ``subject`` names what the condition is about when a user can have several of one kind (a budget id and its
    period start, a maintenance record id, a trip id...): alerts with the same monitor, user, kind and subject are
    "the same condition" for dedupe, cooldown and escalation. Keep it stable while the condition lasts and let it
    change when the condition is new (a new budget period is a new subject).
    """

    user_id: str
    kind: str
    priority: Priority
    title: str
    body: str
    facts: dict[str, Any] = msgspec.field(default_factory=dict)
    actions: list[dict[str, Any]] = msgspec.field(default_factory=list)
    subject: str = ""
    fingerprint: str = ""
    expires_at: datetime | None = None
    monitor: str = ""
    id: str = ""
    created_at: datetime | None = None
    epoch: int = 0

    @classmethod
    def deferred(
        cls, compose: Callable[[], AlertText], *, user_id: str, kind: str, priority: Priority, subject: str = "",
        fingerprint: str = "", expires_at: datetime | None = None,
    ) -> Alert:
        """An alert whose title, body, facts and actions ``compose()`` makes only when they are needed: when the
        pipeline accepts the alert, keeps it for display (``pamd trigger``, ``pamd explain``) or packs it. Until
        then they are empty (:attr:`composed` is false). ``compose`` should be a pure closure over the numbers
        the monitor already has; an exception it raises fails the tick's batch like a store error."""
        alert = cls(user_id=user_id, kind=kind, priority=priority, title="", body="", subject=subject,
                    fingerprint=fingerprint, expires_at=expires_at)
        alert.__dict__["_compose"] = compose  # undeclared (the struct has a ``__dict__``): never encoded or stored
        return alert

    @property
    def composed(self) -> bool:
        """False while a deferred alert's text is still to be made."""
        return "_compose" not in self.__dict__

    def complete(self) -> Alert:
        """Make a deferred alert's text now (nothing to do for any other alert); returns the alert."""
        compose = self.__dict__.get("_compose")
        if compose is not None:
            text = compose()  # if it raises, the alert stays deferred
            self.title, self.body, self.facts, self.actions = text.title, text.body, text.facts, text.actions
            del self.__dict__["_compose"]
        return self

    def default_fingerprint(self) -> str:
        """A stable identity for "the same condition": monitor, user, kind and subject."""
        raw = f"{self.monitor}\x00{self.user_id}\x00{self.kind}\x00{self.subject}".encode()
        return hashlib.sha256(raw).hexdigest()[:32]


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DIGIT_PAIRS = [a + b for a in _CROCKFORD for b in _CROCKFORD]  # every 10-bit value as two Crockford digits
_RANDOM_BITS = (1 << 80) - 1
class _LastId:
    """The millisecond, random part and encoded millisecond of the last id made, and the id's first 24 digits."""

    ms, randomness, prefix = -1, 0, ""
    head, head_key = "", (-1, -1)


_last = _LastId()
_last_lock = threading.Lock()


def new_alert_id(now_ms: int | None = None) -> str:
    """A monotonic ULID: 48-bit millisecond timestamp + 80 random bits, Crockford base32, lexicographically sortable.

    Ids made within one millisecond (a tick stamps all its alerts with the same time) continue from the previous
    id's random part plus one, as in the ULID spec's monotonic variant: they stay unique and in creation order, and
    the random source is read once per millisecond, not once per alert.
    """
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    pairs = _DIGIT_PAIRS  # the 80 random bits: 8 pairs of 10 bits, most significant first
    with _last_lock:
        if _last.ms == ms:
            randomness = (_last.randomness + 1) & _RANDOM_BITS
            prefix = _last.prefix
        else:
            randomness = int.from_bytes(os.urandom(10), "big")
            # 10 digits of 5 bits for the 48-bit time (the first holds the top 3 bits), most significant first.
            prefix = "".join(_CROCKFORD[(ms >> shift) & 31] for shift in range(45, -1, -5))
        _last.ms, _last.randomness, _last.prefix = ms, randomness, prefix
        # Consecutive ids differ in their last pair of digits but once in 1,024: the rest is encoded once.
        key = (ms, randomness >> 10)
        if _last.head_key != key:
            _last.head_key = key
            _last.head = prefix + "".join([pairs[(randomness >> shift) & 1023] for shift in range(70, 9, -10)])
        head = _last.head
    return head + pairs[randomness & 1023]


class PackedAlerts:
    """A tick's alerts kept as MessagePack bytes, decoded a batch at a time by the pipeline.

    Up to ``memory_limit`` bytes stay in memory; beyond that they spill to an unnamed temporary file, so a tick
    with a hundred thousand alerts does not hold them all in RAM. Alerts must be stamped (fingerprint set) before
    they are packed.
    """

    _encoder = msgspec.msgpack.Encoder()
    _decoder = msgspec.msgpack.Decoder(Alert)

    def __init__(self, memory_limit: int = 8 << 20) -> None:
        self.memory_limit = memory_limit
        self._blobs: list[bytes] = []
        self._in_memory = 0
        self._file: IO[bytes] | None = None
        self._spilled: list[tuple[int, int]] = []  # (offset, length) in the file, after the in-memory ones
        self._end = 0
        self._unflushed = False
        # What ordering and dedupe need, kept unpacked (about 150 bytes an alert) so they cost no decoding.
        self._keys: list[tuple[str, str, Priority]] = []

    def append(self, alert: Alert) -> None:
        blob = self._encoder.encode(alert.complete())  # a deferred text cannot be packed: made now
        self._keys.append((alert.user_id, alert.fingerprint, alert.priority))
        if self._file is None and self._in_memory + len(blob) <= self.memory_limit:
            self._blobs.append(blob)
            self._in_memory += len(blob)
            return
        if self._file is None:
            # A 1 MiB buffer: a write call that reaches the OS gives up the GIL, and with the default 8 KiB every
            # few alerts did, each time waiting for the store's threads to hand it back.
            self._file = tempfile.TemporaryFile("w+b", buffering=1 << 20, prefix="pamd-alerts-")  # noqa: SIM115
        self._file.write(blob)  # appends: reads use pread, which leaves the file position alone
        self._unflushed = True
        self._spilled.append((self._end, len(blob)))
        self._end += len(blob)

    def __len__(self) -> int:
        return len(self._blobs) + len(self._spilled)

    def _blob(self, index: int) -> bytes:
        if index < len(self._blobs):
            return self._blobs[index]
        assert self._file is not None
        offset, length = self._spilled[index - len(self._blobs)]
        if self._unflushed:
            self._file.flush()
            self._unflushed = False
        return os.pread(self._file.fileno(), length, offset)

    def __getitem__(self, index: int) -> Alert:
        return self._decoder.decode(self._blob(index))

    def key(self, index: int) -> tuple[str, str, Priority]:
        """``(user_id, fingerprint, priority)`` of alert ``index``."""
        return self._keys[index]

    def close(self) -> None:
        """Drop everything (the spill file is deleted)."""
        self._blobs, self._spilled, self._keys = [], [], []
        if self._file is not None:
            self._file.close()
            self._file = None

    def __del__(self) -> None:
        self.close()
