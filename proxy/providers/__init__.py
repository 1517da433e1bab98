"""One adapter per provider kind; `ADAPTERS` is the only place kinds are listed."""

from __future__ import annotations

from proxy.providers.anthropic import AnthropicAdapter
from proxy.providers.azure_openai import AzureOpenAIAdapter
from proxy.providers.base import Adapter
from proxy.providers.openai import OpenAIAdapter

ADAPTERS: dict[str, Adapter] = {
    adapter.kind: adapter for adapter in (OpenAIAdapter(), AnthropicAdapter(), AzureOpenAIAdapter())
}

__all__ = ["ADAPTERS", "Adapter"]
