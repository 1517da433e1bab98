"""Instructions per request, by thread, under callgrind: `python -m bench.instructions [CONFIG ...]`
(from the repo root, in .venv).

This machine's speed drifts 1.5-2x between runs, so CPU-time A/Bs of a few per cent
need many interleaved repeats. An instruction count does not drift: the proxy runs
under `valgrind --tool=callgrind`, its counters are zeroed after a warm-up, a
keep-alive client sends BENCH_REQUESTS [1000] requests (BENCH_CONCURRENCY [1]
connections at once, each sequential, splitting them; BENCH_STREAM=1:
the canned 20-chunk stream in one piece; BENCH_STREAM=chunks: the same stream one
event per upstream write, 1 ms apart, from bench/slow_stream.py), and the counts are
dumped per thread. The same code
gives the same count to within ~0.5 % run after run, whatever else the machine does.

Instructions are not time: a cache miss or a system call (its kernel side is not
counted) costs no instructions here, so confirm a win with `make bench` or
`bench.threads`. Thread 1 is the event loop; the others are numbered by valgrind in
creation order (with full telemetry the busiest is the telemetry worker).
Default configurations: aiohttp-passthrough, spangate-off, spangate-full.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import canned, configs, nginx
from bench.configs import (
    PASSTHROUGH,
    Configuration,
    Setup,
)
from bench.measure import start_chunk_stream
from bench.procs import LOAD_CORE, VENV_PYTHON, Procs, settle_cpu

DEFAULT = (PASSTHROUGH, "spangate-off", configs.FULL)
#: Configurations with more than one process (only the first would be counted), or
#: none of ours.
_NOT_COUNTABLE = frozenset(
    {"direct", "nginx-proxy", "spangate-2cores", "spangate-process", configs.WORKERS2, "litellm"}
)
_WARM_UP = 100
_SETTLE_S = 60.0
#: Threads under this share of a configuration's total are summed as "other threads".
_SHOWN_SHARE = 0.01


@dataclass(frozen=True)
class Count:
    name: str
    #: Instructions per request by valgrind thread number (1 = the event loop).
    by_thread: dict[int, float]

    @property
    def total(self) -> float:
        return sum(self.by_thread.values())


def main(argv: list[str]) -> int:
    known = configs.by_name()
    names = argv or list(DEFAULT)
    unknown = [n for n in names if n not in known or n in _NOT_COUNTABLE]
    if unknown:
        print(f"not a one-process Python proxy: {', '.join(unknown)}", file=sys.stderr)
        return 2
    requests = int(os.environ.get("BENCH_REQUESTS", "1000"))
    concurrency = int(os.environ.get("BENCH_CONCURRENCY", "1"))
    stream = {"1": canned.STREAM_HEADER, "chunks": canned.CHUNKS_HEADER}.get(
        os.environ.get("BENCH_STREAM", "")
    )
    os.sched_setaffinity(0, {int(LOAD_CORE)})
    workdir = Path(tempfile.mkdtemp(prefix="spangate-instructions-"))
    procs = Procs(workdir, wrap=_under_callgrind(workdir), patience=20.0)
    counts = []
    try:
        chunks_port = start_chunk_stream(procs, 1.0) if stream == canned.CHUNKS_HEADER else 0
        setup = configs.start_setup(procs, nginx.start_upstream(procs, chunks_port)[1])
        for name in names:
            counts.append(_measure(known[name], setup, workdir, requests, stream, concurrency))
            print(f"{name}: {counts[-1].total / 1e6:.3f} M instructions per request", flush=True)
    finally:
        procs.stop_all()
    print()
    print(render(counts, requests, stream, concurrency))
    return 0


def _under_callgrind(workdir: Path) -> Callable[[str, list[str]], list[str]]:
    def wrap(name: str, argv: list[str]) -> list[str]:
        if not argv or argv[0] != str(VENV_PYTHON) or "bench.slow_stream" in argv:
            return argv  # the upstreams and the receiver run as they are
        out = workdir / f"callgrind.{name}.%p"
        return [
            "valgrind",
            "--tool=callgrind",
            "--separate-threads=yes",
            "--dump-instr=no",
            f"--callgrind-out-file={out}",
            *argv,
        ]

    return wrap


def _measure(
    config: Configuration,
    setup: Setup,
    workdir: Path,
    requests: int,
    stream: str | None,
    concurrency: int = 1,
) -> Count:
    running = config.start(setup)
    assert running.proc is not None
    port = int(running.url.rsplit(":", 1)[1])
    try:
        _send(port, _WARM_UP, stream)
        # Under callgrind the worker runs ~50x slower: wait until the process is quiet
        # (the warm-up's telemetry done) before zeroing, and again before reading.
        settle_cpu(running.proc.pid, _SETTLE_S, quiet_s=0.5)
        _control("-z", running.proc.pid)
        _send_concurrently(port, requests, stream, concurrency)
        settle_cpu(running.proc.pid, _SETTLE_S, quiet_s=0.5)
        _control("-d", running.proc.pid)
    finally:
        setup.procs.stop(running.proc)
    return Count(config.name, _read_dump(workdir, config.name, running.proc.pid, requests))


def _control(flag: str, pid: int) -> None:
    subprocess.run(["callgrind_control", flag, str(pid)], check=True, capture_output=True)


def _send_concurrently(port: int, count: int, stream: str | None, concurrency: int) -> None:
    """`count` requests over `concurrency` connections, each sequential: under callgrind
    the proxy is ~50x slower, so every connection's next request is always waiting and
    the event loop finds as many ready as there are connections (what c=16 amortises)."""
    if concurrency <= 1:
        _send(port, count, stream)
        return
    errors: list[BaseException] = []

    def run(share: int) -> None:
        try:
            _send(port, share, stream)
        except BaseException as exc:  # reported below, from the main thread
            errors.append(exc)

    shares = [count // concurrency + (i < count % concurrency) for i in range(concurrency)]
    threads = [threading.Thread(target=run, args=(share,)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def _send(port: int, count: int, stream: str | None) -> None:
    body = canned.chat_request(stream is not None)
    # The upstream answers with the canned stream, in one piece or event by event, when
    # the header asks for it.
    headers = {**canned.REQUEST_HEADERS, **({stream: "1"} if stream else {})}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        for _ in range(count):
            connection.request("POST", "/v1/chat/completions", body, headers)
            response = connection.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"the proxy answered {response.status}")
            if stream and response.getheader("Content-Type", "").split(";")[0] != (
                "text/event-stream"
            ):
                raise RuntimeError("asked for a stream, got no event stream")
    finally:
        connection.close()


def _read_dump(workdir: Path, name: str, pid: int, requests: int) -> dict[int, float]:
    """The first dump (`-d`), one file per thread: `callgrind.NAME.PID.1-TT`."""
    by_thread = {}
    for path in sorted(workdir.glob(f"callgrind.{name}.{pid}.1-*")):
        thread = int(path.name.rsplit("-", 1)[1])
        by_thread[thread] = _total(path) / requests
    if not by_thread:
        raise RuntimeError(f"no callgrind dump for {name} in {workdir}")
    return by_thread


def _total(path: Path) -> int:
    with path.open() as dump:
        for line in dump:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    return 0


def render(counts: list[Count], requests: int, stream: str | None, concurrency: int = 1) -> str:
    what = {
        None: "chat completions",
        canned.STREAM_HEADER: "20-chunk streams in one piece",
        canned.CHUNKS_HEADER: "20-chunk streams, one upstream write per event",
    }[stream]
    reference = next((c.total for c in counts if c.name == PASSTHROUGH), None)
    lines = [
        f"Instructions per request ({requests} {what}, "
        f"{'sequential' if concurrency <= 1 else f'{concurrency} connections at once'}, "
        "thousands):",
        "",
        "| configuration | total | ÷ pass-through | event loop | busiest threads |",
        "|---|---:|---:|---:|---|",
    ]
    for count in counts:
        ratio = f"{count.total / reference:.2f}x" if reference else "—"
        lines.append(
            f"| {count.name} | {count.total / 1e3:,.0f} | {ratio} | "
            f"{count.by_thread.get(1, 0.0) / 1e3:,.0f} | {_others(count)} |"
        )
    return "\n".join(lines)


def _others(count: Count) -> str:
    shown, rest = [], 0.0
    for thread, value in sorted(count.by_thread.items(), key=lambda item: -item[1]):
        if thread == 1:
            continue
        if value >= _SHOWN_SHARE * count.total:
            shown.append(f"{thread}: {value / 1e3:,.0f}")
        else:
            rest += value
    if rest:
        shown.append(f"others: {rest / 1e3:,.0f}")
    return ", ".join(shown) or "—"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
