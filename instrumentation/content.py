"""Opt-in message content: the capture mode switch, size caps and redaction."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

import msgspec

from instrumentation.logging import Redactor
from instrumentation.semconv import CAPTURE_CONTENT_ENV

CaptureMode = Literal["NO_CONTENT", "SPAN_ONLY", "EVENT_ONLY", "SPAN_AND_EVENT"]
_MODES = ("NO_CONTENT", "SPAN_ONLY", "EVENT_ONLY", "SPAN_AND_EVENT")
log = logging.getLogger("spangate.telemetry")


def capture_mode(env: Mapping[str, str], configured: str | None) -> CaptureMode:
    """The environment wins over the config; anything unknown warns and means NO_CONTENT."""
    raw = env.get(CAPTURE_CONTENT_ENV) or configured or "NO_CONTENT"
    mode = raw.strip().upper()
    if mode in ("TRUE", "1"):
        # The older boolean form of the variable, still set by many deployments.
        return "SPAN_ONLY"
    if mode in ("FALSE", "0", ""):
        return "NO_CONTENT"
    if mode not in _MODES:
        log.warning(
            "%s=%r is not one of %s; capturing no content", CAPTURE_CONTENT_ENV, raw, _MODES
        )
        return "NO_CONTENT"
    return mode  # type: ignore[return-value]  # checked against _MODES just above


class ContentPolicy:
    def __init__(self, mode: CaptureMode, max_bytes: int, redactor: Redactor) -> None:
        self.mode = mode
        self.on_span = mode in ("SPAN_ONLY", "SPAN_AND_EVENT")
        self.on_event = mode in ("EVENT_ONLY", "SPAN_AND_EVENT")
        self.enabled = self.on_span or self.on_event
        self.max_bytes = max_bytes
        #: Also what spans and metrics redact their client-supplied strings with.
        self.redactor = redactor

    def prepare(self, value: Any) -> tuple[Any, bool]:
        """Redacted, size-capped structured value, and whether it was truncated."""
        text = self.redactor.text(msgspec.json.encode(value).decode())
        if len(text.encode()) <= self.max_bytes:
            return msgspec.json.decode(text), False
        return _shrink(msgspec.json.decode(text), self.max_bytes), True

    def redact_attributes(self, attributes: dict[str, Any]) -> None:
        """The strings among a request's attributes (stop sequences, a user id, a
        service tier: what the client sent), redacted in place. Here, not in the compiled
        processor: a client decides how long the lists are."""
        field = self.redactor.field
        for key, value in attributes.items():
            if type(value) is str:
                attributes[key] = field(value)
            elif isinstance(value, list | tuple):
                attributes[key] = [field(v) if type(v) is str else v for v in value]

    def as_attribute(self, value: Any) -> tuple[str, bool]:
        prepared, truncated = self.prepare(value)
        return msgspec.json.encode(prepared).decode(), truncated


def _shrink(value: Any, max_bytes: int) -> Any:
    """Cut long strings until the JSON fits; the shape (roles, part types) survives."""
    limit = max_bytes
    while limit > 16:
        limit //= 2
        shrunk = _cut_strings(value, limit)
        if len(msgspec.json.encode(shrunk)) <= max_bytes:
            return shrunk
    return []


def _cut_strings(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + "…[truncated]"
    if isinstance(value, list):
        return [_cut_strings(v, limit) for v in value]
    if isinstance(value, dict):
        return {k: _cut_strings(v, limit) for k, v in value.items()}
    return value
