"""Helpers shared by the test_integration_* modules (this module holds no tests).

Everything here drives real parts: spangate as a subprocess (`python -m proxy
serve`), the official openai and anthropic SDKs as its clients, the rotel OTLP
collector as the receiver and a Debian Prometheus as the scraper.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import anthropic
import openai
import pytest
from fakeprovider import FakeProvider
from harness import SpangateProcess
from prometheus_client.parser import text_string_to_metric_families
from receivers.rotel import RotelReceiver

pytestmark = pytest.mark.integration

GPT = "gpt-4o-mini"
CLAUDE = "claude-sonnet-4-6"
ALIAS = "fast"  # a model alias for GPT
SERVICE_NAME = "spangate-it"
HELLO: Any = [{"role": "user", "content": "hello through the sidecar"}]

SERVER, CLIENT = 2, 3  # OTLP span kinds

#: Make spangate export quickly: span batch delay (ms), metric interval (ms), OTLP logs.
FAST_EXPORT = {
    "OTEL_BSP_SCHEDULE_DELAY": "100",
    "OTEL_METRIC_EXPORT_INTERVAL": "500",
    "OTEL_LOGS_EXPORTER": "otlp",
}

#: Every OTLP knob spangate reads, cleared, so a variable set around the test run cannot
#: leak into a test (an empty value counts as unset for spangate).
NO_OTLP = {
    "OTEL_EXPORTER_OTLP_ENDPOINT": "",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "",
    "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "",
    "OTEL_EXPORTER_OTLP_PROTOCOL": "",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "",
    "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "",
    "OTEL_SDK_DISABLED": "",
    "OTEL_TRACES_SAMPLER": "",
    "OTEL_TRACES_SAMPLER_ARG": "",
    "OTEL_TRACES_EXPORTER": "",
    "OTEL_METRICS_EXPORTER": "",
}

_T = TypeVar("_T")


def config_for(fake: FakeProvider, **extra: Any) -> dict[str, Any]:
    """Providers openai and anthropic at the fake, the alias `fast` → openai/gpt-4o-mini."""
    config: dict[str, Any] = {
        "providers": {
            "openai": {"kind": "openai", "base_url": fake.url},
            "anthropic": {"kind": "anthropic", "base_url": fake.url},
        },
        "models": {ALIAS: {"targets": [{"provider": "openai", "model": GPT}]}},
    }
    config.update(extra)
    return config


def otlp_env(endpoint: str, protocol: str | None = None, **extra: str) -> dict[str, str]:
    """spangate's environment for exporting everything to `endpoint`, quickly."""
    env = {
        **NO_OTLP,
        **FAST_EXPORT,
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_SERVICE_NAME": SERVICE_NAME,
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
    }
    if protocol is not None:
        env["OTEL_EXPORTER_OTLP_PROTOCOL"] = protocol
    env.update(extra)
    return env


def endpoint_of(receiver: RotelReceiver, protocol: str) -> str:
    return receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint


@contextmanager
def started(config: dict[str, Any], env: Mapping[str, str]) -> Iterator[SpangateProcess]:
    """A spangate subprocess, stopped (SIGTERM, then kill) on the way out."""
    proc = SpangateProcess(config, dict(env))
    try:
        yield proc.start()
    finally:
        proc.stop()


def openai_client(proc: SpangateProcess, api_key: str = "sk-test") -> openai.OpenAI:
    return openai.OpenAI(base_url=proc.url + "/v1", api_key=api_key, max_retries=0, timeout=20)


def anthropic_client(proc: SpangateProcess, api_key: str = "sk-ant-test") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proc.url, api_key=api_key, max_retries=0, timeout=20)


@dataclass
class Usage:
    """Token usage as an SDK reported it to the app (None: the app did not get any)."""

    input: int | None
    output: int | None


def drive_all_four(proc: SpangateProcess) -> dict[str, Usage]:
    """OpenAI chat (through the alias) and chat stream; Anthropic messages and stream."""
    gpt = openai_client(proc)
    claude = anthropic_client(proc)
    usages: dict[str, Usage] = {}

    chat = gpt.chat.completions.create(model=ALIAS, messages=HELLO)
    assert chat.choices[0].message.content
    assert chat.usage is not None
    usages["openai"] = Usage(chat.usage.prompt_tokens, chat.usage.completion_tokens)

    text = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in gpt.chat.completions.create(model=GPT, messages=HELLO, stream=True)
        if chunk.choices
    )
    assert text
    usages["openai-stream"] = Usage(None, None)  # no include_usage: the app sees no usage

    message = claude.messages.create(model=CLAUDE, max_tokens=64, messages=HELLO)
    assert message.content
    usages["anthropic"] = Usage(message.usage.input_tokens, message.usage.output_tokens)

    with claude.messages.stream(model=CLAUDE, max_tokens=64, messages=HELLO) as stream:
        final = stream.get_final_message()
    assert final.content
    usages["anthropic-stream"] = Usage(final.usage.input_tokens, final.usage.output_tokens)
    return usages


def poll(
    probe: Callable[[], _T | None], timeout: float = 15, what: str = "condition", every: float = 0.1
) -> _T:
    """Call `probe` until it returns something truthy, and return that; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


# --------------------------------------------------------------------------- spans


def spans(receiver: RotelReceiver) -> list[dict[str, Any]]:
    return receiver.items("span")


def traces(items: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    by_trace: dict[str, list[dict[str, Any]]] = {}
    for span in items:
        by_trace.setdefault(span["trace_id"], []).append(span)
    return by_trace


def wait_for_requests(receiver: RotelReceiver, count: int, timeout: float = 20) -> list[Any]:
    """Wait until `count` complete request trees (a SERVER span and its CLIENT children) arrived.

    Returns the SERVER spans, oldest first.
    """

    def complete() -> list[Any] | None:
        items = spans(receiver)
        servers = [s for s in items if s["kind"] == SERVER]
        clients = {s["parent_span_id"] for s in items if s["kind"] == CLIENT}
        done = [s for s in servers if s["span_id"] in clients]
        return done if len(done) >= count else None

    return poll(complete, timeout, f"{count} SERVER spans with CLIENT children")


def children(receiver: RotelReceiver, server: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        s
        for s in spans(receiver)
        if s["parent_span_id"] == server["span_id"] and s["trace_id"] == server["trace_id"]
    ]


# --------------------------------------------------------------------------- Prometheus text


def http_get(url: str, timeout: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode("utf-8", "replace")


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample called `name` in Prometheus exposition `text`, as (labels, value)."""
    return [
        (dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def sample_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    return sum(
        value
        for sample_labels, value in samples(text, name)
        if all(sample_labels.get(k) == v for k, v in labels.items())
    )
