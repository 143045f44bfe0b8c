"""systemd ``sd_notify`` protocol, without libsystemd.

The service manager passes ``NOTIFY_SOCKET`` (a filesystem path, or ``@name`` for the abstract namespace)
and, when ``WatchdogSec=`` is set, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``. :class:`Notifier` sends
newline-separated ``KEY=value`` datagrams to that socket. Without ``NOTIFY_SOCKET`` every method is a cheap
no-op, so callers never need to check whether they run under systemd. Sending never raises and never blocks
the event loop: a failure is logged once (until the next success) and otherwise ignored.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping

__all__ = ["Notifier"]

log = logging.getLogger(__name__)


class Notifier:
    """A connected ``AF_UNIX``/``SOCK_DGRAM`` client for the systemd notification socket."""

    enabled: bool
    watchdog_interval: float | None

    def __init__(self, address: str | None = None, watchdog_interval: float | None = None) -> None:
        """``address`` is ``NOTIFY_SOCKET`` as systemd spells it; ``None`` disables the notifier."""
        self._address: str | None = None
        if address is not None:
            if address.startswith("@"):
                self._address = "\0" + address[1:]
            elif address.startswith("/"):
                self._address = address
            else:
                log.warning(
                    "NOTIFY_SOCKET=%r is not supported (need a path or @abstract); notify disabled", address
                )
        self.enabled = self._address is not None
        self.watchdog_interval = watchdog_interval if self.enabled else None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._warned = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Notifier:
        """Build a notifier from ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``."""
        address = environ.get("NOTIFY_SOCKET") or None
        interval: float | None = None
        usec = environ.get("WATCHDOG_USEC", "").strip()
        pid = environ.get("WATCHDOG_PID", "").strip()
        if usec:
            try:
                value = int(usec)
                owner = int(pid) if pid else os.getpid()
            except ValueError:
                log.warning("ignoring malformed WATCHDOG_USEC=%r / WATCHDOG_PID=%r", usec, pid)
            else:
                if value > 0 and owner == os.getpid():
                    interval = value / 2 / 1e6
        return cls(address, interval)

    def notify(self, **fields: str | int) -> None:
        """Send one ``KEY=value`` datagram; keys are upper-cased, newlines in values become spaces."""
        if not self.enabled or not fields:
            return
        lines = []
        for key, value in fields.items():
            text = str(int(value)) if isinstance(value, bool) else str(value)
            lines.append(f"{key.upper()}={text.replace(chr(10), ' ')}")
        payload = ("\n".join(lines) + "\n").encode("utf-8", "replace")
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = self._connect()
                self._sock.send(payload)
            except OSError as exc:
                self._drop()
                if not self._warned:
                    self._warned = True
                    log.warning("sd_notify to %r failed: %s", self._printable_address(), exc)
                else:
                    log.debug("sd_notify failed again: %s", exc)
            else:
                self._warned = False

    def ready(self, status: str = "") -> None:
        """``READY=1``: startup (or a reload) is complete."""
        fields: dict[str, str | int] = {"READY": 1}
        if status:
            fields["STATUS"] = status
        fields["MAINPID"] = os.getpid()
        self.notify(**fields)

    def status(self, text: str) -> None:
        """Free-form status line shown by ``systemctl status``."""
        self.notify(STATUS=text)

    def watchdog(self) -> None:
        """``WATCHDOG=1`` keep-alive; a no-op when this process is not the one being watched."""
        if self.watchdog_interval is not None:
            self.notify(WATCHDOG=1)

    def reloading(self) -> None:
        """``RELOADING=1`` with a ``CLOCK_MONOTONIC`` stamp; call :meth:`ready` when the reload is done."""
        self.notify(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)

    def stopping(self, status: str = "") -> None:
        """``STOPPING=1``: shutdown has begun."""
        if status:
            self.notify(STOPPING=1, STATUS=status)
        else:
            self.notify(STOPPING=1)

    def close(self) -> None:
        """Close the socket; the notifier is disabled afterwards."""
        with self._lock:
            self.enabled = False
            self._drop()

    def _connect(self) -> socket.socket:
        assert self._address is not None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)  # a full receive queue must not stall the event loop
            sock.connect(self._address)
        except OSError:
            sock.close()
            raise
        return sock

    def _drop(self) -> None:
        # Reconnect on the next send: the manager may have re-created its socket.
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _printable_address(self) -> str:
        address = self._address or ""
        return "@" + address[1:] if address.startswith("\0") else address

    def __repr__(self) -> str:
        return (
            f"Notifier(enabled={self.enabled}, socket={self._printable_address()!r}, "
            f"watchdog_interval={self.watchdog_interval})"
        )
