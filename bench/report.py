"""Medians over repeats, ratios against direct and the aiohttp pass-through, the targets.

Writes bench/results/<date>.md (tables + versions), <date>.json (raw runs)
and <date>.png (chart).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

from bench.configs import DIRECT, FULL, PASSTHROUGH
from bench.measure import ConfigRun
from bench.streams import OpenStreamsResult, StreamResult


@dataclass(frozen=True)
class LoadRow:
    config: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_ms: float | None
    upstream_cpu_ms: float
    errors: int
    core_noise: float
    telemetry_dropped: float | None = None


@dataclass(frozen=True)
class StreamRow:
    config: str
    ttfe_ms: float
    end_ms: float
    cpu_ms: float | None
    events: int
    rss_idle_mb: float | None


@dataclass(frozen=True)
class Summary:
    loads: list[LoadRow]
    streams: list[StreamRow]
    open_streams: OpenStreamsResult | None
    #: Streams whose events arrived one upstream write each (empty when not measured).
    chunked: list[StreamRow] = field(default_factory=list)


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _total(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def _must(value: float | None) -> float:
    assert value is not None
    return value


def summarize(runs: Sequence[ConfigRun], opens: Sequence[OpenStreamsResult]) -> Summary:
    names = list(dict.fromkeys(run.name for run in runs))
    by_name = {name: [run for run in runs if run.name == name] for name in names}
    loads = [row for name in names for row in _load_rows(name, by_name[name])]
    stream_rows = [_stream_row(name, by_name[name], lambda r: r.stream) for name in names]
    chunked = [
        _stream_row(name, by_name[name], lambda r: _must_stream(r.chunked))
        for name in names
        if all(run.chunked is not None for run in by_name[name])
    ]
    return Summary(loads, stream_rows, _median_open(opens), chunked)


def _must_stream(result: StreamResult | None) -> StreamResult:
    assert result is not None
    return result


def _load_rows(name: str, runs: list[ConfigRun]) -> list[LoadRow]:
    rows = []
    for index, first in enumerate(runs[0].loads):
        results = [run.loads[index] for run in runs]
        rows.append(
            LoadRow(
                config=name,
                concurrency=first.concurrency,
                rps=_must(_median(r.wrk.rps for r in results)),
                p50_ms=_must(_median(r.wrk.p50_ms for r in results)),
                p99_ms=_must(_median(r.wrk.p99_ms for r in results)),
                cpu_ms=_median(r.cpu_ms_per_request for r in results),
                upstream_cpu_ms=_must(_median(r.upstream_cpu_ms_per_request for r in results)),
                errors=sum(r.wrk.errors for r in results),
                core_noise=max(r.core_noise for r in results),
                telemetry_dropped=_total(r.telemetry_dropped for r in results),
            )
        )
    return rows


def _stream_row(
    name: str, runs: list[ConfigRun], which: Callable[[ConfigRun], StreamResult]
) -> StreamRow:
    results = [which(run) for run in runs]
    return StreamRow(
        config=name,
        ttfe_ms=_must(_median(r.ttfe_ms for r in results)),
        end_ms=_must(_median(r.end_ms for r in results)),
        cpu_ms=_median(r.cpu_ms_per_stream for r in results),
        events=results[0].events_per_stream,
        rss_idle_mb=_median(run.rss_idle_mb for run in runs),
    )


def _median_open(opens: Sequence[OpenStreamsResult]) -> OpenStreamsResult | None:
    if not opens:
        return None
    return OpenStreamsResult(
        requested=opens[0].requested,
        opened=min(o.opened for o in opens),
        open_s=statistics.median(o.open_s for o in opens),
        rss_idle_mb=statistics.median(o.rss_idle_mb for o in opens),
        rss_open_mb=statistics.median(o.rss_open_mb for o in opens),
        hwm_mb=statistics.median(o.hwm_mb for o in opens),
    )


# --- derived numbers -------------------------------------------------------------


def load_row(summary: Summary, config: str, concurrency: int) -> LoadRow | None:
    for row in summary.loads:
        if row.config == config and row.concurrency == concurrency:
            return row
    return None


def stream_row(summary: Summary, config: str, chunked: bool = False) -> StreamRow | None:
    rows = summary.chunked if chunked else summary.streams
    return next((row for row in rows if row.config == config), None)


def added(summary: Summary, row: LoadRow, field: Callable[[LoadRow], float]) -> float | None:
    base = load_row(summary, DIRECT, row.concurrency)
    return field(row) - field(base) if base else None


def cpu_ratio(summary: Summary, row: LoadRow) -> float | None:
    ref = load_row(summary, PASSTHROUGH, row.concurrency)
    if ref is None or ref.cpu_ms is None or row.cpu_ms is None or ref.cpu_ms == 0:
        return None
    return row.cpu_ms / ref.cpu_ms


# --- markdown ----------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 3, suffix: str = "") -> str:
    return "—" if value is None else f"{value:.{digits}f}{suffix}"


def load_table(summary: Summary) -> list[str]:
    lines = [
        "| config | c | req/s | p50 ms | p99 ms | +p50 ms vs direct | +p99 ms vs direct "
        "| CPU ms/req | x pass-through | upstream CPU ms/req | errors | telemetry dropped "
        "| others on core 0 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary.loads:
        ratio = cpu_ratio(summary, row)
        lines.append(
            f"| {row.config} | {row.concurrency} | {row.rps:.0f} | {row.p50_ms:.3f} "
            f"| {row.p99_ms:.3f} | {_fmt(added(summary, row, lambda r: r.p50_ms))} "
            f"| {_fmt(added(summary, row, lambda r: r.p99_ms))} | {_fmt(row.cpu_ms)} "
            f"| {_fmt(ratio, 2, 'x')} | {row.upstream_cpu_ms:.3f} | {row.errors} "
            f"| {_fmt(row.telemetry_dropped, 0)} | {100 * row.core_noise:.0f} % |"
        )
    return lines


def stream_table(summary: Summary, chunked: bool = False) -> list[str]:
    direct = stream_row(summary, DIRECT, chunked)
    ref = stream_row(summary, PASSTHROUGH, chunked)
    lines = [
        "| config | TTFE ms | +TTFE ms vs direct | end ms | CPU ms/stream "
        "| x pass-through | events seen | RSS MB idle after load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in summary.chunked if chunked else summary.streams:
        extra = row.ttfe_ms - direct.ttfe_ms if direct else None
        ratio = row.cpu_ms / ref.cpu_ms if row.cpu_ms and ref and ref.cpu_ms else None
        lines.append(
            f"| {row.config} | {row.ttfe_ms:.3f} | {_fmt(extra)} | {row.end_ms:.3f} "
            f"| {_fmt(row.cpu_ms)} | {_fmt(ratio, 2, 'x')} | {row.events} "
            f"| {_fmt(row.rss_idle_mb, 1)} |"
        )
    return lines


def open_streams_lines(opens: OpenStreamsResult | None) -> list[str]:
    if opens is None:
        return ["(not measured)"]
    return [
        f"spangate-full in front of bench/slow_stream.py: {opens.opened}/{opens.requested} "
        f"streams open at once (all first events in {opens.open_s:.1f} s); RSS idle "
        f"{opens.rss_idle_mb:.1f} MB → {opens.rss_open_mb:.1f} MB with the streams open "
        f"(peak VmHWM {opens.hwm_mb:.1f} MB)."
    ]


@dataclass(frozen=True)
class Target:
    what: str
    measured: str
    goal: str
    ok: bool | None


def targets(summary: Summary) -> list[Target]:
    return [
        _cpu_target(summary),
        _latency_target(summary, "added p50 at c=1", lambda r: r.p50_ms, 0.8),
        _latency_target(summary, "added p99 at c=1", lambda r: r.p99_ms, 2.0),
        _stream_ttfe_target(summary),
        _stream_cpu_target(summary),
        _chunked_cpu_target(summary),
        _rss_idle_target(summary),
        _rss_open_target(summary),
        _unreachable_target(summary),
    ]


def _check(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def _cpu_target(summary: Summary) -> Target:
    ratios = {
        row.concurrency: cpu_ratio(summary, row) for row in summary.loads if row.config == FULL
    }
    shown = ", ".join(f"c={c}: {_fmt(r, 2, 'x')}" for c, r in ratios.items())
    worst = max((r for r in ratios.values() if r is not None), default=None)
    return Target("CPU/request, full telemetry ÷ pass-through", shown, "≤ 1.3x", _check(worst, 1.3))


def _latency_target(
    summary: Summary, what: str, field: Callable[[LoadRow], float], limit: float
) -> Target:
    row = load_row(summary, FULL, 1)
    value = added(summary, row, field) if row else None
    return Target(what, _fmt(value, 3, " ms"), f"≤ {limit} ms", _check(value, limit))


def _stream_ttfe_target(summary: Summary) -> Target:
    row, direct = stream_row(summary, FULL), stream_row(summary, DIRECT)
    value = row.ttfe_ms - direct.ttfe_ms if row and direct else None
    return Target(
        "streaming added TTFE, c=1", _fmt(value, 3, " ms"), "≤ 0.6 ms", _check(value, 0.6)
    )


def _stream_cpu_target(summary: Summary) -> Target:
    row = stream_row(summary, FULL)
    value = row.cpu_ms if row else None
    what = "CPU per 20-chunk stream, arriving in one piece"
    return Target(what, _fmt(value, 3, " ms"), "≤ 1.5 ms", _check(value, 1.5))


def _chunked_cpu_target(summary: Summary) -> Target:
    """The same goal for a stream that arrives as providers send one: a read and a send per
    chunk. The pass-through's own cost is shown alongside, because it may be over the goal."""
    row = stream_row(summary, FULL, chunked=True)
    ref = stream_row(summary, PASSTHROUGH, chunked=True)
    value = row.cpu_ms if row else None
    measured = _fmt(value, 3, " ms")
    if value is not None and ref is not None and ref.cpu_ms:
        measured += f" ({value / ref.cpu_ms:.2f}x the pass-through's {ref.cpu_ms:.3f} ms)"
    what = "CPU per 20-chunk stream, one upstream write per chunk"
    return Target(what, measured, "≤ 1.5 ms", _check(value, 1.5))


def _rss_idle_target(summary: Summary) -> Target:
    row = stream_row(summary, FULL)
    value = row.rss_idle_mb if row else None
    return Target("RSS idle (after load)", _fmt(value, 1, " MB"), "≤ 80 MB", _check(value, 80))


def _rss_open_target(summary: Summary) -> Target:
    opens = summary.open_streams
    value = opens.rss_open_mb if opens else None
    what = f"RSS with {opens.requested if opens else '?'} open streams"
    return Target(what, _fmt(value, 1, " MB"), "≤ 200 MB", _check(value, 200))


def _unreachable_target(summary: Summary) -> Target:
    full = load_row(summary, FULL, 1)
    down = load_row(summary, "spangate-unreachable", 1)
    if full is None or down is None:
        return Target("collector unreachable vs reachable, p50 c=1", "—", "no change", None)
    delta = down.p50_ms - full.p50_ms
    cpu = (down.cpu_ms or 0) - (full.cpu_ms or 0)
    measured = f"{delta:+.3f} ms p50, {cpu:+.3f} ms CPU/req"
    return Target("collector unreachable vs reachable, c=1", measured, "no change", None)


def targets_table(summary: Summary) -> list[str]:
    lines = ["| target (spangate-full) | measured | goal | met |", "|---|---|---|---|"]
    for t in targets(summary):
        met = "—" if t.ok is None else ("yes" if t.ok else "**no**")
        lines.append(f"| {t.what} | {t.measured} | {t.goal} | {met} |")
    return lines


def markdown(summary: Summary, header: list[str], versions: dict[str, str]) -> str:
    sections = [
        *header,
        "",
        "## Targets",
        "",
        *targets_table(summary),
        "",
        "## Non-streaming (wrk, medians over repeats)",
        "",
        *load_table(summary),
        "",
        "## Streaming (20-chunk SSE in one piece from nginx, sequential, concurrency 1)",
        "",
        *stream_table(summary),
        "",
        "## Streaming chunk by chunk (one upstream write per event, sequential)",
        "",
        *(stream_table(summary, chunked=True) if summary.chunked else ["(not measured)"]),
        "",
        "## Open streams",
        "",
        *open_streams_lines(summary.open_streams),
        "",
        "## Versions and machine",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in versions.items()),
        "",
    ]
    return "\n".join(sections)


def raw_json(runs: Sequence[ConfigRun], opens: Sequence[OpenStreamsResult]) -> str:
    data = {"runs": [asdict(run) for run in runs], "open_streams": [asdict(o) for o in opens]}
    return json.dumps(data, indent=1)
