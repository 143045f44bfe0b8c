"""Build the AI providers whose API key is in the environment (DESIGN.md section 9).

A provider without a key is not built, and its SDK is never imported: a daemon without keys does not pay for
``anthropic`` or ``google-genai`` (or need them installed). A key whose SDK is missing is one warning, not a crash:
alerts keep their rule text.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pamd.ai.provider import AIProvider, ProviderSettings

__all__ = ["DEFAULT_KEY_ENV", "KNOWN_PROVIDERS", "ProviderConfig", "open_providers"]

log = logging.getLogger("pamd.ai")

DEFAULT_KEY_ENV = {"anthropic": "ANTHROPIC_API_KEY", "gemini": "GEMINI_API_KEY"}
KNOWN_PROVIDERS = tuple(DEFAULT_KEY_ENV)
_SDK = {"anthropic": "anthropic", "gemini": "google-genai"}  # the pip names, for the warning


@dataclass(frozen=True)
class ProviderConfig:
    """How to reach one provider (``[ai.anthropic]``, ``[ai.gemini]``). ``key_env``: the environment variable
    holding the API key (empty: ``DEFAULT_KEY_ENV``); keys are never read from config files."""

    key_env: str = ""
    base_url: str = ""  # empty: the SDK's default endpoint
    timeout: float = 20.0  # seconds per request


def _anthropic(settings: ProviderSettings) -> AIProvider:
    from pamd.ai.anthropic_provider import AnthropicProvider

    return AnthropicProvider(settings)


def _gemini(settings: ProviderSettings) -> AIProvider:
    from pamd.ai.gemini_provider import GeminiProvider

    return GeminiProvider(settings)


_FACTORIES: dict[str, Callable[[ProviderSettings], AIProvider]] = {"anthropic": _anthropic, "gemini": _gemini}


def open_providers(config: Mapping[str, ProviderConfig], environ: Mapping[str, str]) -> dict[str, AIProvider]:
    """The providers of ``config`` whose key variable is set (and not blank) in ``environ``, by name.

    Raises ``ValueError`` for a provider name other than ``KNOWN_PROVIDERS``. The caller closes them (``aclose``).
    """
    unknown = sorted(set(config) - set(_FACTORIES))
    if unknown:
        raise ValueError(f"unknown AI provider(s) {', '.join(unknown)}; known: {', '.join(KNOWN_PROVIDERS)}")
    providers: dict[str, AIProvider] = {}
    for name, section in config.items():
        variable = section.key_env or DEFAULT_KEY_ENV[name]
        key = environ.get(variable, "").strip()
        if not key:
            log.info("AI provider %s is off: %s is not set", name, variable)
            continue
        settings = ProviderSettings(api_key=key, base_url=section.base_url, timeout=section.timeout)
        try:
            providers[name] = _FACTORIES[name](settings)
        except ImportError as exc:
            log.warning("AI provider %s is off: %s is set but its SDK cannot be imported (%s); install it with "
                        "pip install '%s' or pip install 'pamd[ai]'", name, variable, exc, _SDK[name])
    return providers
