"""Non-streaming load with wrk: one run, its parsed numbers, and the proxy's CPU over it."""

from __future__ import annotations

import re
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench import canned
from bench.procs import LOAD_CORE, PROXY_CORE, Proc, core_busy_seconds, cpu_seconds, settle_cpu

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_PERCENTILE = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_REQUESTS = re.compile(r"^\s*(\d+) requests in ", re.MULTILINE)
_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


@dataclass(frozen=True)
class WrkResult:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


@dataclass(frozen=True)
class LoadResult:
    concurrency: int
    wrk: WrkResult
    #: Process CPU (user + system, all threads) per completed request, in ms; None for direct.
    cpu_ms_per_request: float | None
    upstream_cpu_ms_per_request: float
    #: Share of the proxy core used by other processes during the run (noise), 0..1.
    core_noise: float
    #: Telemetry items spangate dropped during the run (its /metrics); None when not spangate.
    telemetry_dropped: float | None = None


def write_script(directory: Path) -> Path:
    """The Lua script: a non-streaming chat completion POST."""
    body = canned.chat_request(stream=False).decode()
    headers = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in canned.REQUEST_HEADERS.items())
    script = directory / "chat.lua"
    script.write_text(f'wrk.method = "POST"\nwrk.body = [[{body}]]\n{headers}')
    return script


def parse_wrk(text: str) -> WrkResult:
    percentiles = {p: float(v) * _UNITS[u] for p, v, u in _PERCENTILE.findall(text)}
    requests, rate = _REQUESTS.search(text), _RATE.search(text)
    if requests is None or rate is None or set(percentiles) != {"50", "99"}:
        raise ValueError(f"cannot parse wrk output:\n{text}")
    non_2xx = _NON_2XX.search(text)
    sockets = _SOCKET_ERRORS.search(text)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    errors += sum(int(n) for n in sockets.groups()) if sockets else 0
    return WrkResult(
        int(requests.group(1)), float(rate.group(1)), percentiles["50"], percentiles["99"], errors
    )


def run_wrk(url: str, script: Path, concurrency: int, seconds: float) -> WrkResult:
    argv = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{concurrency}"]
    argv += [f"-d{seconds:g}s", "--timeout", "5s", "--latency", "-s", str(script), url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30, check=True)
    return parse_wrk(out.stdout)


def measure(
    url: str, script: Path, concurrency: int, seconds: float, proxy: Proc | None, upstream: Proc
) -> LoadResult:
    """One wrk run; CPU of the proxy and the upstream read before and after (queues drained)."""
    pids = [upstream.pid] + ([proxy.pid] if proxy else [])
    for pid in pids:
        settle_cpu(pid)
    dropped_before = telemetry_dropped(url)
    before = {pid: cpu_seconds(pid) for pid in pids}
    core_before, start = core_busy_seconds(PROXY_CORE), time.monotonic()
    result = run_wrk(url + "/v1/chat/completions", script, concurrency, seconds)
    core_used, wall = core_busy_seconds(PROXY_CORE) - core_before, time.monotonic() - start
    proxy_used = cpu_seconds(proxy.pid) - before[proxy.pid] if proxy else 0.0
    for pid in pids:
        settle_cpu(pid)
    used = {pid: cpu_seconds(pid) - before[pid] for pid in pids}
    done = max(result.requests, 1)
    proxy_cpu = used[proxy.pid] * 1e3 / done if proxy else None
    noise = max(core_used - proxy_used, 0.0) / wall
    dropped_after = telemetry_dropped(url)
    dropped = (
        dropped_after - dropped_before
        if dropped_after is not None and dropped_before is not None
        else None
    )
    upstream_cpu = used[upstream.pid] * 1e3 / done
    return LoadResult(concurrency, result, proxy_cpu, upstream_cpu, noise, dropped)


def telemetry_dropped(url: str) -> float | None:
    """spangate_telemetry_dropped_total summed over its labels; None where there is no such
    metric (not spangate, or telemetry off): a pipeline that keeps up only by dropping
    must show it."""
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
            text = response.read().decode()
    except (OSError, ValueError):
        return None
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("spangate_telemetry_dropped_total{")
    ]
    return sum(values) if values else None


def version() -> str:
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else "?"
    return first.split(" Copyright")[0].strip()
