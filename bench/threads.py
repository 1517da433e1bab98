"""CPU per request by thread of the proxy process: `python -m bench.threads [CONFIG ...]`
(from the repo root, in .venv; py-spy is used only to name the threads).

Starts the nginx upstream and rotel like `make bench`, then each configuration
(default spangate-full) pinned to one core; runs wrk at BENCH_CONCURRENCY [1]
for BENCH_SECONDS [8], BENCH_REPEATS [3] times, reading every thread's user and
system CPU from /proc before and after. Prints the median CPU ms per request
of each thread (MainThread = the event loop; spangate-telemetry = the worker;
spangate-spans; the SDK's log and metric threads; gRPC's own) — what the
telemetry costs where it runs, which a `--gil` profile cannot show for C code
running without the GIL, and which `bench.worker_profile` (the worker's code
alone, warm, no contention) understates.
"""

from __future__ import annotations

import contextlib
import os
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from bench import configs, load, nginx
from bench.configs import Configuration, Setup
from bench.procs import REPO, Procs, stat_times

PY_SPY = REPO / ".venv" / "bin" / "py-spy"
_THREAD = re.compile(r'Thread (\d+) \(\w+\): "([^"]+)"')


def thread_cpu(pid: int) -> dict[str, tuple[float, float]]:
    """(user s, system s) of every thread of `pid`, by thread id."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # the thread ended meanwhile
            out[task.name] = stat_times(task / "stat")
    return out


def thread_names(pid: int) -> dict[str, str]:
    """Python thread names by native thread id (`py-spy dump`); others keep their comm."""
    names = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            names[task.name] = (task / "comm").read_text().strip()
        except OSError:
            continue
    if PY_SPY.exists():
        dump = subprocess.run(
            [str(PY_SPY), "dump", "--pid", str(pid)],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        names.update(dict(_THREAD.findall(dump)))
    return names


def measure(
    config: Configuration, setup: Setup, script: Path, concurrency: int, seconds: float
) -> tuple[float, dict[str, tuple[float, float]]]:
    """req/s and, per thread name, (user, system) CPU ms per request."""
    running = config.start(setup)
    assert running.proc is not None, f"{config.name} has no proxy process"
    try:
        url = running.url + "/v1/chat/completions"
        load.run_wrk(url, script, 16, 1)  # warm-up
        names = thread_names(running.proc.pid)
        before = thread_cpu(running.proc.pid)
        result = load.run_wrk(url, script, concurrency, seconds)
        after = thread_cpu(running.proc.pid)
    finally:
        setup.procs.stop(running.proc)
    requests = max(result.rps * seconds, 1.0)
    per: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for tid, (user, system) in after.items():
        user0, system0 = before.get(tid, (0.0, 0.0))
        name = names.get(tid, "new thread")
        per[name][0] += (user - user0) * 1000 / requests
        per[name][1] += (system - system0) * 1000 / requests
    return result.rps, {name: (u, s) for name, (u, s) in per.items()}


def main(argv: list[str]) -> int:
    known = configs.by_name()
    names = argv or [configs.FULL]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown configuration(s) {unknown}; known: {sorted(known)}")
    env = os.environ
    seconds = float(env.get("BENCH_SECONDS", "8"))
    repeats = int(env.get("BENCH_REPEATS", "3"))
    concurrency = int(env.get("BENCH_CONCURRENCY", "1"))
    procs = Procs(REPO / "bench" / "work" / time.strftime("threads-%Y%m%d-%H%M%S"))
    procs.workdir.mkdir(parents=True)
    samples: dict[str, list[tuple[float, dict[str, tuple[float, float]]]]] = defaultdict(list)
    try:
        setup = configs.start_setup(procs, nginx.start_upstream(procs)[1])
        script = load.write_script(procs.workdir)
        for _ in range(repeats):
            for name in names:  # interleaved, like the harness
                samples[name].append(measure(known[name], setup, script, concurrency, seconds))
    finally:
        procs.stop_all()
    print(f"CPU ms per request by thread, wrk c={concurrency}, {seconds:g} s, median of {repeats}")
    for name in names:
        print(render(name, samples[name]))
    return 0


def render(name: str, runs: list[tuple[float, dict[str, tuple[float, float]]]]) -> str:
    threads = sorted({t for _, per in runs for t in per})
    rows = []
    for thread in threads:
        user = statistics.median(per.get(thread, (0.0, 0.0))[0] for _, per in runs)
        system = statistics.median(per.get(thread, (0.0, 0.0))[1] for _, per in runs)
        if user + system >= 0.0005:
            rows.append(
                (user + system, f"| {thread} | {user:.3f} | {system:.3f} | {user + system:.3f} |")
            )
    total = statistics.median(sum(u + s for u, s in per.values()) for _, per in runs)
    rps = statistics.median(r for r, _ in runs)
    return "\n".join(
        [
            f"\n{name}: {rps:.0f} req/s, {total:.3f} ms CPU per request",
            "",
            "| thread | user ms/req | system ms/req | total |",
            "|---|---:|---:|---:|",
            *(row for _, row in sorted(rows, reverse=True)),
        ]
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
