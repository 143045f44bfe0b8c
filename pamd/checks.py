"""``pamd check``: validate the config and reach every configured backend, one line per check.

Works both before the daemon starts (ExecStartPre: the HTTP port must be free) and while it runs (container
HEALTHCHECK: the port is taken by pamd itself, whose ``/readyz`` must answer 200).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Literal

import anyio

from pamd.assemble import assemble
from pamd.config import ConfigError, parse_listen, redact
from pamd.coordination import open_coordinator
from pamd.http import ListenError, bind
from pamd.store import open_store

Status = Literal["ok", "warn", "fail"]
Check = tuple[Status, str, str]
"""(status, what, detail). ``warn`` does not fail the check: the daemon runs without a failed plugin."""
TIMEOUT_SECONDS = 3.0


async def run_checks(config_path: str | None) -> list[Check]:
    results: list[Check] = []
    try:
        assembly = await anyio.to_thread.run_sync(assemble, config_path)
    except ConfigError as exc:
        return [("fail", "config", str(exc))]
    config = assembly.config
    results.append(("ok", "config", str(assembly.config_path or "built-in defaults")))
    for plugin in assembly.plugins.plugins:
        if plugin.status == "failed":
            results.append(("warn", f"plugin {plugin.name}", f"failed, the daemon runs without it: {plugin.error}"))
    enabled = [name for name, job in assembly.jobs.items() if job.enabled]
    results.append(("ok" if enabled else "fail", "monitors", ", ".join(enabled) or "none enabled"))
    results.append(await _check_backend("store", redact(config.store_url, "url"), _ping_store, config.store_url))
    coordination = config.coordination.url or "local"
    results.append(await _check_backend("coordination", redact(coordination, "url"), _ping_coordinator,
                                        config.coordination.url, config.coordination.prefix, str(config.state_dir)))
    if config.http.enabled:
        results.append(await anyio.to_thread.run_sync(_check_http, config.http.listen))
    return results


async def _check_backend(name: str, label: str, ping: Any, *args: Any) -> Check:
    try:
        with anyio.fail_after(TIMEOUT_SECONDS):
            await ping(*args)
    except TimeoutError:
        return ("fail", name, f"{label}: no answer within {TIMEOUT_SECONDS:g} s")
    except Exception as exc:
        # A backend's own error may already name the (redacted) URL: ``problem`` is then what went wrong alone.
        problem = getattr(exc, "problem", None) or str(exc) or type(exc).__name__
        return ("fail", name, f"{label}: {problem}")
    return ("ok", name, f"{label} reachable")


async def _ping_store(url: str) -> None:
    store = open_store(url)
    try:
        await store.ping()
    finally:
        await store.aclose()


async def _ping_coordinator(url: str, prefix: str, state_dir: str) -> None:
    coordinator = open_coordinator(url, prefix, state_dir)
    try:
        await coordinator.ping()
    finally:
        await coordinator.aclose()


def _check_http(listen: str) -> Check:
    try:
        bind(listen).close()
    except ListenError as exc:
        if "in use" not in str(exc):
            return ("fail", "http", str(exc))
    else:
        return ("ok", "http", f"{listen} free to bind")
    host, port = parse_listen(listen)
    host = "127.0.0.1" if host in ("0.0.0.0", "") else ("::1" if host == "::" else host)
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            body = json.loads(response.read())
            return ("ok", "http", f"{listen} in use by a ready pamd ({body.get('status')})")
    except urllib.error.HTTPError as exc:
        return ("fail", "http", f"{listen}: running pamd is not ready ({exc.code}): {exc.read().decode()[:200]}")
    except (OSError, ValueError) as exc:
        return ("fail", "http", f"{listen} in use by something that is not a ready pamd ({exc})")
