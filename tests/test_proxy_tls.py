"""Providers over https: spangate verifies the provider's certificate against the
system trust store (SSL_CERT_FILE honoured), and says so when it cannot."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from conftest import Running, basic_config, serving_context
from fakeprovider import FakeProvider

HELLO: Any = [{"role": "user", "content": "hi"}]


@pytest.fixture
def tls_fake(authority: Path) -> Iterator[FakeProvider]:
    with FakeProvider(tls=serving_context(authority, "leaf")) as provider:
        yield provider


def test_https_provider_with_trusted_certificate_is_served(
    tls_fake: FakeProvider,
    authority: Path,
    spangate_for: Callable[..., Running],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both SDKs through spangate to an https provider whose CA is in SSL_CERT_FILE."""
    monkeypatch.setenv("SSL_CERT_FILE", str(authority / "ca.pem"))
    running = spangate_for(basic_config(tls_fake))
    assert tls_fake.url.startswith("https://")
    with openai.OpenAI(base_url=running.openai_base_url, api_key="sk-t", max_retries=0) as oa:
        chat = oa.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        assert chat.choices[0].message.content
        streamed = oa.chat.completions.create(
            model="gpt-4o-mini",
            messages=HELLO,
            stream=True,
        )
        assert any(chunk.choices for chunk in streamed)
    with anthropic.Anthropic(base_url=running.url, api_key="sk-ant-t", max_retries=0) as an:
        message = an.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=16,
            messages=HELLO,
        )
        assert message.content
    assert len(tls_fake.received) == 3


def test_untrusted_certificate_is_502_saying_why(
    tls_fake: FakeProvider,
    spangate_for: Callable[..., Running],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A certificate no trusted CA signed: 502 upstream_unreachable naming the TLS failure."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)  # the system store: not our CA
    running = spangate_for(basic_config(tls_fake))
    with (
        openai.OpenAI(base_url=running.openai_base_url, api_key="sk-t", max_retries=0) as oa,
        pytest.raises(openai.APIStatusError) as caught,
    ):
        oa.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert caught.value.status_code == 502
    message = caught.value.message
    assert "TLS certificate not trusted" in message
    assert "providers.openai.base_url" in message
    assert tls_fake.received == []


def test_certificate_for_another_host_is_502_saying_why(
    authority: Path,
    spangate_for: Callable[..., Running],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A trusted CA, but the certificate names another host: refused (hostname checked)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(authority / "ca.pem"))
    with FakeProvider(tls=serving_context(authority, "other")) as fake:
        running = spangate_for(basic_config(fake))
        with (
            openai.OpenAI(base_url=running.openai_base_url, api_key="sk-t", max_retries=0) as oa,
            pytest.raises(openai.APIStatusError) as caught,
        ):
            oa.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        assert fake.received == []
    assert caught.value.status_code == 502
    assert "TLS certificate not trusted: IP address mismatch" in caught.value.message
