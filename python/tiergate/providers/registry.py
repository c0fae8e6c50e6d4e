"""Adapters by provider kind, imported on first use (the AWS adapters pull in botocore,
which a sidecar without AWS providers should not pay for at start-up)."""

from __future__ import annotations

import importlib

from tiergate.config import ProviderConfig
from tiergate.errors import ConfigError
from tiergate.providers.base import Adapter

__all__ = ["ADAPTERS", "make_adapter"]

# kind → (module, class)
ADAPTERS: dict[str, tuple[str, str]] = {
    "openai": ("tiergate.providers.openai", "OpenAIAdapter"),
    "openai_compatible": ("tiergate.providers.openai", "OpenAIAdapter"),
    "anthropic": ("tiergate.providers.anthropic", "AnthropicAdapter"),
    "gemini": ("tiergate.providers.gemini", "GeminiAdapter"),
    "bedrock": ("tiergate.providers.bedrock", "BedrockAdapter"),
    "sagemaker": ("tiergate.providers.sagemaker", "SageMakerAdapter"),
}


def make_adapter(name: str, config: ProviderConfig) -> Adapter:
    """The adapter for provider ``name`` (not yet open: call ``await adapter.open()``)."""
    where = ADAPTERS.get(config.kind)
    if where is None:
        raise ConfigError([f"providers.{name}.kind: no adapter for {config.kind!r}"])
    module, cls = where
    adapter: Adapter = getattr(importlib.import_module(module), cls)(name, config)
    return adapter
