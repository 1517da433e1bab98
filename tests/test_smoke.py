"""The shortest end-to-end path: an SDK call through spangate to the fake provider."""

from __future__ import annotations

import openai
from conftest import Running
from fakeprovider import FakeProvider


def test_openai_chat_through_spangate_matches_direct(fake: FakeProvider, spangate: Running) -> None:
    """The SDK result via spangate equals the result of calling the provider directly."""
    messages = [{"role": "user", "content": "hello"}]
    direct = openai.OpenAI(base_url=fake.openai_base_url, api_key="sk-test", max_retries=0)
    proxied = openai.OpenAI(base_url=spangate.openai_base_url, api_key="sk-test", max_retries=0)
    a = direct.chat.completions.create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]
    b = proxied.chat.completions.create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]
    assert a.model_dump() == b.model_dump()
    spans = spangate.finished_spans()
    assert sorted(s.name for s in spans) == ["POST /v1/chat/completions", "chat gpt-4o-mini"]
