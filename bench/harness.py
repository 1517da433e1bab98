"""`make bench`: every configuration side by side, repeated, medians and ratios.

Environment (defaults in brackets):
  BENCH_SECONDS [10]        wrk duration per concurrency level
  BENCH_REPEATS [3]         repeats of every configuration (interleaved); medians reported
  BENCH_CONCURRENCY [1,16,128]
  BENCH_WARMUP_SECONDS [1]  wrk warm-up (c=16) after each proxy start
  BENCH_STREAMS [500]       sequential streams per configuration
  BENCH_OPEN_STREAMS [1000] concurrent open streams for the RSS measurement (0 = skip)
  BENCH_HOLD_SECONDS [8]    how long bench/slow_stream.py holds each stream open
  BENCH_CHUNK_STREAMS [200] sequential streams whose events arrive one write each (0 = skip)
  BENCH_CHUNK_GAP_MS [1]    the pause between those writes
  BENCH_CONFIGS [all]       comma-separated subset of configuration names (+ optional ones:
                            spangate-workers2, spangate-process, spangate-thread-2cores,
                            spangate-http, spangate-nologs, spangate-notraces,
                            spangate-metrics, litellm; see bench/README.md)
  BENCH_NAME [date]         results file name; when set, the READMEs are left alone
  BENCH_BASELINE [none]     a git revision: adds spangate-full as of that revision (A/B)
  BENCH_LITELLM [0]         1 adds the `litellm` configuration: LiteLLM proxy from its own
                            venv bench/.litellm-venv (created on first use), same upstream
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from bench import baseline, configs, litellm, load, nginx, report
from bench.chart import write_chart
from bench.configs import CONFIGURATIONS, Configuration
from bench.measure import (
    ConfigRun,
    Settings,
    run_configuration,
    run_open_streams,
    start_chunk_stream,
)
from bench.procs import REPO, Procs
from bench.streams import OpenStreamsResult

RESULTS = REPO / "bench" / "results"
README = REPO / "bench" / "README.md"
MAIN_README = REPO / "README.md"
_BEGIN, _END = "<!-- latest:begin -->", "<!-- latest:end -->"
_MAIN_BEGIN, _MAIN_END = "<!-- bench:begin -->", "<!-- bench:end -->"


def settings_from_env() -> Settings:
    env = os.environ
    return Settings(
        seconds=float(env.get("BENCH_SECONDS", "10")),
        repeats=int(env.get("BENCH_REPEATS", "3")),
        concurrency=tuple(int(c) for c in env.get("BENCH_CONCURRENCY", "1,16,128").split(",")),
        warmup_s=float(env.get("BENCH_WARMUP_SECONDS", "1")),
        streams=int(env.get("BENCH_STREAMS", "500")),
        open_streams=int(env.get("BENCH_OPEN_STREAMS", "1000")),
        hold_s=float(env.get("BENCH_HOLD_SECONDS", "8")),
        chunk_streams=int(env.get("BENCH_CHUNK_STREAMS", "200")),
        chunk_gap_ms=_positive(env.get("BENCH_CHUNK_GAP_MS", "1"), "BENCH_CHUNK_GAP_MS"),
    )


def _positive(raw: str, name: str) -> float:
    """A gap of 0 would make bench/slow_stream.py hold each stream instead of pacing it."""
    value = float(raw)
    if not value > 0:
        raise SystemExit(f"bench: {name} must be above 0 (got {raw!r})")
    return value


def selected_configurations() -> list[Configuration]:
    wanted = os.environ.get("BENCH_CONFIGS")
    known = (*CONFIGURATIONS, *configs.OPTIONAL_CONFIGURATIONS, litellm.CONFIGURATION)
    if not wanted:
        names = {c.name for c in CONFIGURATIONS}
    else:
        names = {name.strip() for name in wanted.split(",")}
        unknown = names - {c.name for c in known}
        if unknown:
            raise SystemExit(f"unknown BENCH_CONFIGS {sorted(unknown)}")
        # direct and the pass-through are the references every ratio needs.
        names |= {configs.DIRECT, configs.PASSTHROUGH}
    if litellm.wanted():
        names.add(litellm.NAME)
    chosen = [c for c in known if c.name in names]
    older = baseline.configuration()
    return [*chosen, older] if older is not None else chosen


def _package(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def _git_revision() -> str:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
        return out.stdout.strip()

    dirty = (
        " (dirty tree)" if git("status", "--porcelain", "--", "proxy", "instrumentation") else ""
    )
    return git("rev-parse", "--short", "HEAD") + dirty


def versions() -> dict[str, str]:
    from proxy import __version__

    return {
        "spangate": f"{__version__} @ {_git_revision()}",
        "python": platform.python_version(),
        "aiohttp": _package("aiohttp"),
        "uvloop": _package("uvloop"),
        "opentelemetry-sdk": _package("opentelemetry-sdk"),
        "rotel": _package("rotel"),
        "nginx": nginx.version(),
        "wrk": load.version(),
        "machine": f"{os.cpu_count()} cores (nproc {_nproc()}), {_cpu_model()}",
        "kernel": platform.release(),
    }


def _nproc() -> str:
    return subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def measure_all(
    procs: Procs, settings: Settings, chosen: list[Configuration]
) -> tuple[list[ConfigRun], list[OpenStreamsResult]]:
    chunks_port = start_chunk_stream(procs, settings.chunk_gap_ms) if settings.chunk_streams else 0
    upstream, upstream_port = nginx.start_upstream(procs, chunks_port)
    setup = configs.start_setup(procs, upstream_port)
    script = load.write_script(procs.workdir)
    runs: list[ConfigRun] = []
    opens: list[OpenStreamsResult] = []
    for repeat in range(1, settings.repeats + 1):
        for config in chosen:
            _log(f"repeat {repeat}/{settings.repeats}: {config.name}")
            runs.append(run_configuration(config, setup, settings, script, upstream))
        if settings.open_streams:
            _log(f"repeat {repeat}/{settings.repeats}: {settings.open_streams} open streams")
            opens.append(run_open_streams(setup, settings))
    return runs, opens


def _header(settings: Settings, chosen: list[Configuration], date: str) -> list[str]:
    lines = [
        f"# spangate benchmark, {date}",
        "",
        f"wrk {settings.seconds:g} s per level, concurrency {settings.concurrency}, "
        f"{settings.repeats} repeat(s) (medians), {settings.streams} sequential streams, "
        f"{_chunked(settings)}{settings.open_streams} open streams. Proxy under test pinned "
        "to core 0; nginx "
        "upstream, rotel and load generators on core 1. Numbers from a shared, noisy 2-core "
        "machine: compare configurations within this run, not across runs.",
        "",
        "Configurations:",
        "",
        *(f"- `{c.name}`: {c.meaning}" for c in chosen),
    ]
    return lines


def _chunked(settings: Settings) -> str:
    if not settings.chunk_streams:
        return ""
    return (
        f"{settings.chunk_streams} sequential streams arriving chunk by chunk "
        f"({settings.chunk_gap_ms:g} ms apart), "
    )


def _update_readme(summary: report.Summary, settings: Settings, date: str) -> None:
    """Replace the README's "Latest results" block with this run's targets and chart."""
    text = README.read_text()
    if _BEGIN not in text or _END not in text:
        return
    block = [
        _BEGIN,
        f"Run of {date}: {settings.repeats} repeat(s) x {settings.seconds:g} s per level "
        f"(full tables: [results/{date}.md](results/{date}.md)).",
        "",
        *report.targets_table(summary),
        "",
        f"![CPU per request and added latency per configuration](results/{date}.png)",
        _END,
    ]
    head, rest = text.split(_BEGIN, 1)
    README.write_text(head + "\n".join(block) + rest.split(_END, 1)[1])
    mirror_to_main_readme()


def mirror_to_main_readme() -> None:
    """Copy bench/README.md's latest block into the project README (links re-rooted)."""
    latest, main = README.read_text(), MAIN_README.read_text()
    if _BEGIN not in latest or _MAIN_BEGIN not in main or _MAIN_END not in main:
        return
    block = latest.split(_BEGIN, 1)[1].split(_END, 1)[0].strip("\n")
    block = block.replace("](results/", "](bench/results/")
    head, rest = main.split(_MAIN_BEGIN, 1)
    tail = rest.split(_MAIN_END, 1)[1]
    MAIN_README.write_text(f"{head}{_MAIN_BEGIN}\n{block}\n{_MAIN_END}{tail}")


def main() -> int:
    settings = settings_from_env()
    chosen = selected_configurations()
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    workdir = REPO / "bench" / "work" / stamp
    workdir.mkdir(parents=True)
    extra_versions: dict[str, str] = {}
    if any(c.name == litellm.NAME for c in chosen):
        try:
            extra_versions["litellm"] = litellm.ensure_venv(workdir, _log)
        except RuntimeError as exc:
            raise SystemExit(f"bench: the litellm configuration cannot run: {exc}") from exc
    procs = Procs(workdir)
    try:
        runs, opens = measure_all(procs, settings, chosen)
    finally:
        procs.stop_all()
    # BENCH_NAME: a side run (e.g. a LiteLLM comparison) written under its own name,
    # leaving the day's main results and the READMEs' latest blocks alone.
    name = os.environ.get("BENCH_NAME")
    date = name or dt.date.today().isoformat()
    summary = report.summarize(runs, opens)
    text = report.markdown(summary, _header(settings, chosen, date), versions() | extra_versions)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{date}.md").write_text(text + f"\n![chart]({date}.png)\n")
    (RESULTS / f"{date}.json").write_text(report.raw_json(runs, opens))
    write_chart(summary, RESULTS / f"{date}.png", f"spangate bench {date}")
    if not name:
        _update_readme(summary, settings, date)
    print(text)
    _log(f"wrote {RESULTS / date}.md/.json/.png; process logs in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
