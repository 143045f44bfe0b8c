"""Building the daemon's :class:`~pamd.ai.router.Phraser` from ``[ai]`` and the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pamd.ai.provider import AIProvider
from pamd.ai.router import Phraser
from pamd.config import Config
from pamd.metrics import Metrics

__all__ = ["build_phraser", "keyed_providers"]


def keyed_providers(config: Config, environ: Mapping[str, str] = os.environ) -> list[str]:
    """The enabled providers whose key variable is set (non-empty)."""
    return [name for name, s in config.ai.providers().items() if s.enabled and s.key_env and environ.get(s.key_env)]


def build_phraser(config: Config, metrics: Metrics, environ: Mapping[str, str] = os.environ,
                  providers: Mapping[str, AIProvider] | None = None) -> Phraser:
    """A phraser over the providers whose key is set (``providers`` overrides, for tests). With no key set no SDK
    is imported and the phraser is inactive: alerts keep their rule text, and previews still show what would be
    sent."""
    if providers is None:
        providers = {}
        if keyed_providers(config, environ):
            from pamd.ai.providers import ProviderConfig, open_providers  # the SDKs of keyed providers only

            providers = open_providers({name: ProviderConfig(s.key_env, s.base_url, s.timeout)
                                        for name, s in config.ai.providers().items() if s.enabled}, environ)
    return Phraser(config.ai, providers, metrics.ai, ledger_path=config.state_dir / "ai_spend.json")
