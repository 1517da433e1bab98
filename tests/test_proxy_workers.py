"""`spangate serve --workers N`: a supervisor and N SO_REUSEPORT workers, as real processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import basic_config
from fakeprovider import FakeProvider, stall
from harness import REPO, SpangateProcess
from test_integration_support import otlp_env
from test_proxy_cli import assert_no_traceback, clean_env, run_cli, write_config
from test_proxy_streams import DRAIN_S, stream_outliving_the_drain

from proxy.config import ConfigError, parse_config
from proxy.runtime import compile_config
from proxy.workers import CrashBudget, worker_env

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT")


def _env() -> dict[str, str]:
    return {k: v for k, v in clean_env().items() if not k.startswith("SPANGATE_")}


@contextlib.contextmanager
def workers(
    config: dict[str, Any], count: int = 2, env: dict[str, str] | None = None
) -> Iterator[SpangateProcess]:
    """spangate with `--workers count`; stopped (supervisor and every worker, by PID) after."""
    proc = SpangateProcess(config, env, args=("--workers", str(count)))
    try:
        yield proc.start()
    finally:
        pids = list(worker_pids(proc).values()) if proc.proc is not None else []
        proc.stop()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)


def worker_pids(proc: SpangateProcess) -> dict[int, int]:
    """Worker index → pid of its latest incarnation, from the spangate.worker_ready lines."""
    return {
        int(entry["worker"]): int(entry["pid"])
        for entry in proc.logs()
        if entry.get("event") == "spangate.worker_ready"
    }


def alive(pid: int) -> bool:
    """The pid runs a spangate process that is not a zombie (guards against pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return b"proxy" in cmdline and state != "Z"


def wait_until(check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout} s")


def chat(url: str) -> str:
    """One SDK call on a client of its own, so on a new TCP connection that the kernel
    balances anew (a shared client would keep one connection alive to one worker)."""
    with openai.OpenAI(base_url=url + "/v1", api_key="sk-test", max_retries=0) as client:
        completion = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
        )
    return completion.choices[0].message.content or ""


def answering_pids(url: str, requests: int) -> set[int]:
    """Pids named by x-spangate-worker-pid over `requests` fresh connections to /healthz."""
    pids = set()
    for _ in range(requests):
        with urllib.request.urlopen(url + "/healthz", timeout=10) as resp:
            pids.add(int(resp.headers["x-spangate-worker-pid"]))
    return pids


def free_port_pair() -> int:
    """A port P with P and P + 1 both free right now."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base: int = probe.getsockname()[1]
        with contextlib.ExitStack() as stack:
            try:
                for port in (base, base + 1):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return base
    raise AssertionError("no two consecutive free ports")


def requests_counted(metrics_port: int) -> float:
    """Sum of spangate_requests_total on one worker's own metrics listener."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("spangate_requests_total")
    )


def run_serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m proxy serve ARGS` that is expected to exit on its own (bounded)."""
    return run_cli("serve", *args, env=env if env is not None else _env())


# --------------------------------------------------------------------------- serving


@pytest.mark.parametrize("pipeline", ["thread", "process"])
def test_two_workers_serve_sdk_traffic_and_both_take_connections(
    fake: FakeProvider, pipeline: str
) -> None:
    """With --workers 2 the SDK gets answers; over fresh connections both worker processes
    serve (their own metrics listeners on port and port+1 both counted requests, both
    workers logged request.completed lines, and /healthz names both pids); the ready line
    comes once, after both workers. With either telemetry pipeline: with the process one,
    each worker's own telemetry process writes its lines and answers its scrapes."""
    metrics_port = free_port_pair()
    telemetry = {"prometheus": {"host": "127.0.0.1", "port": metrics_port}, "pipeline": pipeline}
    with workers(basic_config(fake, telemetry=telemetry)) as proc:
        pids = worker_pids(proc)
        assert sorted(pids) == [0, 1]
        assert len(set(pids.values())) == 2
        events = [entry.get("event") for entry in proc.logs()]
        assert events.count("spangate.ready") == 1
        assert events.index("spangate.ready") > max(
            i for i, event in enumerate(events) if event == "spangate.worker_ready"
        )
        # Each worker says whether it runs the compiled modules (proxy/native.py), as the
        # supervisor's ready line does for itself.
        ready = [e for e in proc.logs() if e.get("event") == "spangate.worker_ready"]
        said = {e.get("native") for e in ready}
        assert len(ready) == 2 and len(said) == 1 and None not in said
        calls = 40
        answers = [chat(proc.url) for _ in range(calls)]
        assert all(answers)
        assert len(fake.received) == calls
        # A request is counted just after its last byte went out: wait for all of them.
        ports = (metrics_port, metrics_port + 1)
        wait_until(lambda: sum(requests_counted(port) for port in ports) == calls)
        assert all(requests_counted(port) > 0 for port in ports)
        assert answering_pids(proc.url, 40) == set(pids.values())
        completed = [e for e in proc.logs() if e.get("event") == "request.completed"]
        assert len(completed) == calls
        assert {e["worker"] for e in completed} == {0, 1}


def test_port_zero_reports_the_real_shared_port(fake: FakeProvider) -> None:
    """--port 0 with workers: the supervisor picks the port, every worker listens on it, the
    ready line gives it, and the port stays reserved (a plain bind to it fails)."""
    with workers(basic_config(fake)) as proc:
        ready = proc.wait_for_log("spangate.ready")
        assert ready["workers"] == 2
        address = ready["address"]
        assert address.startswith("http://127.0.0.1:")
        assert not address.endswith(":0")
        worker_lines = [e for e in proc.logs() if e.get("event") == "spangate.worker_ready"]
        assert {e["address"] for e in worker_lines} == {address}
        with urllib.request.urlopen(address + "/readyz", timeout=10) as resp:
            assert resp.status == 200
        port = int(address.rsplit(":", 1)[1])
        with socket.socket() as intruder, pytest.raises(OSError):
            intruder.bind(("127.0.0.1", port))


def test_status_json_names_the_worker_process_that_answered(fake: FakeProvider) -> None:
    """/spangate/status is one worker's view: its `pid` matches the worker-pid header
    and is one of the supervisor's workers."""
    with workers(basic_config(fake)) as proc:
        address = proc.wait_for_log("spangate.ready")["address"]
        with urllib.request.urlopen(address + "/spangate/status", timeout=10) as resp:
            body = json.loads(resp.read())
            header_pid = int(resp.headers["x-spangate-worker-pid"])
        assert body["pid"] == header_pid
        assert header_pid in worker_pids(proc).values()


def test_each_worker_gets_its_own_service_instance_id() -> None:
    """Workers get distinct `service.instance.id` resource attributes, appended to any
    OTEL_RESOURCE_ATTRIBUTES; one the user set (env or config) is left alone."""
    runtime = compile_config(
        parse_config({"providers": {"o": {"kind": "openai", "base_url": "http://a"}}})
    )
    base = {"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod"}
    first, second = worker_env(base, runtime, 0, 7), worker_env(base, runtime, 1, 8)
    assert first["OTEL_RESOURCE_ATTRIBUTES"].startswith("deployment.environment=prod,")
    assert "service.instance.id=" in first["OTEL_RESOURCE_ATTRIBUTES"]
    assert first["OTEL_RESOURCE_ATTRIBUTES"] != second["OTEL_RESOURCE_ATTRIBUTES"]
    assert (first["SPANGATE_WORKER_INDEX"], first["SPANGATE_READY_FD"]) == ("0", "7")
    user = {"OTEL_RESOURCE_ATTRIBUTES": "service.instance.id=mine"}
    assert worker_env(user, runtime, 1, 8)["OTEL_RESOURCE_ATTRIBUTES"] == "service.instance.id=mine"
    configured = compile_config(
        parse_config(
            {
                "providers": {"o": {"kind": "openai", "base_url": "http://a"}},
                "telemetry": {"resource_attributes": {"service.instance.id": "cfg"}},
            }
        )
    )
    assert "OTEL_RESOURCE_ATTRIBUTES" not in worker_env({}, configured, 1, 8)


# --------------------------------------------------------------------------- lifecycle


def test_sigterm_stops_every_worker_and_exits_zero(fake: FakeProvider) -> None:
    """SIGTERM to the supervisor is forwarded: each worker drains and logs spangate.stopped,
    the supervisor exits 0, and no worker process is left."""
    with workers(basic_config(fake)) as proc:
        pids = list(worker_pids(proc).values())
        assert all(alive(pid) for pid in pids)
        assert chat(proc.url)
        proc.terminate()
        assert proc.wait(60) == 0
        assert not any(alive(pid) for pid in pids)
        stopped = [e for e in proc.logs() if e.get("event") == "spangate.stopped"]
        assert sorted(e["worker"] for e in stopped if "worker" in e) == [0, 1]
        assert any(e.get("exit_codes") == [0, 0] for e in stopped)
        assert_no_traceback(proc.raw_output())


def test_a_stream_that_outlives_the_drain_gets_no_worker_killed(fake: FakeProvider) -> None:
    """With --workers 2, a stream still open when server.drain_timeout_s runs out ends
    with the drain: the client's connection is closed after the shutdown's error event,
    its worker (which logged the abandoned stream) exits 0 on its own, not killed by the
    supervisor (which would lose its telemetry), and the supervisor exits 0."""
    fake.script(stall(after=3, seconds=60))
    config = basic_config(fake, server={"drain_timeout_s": DRAIN_S})
    with workers(config) as proc:
        pids = list(worker_pids(proc).values())
        received, code = stream_outliving_the_drain(proc)
        assert code == 0
        assert b"spangate is shutting down" in received.rsplit(b'data: {"error"', 1)[-1]
        assert not any(alive(pid) for pid in pids)
        logged = proc.logs()
        assert not [e for e in logged if e.get("event") == "spangate.worker_killed"]
        (drained,) = [e for e in logged if e.get("event") == "spangate.drain_timeout"]
        assert drained["abandoned"] == 1
        completed = [e for e in logged if e.get("event") == "request.completed"]
        assert [e["worker"] for e in completed] == [drained["worker"]]
        assert completed[0]["error_type"] == "shutdown"
        stopped = [e for e in logged if e.get("event") == "spangate.stopped"]
        assert any(e.get("exit_codes") == [0, 0] for e in stopped)
        assert_no_traceback(proc.raw_output())


@contextlib.contextmanager
def silent_collector() -> Iterator[str]:
    """An OTLP/HTTP endpoint that takes connections (the kernel completes them from the
    listen backlog) and never answers: every export waits out its whole timeout."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


#: Only one signal goes to the collector in each case: each used to hold its worker for
#: two timeouts of 10 s (the queue's flush, then its thread's join), past the kill.
SIGNAL_ENV = {
    "traces": {"OTEL_METRICS_EXPORTER": "none", "OTEL_LOGS_EXPORTER": ""},
    "logs": {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"},
}


@pytest.mark.parametrize("signal_name", sorted(SIGNAL_ENV))
def test_a_collector_that_never_answers_gets_no_worker_killed(
    fake: FakeProvider, signal_name: str
) -> None:
    """With every export hanging on a silent collector (for up to 60 s each), SIGTERM still
    ends each worker on its own: its telemetry shutdown spends one 10 s budget across
    its steps, within the supervisor's deadline (drain + 16.5 s), so the supervisor exits
    0 and kills none."""
    config = basic_config(fake, server={"drain_timeout_s": 0}, telemetry={"pipeline": "thread"})
    with silent_collector() as endpoint:
        env = otlp_env(endpoint, "http/protobuf", OTEL_EXPORTER_OTLP_TIMEOUT="60")
        with workers(config, env={**_env(), **env, **SIGNAL_ENV[signal_name]}) as proc:
            pids = list(worker_pids(proc).values())
            for _ in range(4):
                assert chat(proc.url)
            proc.terminate()
            assert proc.wait(60) == 0
            assert not any(alive(pid) for pid in pids)
            logged = proc.logs()
            assert not [e for e in logged if e.get("event") == "spangate.worker_killed"]
            stopped = [e for e in logged if e.get("event") == "spangate.stopped"]
            assert any(e.get("exit_codes") == [0, 0] for e in stopped)
            assert_no_traceback(proc.raw_output())


START_TWO = ("--port", "0", "--workers", "2")


def children_of(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_ctrl_c_to_the_process_group_drains_each_worker_once_and_exits_zero(
    fake: FakeProvider,
) -> None:
    """A terminal's Ctrl-C signals every process of the group: workers ignore it, the
    supervisor forwards one SIGTERM each; all drain, exit 0, and nothing prints a traceback."""
    with workers(basic_config(fake)) as proc:
        assert proc.proc is not None
        pids = list(worker_pids(proc).values())
        assert chat(proc.url)
        os.killpg(proc.proc.pid, signal.SIGINT)
        assert proc.wait(60) == 0
        assert not any(alive(pid) for pid in pids)
        stopped = [e for e in proc.logs() if e.get("event") == "spangate.stopped"]
        assert len(stopped) == len(pids) + 1  # each worker once, and the supervisor
        assert_no_traceback(proc.stdout_path.read_text())


def test_ctrl_c_while_workers_are_still_starting_exits_cleanly(
    fake: FakeProvider, tmp_path: Path
) -> None:
    """Ctrl-C that lands while the workers are importing: no KeyboardInterrupt traceback
    from any of them, the supervisor stops them and exits 0."""
    config = write_config(tmp_path, basic_config(fake))
    with (tmp_path / "out.log").open("wb") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--config", str(config), *START_TWO],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=_env(),
            cwd=REPO,
            start_new_session=True,
        )
        try:
            wait_until(lambda: len(children_of(popen.pid)) == 2)
            starting = children_of(popen.pid)
            os.killpg(popen.pid, signal.SIGINT)
            assert popen.wait(60) == 0
            assert not any(alive(pid) for pid in starting)
        finally:
            if popen.poll() is None:
                popen.kill()
                popen.wait()
    assert_no_traceback((tmp_path / "out.log").read_text())


def test_a_killed_worker_is_restarted_and_traffic_still_flows(fake: FakeProvider) -> None:
    """SIGKILL to one worker: the supervisor logs spangate.worker_exited (pid, code), starts
    a new worker in its slot, and requests keep being answered by both workers."""
    with workers(basic_config(fake)) as proc:
        before = worker_pids(proc)
        os.kill(before[0], signal.SIGKILL)
        restarted = proc.wait_for_log("spangate.worker_restarted")
        exited = proc.wait_for_log("spangate.worker_exited")
        assert exited["pid"] == before[0]
        assert exited["code"] == -signal.SIGKILL
        assert restarted["worker"] == 0
        after = worker_pids(proc)
        assert after[0] == restarted["pid"] != before[0]
        assert after[1] == before[1]
        assert not alive(before[0])
        assert all(chat(proc.url) for _ in range(10))
        assert answering_pids(proc.url, 40) == set(after.values())
        proc.terminate()
        assert proc.wait(60) == 0


def test_workers_stop_when_the_supervisor_is_killed(fake: FakeProvider) -> None:
    """SIGKILL to the supervisor: the kernel (PR_SET_PDEATHSIG) sends each worker SIGTERM,
    so no worker outlives it."""
    with workers(basic_config(fake)) as proc:
        pids = list(worker_pids(proc).values())
        assert proc.proc is not None
        proc.proc.kill()
        proc.proc.wait(10)
        wait_until(lambda: not any(alive(pid) for pid in pids), timeout=30)


def test_a_worker_that_cannot_start_fails_the_whole_start(
    tmp_path: Path, fake: FakeProvider
) -> None:
    """Worker 1 cannot open its metrics port (port+1 is taken): the supervisor stops the
    other worker, never logs spangate.ready, and exits non-zero."""
    metrics_port = free_port_pair()
    config = basic_config(
        fake, telemetry={"prometheus": {"host": "127.0.0.1", "port": metrics_port}}
    )
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", metrics_port + 1))
        blocker.listen()
        path = write_config(tmp_path, config)
        result = run_serve("--config", str(path), "--port", "0", "--workers", "2")
    assert result.returncode != 0
    assert "spangate.ready" not in result.stdout.replace("spangate.worker_ready", "")
    assert "spangate.workers_failed_to_start" in result.stdout
    assert f"cannot listen for metrics on 127.0.0.1:{metrics_port + 1}" in result.stderr
    assert_no_traceback(result.stdout, result.stderr)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_workers_below_one_is_a_clear_error(value: str) -> None:
    """`--workers 0`, a negative or a non-number: exit non-zero, a message naming --workers,
    no traceback, nothing started."""
    result = run_serve("--port", "0", f"--workers={value}")
    assert result.returncode != 0
    assert "--workers" in result.stderr
    assert "must be a whole number >= 1" in result.stderr
    assert "spangate.ready" not in result.stdout
    assert_no_traceback(result.stderr)


def test_spangate_workers_env_is_checked_too() -> None:
    """SPANGATE_WORKERS=0: exit 1 with a message naming the variable."""
    result = run_serve("--port", "0", env={**_env(), "SPANGATE_WORKERS": "0"})
    assert result.returncode == 1
    assert result.stderr.startswith("spangate: SPANGATE_WORKERS must be a whole number >= 1")


def test_server_workers_in_the_config_is_validated() -> None:
    """server.workers defaults to 1, takes a count, and rejects 0 naming the key."""
    providers = {"o": {"kind": "openai", "base_url": "http://a"}}
    assert parse_config({"providers": providers}).server.workers == 1
    assert parse_config({"providers": providers, "server": {"workers": 3}}).server.workers == 3
    with pytest.raises(ConfigError, match=r"server\.workers: expected `int` >= 1"):
        parse_config({"providers": providers, "server": {"workers": 0}})


def test_a_config_error_is_reported_once_before_any_worker(tmp_path: Path) -> None:
    """A bad config with --workers 3: the supervisor reports it once, in today's format,
    and exits 1 without starting workers."""
    path = write_config(tmp_path, {"providers": {"o": {"kind": "nope", "base_url": "http://a"}}})
    result = run_serve("--config", str(path), "--port", "0", "--workers", "3")
    assert result.returncode == 1
    assert result.stderr.startswith("spangate: config error")
    assert result.stderr.count("config error") == 1
    assert "providers.o.kind" in result.stderr
    assert "worker" not in result.stdout
    assert_no_traceback(result.stderr)


@pytest.mark.parametrize("count", ["1", "2"])
def test_a_taken_port_is_a_clear_error(tmp_path: Path, count: str) -> None:
    """A port another program listens on (without SO_REUSEPORT): single process and
    supervisor alike exit 1 with `cannot listen on HOST:PORT`, never share the port."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_serve("--port", str(port), "--workers", count)
    assert result.returncode == 1
    assert f"spangate: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "spangate.ready" not in result.stdout
    assert_no_traceback(result.stdout, result.stderr)


def test_the_crash_budget_allows_five_exits_a_minute() -> None:
    """Restarts are allowed up to 5 exits within 60 s; the 6th gives up; old exits expire."""
    budget = CrashBudget(limit=5, window_s=60)
    assert all(budget.allow(now=float(t)) for t in range(5))
    assert not budget.allow(now=5.0)
    assert budget.allow(now=200.0)
