"""Streaming measurements with a small asyncio client.

- `sequential`: N streams one after another (concurrency 1): time to first
  event, time to end, and the proxy's CPU per stream.
- `open_streams`: many concurrent streams held open (each read up to its first
  event) while the proxy's RSS is sampled, then all closed.
Both are bounded by timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from dataclasses import dataclass, field

import aiohttp

from bench import canned
from bench.procs import Proc, cpu_seconds, memory_mb, settle_cpu

_HEADERS = {**canned.REQUEST_HEADERS, canned.STREAM_HEADER: "1"}
_CHUNKED_HEADERS = {**_HEADERS, canned.CHUNKS_HEADER: "1"}


@dataclass(frozen=True)
class StreamResult:
    streams: int
    ttfe_ms: float
    end_ms: float
    #: Proxy CPU per stream in ms; None for direct.
    cpu_ms_per_stream: float | None
    events_per_stream: int


@dataclass(frozen=True)
class OpenStreamsResult:
    requested: int
    opened: int
    open_s: float
    rss_idle_mb: float
    rss_open_mb: float
    hwm_mb: float


async def _one_stream(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> tuple[float, ...]:
    start = time.perf_counter()
    first = 0.0
    received = b""
    async with session.post(url, data=body, headers=headers) as response:
        if response.status != 200:
            raise RuntimeError(f"stream answered {response.status}: {await response.text()}")
        while chunk := await response.content.readany():
            if not first and b"data:" in chunk:
                first = time.perf_counter()
            received += chunk
    end = time.perf_counter()
    if not received.rstrip().endswith(b"data: [DONE]"):
        raise RuntimeError(f"stream did not end with [DONE]: {received[-200:]!r}")
    return first - start, end - start, received.count(b"data:")


async def _sequential(
    url: str, count: int, timeout_s: float, headers: dict[str, str]
) -> list[tuple[float, ...]]:
    body = canned.chat_request(stream=True)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await _one_stream(session, url, body, headers)  # warm the keep-alive connection
        async with asyncio.timeout(timeout_s):
            return [await _one_stream(session, url, body, headers) for _ in range(count)]


def sequential(
    base_url: str, count: int, proxy: Proc | None, chunked: bool = False, stream_s: float = 0.1
) -> StreamResult:
    """`chunked`: the stream comes from the upstream one event per write (see
    nginx.start_upstream), instead of nginx's canned stream in one piece. `stream_s`:
    a generous time per stream, for the run's time limit."""
    url = base_url + "/v1/chat/completions"
    headers = _CHUNKED_HEADERS if chunked else _HEADERS
    if proxy:
        settle_cpu(proxy.pid)
        before = cpu_seconds(proxy.pid)
    rows = asyncio.run(_sequential(url, count, max(60.0, count * stream_s), headers))
    cpu_ms = None
    if proxy:
        settle_cpu(proxy.pid)
        cpu_ms = (cpu_seconds(proxy.pid) - before) * 1e3 / (count + 1)
    return StreamResult(
        streams=count,
        ttfe_ms=statistics.median(r[0] for r in rows) * 1e3,
        end_ms=statistics.median(r[1] for r in rows) * 1e3,
        cpu_ms_per_stream=cpu_ms,
        events_per_stream=int(statistics.median(r[2] for r in rows)),
    )


@dataclass
class _Gate:
    """Counts streams whose first event arrived; holds them open until released."""

    target: int
    opened: int = 0
    all_open: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def mark_open(self) -> None:
        self.opened += 1
        if self.opened >= self.target:
            self.all_open.set()


async def _hold(session: aiohttp.ClientSession, url: str, gate: _Gate) -> None:
    body = canned.chat_request(stream=True)
    async with session.post(url, data=body, headers=_HEADERS) as response:
        while chunk := await response.content.readany():
            if b"data:" in chunk:
                gate.mark_open()
                break
        await gate.release.wait()
        response.close()


async def _open_streams(url: str, count: int, proxy: Proc, timeout_s: float) -> OpenStreamsResult:
    idle = memory_mb(proxy.pid)
    gate = _Gate(count)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        start = time.perf_counter()
        tasks = [asyncio.create_task(_hold(session, url, gate)) for _ in range(count)]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(gate.all_open.wait(), timeout_s)
        open_s = time.perf_counter() - start
        opened, rss = gate.opened, memory_mb(proxy.pid)
        gate.release.set()
        await asyncio.wait(tasks, timeout=timeout_s)
        for task in tasks:
            task.cancel()
    await asyncio.sleep(0.5)  # let the proxy see the disconnects before the process is read
    return OpenStreamsResult(count, opened, open_s, idle, rss, memory_mb(proxy.pid, "VmHWM"))


def open_streams(base_url: str, count: int, proxy: Proc, timeout_s: float) -> OpenStreamsResult:
    url = base_url + "/v1/chat/completions"
    return asyncio.run(_open_streams(url, count, proxy, timeout_s))
