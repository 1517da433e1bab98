"""py-spy profile of spangate under wrk load (concurrency 16).

`bash bench/run.sh profile` profiles spangate-full and writes
bench/results/profile.svg (flame graph) and bench/results/profile.md (top
self-time functions, spangate's own hot spots, samples per thread), from two
back-to-back recordings of BENCH_PROFILE_SECONDS (default 10) each, under one
continuous wrk run. BENCH_PROFILE_CONFIG=spangate-off profiles spangate with
telemetry disabled instead (profile-spangate-off.*). Sampling is `--gil`: only
the thread holding the GIL, i.e. CPU spent running Python, not time waiting.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench import configs, load, nginx
from bench.procs import LOAD_CORE, REPO, Procs

RESULTS = REPO / "bench" / "results"
PY_SPY = REPO / ".venv" / "bin" / "py-spy"
_OWN = re.compile(r"\((?:.*/)?(?:proxy|instrumentation)/[\w/]+\.py:\d+\)")
_OFF_NAME = "spangate-off"
_OFF = {"sdk_disabled": True}
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*):(?P<line>\d+)\)$")


#: Where the GIL time goes, by area: a stack counts once if any frame matches.
_AREAS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "OTLP exporters: protobuf encoding + gRPC send",
        ("common/_internal/", "grpc/exporter.py", "_exporter/__init__.py"),
    ),
    ("telemetry worker: instrumentation/processor.py", ("instrumentation/processor.py",)),
    ("- metrics SDK recording (anywhere)", ("metrics/_internal/",)),
    ("- JSON log line: structlog, json, redaction", ("structlog/", "json/encoder", "Redactor")),
    ("log records to OTel (instrumentation/logbridge.py)", ("instrumentation/logbridge.py",)),
    ("hand-off to the worker: Condition.notify / Event.set", ("Condition.notify", "Event.set")),
    ("asyncio.timeout / aiohttp ClientTimeout", ("asyncio/timeouts.py", "ClientTimeout")),
    ("header filtering (proxy/headers.py)", ("proxy/headers.py",)),
)


@dataclass(frozen=True)
class Profile:
    total: int
    self_time: Counter[str]
    own_inclusive: Counter[str]
    threads: Counter[str]
    areas: Counter[str]


def _areas(stack: str) -> list[str]:
    return [label for label, needles in _AREAS if any(n in stack for n in needles)]


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    path = match["file"]
    for root in ("site-packages/", "python3.11/"):
        path = path.split(root, 1)[-1]
    return f"{path}:{match['func']}"


def _owner(frames: list[str]) -> tuple[str, list[str]]:
    """Split `[process PID:"cmd";]thread (tid): name;frame;...` into `pid PID: name` and frames."""
    process = ""
    if frames and frames[0].startswith("process "):
        process = frames.pop(0).split(":", 1)[0].replace("process", "pid") + ": "
    thread = frames.pop(0).split(": ", 1)[-1] if frames else "?"
    return process + thread, frames


def parse_raw(text: str) -> Profile:
    """py-spy `--format raw --threads -F --subprocesses` lines: `owner;frame;...;frame count`."""
    self_time: Counter[str] = Counter()
    own: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        owner, frames = _owner(stack.split(";"))
        total += count
        threads[owner] += count
        areas.update(dict.fromkeys(_areas(stack), count))
        if frames:
            self_time[_short(frames[-1])] += count
        for name in {_short(f) for f in frames if _OWN.search(f)}:
            own[name] += count
    return Profile(total, self_time, own, threads, areas)


def _rows(counter: Counter[str], total: int, limit: int) -> list[str]:
    rows = ["| % samples | function |", "|---:|---|"]
    for name, count in counter.most_common(limit):
        rows.append(f"| {100 * count / max(total, 1):.1f} | `{name}` |")
    return rows


def render(profile: Profile, wrk: load.WrkResult, seconds: float, name: str) -> str:
    own_self = Counter({k: v for k, v in profile.self_time.items() if _is_own(k)})
    return "\n".join(
        [
            f"# {name} under wrk c=16: py-spy --gil, {seconds:g} s, {profile.total} samples",
            "",
            f"wrk while profiled: {wrk.rps:.0f} req/s, p50 {wrk.p50_ms:.3f} ms, "
            f"p99 {wrk.p99_ms:.3f} ms (sampling slows the process: compare shares, not speed).",
            "",
            "## Where the time goes (inclusive, by area)",
            "",
            *_area_rows(profile),
            "",
            "## Top 15 self time (all code)",
            "",
            *_rows(profile.self_time, profile.total, 15),
            "",
            "## spangate's own functions, self time",
            "",
            *_rows(own_self, profile.total, 15),
            "",
            "## spangate's own functions, inclusive (on the stack)",
            "",
            *_rows(profile.own_inclusive, profile.total, 20),
            "",
            "## Samples per thread",
            "",
            *_rows(profile.threads, profile.total, 10),
            "",
        ]
    )


def _area_rows(profile: Profile) -> list[str]:
    rows = ["| % samples | area |", "|---:|---|"]
    for label, _ in _AREAS:
        rows.append(f"| {100 * profile.areas[label] / max(profile.total, 1):.1f} | {label} |")
    return rows


def _is_own(name: str) -> bool:
    return name.startswith(("proxy/", "instrumentation/")) or "/proxy/" in name


def _record(pid: int, seconds: float, out: Path, raw: bool) -> None:
    argv = [str(PY_SPY), "record", "--pid", str(pid), "--duration", f"{seconds:g}", "-o", str(out)]
    # Only the thread holding the GIL (CPU spent in Python, not waits); helper processes too.
    argv += ["--gil", "--subprocesses"]
    if raw:
        argv += ["--format", "raw", "--threads", "-F"]
    subprocess.run(argv, check=True, timeout=seconds + 60, capture_output=True)


def main() -> int:
    seconds = float(os.environ.get("BENCH_PROFILE_SECONDS", "10"))
    name = os.environ.get("BENCH_PROFILE_CONFIG", configs.FULL)
    if name not in (configs.FULL, _OFF_NAME):
        raise SystemExit(f"BENCH_PROFILE_CONFIG must be {configs.FULL} or {_OFF_NAME}")
    stem = "profile" if name == configs.FULL else f"profile-{name}"
    procs = Procs(REPO / "bench" / "work" / time.strftime("profile-%Y%m%d-%H%M%S"))
    procs.workdir.mkdir(parents=True)
    try:
        wrk = _profile_under_load(procs, name, seconds, stem)
    finally:
        procs.stop_all()
    profile = parse_raw((procs.workdir / "profile.raw").read_text())
    text = render(profile, wrk, seconds, name)
    (RESULTS / f"{stem}.md").write_text(text)
    print(text)
    return 0


def _profile_under_load(procs: Procs, name: str, seconds: float, stem: str) -> load.WrkResult:
    """spangate under one continuous wrk run: an SVG recording, then a raw one."""
    _, upstream_port = nginx.start_upstream(procs)
    _, otlp_port, otlp_http_port = configs.start_rotel(procs)
    upstream = f"http://127.0.0.1:{upstream_port}"
    telemetry = configs.full_telemetry(otlp_port, otlp_http_port) if name == configs.FULL else _OFF
    running = configs.start_spangate(procs, name, upstream, telemetry, env=_env(name))
    assert running.proc is not None
    script = load.write_script(procs.workdir)
    url = running.url + "/v1/chat/completions"
    load.run_wrk(url, script, 16, 2)
    argv = ["wrk", "-t1", "-c16", f"-d{2 * seconds + 4:g}s", "--latency", "-s", str(script), url]
    wrk = procs.start("wrk-profile", argv, LOAD_CORE)
    time.sleep(1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    _record(running.proc.pid, seconds, RESULTS / f"{stem}.svg", raw=False)
    _record(running.proc.pid, seconds, procs.workdir / "profile.raw", raw=True)
    wrk.popen.wait(timeout=seconds + 60)
    return load.parse_wrk(wrk.log.read_text())


def _env(name: str) -> dict[str, str] | None:
    return {"OTEL_SDK_DISABLED": "true"} if name == _OFF_NAME else None


if __name__ == "__main__":
    sys.exit(main())
