"""The built-in sinks, registered through the same ``register_sinks`` hook third-party sinks use."""

from __future__ import annotations

from collections.abc import Callable

from pamd.hookspecs import hookimpl
from pamd.sinks.base import SinkFactory
from pamd.sinks.console import ConsoleSink
from pamd.sinks.jsonl import JsonlSink


@hookimpl
def register_sinks(register: Callable[[str, SinkFactory], None]) -> None:
    register("console", ConsoleSink)
    register("jsonl", JsonlSink)
