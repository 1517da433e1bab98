"""Anthropic Messages API."""

from __future__ import annotations

from typing import ClassVar

from proxy.endpoints import Wire
from proxy.providers.base import BaseAdapter


class AnthropicAdapter(BaseAdapter):
    kind: ClassVar[str] = "anthropic"
    wire: ClassVar[Wire] = "anthropic"
    provider_name: ClassVar[str] = "anthropic"
    auth_header: ClassVar[tuple[str, str]] = ("x-api-key", "")
