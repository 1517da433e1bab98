"""LineEmitter: the request.completed line written by running structlog's chain directly
is the line structlog itself writes, and follows structlog's current configuration."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import random
import select
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from instrumentation.logging import (
    LineEmitter,
    Redactor,
    TimeStamp,
    configure_logging,
    tag_worker,
)

FIELDS: dict[str, Any] = {
    "trace_id": "0af7651916cd43dd8448eb211c80319c",
    "method": "POST",
    "path": "/v1/chat/completions",
    "route": None,
    "status": 200,
    "stream": False,
    "attempts": [{"n": 1, "target": "openai", "status": 200, "duration_ms": 1.5}],
    "error": "Bearer sk-proj-abcdefghijklmnop was refused",
    "duration_ms": 2.25,
}


@pytest.fixture
def stdout() -> Iterator[io.BytesIO]:
    """Where the lines go; structlog's defaults back afterwards."""
    yield io.BytesIO()
    structlog.reset_defaults()


def _configure(buffer: io.BytesIO, **options: Any) -> None:
    """spangate's logging, writing to `buffer` instead of stdout."""
    configure_logging(Redactor(), **options)
    structlog.configure(logger_factory=structlog.BytesLoggerFactory(buffer))


def _lines(buffer: io.BytesIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_line_is_the_one_structlog_writes_key_for_key_and_redacted(stdout: io.BytesIO) -> None:
    _configure(stdout)
    structlog.get_logger("spangate.access").info("request.completed", **FIELDS)
    LineEmitter("spangate.access", "request.completed")(dict(FIELDS))
    by_structlog, by_emitter = _lines(stdout)
    assert by_structlog.pop("ts") <= by_emitter.pop("ts")
    assert list(by_emitter) == list(by_structlog)  # same keys in the same order
    assert by_emitter == by_structlog
    assert by_emitter["error"] == "[REDACTED] was refused"


def test_level_above_info_writes_nothing(stdout: io.BytesIO) -> None:
    _configure(stdout, level="warning")
    LineEmitter("spangate.access", "request.completed")(dict(FIELDS))
    assert stdout.getvalue() == b""


def _tag_worker(buffer: io.BytesIO) -> tuple[io.BytesIO, dict[str, Any]]:
    """tag_worker runs after telemetry is set up: its field must reach every line."""
    tag_worker(3)
    return buffer, {"worker": 3}


def _new_logger_factory(buffer: io.BytesIO) -> tuple[io.BytesIO, dict[str, Any]]:
    """Only the logger factory changes (the processors stay the same list)."""
    elsewhere = io.BytesIO()
    structlog.configure(logger_factory=structlog.BytesLoggerFactory(elsewhere))
    return elsewhere, {}


@pytest.mark.parametrize("reconfigure", [_tag_worker, _new_logger_factory])
def test_reconfiguring_after_the_first_line_applies_to_the_next(
    stdout: io.BytesIO, reconfigure: Any
) -> None:
    _configure(stdout)
    emit = LineEmitter("spangate.access", "request.completed")
    emit(dict(FIELDS))
    target, added = reconfigure(stdout)
    emit(dict(FIELDS))
    first, second = _lines(stdout)[0], _lines(target)[-1]
    assert "worker" not in first
    # Both lines in one buffer, or one in each.
    assert len(_lines(stdout)) + (0 if target is stdout else len(_lines(target))) == 2
    assert len(_lines(stdout)) == (2 if target is stdout else 1)
    assert {key: second[key] for key in added} == added


def test_a_processor_dropping_the_event_drops_the_line_quietly(stdout: io.BytesIO) -> None:
    def drop(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
        raise structlog.DropEvent

    _configure(stdout, sinks=[drop])
    LineEmitter("spangate.access", "request.completed")(dict(FIELDS))
    assert stdout.getvalue() == b""


def test_with_structlogs_defaults_each_line_goes_to_the_stdout_of_its_moment() -> None:
    """structlog's default PrintLogger takes sys.stdout when it is made, and uncached
    loggers are made per call: a line must not go to a stdout that was replaced since."""
    structlog.reset_defaults()
    emit = LineEmitter("spangate.access", "request.completed")
    first, second = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(first):
        emit(dict(FIELDS))
    with contextlib.redirect_stdout(second):
        emit(dict(FIELDS))
    assert "request.completed" in first.getvalue()
    assert "request.completed" in second.getvalue()


def test_capture_logs_sees_the_line() -> None:
    with capture_logs() as captured:
        LineEmitter("spangate.access", "request.completed")(dict(FIELDS))
    assert captured == [{**FIELDS, "event": "request.completed", "log_level": "info"}]


def _structlog_iso(now_ns: int) -> str:
    """What structlog's TimeStamper(fmt="iso", utc=True) writes for that instant."""
    second, nanos = divmod(now_ns, 1_000_000_000)
    moment = dt.datetime.fromtimestamp(second, tz=dt.UTC)
    return moment.replace(microsecond=nanos // 1000).isoformat().replace("+00:00", "Z")


def test_timestamps_are_written_as_structlogs_iso_utc_stamper_writes_them() -> None:
    """Same text for any instant: across second boundaries, with and without a fraction."""
    stamp, rng = TimeStamp(), random.Random(5)
    base = 1_764_670_000 * 1_000_000_000
    instants = [base, base + 999, base + 1000, base + 999_999_999, base + 1_000_000_000]
    instants += [base + rng.randrange(10**12) for _ in range(2000)]
    for now_ns in instants:
        assert stamp.format(now_ns) == _structlog_iso(now_ns)


def test_lines_carry_the_time_they_were_written(stdout: io.BytesIO) -> None:
    _configure(stdout)
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    LineEmitter("spangate.access", "request.completed")(dict(FIELDS))
    (line,) = _lines(stdout)
    written = dt.datetime.fromisoformat(line["ts"].replace("Z", "+00:00"))
    assert before <= written <= dt.datetime.now(dt.UTC)


class _Writes(io.BytesIO):
    """stdout that remembers the size of each write: a held batch must be one, and
    none larger than PIPE_BUF."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    @property
    def writes(self) -> int:
        return len(self.sizes)

    def write(self, data: Any) -> int:
        self.sizes.append(len(data))
        return super().write(data)


def test_held_lines_leave_in_one_write_as_the_same_bytes() -> None:
    """hold=True: nothing is written until flush(), then every held line in one write,
    byte for byte what the lines written one by one would be (time stamps aside)."""
    one_by_one, held = _Writes(), _Writes()
    try:
        for buffer, hold in ((one_by_one, False), (held, True)):
            _configure(buffer)
            emit = LineEmitter("spangate.access", "request.completed", hold=hold)
            for n in range(5):
                emit({**FIELDS, "status": 200 + n})
            assert held.writes == 0
            emit.flush()
    finally:
        structlog.reset_defaults()
    assert held.writes == 1
    assert one_by_one.writes == 5
    strip = [{k: v for k, v in line.items() if k != "ts"} for line in _lines(one_by_one)]
    assert [{k: v for k, v in line.items() if k != "ts"} for line in _lines(held)] == strip
    assert [line["status"] for line in _lines(held)] == [200, 201, 202, 203, 204]


def test_held_lines_go_to_the_output_they_were_rendered_for(stdout: io.BytesIO) -> None:
    """A reconfiguration while lines are held writes them to the old output first."""
    _configure(stdout)
    emit = LineEmitter("spangate.access", "request.completed", hold=True)
    emit(dict(FIELDS))
    later = io.BytesIO()
    structlog.configure(logger_factory=structlog.BytesLoggerFactory(later))
    emit({**FIELDS, "status": 503})
    emit.flush()
    assert [line["status"] for line in _lines(stdout)] == [200]
    assert [line["status"] for line in _lines(later)] == [503]


def test_held_lines_are_not_held_from_capture_logs() -> None:
    """A chain that does not render text (capture_logs) sees each line at once."""
    emit = LineEmitter("spangate.access", "request.completed", hold=True)
    with capture_logs() as captured:
        emit(dict(FIELDS))
    assert [entry["event"] for entry in captured] == ["request.completed"]


def test_the_time_stamp_is_added_after_redaction(stdout: io.BytesIO) -> None:
    """The stamp holds no secret and is new on every line: it is added after the
    redactor (no regex run, no cache entry per line), so even a pattern matching dates
    leaves it whole while it still redacts the fields."""
    configure_logging(Redactor(patterns=[r"\d{4}-\d\d-\d\d"]))
    structlog.configure(logger_factory=structlog.BytesLoggerFactory(stdout))
    LineEmitter("spangate.access", "request.completed")({**FIELDS, "note": "due 2026-01-31"})
    (line,) = _lines(stdout)
    assert line["note"] == "due [REDACTED]"
    assert dt.datetime.fromisoformat(line["ts"].replace("Z", "+00:00")).tzinfo is not None


def test_int_ids_are_written_as_w3c_hex_and_never_redacted(stdout: io.BytesIO) -> None:
    """The request line's trace and span ids travel as ints (what the processor gives)
    and are written as 32 and 16 hex digits after redaction: a configured pattern that
    matches hex text redacts the fields but cannot mangle an id."""
    configure_logging(Redactor(patterns=[r"[0-9a-f]{6,}"]))
    structlog.configure(logger_factory=structlog.BytesLoggerFactory(stdout))
    fields = {**FIELDS, "trace_id": 0xAF7651916CD43DD8448EB211C80319C, "span_id": 0xB7AD6B71}
    LineEmitter("spangate.access", "request.completed")({**fields, "note": "deadbeef"})
    (line,) = _lines(stdout)
    assert (line["trace_id"], line["span_id"]) == (
        "0af7651916cd43dd8448eb211c80319c",
        "00000000b7ad6b71",
    )
    assert line["note"] == "[REDACTED]"
    assert list(line)[:2] == ["trace_id", "method"]  # where the fields put it


def test_held_lines_leave_in_writes_no_larger_than_pipe_buf() -> None:
    """Only a write of at most PIPE_BUF bytes is atomic on a pipe (stdout shared with
    other processes): held lines are flushed before they would exceed it."""
    out = _Writes()
    try:
        _configure(out)
        emit = LineEmitter("spangate.access", "request.completed", hold=True)
        for n in range(40):
            emit({**FIELDS, "status": n})
        emit.flush()
    finally:
        structlog.reset_defaults()
    assert [line["status"] for line in _lines(out)] == list(range(40))
    assert out.writes > 1
    assert max(out.sizes) <= select.PIPE_BUF
