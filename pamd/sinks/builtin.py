"""The built-in sinks, registered through the same ``register_sinks`` hook third-party sinks use.

console and jsonl are on unless configured off (:data:`pamd.jobs.DEFAULT_SINKS`); table, webhook and redis only when
their ``[sinks.<name>]`` table exists.
"""

from __future__ import annotations

from collections.abc import Callable

from pamd.hookspecs import hookimpl
from pamd.sinks.base import SinkFactory
from pamd.sinks.console import ConsoleSink
from pamd.sinks.jsonl import JsonlSink
from pamd.sinks.redis import RedisSink
from pamd.sinks.table import TableSink
from pamd.sinks.webhook import WebhookSink


@hookimpl
def register_sinks(register: Callable[[str, SinkFactory], None]) -> None:
    register("console", ConsoleSink)
    register("jsonl", JsonlSink)
    register("redis", RedisSink)
    register("table", TableSink)
    register("webhook", WebhookSink)
