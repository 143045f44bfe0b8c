"""pamd: a proactive-monitoring daemon.

Plugin authors need only what this module exports::

    import pamd

    class Hello(pamd.Monitor):
        name = "hello"
        schedule = "*/5 * * * *"

        async def run(self, ctx: pamd.MonitorContext) -> pamd.MonitorResult:
            yield pamd.Alert(user_id="u1", kind="hello", priority=pamd.Priority.LOW,
                             title="Hello", body="Hello from a plugin")

    @pamd.hookimpl
    def register_monitors(register):
        register(Hello())
"""

from pamd._version import __version__
from pamd.hookspecs import hookimpl
from pamd.model import Alert, AlertText, Priority
from pamd.monitor import Monitor, MonitorContext, MonitorResult
from pamd.sinks.base import Sink
from pamd.store.base import Store

__all__ = [
    "Alert",
    "AlertText",
    "Monitor",
    "MonitorContext",
    "MonitorResult",
    "Priority",
    "Sink",
    "Store",
    "__version__",
    "hookimpl",
]
