"""The telemetry process: records cross a socket intact, and the child lives, dies and
restarts with the serving process without a request ever noticing."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakeprovider import FakeProvider, stall
from harness import SpangateProcess
from multidict import CIMultiDict, CIMultiDictProxy
from test_integration_support import (
    ALIAS,
    GPT,
    HELLO,
    NO_OTLP,
    config_for,
    http_get,
    openai_client,
    poll,
    sample_sum,
    started,
)

from instrumentation.channel import MAX_FRAME, FrameReader, frame
from instrumentation.export import DropCounter
from instrumentation.offload import (
    MAX_RECORD_BYTES,
    SEND_TIMEOUT_S,
    TelemetryProcess,
    TelemetryStartError,
    batches,
)
from instrumentation.records import AttemptRecord, RequestRecord
from instrumentation.recordwire import from_wire, to_wire
from instrumentation.tracecontext import Parent
from proxy import native

# --------------------------------------------------------------------------- the wire


def _full_record() -> RequestRecord:
    record = RequestRecord("POST", "/v1/chat/completions")
    record.trace_id = (1 << 127) + 12345  # 128 bits: does not fit a msgpack integer
    record.span_id = (1 << 64) - 1
    record.parent = Parent((1 << 126) + 7, 42, True, "vendor=opaque")
    record.sampled = True
    record.body = b'{"model":"gpt-4o-mini","messages":[]}'
    record.alias, record.status, record.stream = "fast", 200, True
    attempt = AttemptRecord(
        1, 99, provider="openai", system="openai", host="h", port=443, target="t", model="m"
    )
    attempt.on_response(200, CIMultiDictProxy(CIMultiDict({"Content-Encoding": "gzip"})))
    attempt.on_events(b"data: {}\n\n")
    attempt.on_events(b"data: [DONE]\n\n")
    attempt.on_end(None)
    attempt.hedge_role = "primary"
    record.attempts = [attempt]
    return record


def _slots(obj: object) -> dict[str, object]:
    return {name: getattr(obj, name) for name in type(obj).__slots__}  # type: ignore[attr-defined]


def test_a_record_crosses_the_wire_with_every_field_intact() -> None:
    record = _full_record()
    left, right = socket.socketpair()
    with left, right:
        left.sendall(frame("records", [to_wire(record)]))
        kind, payload = FrameReader(right).read() or ("", [])
    back = from_wire(payload[0])
    assert kind == "records"
    expected, got = _slots(record), _slots(back)
    expected.pop("attempts"), got.pop("attempts")
    expected_parent, got_parent = expected.pop("parent"), got.pop("parent")
    assert got == expected
    assert _slots(got_parent) == _slots(expected_parent)
    attempt = _slots(record.attempts[0])
    attempt["events"] = [list(e) for e in record.attempts[0].events or []]
    assert [_slots(a) for a in back.attempts] == [attempt]


def test_a_record_without_parent_or_attempts_crosses_too() -> None:
    record = RequestRecord("GET", "/v1/models")
    back = from_wire(to_wire(record))
    assert back.parent is None and back.attempts == [] and back.trace_id == 0


def test_a_record_of_another_layout_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="request record has"):
        from_wire([1, 2, 3])


def test_a_peer_closing_mid_frame_reads_as_closed_not_as_a_short_frame() -> None:
    left, right = socket.socketpair()
    with right:
        whole = frame("state", {"inflight": 3})
        left.sendall(whole + whole[:-2])
        left.close()
        reader = FrameReader(right)
        assert reader.read() == ("state", {"inflight": 3})
        assert reader.read() is None


def test_a_frame_length_over_the_limit_is_a_protocol_error() -> None:
    left, right = socket.socketpair()
    with left, right:
        left.sendall((MAX_FRAME + 1).to_bytes(4, "big"))
        with pytest.raises(ValueError, match="exceeds"):
            FrameReader(right).read()


def _weighing(body_bytes: int) -> RequestRecord:
    record = RequestRecord("POST", "/v1/chat/completions")
    record.body = b"x" * body_bytes
    return record


def test_records_are_batched_by_bytes_and_a_heavy_record_goes_alone() -> None:
    records = [_weighing(3_000_000), _weighing(3_000_000), _weighing(3_000_000), _weighing(10)]
    sizes = [len(batch) for batch in batches(records, limit=8_000_000)]
    assert sizes == [2, 2]
    heavy = [_weighing(20_000_000), _weighing(10)]
    assert [len(b) for b in batches(heavy, limit=8_000_000)] == [1, 1]
    assert list(batches([], limit=8_000_000)) == []


def test_a_record_too_large_to_send_is_dropped_and_counted_the_rest_arrive() -> None:
    drops = DropCounter()
    init: dict[str, object] = {"config": {}, "redact": [[], []], "worker": None}
    remote = TelemetryProcess(init, drops, dict)
    try:
        remote.submit(_weighing(MAX_RECORD_BYTES + 1))
        remote.submit(_weighing(10))
        assert remote.flush(20)
        assert drops.snapshot().get(("records", "too_large")) == 1
        assert ("records", "telemetry_process_down") not in drops.snapshot()
    finally:
        remote.shutdown(20)


def test_a_telemetry_process_that_cannot_start_is_reported_at_once() -> None:
    """A config the child cannot build from: it exits, and the parent says so (it does
    not report ready and then restart the child forever)."""
    init: dict[str, object] = {"config": {"no_such_key": 1}, "redact": [[], []], "worker": None}
    with pytest.raises(TelemetryStartError, match="exited with code 1"):
        TelemetryProcess(init, DropCounter(), dict)


# --------------------------------------------------------------------------- the process


def PROCESS(fake: FakeProvider) -> dict[str, object]:
    """The config with the telemetry process forced on (`auto` may pick a thread on a
    one-CPU machine)."""
    return config_for(fake, telemetry={"pipeline": "process"})


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    with FakeProvider() as provider:
        yield provider


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in task.read_text().split()]
        except OSError:
            continue
    return found


def _telemetry_child(proc: SpangateProcess) -> int | None:
    assert proc.proc is not None
    for child in _children(proc.proc.pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"instrumentation.telemetry_process" in cmdline:
            return child
    return None


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"  # a zombie has exited; only its parent's wait() is missing


def _completed(proc: SpangateProcess) -> list[dict[str, object]]:
    return [e for e in proc.logs() if e.get("event") == "request.completed"]


def _call(proc: SpangateProcess) -> None:
    openai_client(proc).chat.completions.create(model=GPT, messages=HELLO)


@pytest.mark.integration
def test_serve_runs_telemetry_in_a_child_process_that_writes_the_request_lines(
    fake: FakeProvider,
) -> None:
    with started(PROCESS(fake), NO_OTLP) as proc:
        child = poll(lambda: _telemetry_child(proc), what="the telemetry process")
        assert proc.wait_for_log("telemetry.traces_not_exported")["pipeline"] == "process"
        _call(proc)
        line = poll(lambda: _completed(proc), what="request.completed")[0]
        assert line["status"] == 200 and line["model"] == GPT
    assert poll(lambda: _gone(child), what="the telemetry process to exit with spangate")


@pytest.mark.integration
def test_the_telemetry_process_says_whether_it_runs_the_compiled_modules(
    fake: FakeProvider,
) -> None:
    """It decides compiled or pure for itself, like each serving process, and its ready
    line says which (`native`, as on spangate.ready): here the same answer this process
    got, from the same sources, build and environment."""
    with started(PROCESS(fake), NO_OTLP) as proc:
        child = poll(lambda: _telemetry_child(proc), what="the telemetry process")
        ready = proc.wait_for_log("telemetry.process_ready")
        assert ready["pid"] == child
        assert ready["native"] == native.describe()
        assert proc.wait_for_log("spangate.ready")["native"] == native.describe()


@pytest.mark.integration
def test_a_killed_telemetry_process_is_restarted_and_no_request_fails(
    fake: FakeProvider,
) -> None:
    """...and the restarted one still flushes and exits cleanly when spangate stops."""
    proc = SpangateProcess(PROCESS(fake), dict(NO_OTLP)).start()
    try:
        first = poll(lambda: _telemetry_child(proc), what="the telemetry process")
        os.kill(first, signal.SIGKILL)
        for _ in range(5):
            _call(proc)  # raises if any request failed
        exited = proc.wait_for_log("telemetry.process_exited")
        assert exited["code"] == -signal.SIGKILL and exited["restarting"] is True
        second = poll(lambda: _telemetry_child(proc), what="a new telemetry process")
        assert second != first
        openai_client(proc).chat.completions.create(model=ALIAS, messages=HELLO)
        proc.terminate()
        assert proc.wait() == 0
        # The last request's line was written by the restarted child, at the latest
        # while it flushed on the way out.
        assert [e for e in _completed(proc) if e["model"] == ALIAS]
        assert not [e for e in proc.logs() if e.get("event") == "telemetry.process_exit"]
        assert _gone(second)
    finally:
        proc.stop()


@pytest.mark.integration
def test_a_stuck_telemetry_process_is_replaced_and_requests_never_wait_for_it(
    fake: FakeProvider,
) -> None:
    """A child that stops reading (SIGSTOP here) fills the socket; the sender gives up
    after its send timeout, kills it and starts another. Requests meanwhile go on."""
    with started(PROCESS(fake), NO_OTLP) as proc:
        stuck = poll(lambda: _telemetry_child(proc), what="the telemetry process")
        os.kill(stuck, signal.SIGSTOP)
        try:
            padding = "x" * 200_000  # fills the socket buffer within a few requests
            for _ in range(10):
                openai_client(proc).chat.completions.create(
                    model=GPT, messages=[{"role": "user", "content": padding}]
                )
            exited = proc.wait_for_log("telemetry.process_exited", timeout=SEND_TIMEOUT_S + 20)
            assert exited["code"] == -signal.SIGKILL
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stuck, signal.SIGCONT)
        fresh = poll(lambda: _telemetry_child(proc), what="a new telemetry process")
        assert fresh != stuck
        openai_client(proc).chat.completions.create(model=ALIAS, messages=HELLO)
        assert poll(
            lambda: [e for e in _completed(proc) if e["model"] == ALIAS],
            what="telemetry from the new process",
        )


@pytest.mark.integration
def test_ctrl_c_to_the_process_group_still_delivers_the_last_requests_telemetry(
    fake: FakeProvider,
) -> None:
    """A terminal's Ctrl-C reaches the process group: spangate drains, then has its
    telemetry process (in a group of its own, so untouched by the SIGINT) flush."""
    proc = SpangateProcess(PROCESS(fake), dict(NO_OTLP)).start()
    try:
        child = poll(lambda: _telemetry_child(proc), what="the telemetry process")
        for _ in range(3):
            _call(proc)
        assert proc.proc is not None
        os.killpg(proc.proc.pid, signal.SIGINT)
        assert proc.wait() == 0
        assert len(_completed(proc)) == 3
        assert poll(lambda: _gone(child), what="the telemetry process to exit")
    finally:
        proc.stop()


@pytest.mark.integration
def test_a_killed_spangate_takes_its_telemetry_process_with_it(fake: FakeProvider) -> None:
    """The kernel closes a dead parent's end of the socket: the child reads end of
    input, flushes what it has and exits — nothing is left behind."""
    with started(PROCESS(fake), NO_OTLP) as proc:
        child = poll(lambda: _telemetry_child(proc), what="the telemetry process")
        assert proc.proc is not None
        proc.proc.kill()
        proc.wait()
        assert poll(lambda: _gone(child), timeout=10, what="the orphaned telemetry process to die")


@pytest.mark.integration
def test_the_serving_processs_live_state_reaches_the_child_metrics(fake: FakeProvider) -> None:
    """In-flight count and circuit states live in the serving process; the scrape shows them."""
    with started(PROCESS(fake), NO_OTLP) as proc:
        openai_client(proc).chat.completions.create(model=ALIAS, messages=HELLO)
        fake.script(stall(after=2, seconds=30))
        stream = openai_client(proc).chat.completions.create(
            model=ALIAS, messages=HELLO, stream=True
        )
        next(iter(stream))  # one stream held open: the one request in flight
        status, text = http_get(proc.url + "/metrics")
        stream.close()
        assert status == 200
        assert sample_sum(text, "spangate_requests_total") == 1
        # Counted by the serving process; the scrape, spangate's own, is not counted.
        assert sample_sum(text, "spangate_requests_inflight") == 1
        assert "spangate_circuit_open{" in text and 'spangate_target="openai/gpt-4o-mini"' in text


@pytest.mark.integration
def test_the_thread_pipeline_is_still_there_when_configured(fake: FakeProvider) -> None:
    config = config_for(fake, telemetry={"pipeline": "thread"})
    with started(config, NO_OTLP) as proc:
        _call(proc)
        assert _telemetry_child(proc) is None
        assert proc.wait_for_log("telemetry.traces_not_exported")["pipeline"] == "thread"
        status, text = http_get(proc.url + "/metrics")
        assert status == 200 and sample_sum(text, "spangate_requests_total") == 1
