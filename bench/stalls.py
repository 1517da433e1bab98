"""What the slowest requests ran into: `python -m bench.stalls [full|off|metrics]`
(from the repo root, in .venv).

Starts the nginx upstream and rotel like `make bench`, then spangate (full
telemetry by default; `off`, or `metrics` = no span or OTLP log export) pinned
to one core under bench/stalls_probe.py, which logs when the telemetry worker
drains, when each export send, metric collection and garbage collection runs.
A sequential client on the other core times each request for BENCH_SECONDS
[8] on the same monotonic clock. Prints p50/p99 and, for the slowest 1 % of
requests and for all requests, the share that overlapped each kind of moment,
and the garbage collections by generation and thread: which moment is over-
represented among the slow requests is what makes the p99.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from collections import Counter

from bench import canned, configs, nginx
from bench.procs import LOAD_CORE, PROXY_CORE, REPO, VENV_PYTHON, Procs, free_port, wait_tcp

Interval = tuple[float, float, str]
Timing = tuple[float, float]
_PROBE = REPO / "bench" / "stalls_probe.py"


def _request_bytes() -> bytes:
    body = canned.chat_request(False)
    headers = "".join(f"{k}: {v}\r\n" for k, v in canned.REQUEST_HEADERS.items())
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\n{headers}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _response_end(buffer: bytes) -> int:
    """Where the first complete response in `buffer` ends, or -1 (Content-Length framing)."""
    head_end = buffer.find(b"\r\n\r\n")
    if head_end < 0:
        return -1
    for line in buffer[:head_end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            end = head_end + 4 + int(value)
            return end if len(buffer) >= end else -1
    raise RuntimeError("response without Content-Length")


def client(port: int, seconds: float) -> list[Timing]:
    """Sequential keep-alive requests for `seconds`: (sent, answered) per request."""
    request, timings, buffer = _request_bytes(), [], b""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sent = time.monotonic()
            sock.sendall(request)
            while (end := _response_end(buffer)) < 0:
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeError("spangate closed the connection")
                buffer += chunk
            buffer = buffer[end:]
            timings.append((sent, time.monotonic()))
    return timings


def overlaps(timings: list[Timing], intervals: list[Interval]) -> Counter[str]:
    """How many requests overlapped at least one moment of each kind."""
    counts: Counter[str] = Counter()
    for sent, answered in timings:
        kinds = {_kind(what) for start, end, what in intervals if start < answered and end > sent}
        counts.update(kinds)
    return counts


def _kind(what: str) -> str:
    return what.split(" (", maxsplit=1)[0]


def report(timings: list[Timing], intervals: list[Interval]) -> str:
    latencies = sorted((b - a) * 1e3 for a, b in timings)
    n = len(latencies)
    if n < 100:
        return f"only {n} requests completed: too few for a p99"
    threshold = latencies[int(n * 0.99)]
    slow = [t for t in timings if (t[1] - t[0]) * 1e3 >= threshold]
    sample = timings[:: max(1, n // 2000)]
    slow_counts, all_counts = overlaps(slow, intervals), overlaps(sample, intervals)
    lines = [
        f"{n} sequential requests: p50 {latencies[n // 2]:.3f} ms, p99 {threshold:.3f} ms, "
        f"p99.9 {latencies[int(n * 0.999)]:.3f} ms",
        "",
        "| overlapped | slowest 1 % | all requests |",
        "|---|---:|---:|",
    ]
    for kind in sorted(set(slow_counts) | set(all_counts)):
        lines.append(
            f"| {kind} | {100 * slow_counts[kind] / len(slow):.0f} % "
            f"| {100 * all_counts[kind] / len(sample):.0f} % |"
        )
    lines += ["", "| garbage collection | count | total ms | longest ms |", "|---|---:|---:|---:|"]
    for what, durations in sorted(_durations(intervals, "gc ").items()):
        lines.append(f"| {what} | {len(durations)} | {sum(durations):.1f} | {max(durations):.2f} |")
    return "\n".join(lines)


def _durations(intervals: list[Interval], prefix: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for start, end, what in intervals:
        if what.startswith(prefix):
            out.setdefault(what, []).append((end - start) * 1e3)
    return out


def _telemetry(kind: str, otlp_ports: tuple[int, int]) -> tuple[dict[str, object], dict[str, str]]:
    if kind == "off":
        return {"sdk_disabled": True}, {}
    telemetry: dict[str, object] = dict(configs.full_telemetry(*otlp_ports))
    if kind == "metrics":
        telemetry["logs_otlp"] = False
        return telemetry, {"OTEL_TRACES_EXPORTER": "none"}
    return telemetry, {}


def main(argv: list[str]) -> int:
    kind = argv[0] if argv else "full"
    if kind not in ("full", "off", "metrics"):
        raise SystemExit("usage: python -m bench.stalls [full|off|metrics]")
    seconds = float(os.environ.get("BENCH_SECONDS", "8"))
    procs = Procs(REPO / "bench" / "work" / time.strftime("stalls-%Y%m%d-%H%M%S"))
    procs.workdir.mkdir(parents=True)
    try:
        _, upstream_port = nginx.start_upstream(procs)
        _, otlp_port, otlp_http_port = configs.start_rotel(procs)
        port = free_port()
        telemetry, extra_env = _telemetry(kind, (otlp_port, otlp_http_port))
        config = {
            "server": {"host": "127.0.0.1", "port": port, "pool_size": 256},
            "providers": {
                "upstream": {"kind": "openai", "base_url": f"http://127.0.0.1:{upstream_port}"}
            },
            "telemetry": telemetry,
        }
        path = procs.workdir / "spangate.yaml"
        path.write_text(json.dumps(config))  # JSON is YAML
        out = procs.workdir / "intervals.json"
        argv_ = [str(VENV_PYTHON), str(_PROBE), str(out), "proxy", "serve", "--config", str(path)]
        env = {**configs.clean_env(extra_env), "PYTHONPATH": str(REPO)}
        proc = procs.start("spangate", argv_, PROXY_CORE, env=env, cwd=REPO)
        wait_tcp(proc, port)
        os.sched_setaffinity(0, {int(LOAD_CORE)})
        client(port, 2)  # warm-up
        os.kill(proc.pid, signal.SIGUSR1)
        time.sleep(0.3)
        timings = client(port, seconds)
        os.kill(proc.pid, signal.SIGUSR1)
        time.sleep(1)
        intervals: list[Interval] = [(a, b, c) for a, b, c in json.loads(out.read_text())]
    finally:
        procs.stop_all()
    print(f"spangate {kind}, one pinned core\n")
    print(report(timings, intervals))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
