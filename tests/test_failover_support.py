"""Shared helpers for the routing/failover end-to-end tests (no tests of its own).

Several FakeProvider instances act as distinct deployments: providers `a`, `b`,
`c` (OpenAI format) and `x`, `y` (Anthropic format), each on its own fake, so a
test can script one deployment's faults and count what each one received.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import aiohttp
from conftest import Running
from fakeprovider import FakeProvider

GPT = "gpt-4o-mini"
CLAUDE = "claude-sonnet-4-6"
HELLO: Any = [{"role": "user", "content": "hi there"}]  # Any: the SDKs want TypedDicts
OPENAI_NAMES = ("a", "b", "c")
ANTHROPIC_NAMES = ("x", "y")


class Fakes:
    """Five fake deployments: `a`, `b`, `c` speak OpenAI, `x`, `y` speak Anthropic."""

    def __init__(self, providers: dict[str, FakeProvider]) -> None:
        self.by_name = providers

    def __getitem__(self, name: str) -> FakeProvider:
        return self.by_name[name]

    @property
    def a(self) -> FakeProvider:
        return self.by_name["a"]

    @property
    def b(self) -> FakeProvider:
        return self.by_name["b"]

    @property
    def c(self) -> FakeProvider:
        return self.by_name["c"]

    @property
    def x(self) -> FakeProvider:
        return self.by_name["x"]

    @property
    def y(self) -> FakeProvider:
        return self.by_name["y"]

    def counts(self) -> dict[str, int]:
        """Requests each fake received so far."""
        return {name: len(fp.received) for name, fp in self.by_name.items()}

    def total(self) -> int:
        return sum(self.counts().values())


def start_fakes() -> Iterator[Fakes]:
    """Body of the per-file `fakes` fixture: five started fakes, stopped afterwards."""
    with ExitStack() as stack:
        started = {
            name: stack.enter_context(FakeProvider()) for name in OPENAI_NAMES + ANTHROPIC_NAMES
        }
        yield Fakes(started)


def providers(fakes: Fakes, **overrides: dict[str, Any]) -> dict[str, Any]:
    """The `providers:` section: one provider per fake, `overrides` merged per name.

    Each fake is its own origin, as distinct deployments are, so each has its own
    `api_key`, as a real multi-deployment alias must: spangate refuses to forward the
    client's key to more than one origin."""
    section: dict[str, Any] = {}
    for name in OPENAI_NAMES:
        section[name] = {"kind": "openai", "base_url": fakes[name].url, "api_key": f"sk-{name}"}
    for name in ANTHROPIC_NAMES:
        section[name] = {"kind": "anthropic", "base_url": fakes[name].url, "api_key": f"sk-{name}"}
    for name, extra in overrides.items():
        section[name] = {**section.get(name, {}), **extra}
    return section


def targets(*names: str, model: str | None = None, **extra: Any) -> list[dict[str, Any]]:
    """Target entries for the named providers (default model per dialect)."""
    out = []
    for name in names:
        default = CLAUDE if name in ANTHROPIC_NAMES else GPT
        out.append({"provider": name, "model": model or default, **extra})
    return out


def config(
    fakes: Fakes,
    models: dict[str, Any],
    *,
    server: dict[str, Any] | None = None,
    provider_overrides: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A whole config: every fake as a provider, plus `models` (and `server`)."""
    out: dict[str, Any] = {
        "providers": providers(fakes, **(provider_overrides or {})),
        "models": models,
    }
    if server is not None:
        out["server"] = server
    return out


def label(name: str) -> str:
    """The target label spangate uses (provider/model) for fake `name`."""
    return f"{name}/{CLAUDE if name in ANTHROPIC_NAMES else GPT}"


def settle(running: Running, requests: int = 1, within: float = 5.0) -> None:
    """Wait until `requests` requests have finished on spangate's side (their SERVER spans
    are exported): a client may see the end of a stream before spangate's handler returns."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        spans = running.finished_spans()
        if sum(1 for s in spans if s.kind.name == "SERVER") >= requests:
            return
        time.sleep(0.01)
    raise AssertionError(f"fewer than {requests} requests finished within {within} s")


def client_spans(running: Running) -> list[Any]:
    """CLIENT spans (one per upstream attempt), ordered by spangate.attempt."""
    settle(running)
    spans = [s for s in running.finished_spans() if s.kind.name == "CLIENT"]
    return sorted(spans, key=lambda s: (s.context.trace_id, s.attributes["spangate.attempt"]))


def server_spans(running: Running) -> list[Any]:
    settle(running)
    return [s for s in running.finished_spans() if s.kind.name == "SERVER"]


def only_server_span(running: Running) -> Any:
    spans = server_spans(running)
    assert len(spans) == 1, [s.attributes for s in spans]
    return spans[0]


def attrs(span: Any) -> dict[str, Any]:
    return dict(span.attributes)


def metric_sum(
    running: Running, name: str, match: dict[str, Any] | None = None, settle: bool = True
) -> float:
    """Sum of a metric's points whose attributes include every item of `match`."""
    total = 0.0
    for point in running.metric_points(name, settle):
        point_attrs = dict(point.attributes)
        if all(point_attrs.get(k) == v for k, v in (match or {}).items()):
            total += point.value
    return total


async def post(
    base: str, path: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """POST JSON with raw aiohttp: status, headers (lower-cased names) and body bytes."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(base + path, json=body, headers=headers or {}) as resp,
    ):
        data = await resp.read()
        return resp.status, {k.lower(): v for k, v in resp.headers.items()}, data


async def get_status(running: Running) -> dict[str, Any]:
    """GET /spangate/status as JSON."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(running.url + "/spangate/status") as resp,
    ):
        assert resp.status == 200
        result: dict[str, Any] = await resp.json()
        return result


def chat(model: str = "m", **extra: Any) -> dict[str, Any]:
    """An OpenAI chat request body."""
    return {"model": model, "messages": HELLO, **extra}


def message(model: str = "m", **extra: Any) -> dict[str, Any]:
    """An Anthropic messages request body."""
    return {"model": model, "max_tokens": 64, "messages": HELLO, **extra}


ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01", "x-api-key": "sk-ant"}
