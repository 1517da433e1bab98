"""CPU per chunk of a stream whose events arrive one by one: `python -m bench.chunks`
(from the repo root, in .venv).

The main harness's upstream (nginx) sends its canned stream in one piece, so a
stream there is one read and one send. A provider streaming tokens sends each
chunk on its own, and then every chunk costs a read and a send. This points the
pass-through, spangate-off and spangate-full (OTLP to rotel) at
bench/slow_stream.py in `--gap-ms` mode (the canned 22 events, each its own
write, BENCH_CHUNK_GAP_MS [1] apart: asyncio sleeps in whole milliseconds
anyway), the proxy pinned to one core and this client to the other, and prints
the CPU per stream, the same divided by the events (fixed per-request costs
included) and the ratio to the pass-through.
BENCH_STREAMS [100] sequential streams per configuration; BENCH_REPEATS [3].
"""

from __future__ import annotations

import os
import statistics
import sys
import time

from bench import canned, configs, streams
from bench.configs import CONFIGURATIONS, Setup
from bench.measure import start_chunk_stream
from bench.procs import LOAD_CORE, REPO, Procs

NAMES = (configs.PASSTHROUGH, "spangate-off", configs.FULL)
#: Events per canned stream: each is one upstream write, so one read and one send.
EVENTS = len(canned.sse_events())


def main() -> int:
    count = int(os.environ.get("BENCH_STREAMS", "100"))
    repeats = int(os.environ.get("BENCH_REPEATS", "3"))
    gap_ms = float(os.environ.get("BENCH_CHUNK_GAP_MS", "1"))
    os.sched_setaffinity(0, {int(LOAD_CORE)})
    procs = Procs(REPO / "bench" / "work" / time.strftime("chunks-%Y%m%d-%H%M%S"))
    procs.workdir.mkdir(parents=True)
    cpu: dict[str, list[float]] = {name: [] for name in NAMES}
    try:
        setup = _setup(procs, gap_ms)
        wanted = [c for c in CONFIGURATIONS if c.name in NAMES]
        for _ in range(repeats):
            for configuration in wanted:  # interleaved, as the harness does
                running = configuration.start(setup)
                assert running.proc is not None
                result = streams.sequential(running.url, count, running.proc)
                assert result.cpu_ms_per_stream is not None
                cpu[configuration.name].append(result.cpu_ms_per_stream)
                procs.stop(running.proc)
    finally:
        procs.stop_all()
    print(_table(cpu, gap_ms, count, repeats))
    return 0


def _setup(procs: Procs, gap_ms: float) -> Setup:
    return configs.start_setup(procs, start_chunk_stream(procs, gap_ms))


def _table(cpu: dict[str, list[float]], gap_ms: float, count: int, repeats: int) -> str:
    reference = statistics.median(cpu[configs.PASSTHROUGH])
    rows = [
        f"{EVENTS} events per stream, each its own upstream write, {gap_ms:g} ms apart; "
        f"{count} sequential streams x {repeats} repeats (medians), proxy pinned to one core",
        "",
        "| config | CPU ms/stream | ÷ events, µs | x pass-through |",
        "|---|---:|---:|---:|",
    ]
    for name in NAMES:
        median = statistics.median(cpu[name])
        rows.append(
            f"| {name} | {median:.3f} | {median / EVENTS * 1e3:.1f} | {median / reference:.2f}x |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
