"""The Redactor: what it replaces, and that remembering short strings changes nothing."""

from __future__ import annotations

import random
import re
import sys
from typing import Any

import msgspec
import pytest

from instrumentation import logging as spangate_logging
from instrumentation.logging import (
    DEFAULT_SECRET_PATTERNS,
    MAX_DEPTH,
    REDACTED,
    TOO_DEEP,
    Redactor,
)

KEY = "sk-proj-abcdefghijklmnop"
LITERAL = "s3cr3t-literal!"


def _reference(pattern: re.Pattern[str], key: str, value: Any) -> Any:
    """The rule, written plainly: secret key names, then every string, nested too."""
    if key.lower() in {"authorization", "x-api-key", "api-key", "api_key", "apikey"}:
        return REDACTED
    if isinstance(value, str):
        return pattern.sub(REDACTED, value)
    if isinstance(value, dict):
        return {k: _reference(pattern, str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_reference(pattern, key, v) for v in value]
    return value


class Tag(str):
    """A str subclass (like a StrEnum member) must be redacted like a str."""


def _events(seed: int, n: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    strings = [
        "POST",
        "/v1/chat/completions",
        f"/v1/models?key={KEY}",
        f"Bearer {KEY}",
        f"bearer\t{KEY[3:]}",
        f"prefix {LITERAL} suffix",
        "gpt-4o-mini",
        "x" * 300 + KEY,  # too long to be remembered
        Tag(f"tag {KEY}"),
        "",
    ]
    keys = ["path", "Authorization", "X-API-KEY", "model", "api_key", "error", "headers"]
    events = []
    for i in range(n):
        event: dict[str, Any] = {"trace_id": f"{i:032x}", "status": 200, "stream": False}
        for _ in range(6):
            key = rng.choice(keys)
            choice = rng.randrange(5)
            if choice == 0:
                event[key] = rng.choice(strings)
            elif choice == 1:
                event[key] = {rng.choice(keys): rng.choice(strings), 3: rng.choice(strings)}
            elif choice == 2:
                event[key] = (rng.choice(strings), [rng.choice(strings), 1.5, None])
            elif choice == 3:
                event[key] = [{"n": 1, "target": rng.choice(strings)}]
            else:
                event[key] = rng.choice([1, 2.5, True, None])
        events.append(event)
    return events


@pytest.mark.parametrize("seed", [1, 2])
def test_redaction_equals_the_plain_rule_across_repeats_and_cache_clears(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same output as the rule without memory, for strings seen again and again, while
    the memory fills up and is cleared (a small limit forces that here)."""
    monkeypatch.setattr(spangate_logging, "_REMEMBERED", 16)
    redactor = Redactor(literals=[LITERAL])
    sources = [*DEFAULT_SECRET_PATTERNS, re.escape(LITERAL)]
    pattern = re.compile("|".join(f"(?:{p})" for p in sources))
    for event in _events(seed, 400):
        expected = {k: _reference(pattern, k, v) for k, v in event.items()}
        assert redactor(None, "info", dict(event)) == expected


def test_secrets_never_survive_a_remembered_string() -> None:
    redactor = Redactor(patterns=[r"internal-\d+"])
    for _ in range(3):  # the second and third answers come from memory
        out = redactor(None, "info", {"path": f"/v1?k={KEY}", "note": "internal-42", "ok": "ok"})
        assert out == {"path": f"/v1?k={REDACTED}", "note": REDACTED, "ok": "ok"}


class Unhashable(str):
    def __eq__(self, other: object) -> bool:
        return str.__eq__(self, other)

    __hash__ = None  # type: ignore[assignment]


class CaseInsensitive(str):
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and self.lower() == other.lower()

    def __hash__(self) -> int:
        return hash(self.lower())


def test_str_subclasses_are_redacted_and_never_remembered() -> None:
    """A subclass may be unhashable or compare its own way: it must neither raise nor let
    a remembered answer stand for a different string."""
    redactor = Redactor()
    assert redactor(None, "info", {"a": Unhashable(f"x {KEY}")}) == {"a": f"x {REDACTED}"}
    redactor(None, "info", {"a": CaseInsensitive("token SK-abcdefgh1234")})
    assert redactor(None, "info", {"a": "token sk-abcdefgh1234"}) == {"a": f"token {REDACTED}"}
    assert redactor(None, "info", {CaseInsensitive("AUTHORIZATION"): "v"}) == {
        CaseInsensitive("AUTHORIZATION"): REDACTED
    }


def test_a_value_nested_deeper_than_the_limit_is_cut_there_and_the_line_kept() -> None:
    """A log value nested deeper than Python's recursion limit (a client's tool schema,
    which msgspec decodes happily) is redacted down to MAX_DEPTH levels and replaced by a
    short placeholder below them, never raising: pure, the walk raised RecursionError and
    the line was lost; compiled (proxy/native.py), it recursed on the C stack unbounded."""
    too_deep = 2 * sys.getrecursionlimit()
    schema: Any = KEY
    tokens: Any = KEY
    for _ in range(too_deep):
        schema = {"key": KEY, "next": schema}
        tokens = [tokens, KEY]
    out = Redactor()(None, "info", {"schema": schema, "tokens": tokens, "api_key": KEY})
    assert out["api_key"] == REDACTED
    level, levels = out["schema"], 0
    while level != TOO_DEEP:
        assert level["key"] == REDACTED  # redacted all the way down to the cut
        level, levels = level["next"], levels + 1
    assert levels == MAX_DEPTH
    level, levels = out["tokens"], 0
    while level != TOO_DEEP:
        assert level[1] == REDACTED
        level, levels = level[0], levels + 1
    assert levels == MAX_DEPTH
    assert len(msgspec.json.encode(out)) < 20_000  # the line renders, and stays short
