"""An example third-party pamd plugin: one monitor with its own config table and a rule-based alert."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import msgspec

import pamd


class HelloConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Settings read from ``[monitors.hello]`` (beside the common keys such as ``schedule``)."""

    greeting: str = "Hello"
    users: list[str] = msgspec.field(default_factory=lambda: ["demo-user"])


class HelloMonitor(pamd.Monitor):
    name = "hello"
    description = "Greets each configured user once per tick (an example, not a real monitor)."
    schedule = "*/10 * * * *"
    timezone = "UTC"
    config_type = HelloConfig

    async def run(self, ctx: pamd.MonitorContext) -> AsyncIterator[pamd.Alert]:
        config: HelloConfig = ctx.config or HelloConfig()
        for user in config.users:
            if ctx.user_id and user != ctx.user_id:
                continue
            yield pamd.Alert(
                user_id=user,
                kind="hello",
                priority=pamd.Priority.LOW,
                title=f"{config.greeting}, {user}",
                body=f"Tick scheduled at {ctx.scheduled_at:%H:%M} UTC.",
                facts={"scheduled_at": ctx.scheduled_at.isoformat()},
            )


@pamd.hookimpl
def register_monitors(register: Callable[[pamd.Monitor], None]) -> None:
    register(HelloMonitor())
