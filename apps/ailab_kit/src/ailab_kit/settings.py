"""Settings read from the environment the python_app role renders."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from ailab_kit.llm import LLMClient

PROVIDERS = ("ollama", "llamacpp")


class SettingsError(ValueError):
    """A required setting is missing or invalid."""


@dataclass(frozen=True)
class Settings:
    database_url: str
    llm_url: str
    llm_model: str
    llm_provider: str
    llm_timeout: float = 120.0
    llm_api_key: str = field(default="", repr=False)  # sent as a bearer token; never shown
    llm_max_tokens: int = 128  # the longest answer the apps ask for

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        missing = [name for name in ("DATABASE_URL", "AILAB_LLM_URL", "AILAB_LLM_MODEL") if not env.get(name)]
        if missing:
            raise SettingsError("missing environment variables: " + ", ".join(missing))
        provider = env.get("AILAB_LLM_PROVIDER", "ollama")
        if provider not in PROVIDERS:
            raise SettingsError(f"AILAB_LLM_PROVIDER must be one of {', '.join(PROVIDERS)}, not {provider!r}")
        try:
            timeout = float(env.get("AILAB_LLM_TIMEOUT", "120"))
        except ValueError as exc:
            raise SettingsError("AILAB_LLM_TIMEOUT must be a number of seconds") from exc
        try:
            max_tokens = int(env.get("AILAB_LLM_MAX_TOKENS", "128"))
        except ValueError:
            max_tokens = 0
        if max_tokens < 1:
            raise SettingsError("AILAB_LLM_MAX_TOKENS must be a whole number of tokens, 1 or more")
        return cls(
            database_url=env["DATABASE_URL"],
            llm_url=env["AILAB_LLM_URL"].rstrip("/"),
            llm_model=env["AILAB_LLM_MODEL"],
            llm_provider=provider,
            llm_timeout=timeout,
            llm_api_key=env.get("AILAB_LLM_API_KEY", ""),
            llm_max_tokens=max_tokens,
        )

    def llm_client(self) -> LLMClient:
        """The LLM client these settings describe, key included."""
        return LLMClient(
            self.llm_url,
            self.llm_model,
            self.llm_provider,
            self.llm_timeout,
            self.llm_api_key,
            self.llm_max_tokens,
        )

    def masked_database_url(self) -> str:
        """The database URL with its password replaced, safe to show or log."""
        scheme, sep, rest = self.database_url.partition("://")
        if not sep or "@" not in rest:
            return self.database_url
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
