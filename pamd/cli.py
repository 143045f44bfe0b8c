"""Command line: ``pamd run | check | monitors | plugins | trigger | explain | config | demo | db``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import anyio

from pamd import __version__
from pamd.assemble import assemble
from pamd.config import ConfigError, effective_config, find_config_path, load_config, redact
from pamd.daemon import StartupError
from pamd.http import ListenError
from pamd.store.base import Store, StoreError

T = TypeVar("T")
EX_CONFIG = 78  # sysexits.h: configuration error; the unit file does not restart on it


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pamd`` command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        status: int = args.func(args)
    except ConfigError as exc:
        print(f"pamd: config error: {exc}", file=sys.stderr)
        return EX_CONFIG
    except (ListenError, StartupError, StoreError) as exc:
        print(f"pamd: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pamd", description="Proactive-monitoring daemon: runs monitor plugins "
                                     "on cron schedules and delivers their alerts.")
    parser.add_argument("--version", action="version", version=f"pamd {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    groups: dict[str, Any] = {}

    def command(name: str, func: Any, help_text: str) -> argparse.ArgumentParser:
        """Add ``name`` (or ``"group name"``, e.g. ``"config show"``) with a ``--config`` option."""
        target = sub
        if " " in name:
            group, name = name.split(" ", 1)
            if group not in groups:
                title = f"{group.capitalize()} commands."
                groups[group] = sub.add_parser(group, help=title, description=title).add_subparsers(
                    title="commands", metavar="COMMAND")
            target = groups[group]
        p: argparse.ArgumentParser = target.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", metavar="PATH", help="config file (default: ./config.toml, "
                       "else /etc/pamd/config.toml; env PAMD_CONFIG)")
        p.set_defaults(func=func)
        return p

    command("run", _run, "Run the daemon in the foreground until SIGTERM (SIGHUP reloads).")
    command("check", _check, "Validate the config and reach every configured backend; exit 0 if all pass "
            "(for ExecStartPre and container health checks).")
    p = command("monitors", _monitors, "List monitors with plugin, source, schedule and next three fire times.")
    p.add_argument("--json", action="store_true", help="print JSON")
    command("plugins", _plugins, "List plugins and their hooks as JSON (failed plugins included).")
    p = command("trigger", _trigger, "Run one tick of MONITOR now and print its alerts.")
    p.add_argument("monitor", metavar="MONITOR")
    p.add_argument("--user", metavar="ID", help="evaluate only this user")
    p.add_argument("--dry-run", action="store_true", help="print alerts but deliver nothing")
    p = command("explain", _explain, "Show, for one user, what each monitor computed, its rule outcome, and why an "
                "alert would or would not be sent (cooldown, quiet hours, opt-out, daily cap). Changes nothing.")
    p.add_argument("user_id", metavar="USER_ID")
    p.add_argument("--monitor", action="append", metavar="NAME", help="only this monitor (repeatable)")
    p.add_argument("--json", action="store_true", help="print JSON")
    command("config show", _config_show, "Print the effective config (defaults and env applied, secrets redacted).")
    command("demo seed", _demo_seed, "Insert the demo users into the configured store (idempotent).")
    command("db migrate", _db_migrate, "Create or update the store's tables (idempotent).")
    command("db sql", _db_sql, "Print the SQL that installs pamd's tables and functions on a Supabase project (run it "
            "in the Supabase SQL editor, or pipe it into psql; idempotent): the Supabase store cannot create them "
            "over REST.")
    return parser


def _run(args: argparse.Namespace) -> int:
    from pamd.daemon import Daemon
    from pamd.logs import setup_logging

    setup_logging()  # until the config's own [log] settings are known
    status: int = anyio.run(Daemon(args.config).run)
    return status


def _check(args: argparse.Namespace) -> int:
    from pamd.checks import run_checks

    results = anyio.run(run_checks, args.config)
    for status, name, detail in results:
        print(f"{status.upper() if status != 'ok' else 'ok':<4} {name}: {detail}")
    return 0 if all(status != "fail" for status, _, _ in results) else 1


def _monitors(args: argparse.Namespace) -> int:
    assembly = assemble(args.config, sinks=False)
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for name, job in assembly.jobs.items():
        fires = [f.astimezone(job.schedule.tz).isoformat() for f in job.schedule.next_n(now, 3)]
        rows.append({"name": name, "plugin": job.plugin.name, "source": job.plugin.source, "enabled": job.enabled,
                     "schedule": job.schedule.expr, "timezone": job.schedule.timezone, "next": fires})
        if not args.json:
            state = "" if job.enabled else "  (disabled)"
            print(f"{name}{state}\n  plugin:   {job.plugin.name} ({job.plugin.source})\n"
                  f"  schedule: {job.schedule.expr}  [{job.schedule.timezone}]\n  next:     {', '.join(fires)}")
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


def _plugins(args: argparse.Namespace) -> int:
    from pamd.plugins import load_plugins

    config = load_config(find_config_path(args.config))
    plugins = load_plugins(config.daemon.plugin_dirs)
    print(json.dumps([p.as_json() for p in plugins.plugins], indent=2))
    return 0


def _trigger(args: argparse.Namespace) -> int:
    assembly = assemble(args.config)
    if args.monitor not in assembly.jobs:
        known = ", ".join(sorted(assembly.jobs)) or "none"
        print(f"pamd: no monitor {args.monitor!r} (known: {known})", file=sys.stderr)
        return 2
    from pamd.oneshot import trigger

    return 0 if anyio.run(trigger, assembly, args.monitor, args.user, args.dry_run) else 1


def _explain(args: argparse.Namespace) -> int:
    from pamd.oneshot import explain, print_explanation

    assembly = assemble(args.config, sinks=False)
    monitors = args.monitor or sorted(assembly.jobs)
    unknown = [m for m in monitors if m not in assembly.jobs]
    if unknown:
        known = ", ".join(sorted(assembly.jobs)) or "none"
        print(f"pamd: no monitor {unknown[0]!r} (known: {known})", file=sys.stderr)
        return 2
    try:
        reports = anyio.run(explain, assembly, args.user_id, monitors)
    except LookupError as exc:
        print(f"pamd: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"user_id": args.user_id, "monitors": reports}, indent=2, default=str))
    else:
        print_explanation(args.user_id, reports)
    return 0 if all(r["outcome"] == "success" for r in reports) else 1


def _config_show(args: argparse.Namespace) -> int:
    config = load_config(find_config_path(args.config))
    print(json.dumps(effective_config(config), indent=2))
    return 0


def _with_store(args: argparse.Namespace, action: Callable[[Store], Awaitable[T]]) -> tuple[T, str]:
    """Run ``action`` on the configured store (migrated first); returns its result and the store URL."""
    from pamd.store import open_store

    config = load_config(find_config_path(args.config))
    config.state_dir.mkdir(parents=True, exist_ok=True)

    async def go() -> T:
        store = open_store(config.store_url, **config.store.options())
        try:
            await store.migrate()
            return await action(store)
        finally:
            await store.aclose()

    return anyio.run(go), redact(config.store_url, "url")


def _demo_seed(args: argparse.Namespace) -> int:
    count, url = _with_store(args, lambda store: store.seed_demo(datetime.now(UTC)))
    print(f"seeded {count} demo rows into {url}")
    return 0


def _db_sql(args: argparse.Namespace) -> int:
    from pamd.store.supabase_sql import install_sql

    sys.stdout.write(install_sql())
    return 0


def _db_migrate(args: argparse.Namespace) -> int:
    applied, url = _with_store(args, lambda store: store.migrate())
    print(f"{url}: schema up to date ({applied} migration(s) applied)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
