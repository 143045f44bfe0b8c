"""Config loading: defaults, env overrides, and located errors for every kind of bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from pamd.config import ConfigError, effective_config, find_config_path, load_config, parse_listen, redact
from pamd.model import Priority


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> object:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, env or {})


def error_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env)
    return str(info.value)


def test_defaults_without_a_file() -> None:
    config = load_config(None, {})
    assert config.http.listen == "127.0.0.1:8650"
    assert config.store_url == "sqlite:///.pamd/pamd.db"
    assert config.daemon.shutdown_grace == 20.0


def test_repo_demo_config_is_valid() -> None:
    config = load_config(Path(__file__).parent.parent / "config.toml", {})
    assert config.monitors["fuel"]["run_at_startup"] is True


def test_env_overrides_nested_keys_with_type_coercion(tmp_path: Path) -> None:
    config = load(tmp_path, "[http]\nlisten = '127.0.0.1:1'\n", {
        "PAMD_HTTP__LISTEN": "127.0.0.1:9999",
        "PAMD_DAEMON__SHUTDOWN_GRACE": "3.5",
        "PAMD_MONITORS__FUEL__SCHEDULE": "*/2 * * * *",
        "PAMD_DAEMON__PLUGIN_DIRS": '["/a", "/b"]',
        "PAMD_LOAD_PLUGINS": "x",  # not a config key; must be ignored here
    })
    assert config.http.listen == "127.0.0.1:9999"  # type: ignore[attr-defined]
    assert config.daemon.shutdown_grace == 3.5  # type: ignore[attr-defined]
    assert config.monitors["fuel"]["schedule"] == "*/2 * * * *"  # type: ignore[attr-defined]
    assert config.daemon.plugin_dirs == ["/a", "/b"]  # type: ignore[attr-defined]


def test_malformed_toml_names_file_and_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, "[http]\nlisten = \n")
    assert "config.toml" in message and "invalid TOML" in message and "line 2" in message


def test_unknown_top_level_section(tmp_path: Path) -> None:
    assert error_of(tmp_path, "\n[htp]\nlisten = 'x'\n").endswith("config.toml:2: htp: unknown key")


def test_unknown_nested_key_has_line(tmp_path: Path) -> None:
    message = error_of(tmp_path, "[daemon]\n\nshutdown_grce = 1\n")
    assert message.endswith("config.toml:3: daemon.shutdown_grce: unknown key")


def test_wrong_type(tmp_path: Path) -> None:
    message = error_of(tmp_path, "[daemon]\nshutdown_grace = 'soon'\n")
    assert message.endswith("config.toml:2: daemon.shutdown_grace: expected `float`, got `str`")


def test_wrong_type_from_env_names_the_variable(tmp_path: Path) -> None:
    message = error_of(tmp_path, "", {"PAMD_DAEMON__MAX_CONCURRENT_TICKS": "many"})
    assert message.startswith("env PAMD_DAEMON__MAX_CONCURRENT_TICKS: daemon.max_concurrent_ticks: expected `int`")


def test_env_variable_that_is_no_key(tmp_path: Path) -> None:
    assert "PAMD_LISTEN" in error_of(tmp_path, "", {"PAMD_LISTEN": "x"})
    assert error_of(tmp_path, "", {"PAMD_HTP__LISTEN": "x"}) == "env PAMD_HTP__LISTEN: htp: unknown key"


def test_bad_enum_and_listen(tmp_path: Path) -> None:
    assert "log.level: invalid enum value 'loud'" in error_of(tmp_path, "[log]\nlevel = 'loud'\n")
    assert "config.toml:2: http.listen: expected HOST:PORT" in error_of(tmp_path, "[http]\nlisten = 'localhost'\n")
    assert "ai.analysis_min_priority: invalid enum value 'loud'" in error_of(
        tmp_path, "[ai]\nanalysis_min_priority = 'loud'\n")
    config = load(tmp_path, "[ai]\nanalysis_min_priority = 'low'\n")
    assert config.ai.analysis_min_priority is Priority.LOW  # type: ignore[attr-defined]


def test_missing_explicit_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        find_config_path(str(tmp_path / "nope.toml"), {})


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:80") == ("127.0.0.1", 80)
    assert parse_listen("[::1]:8650") == ("::1", 8650)
    assert parse_listen(":8650") == ("0.0.0.0", 8650)
    with pytest.raises(ValueError):
        parse_listen("127.0.0.1:70000")


def test_secrets_are_redacted(tmp_path: Path) -> None:
    config = load(tmp_path, "[store]\nurl = 'postgresql://pam:hunter2@db/pam'\n[sinks.webhook]\nsecret = 's3'\n")
    shown = effective_config(config)  # type: ignore[arg-type]
    assert shown["store"]["url"] == "postgresql://pam:***@db/pam"
    assert shown["sinks"]["webhook"]["secret"] == "***"
    assert "hunter2" not in repr(shown) and "s3'" not in repr(shown)
    assert redact({"api_key": "k", "nested": {"token": "t"}}) == {"api_key": "***", "nested": {"token": "***"}}


def test_a_provider_table_keeps_that_providers_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[providers.places]\nbase_url = "http://127.0.0.1:1"\n\n[providers.weather]\nretries = 0\n')
    config = load_config(path, {"PAMD_PROVIDERS__PLACES__RETRIES": "5"})
    places, weather = config.providers.places, config.providers.weather
    assert (places.base_url, places.timeout, places.cache_ttl, places.retries) == ("http://127.0.0.1:1", 25.0,
                                                                                   86400.0, 5)
    assert (weather.base_url, weather.timeout, weather.cache_ttl, weather.retries) == (
        "https://api.open-meteo.com", 10.0, 0.0, 0)


def test_demo_users_go_only_into_an_empty_sqlite_store_unless_asked(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    for store, expected in (("", True), ('url = "sqlite:///x.db"', True), ('url = "postgresql://h/db"', False),
                            ('supabase_url = "https://p.supabase.co"', False),
                            ('url = "postgresql://h/db"\nseed_demo = true', True),
                            ('seed_demo = false', False)):
        path.write_text(f"[store]\n{store}\n")
        assert load_config(path, environ={}).seeds_demo is expected, store


def test_sqlite_read_process_threshold_reaches_the_store(tmp_path: Path) -> None:
    from pamd.store import open_store
    from pamd.store.sqlite import SQLiteStore

    config = load(tmp_path, "[store]\nread_process_min_users = 0\n")
    store = open_store(config.store_url, **config.store.options())  # type: ignore[attr-defined]
    assert isinstance(store, SQLiteStore) and not store.read_process
    config = load(tmp_path, "[store]\nread_process_min_users = 500\n")
    store = open_store(config.store_url, **config.store.options())  # type: ignore[attr-defined]
    assert isinstance(store, SQLiteStore) and store.read_process and store.read_process_min_users == 500
    message = error_of(tmp_path, "[store]\nread_process_min_users = -1\n")
    assert "read_process_min_users" in message and "config.toml" in message
