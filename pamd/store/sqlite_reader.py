"""Monitor pages read by a second process, so a big SQLite tick uses two cores.

In one process the reads and the monitor share the GIL: SQLite itself runs beside Python code, but turning rows
into records (parsing times, checking numbers, building structs) is Python work of the same size as the monitor's
own. For a full scan of a big database (``SQLiteBase`` decides: every user, at least ``read_process_min_users``
profiles) the pages are read instead by a *page reader*: one child process with its own query-only
connection, which walks the keyset pages of one stream at a time and sends each page MessagePack-encoded through a
pipe (the records are :class:`msgspec.Struct` values: decoding is a fraction of building them). The parent answers
each page with an empty frame as it receives it, and the child reads a page only after that answer to the one
before: the child works a page ahead of the monitor and no further, whatever the pages' size (a pipe alone holds
64 KiB, a whole small scan). Rows the child skips (bad data) come back with their page and are counted and logged
by the parent as if read there.

The child (:func:`main`, with the parent's import path; its requests and pages as length-prefixed frames on its stdin
and stdout) is started at the first such scan and kept for the next; a stream that is abandoned before its last page
(a failed or cancelled tick) stops it, and the next scan starts a new one. A second stream while one is running
is read the usual way, in a thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import json
import logging
import pickle
import struct
import subprocess
import sys
from collections.abc import AsyncGenerator, Callable
from typing import IO, Any

import anyio.to_thread
import msgspec

log = logging.getLogger("pamd.store.sqlite")

Skip = tuple[str, str, str]
"""A skipped row: (table, row id, reason)."""

_LENGTH = struct.Struct("!I")
_DECODERS: dict[Any, msgspec.msgpack.Decoder[Any]] = {}


class PageReaderError(RuntimeError):
    """The page reader failed (its error, or it died); the tick fails and is retried like any other read error."""


class PageReader:
    """The parent's handle on the page-reading child process (see the module docstring)."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self.busy = False
        # One thread receives every frame: allocations spread over the pool's many threads would each take a
        # malloc arena of their own and keep its freed memory.
        self._receiver = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="pamd-sqlite-pages")

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs (for resource accounting)."""
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def _start(self) -> subprocess.Popen[bytes]:
        if self._process is not None and self._process.poll() is None:
            return self._process
        # A plain child running this module (not multiprocessing's spawn, which would import the parent's
        # __main__ again); requests and pages are length-prefixed frames on its stdin and stdout.
        # The parent's import path goes first, so the child runs the same pamd (a checkout, a venv, a zipapp).
        self._process = subprocess.Popen(
            [sys.executable, "-c", _BOOT, json.dumps([p for p in sys.path if p])], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE)
        log.debug("sqlite page reader started (pid %s)", self._process.pid)
        return self._process

    async def pages(
        self, url: str, method: str, args: tuple[Any, ...], record: Any, skip: Callable[[str, object, str], None]
    ) -> AsyncGenerator[list[Any], None]:
        """Stream the pages of ``SQLiteStore(url).<method>(conn, after, *args)`` (which returns a page's records of
        type ``record`` and the key to read after, ``None`` on the last page) read by the child. The caller has
        claimed the reader (``busy``) and clears the claim when the stream ends."""
        decoder = _DECODERS.get(record)
        if decoder is None:
            decoder = _DECODERS[record] = msgspec.msgpack.Decoder(
                tuple[str, list[record], list[tuple[str, str, str]], str])
        finished = False
        try:
            process = await anyio.to_thread.run_sync(self._start)
            assert process.stdin is not None and process.stdout is not None
            try:
                _write_frame(process.stdin, pickle.dumps((url, method, args)))
            except OSError as exc:
                raise PageReaderError(f"the sqlite page reader died ({exc})") from exc
            while True:
                blob = await asyncio.wrap_future(self._receiver.submit(_read_frame, process.stdout))
                if blob is None:
                    raise PageReaderError(f"the sqlite page reader died (exit status {process.wait()})")
                kind, records, skipped, error = decoder.decode(blob)
                for table, row_id, reason in skipped:
                    skip(table, row_id, reason)
                if kind == "error":
                    finished = True  # the child is ready for the next request
                    raise PageReaderError(f"sqlite page reader: {error}")
                if kind == "end":
                    finished = True
                    return
                try:
                    _write_frame(process.stdin, b"")  # the child may read the next page
                except OSError as exc:
                    raise PageReaderError(f"the sqlite page reader died ({exc})") from exc
                if records:
                    yield records
        finally:
            if not finished:
                self.stop()  # it is still sending this stream's pages: a new one starts clean

    def close(self) -> None:
        """Stop the child and the receiving thread (the store is closing)."""
        self.stop()
        self._receiver.shutdown(wait=False)

    def stop(self) -> None:
        """Stop the child (it holds no state worth keeping: a read-only connection)."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait(5)
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):  # a go-ahead still buffered for a dead child cannot be flushed
                    pipe.close()


def _write_frame(pipe: IO[bytes], payload: bytes) -> None:
    pipe.write(_LENGTH.pack(len(payload)) + payload)
    pipe.flush()


def _read_frame(pipe: IO[bytes]) -> bytes | None:
    """One frame, or ``None`` at the end of the stream (the other side is gone)."""
    head = pipe.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(head)
    payload = pipe.read(length)
    return payload if len(payload) == length else None


def _note_skip(skipped: list[Skip], table: str, row_id: object, reason: str) -> None:
    skipped.append((table, str(row_id), reason))


def serve(requests: IO[bytes], pages: IO[bytes]) -> None:
    """The child: answer each ``(url, method, args)`` request with the stream's pages, then an end (or error)
    frame; return when the parent closes ``requests``."""
    from pamd.store.sqlite import SQLiteStore  # in the child only: the parent has it already

    encoder = msgspec.msgpack.Encoder()
    stores: dict[str, Any] = {}
    readers: dict[str, Any] = {}
    while (request := _read_frame(requests)) is not None:
        url, method, args = pickle.loads(request)  # from the parent process, over a private pipe
        skipped: list[Skip] = []
        try:
            store = stores.get(url)
            if store is None:
                store = stores[url] = SQLiteStore(url)
                readers[url] = store._open(query_only=True)
            store._skip = functools.partial(_note_skip, skipped)  # type: ignore[method-assign]
            after = None
            while True:
                records, after = getattr(store, method)(readers[url], after, *args)
                _write_frame(pages, encoder.encode(("page", records, skipped, "")))
                skipped.clear()
                if _read_frame(requests) is None:  # the parent's go-ahead, sent as it received the page
                    return
                if after is None:
                    break
            _write_frame(pages, encoder.encode(("end", [], [], "")))
        except BrokenPipeError:  # the parent is gone (or stopped this stream)
            return
        except Exception as exc:  # reported to the parent, whose tick fails and is retried
            _write_frame(pages, encoder.encode(("error", [], skipped, f"{type(exc).__name__}: {exc}")))


def main() -> None:
    """The child's entry point: serve on stdin and stdout until the parent closes them."""
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):
        serve(sys.stdin.buffer, sys.stdout.buffer)


_BOOT = "import json, sys; sys.path[:0] = json.loads(sys.argv[1]); from pamd.store.sqlite_reader import main; main()"
