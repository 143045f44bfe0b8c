"""Configuration: ``config.toml`` plus ``PAMD_<SECTION>__<KEY>`` environment overrides, validated by msgspec.

Every error is a :class:`ConfigError` whose message names where the bad value came from (file and line, or the
environment variable), the key path and the problem.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from pamd.locate import KeyLocator
from pamd.model import Priority
from pamd.store.mapping import MappingError, TableMap, check_mapping

DEFAULT_PATHS = (Path("config.toml"), Path("/etc/pamd/config.toml"))
ENV_PREFIX = "PAMD_"
# PAMD_* variables that are not config keys.
NON_KEY_ENV = frozenset({"PAMD_CONFIG", "PAMD_LOAD_PLUGINS", "PAMD_DISABLE_PLUGINS"})


class ConfigError(Exception):
    """Invalid configuration; ``str(err)`` is a one-line, located explanation."""


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class DaemonSection(_Section):
    state_dir: str = ""
    plugin_dirs: list[str] = msgspec.field(default_factory=list)
    shutdown_grace: float = 20.0
    max_concurrent_ticks: int = 8
    stall_threshold: float = 1.0
    stall_disable_after: float = 5.0


class LogSection(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "text"] = "auto"


class HttpSection(_Section):
    enabled: bool = True
    listen: str = "127.0.0.1:8650"


class TableSection(_Section):
    """``[store.tables.<table>]``: one of the app's tables under another name or with other column names
    (:mod:`pamd.store.mapping`)."""

    name: str = ""  # [schema.]table in the app's database; default: the PAM name, in schema public
    columns: dict[str, str] = msgspec.field(default_factory=dict)  # PAM column -> the app's ("": none)


class StoreSection(_Section):
    url: str = ""  # sqlite:///..., postgresql://..., or "supabase" (then supabase_url)
    # None: seed an empty SQLite store (the embedded demo) with the demo users, never a Postgres or Supabase one
    # (an app's empty production database would get fake travellers); true or false: always or never
    seed_demo: bool | None = None
    tables: dict[str, TableSection] = msgspec.field(default_factory=dict)

    supabase_url: str = ""  # https://<project>.supabase.co: the Supabase store, over its REST API
    supabase_key_env: str = "SUPABASE_SERVICE_ROLE_KEY"  # the variable holding the service-role key (never config)
    # SQLite: a full scan of at least this many users is read by a second process (0: never)
    read_process_min_users: int = 20_000

    def __post_init__(self) -> None:
        if self.read_process_min_users < 0:
            raise ValueError("read_process_min_users must be >= 0 (0: never read in a second process)")

    def table_maps(self) -> dict[str, TableMap]:
        """``tables`` as the store takes them."""
        return {name: TableMap(t.name, dict(t.columns)) for name, t in self.tables.items()}

    def options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`pamd.store.open_store` that this section sets."""
        return {"tables": self.table_maps(), "read_process_min_users": self.read_process_min_users}


class CoordinationSection(_Section):
    url: str = ""
    prefix: str = "pamd"
    lease_ttl: float = 10.0  # seconds; the leader renews every third of it and steps down after two thirds

    def __post_init__(self) -> None:
        if self.lease_ttl < 0.3:
            raise ValueError("lease_ttl must be at least 0.3 seconds")


class ProviderSection(_Section):
    """One external HTTP data provider (``[providers.weather]``, ``[providers.places]``)."""

    base_url: str = ""
    timeout: float = 10.0
    retries: int = 2
    enabled: bool = True
    cache_ttl: float = 0.0  # seconds an answer is reused across ticks (0: each tick asks again)


class WeatherProviderSection(ProviderSection):
    """``[providers.weather]``: Open-Meteo."""

    base_url: str = "https://api.open-meteo.com"


class PlacesProviderSection(ProviderSection):
    """``[providers.places]``: OpenStreetMap's Overpass API. Stations and garages change over months and Overpass's
    fair-use limits are low, so answers are reused for a day."""

    base_url: str = "https://overpass-api.de/api"
    timeout: float = 25.0
    cache_ttl: float = 86400.0


class ProvidersSection(_Section):
    weather: WeatherProviderSection = msgspec.field(default_factory=WeatherProviderSection)
    places: PlacesProviderSection = msgspec.field(default_factory=PlacesProviderSection)
    user_agent: str = "pamd (proactive monitoring daemon; https://github.com/pamd/pamd)"


HHMM = Annotated[str, msgspec.Meta(pattern=r"^(([01]\d|2[0-3]):[0-5]\d)?$", description="HH:MM or empty")]


class AlertsSection(_Section):
    """Defaults of the alert pipeline; users' ``notification_preferences`` rows override them."""

    max_per_day: int = 12  # non-urgent alerts per user and local day (urgent ones are exempt)
    quiet_start: HHMM = ""  # HH:MM in the user's timezone; empty: no default quiet hours
    quiet_end: HHMM = ""
    release_interval: float = 60.0  # seconds between checks for held alerts whose quiet hours ended
    retry_interval: float = 1.0  # seconds between rounds of the outbox: failed deliveries due for a retry
    resume_after: float = 120.0  # seconds after which a stored, never delivered alert is taken as left by a crash
    state: Literal["store", "redis"] = "store"  # where dedupe state lives; "redis" shares it between replicas

    def __post_init__(self) -> None:
        if bool(self.quiet_start) != bool(self.quiet_end):
            raise ValueError("set both quiet_start and quiet_end, or neither")
        if self.max_per_day < 0 or self.release_interval <= 0 or self.retry_interval <= 0 or self.resume_after <= 0:
            raise ValueError("max_per_day must be >= 0; release_interval, retry_interval and resume_after > 0")


Tier = Literal["analysis", "fast"]


class AIProviderSection(_Section):
    """One model provider (``[ai.anthropic]``, ``[ai.gemini]``). Used only when ``key_env`` names a set variable."""

    model: str = ""
    tier: Tier = "fast"  # the monitors of this tier prefer this provider; the other one is their fallback
    base_url: str = ""  # empty: the SDK's default endpoint
    key_env: str = ""  # the environment variable holding the API key (keys are never read from config)
    max_tokens: int = 400
    timeout: float = 60.0  # a batch of 10 replies is ~1,200 output tokens: 15-30 s from a Sonnet-class model
    input_usd_per_mtok: float = 0.0  # price per million input tokens, for cost accounting and the daily cap
    output_usd_per_mtok: float = 0.0
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.max_tokens < 16 or self.timeout <= 0 or self.input_usd_per_mtok < 0 or self.output_usd_per_mtok < 0:
            raise ValueError("max_tokens must be >= 16, timeout > 0 and prices >= 0")


class AnthropicSection(AIProviderSection):
    model: str = "claude-sonnet-5-5"
    tier: Tier = "analysis"
    key_env: str = "ANTHROPIC_API_KEY"
    input_usd_per_mtok: float = 3.0
    output_usd_per_mtok: float = 15.0


class GeminiSection(AIProviderSection):
    model: str = "gemini-3.5-flash"
    tier: Tier = "fast"
    key_env: str = "GEMINI_API_KEY"
    input_usd_per_mtok: float = 0.30
    output_usd_per_mtok: float = 2.50


class AISection(_Section):
    """``[ai]``: phrasing alerts with a model (DESIGN.md section 9). Off unless a provider's key is set."""

    daily_budget_usd: float = 5.0  # after this much spend in a UTC day, rule text only until the next
    tiers: dict[str, Tier] = msgspec.field(default_factory=lambda: {
        "budget": "analysis", "weather": "analysis", "maintenance": "analysis", "fuel": "fast", "context": "fast"})
    default_tier: Tier = "fast"  # monitors not in ``tiers`` (third-party ones)
    # Alerts of "analysis" monitors below this priority are phrased by the "fast" tier: the analysis model is kept
    # for what is high or urgent ("low": every alert keeps its monitor's tier).
    analysis_min_priority: Priority = Priority.HIGH
    max_concurrency: int = 8  # requests in flight at once, over all providers
    batch_size: int = 10  # alerts of one tick phrased in one request (the instructions are paid once for all)
    cache_size: int = 10_000  # phrasings kept, keyed by (fingerprint, facts, model)
    breaker_failures: int = 3  # consecutive failures that open a provider's circuit...
    breaker_cooloff: float = 300.0  # ...for this many seconds (then one trial request)
    max_retry_after: float = 2.0  # a 429 asking to wait longer than this falls back at once
    anthropic: AnthropicSection = msgspec.field(default_factory=AnthropicSection)
    gemini: GeminiSection = msgspec.field(default_factory=GeminiSection)

    def __post_init__(self) -> None:
        if self.daily_budget_usd < 0 or self.max_concurrency < 1 or self.cache_size < 0 or self.batch_size < 1:
            raise ValueError("daily_budget_usd must be >= 0, max_concurrency and batch_size >= 1, cache_size >= 0")
        if self.breaker_failures < 1 or self.breaker_cooloff < 0 or self.max_retry_after < 0:
            raise ValueError("breaker_failures must be >= 1, breaker_cooloff and max_retry_after >= 0")

    def providers(self) -> dict[str, AIProviderSection]:
        """The configured providers by name, enabled or not."""
        return {"anthropic": self.anthropic, "gemini": self.gemini}


class Config(_Section, dict=True):
    """The whole, validated configuration. ``monitors`` and ``sinks`` tables are validated against plugins later."""

    daemon: DaemonSection = msgspec.field(default_factory=DaemonSection)
    log: LogSection = msgspec.field(default_factory=LogSection)
    http: HttpSection = msgspec.field(default_factory=HttpSection)
    store: StoreSection = msgspec.field(default_factory=StoreSection)
    coordination: CoordinationSection = msgspec.field(default_factory=CoordinationSection)
    providers: ProvidersSection = msgspec.field(default_factory=ProvidersSection)
    alerts: AlertsSection = msgspec.field(default_factory=AlertsSection)
    ai: AISection = msgspec.field(default_factory=AISection)
    monitors: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)
    sinks: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        # Where each value came from, for error messages; set by load_config, not part of the config itself.
        self.source = KeyLocator()

    @property
    def state_dir(self) -> Path:
        """``daemon.state_dir``, else systemd's ``$STATE_DIRECTORY``, else ``./.pamd``."""
        if self.daemon.state_dir:
            return Path(self.daemon.state_dir)
        env_dir = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
        return Path(env_dir) if env_dir else Path(".pamd")

    @property
    def seeds_demo(self) -> bool:
        """Whether an empty store is seeded with the demo users at start (``[store] seed_demo``)."""
        if self.store.seed_demo is not None:
            return self.store.seed_demo
        return self.store_url.startswith("sqlite:")

    @property
    def store_url(self) -> str:
        """``[store] url``; with ``supabase_url`` the Supabase store's ``supabase+https://...`` URL (see
        :mod:`pamd.store.supabase_client`); without either the embedded SQLite file in the state dir."""
        if self.store.supabase_url:
            from pamd.store.supabase_client import store_url

            return store_url(self.store.supabase_url, self.store.supabase_key_env)
        return self.store.url or f"sqlite:///{self.state_dir / 'pamd.db'}"


def find_config_path(explicit: str | None, environ: Mapping[str, str] = os.environ) -> Path | None:
    """``--config``, else ``$PAMD_CONFIG``, else ``./config.toml``, else ``/etc/pamd/config.toml``, else none."""
    chosen = explicit or environ.get("PAMD_CONFIG")
    if chosen:
        path = Path(chosen)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        return path
    return next((p for p in DEFAULT_PATHS if p.is_file()), None)


def load_config(path: Path | None, environ: Mapping[str, str] = os.environ) -> Config:
    """Read, merge and validate the configuration."""
    raw: dict[str, Any] = {}
    locator = KeyLocator(path=str(path) if path else "")
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read config file: {exc}") from exc
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
        locator.index_toml(text)
    _apply_env(raw, environ, locator)
    try:
        config = msgspec.convert(raw, Config, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(locator.describe_validation_error(str(exc))) from exc
    config.source = locator
    _check_listen(config, locator)
    _check_alert_state(config, locator)
    _check_store_tables(config, locator)
    _check_store(config, locator)
    return config


def _apply_env(raw: dict[str, Any], environ: Mapping[str, str], locator: KeyLocator) -> None:
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in NON_KEY_ENV:
            continue
        parts = name[len(ENV_PREFIX) :].lower().split("__")
        if len(parts) < 2 or not all(parts):
            raise ConfigError(
                f"env {name}: not a config key (use PAMD_<SECTION>__<KEY>, e.g. PAMD_HTTP__LISTEN)"
            )
        target = raw
        for part in parts[:-1]:
            child = target.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"env {name}: {'.'.join(parts)}: {part!r} is not a table")
            target = child
        target[parts[-1]] = _parse_env_value(environ[name])
        locator.set_env(tuple(parts), name)


def _parse_env_value(value: str) -> Any:
    """Lists and inline tables are TOML (``["a", "b"]``); anything else stays a string, coerced by type later."""
    stripped = value.strip()
    if stripped[:1] in "[{" and stripped:
        try:
            return tomllib.loads(f"v = {stripped}")["v"]
        except tomllib.TOMLDecodeError:
            return value
    return value


_LISTEN = re.compile(r"^(?P<host>\[[0-9a-fA-F:.]+\]|[^:\[\]]*):(?P<port>\d{1,5})$")


def parse_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:8650"`` or ``"[::1]:8650"`` to ``(host, port)``; raises ValueError."""
    match = _LISTEN.match(value.strip())
    if not match or int(match["port"]) > 65535:
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:8650), got {value!r}")
    return match["host"].strip("[]") or "0.0.0.0", int(match["port"])


def _check_listen(config: Config, locator: KeyLocator) -> None:
    try:
        parse_listen(config.http.listen)
    except ValueError as exc:
        raise ConfigError(locator.located(("http", "listen"), str(exc))) from exc


def _check_alert_state(config: Config, locator: KeyLocator) -> None:
    if config.alerts.state == "redis" and not config.coordination.url:
        raise ConfigError(locator.located(("alerts", "state"), "\"redis\" needs [coordination] url (the Redis "
                                          "that the replicas share)"))


def _check_store_tables(config: Config, locator: KeyLocator) -> None:
    if not config.store.tables:
        return
    try:
        check_mapping(config.store.table_maps())
    except MappingError as exc:
        raise ConfigError(locator.located(("store", "tables", *exc.key), exc.problem)) from exc
    if not config.store_url.startswith(("postgresql:", "postgres:")):
        raise ConfigError(locator.located(("store", "tables"), "column mapping is for an existing Postgres schema: "
                                          "set [store] url to postgresql://..."))
_SUPABASE_URL = re.compile(r"^https?://[^/?#@\s]+(/[^?#\s]*)?$")


def _check_store(config: Config, locator: KeyLocator) -> None:
    store = config.store
    if store.supabase_url:
        if store.url not in ("", "supabase"):
            raise ConfigError(locator.located(("store", "url"), f"{store.url!r} conflicts with [store] supabase_url: "
                                              'set url = "supabase" (or leave it out) to use Supabase'))
        if not _SUPABASE_URL.match(store.supabase_url.strip()):
            raise ConfigError(locator.located(("store", "supabase_url"), "expected the project URL, e.g. "
                                              f"https://<project>.supabase.co, got {store.supabase_url!r}"))
        if not store.supabase_key_env.isidentifier():
            raise ConfigError(locator.located(("store", "supabase_key_env"), "expected an environment variable "
                                              f"name, got {store.supabase_key_env!r}"))
    elif store.url == "supabase":
        raise ConfigError(locator.located(("store", "url"), '"supabase" needs [store] supabase_url (the project URL, '
                                          "e.g. https://<project>.supabase.co)"))


_SECRET_KEY = re.compile(r"(password|secret|token|api_key|apikey|key)$", re.IGNORECASE)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@]*):(?P<pw>[^@/]+)@", re.I)
# Secrets in a URL's query, e.g. redis+sentinel://...?sentinel_password=..., rediss://...?ssl_password=...
_URL_SECRET_OPTION = re.compile(r"(?P<name>[?&][^=&#]*(?:password|secret|token))=(?P<value>[^&#]*)", re.I)


def redact(value: Any, key: str = "") -> Any:
    """A copy of ``value`` with secret-looking keys, URL passwords and URL options named like ``password``,
    ``secret`` or ``token`` replaced by ``"***"``."""
    if isinstance(value, dict):
        return {k: redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    if isinstance(value, str):
        if value and _SECRET_KEY.search(key):
            return "***"
        if "://" not in value:
            return value
        value = _URL_CREDENTIALS.sub(r"\g<scheme>\g<user>:***@", value)
        return _URL_SECRET_OPTION.sub(r"\g<name>=***", value)
    return value


def effective_config(config: Config) -> dict[str, Any]:
    """The configuration as plain data (defaults filled in), secrets redacted."""
    data = msgspec.to_builtins(config)
    data["daemon"]["state_dir"] = str(config.state_dir)
    data["store"]["url"] = config.store_url
    result: dict[str, Any] = redact(data)
    return result
