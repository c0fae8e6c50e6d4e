"""Adapters by provider kind."""

from __future__ import annotations

from collections.abc import Callable

from tiergate.config import ProviderConfig
from tiergate.errors import ConfigError
from tiergate.providers.anthropic import AnthropicAdapter
from tiergate.providers.base import Adapter
from tiergate.providers.bedrock import BedrockAdapter
from tiergate.providers.gemini import GeminiAdapter
from tiergate.providers.openai import OpenAIAdapter
from tiergate.providers.sagemaker import SageMakerAdapter

__all__ = ["ADAPTERS", "make_adapter"]

ADAPTERS: dict[str, Callable[[str, ProviderConfig], Adapter]] = {
    "openai": OpenAIAdapter,
    "openai_compatible": OpenAIAdapter,
    "anthropic": AnthropicAdapter,
    "gemini": GeminiAdapter,
    "bedrock": BedrockAdapter,
    "sagemaker": SageMakerAdapter,
}


def make_adapter(name: str, config: ProviderConfig) -> Adapter:
    """The adapter for provider ``name`` (not yet open: call ``await adapter.open()``)."""
    cls = ADAPTERS.get(config.kind)
    if cls is None:
        raise ConfigError([f"providers.{name}.kind: no adapter for {config.kind!r}"])
    return cls(name, config)
