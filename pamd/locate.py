"""Find where a config key was set (file line or environment variable) for error messages."""

from __future__ import annotations

import re

_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_ASSIGN = re.compile(r"^\s*([A-Za-z0-9_\-\".' ]+?)\s*=")
_MSGSPEC_PATH = re.compile(r" - at `\$((?:\.[A-Za-z0-9_\-]+|\[[^\]]*\])*)`$")


def _split_dotted(text: str) -> tuple[str, ...]:
    return tuple(part.strip().strip("\"'") for part in text.split("."))


class KeyLocator:
    """Maps key paths to their origin: ``file:line`` for TOML keys, ``env NAME`` for environment overrides."""

    def __init__(self, path: str = "") -> None:
        self.path = path
        self._lines: dict[tuple[str, ...], int] = {}
        self._env: dict[tuple[str, ...], str] = {}

    def index_toml(self, text: str) -> None:
        """Record the line of every table header and key in ``text`` (best effort, no full TOML parse)."""
        table: tuple[str, ...] = ()
        for number, line in enumerate(text.splitlines(), start=1):
            if header := _HEADER.match(line):
                table = _split_dotted(header.group(1))
                self._lines.setdefault(table, number)
            elif assign := _ASSIGN.match(line):
                self._lines.setdefault(table + _split_dotted(assign.group(1)), number)

    def set_env(self, key: tuple[str, ...], env_name: str) -> None:
        self._env[key] = env_name

    def origin(self, key: tuple[str, ...]) -> str:
        """The most specific known origin of ``key`` or of its closest enclosing table."""
        for end in range(len(key), 0, -1):
            prefix = key[:end]
            if prefix in self._env:
                return f"env {self._env[prefix]}"
            if prefix in self._lines:
                return f"{self.path}:{self._lines[prefix]}"
        # A table that exists only through environment variables beneath it (PAMD_HTP__LISTEN for "htp").
        for env_key, env_name in self._env.items():
            if env_key[: len(key)] == key:
                return f"env {env_name}"
        return self.path or "defaults"

    def located(self, key: tuple[str, ...], problem: str) -> str:
        return f"{self.origin(key)}: {'.'.join(key)}: {problem}"

    def describe_validation_error(self, message: str, prefix: tuple[str, ...] = ()) -> str:
        """Turn msgspec's ``"Expected `int`, got `str` - at `$.http.port`"`` into a located message.

        ``prefix`` is the key path of the table that was validated, when it was not the whole file.
        """
        match = _MSGSPEC_PATH.search(message)
        key = prefix + (tuple(p for p in re.split(r"\.|\[|\]", match.group(1)) if p) if match else ())
        problem = message[: match.start()] if match else message
        if problem.startswith("Object contains unknown field"):
            field = problem.split("`")[1]
            key = (*key, field)
            problem = "unknown key"
        return self.located(key, _lower_first(problem))


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]
