"""`spangate serve --workers N`: a supervisor that runs N single-process servers on one port.

Each worker is an ordinary `spangate serve --workers 1` that listens with
SO_REUSEPORT, so the Linux kernel spreads new connections over the workers.
The supervisor serves no traffic: it reserves the port, starts the workers,
waits until each one says it is ready, forwards SIGTERM/SIGINT, and restarts a
worker that dies (within a crash budget).

Workers are new interpreters (`sys.executable -m proxy serve`), not forks and
not multiprocessing: a worker then starts exactly like a single-process
spangate (same CLI path, same tests), inherits no event loop or OTel threads,
and needs nothing pickled. The parent-child protocol is two environment
variables (`SPANGATE_WORKER_INDEX`, `SPANGATE_READY_FD`) and one pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import quote

import structlog

from proxy import native
from proxy.runtime import RuntimeConfig
from proxy.state import stop_bound_s

log = structlog.get_logger("spangate")

WORKER_INDEX_ENV = "SPANGATE_WORKER_INDEX"
WORKER_COUNT_ENV = "SPANGATE_WORKER_COUNT"
READY_FD_ENV = "SPANGATE_READY_FD"
_READY = b"ready\n"
#: How long one worker may take from spawn to "ready" before it counts as failed.
READY_TIMEOUT_S = 60.0
#: More than this many unexpected exits within the window: give up, stop everything.
CRASH_LIMIT = 5
CRASH_WINDOW_S = 60.0
#: Pause before a restart, so a worker that dies at once does not spin the CPU.
RESTART_DELAY_S = 0.5
#: On top of what a worker may take to stop (proxy/state.py stop_bound_s: the drain,
#: the wind-down, the telemetry flush) before one that overstays is killed: interpreter
#: start-up and exit, slack for a loaded machine.
STOP_GRACE_S = 5.0
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class WorkerSlot:
    """What a worker process knows about itself (read from its environment)."""

    index: int
    ready_fd: int | None
    #: How many workers share the machine (the supervisor's --workers).
    count: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WorkerSlot | None:
        """The slot when started by a supervisor; None for a stand-alone spangate."""
        index = env.get(WORKER_INDEX_ENV)
        if index is None:
            return None
        fd = env.get(READY_FD_ENV)
        return cls(int(index), int(fd) if fd else None, int(env.get(WORKER_COUNT_ENV, "1")))

    def signal_ready(self) -> None:
        """Tell the supervisor this worker is listening (once; closes the pipe)."""
        if self.ready_fd is None:
            return
        with contextlib.suppress(OSError):  # supervisor gone: PDEATHSIG will stop us
            os.write(self.ready_fd, _READY)
        with contextlib.suppress(OSError):
            os.close(self.ready_fd)


def supervise(runtime: RuntimeConfig, config_path: str | None, source: str, count: int) -> int:
    """Run `count` workers until SIGTERM/SIGINT; the exit code says whether all ended well."""
    if not sys.platform.startswith("linux"):
        print("spangate: --workers > 1 needs Linux (SO_REUSEPORT balancing)", file=sys.stderr)
        return 1
    server = runtime.config.server
    try:
        reserved = reserve_port(server.host, server.port)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        print(f"spangate: cannot listen on {server.host}:{server.port}: {reason}", file=sys.stderr)
        return 1
    with reserved:
        port: int = reserved.getsockname()[1]
        _warn_about_shared_metrics(runtime, count)
        supervisor = Supervisor(runtime, config_path, source, count, port)
        return asyncio.run(supervisor.run())


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound, non-listening SO_REUSEPORT socket: it fixes the port (port 0 → a free one)
    and keeps it ours while workers come and go, yet gets no connections, because Linux
    balances only over listening sockets. Binding also fails early, with a clear error,
    when something that did not opt into SO_REUSEPORT holds the port."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def _warn_about_shared_metrics(runtime: RuntimeConfig, count: int) -> None:
    telemetry = runtime.config.telemetry
    if telemetry.sdk_disabled or not telemetry.prometheus.enabled:
        return
    if telemetry.prometheus.port is None:
        log.warning(
            "spangate.workers_metrics_shared",
            workers=count,
            detail="/metrics on the shared port answers from one random worker per scrape; "
            "set telemetry.prometheus.port (worker i listens on port+i) or export OTLP metrics",
        )


class CrashBudget:
    """Allows a restart unless more than `limit` exits happened within `window_s`."""

    def __init__(self, limit: int = CRASH_LIMIT, window_s: float = CRASH_WINDOW_S) -> None:
        self._limit = limit
        self._window_s = window_s
        self._exits: deque[float] = deque()

    def allow(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        self._exits.append(now)
        while self._exits and self._exits[0] < now - self._window_s:
            self._exits.popleft()
        return len(self._exits) <= self._limit


def worker_env(
    base: Mapping[str, str], runtime: RuntimeConfig, index: int, ready_fd: int, count: int = 1
) -> dict[str, str]:
    """The worker's environment: its slot, its pipe, and its own `service.instance.id`."""
    env = {
        **base,
        WORKER_INDEX_ENV: str(index),
        WORKER_COUNT_ENV: str(count),
        READY_FD_ENV: str(ready_fd),
    }
    if not _instance_id_set(base, runtime):
        # Workers are separate OTel SDKs with their own cumulative counters; sharing one
        # resource identity would interleave their series. The id is stable per slot for
        # the supervisor's lifetime (a restarted worker reads as a counter reset).
        instance = quote(f"{socket.gethostname()}-{os.getpid()}-w{index}", safe="")
        existing = base.get("OTEL_RESOURCE_ATTRIBUTES", "").strip().strip(",")
        joined = f"{existing},service.instance.id={instance}" if existing else ""
        env["OTEL_RESOURCE_ATTRIBUTES"] = joined or f"service.instance.id={instance}"
    return env


def _instance_id_set(env: Mapping[str, str], runtime: RuntimeConfig) -> bool:
    if "service.instance.id" in runtime.config.telemetry.resource_attributes:
        return True
    pairs = env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(",")
    return any(pair.split("=", 1)[0].strip() == "service.instance.id" for pair in pairs)


def _die_with_parent(parent: int) -> Callable[[], None]:
    """preexec_fn: the kernel sends the worker SIGTERM (it drains) if the supervisor dies;
    SIGINT is ignored.

    Chosen over a worker polling its parent pid: no timer in every worker, and it also
    covers a SIGKILLed supervisor at once. PDEATHSIG follows the *thread* that forked;
    asyncio forks from the loop thread, which lives as long as the supervisor."""
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before fork, not in the child

    def arm() -> None:
        # Ignored before exec, SIGINT stays ignored through the worker's whole start
        # (Python installs its KeyboardInterrupt handler only over SIG_DFL): a Ctrl-C
        # reaches the whole process group, and the supervisor alone acts on it.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGKILL)

    return arm


class Supervisor:
    """Starts the workers, waits for all to be ready, restarts, forwards signals."""

    def __init__(
        self, runtime: RuntimeConfig, config_path: str | None, source: str, count: int, port: int
    ) -> None:
        self._runtime = runtime
        self._config_path = config_path
        self._source = source
        self._count = count
        self._host = runtime.config.server.host
        self._port = port
        self._stop_after_s = stop_bound_s(runtime.config.server.drain_timeout_s) + STOP_GRACE_S
        self._stopping = asyncio.Event()
        self._signal: signal.Signals | None = None  # the signal that asked for a stop
        self._failed = False
        self._budget = CrashBudget()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop, sig)
        started = [loop.create_future() for _ in range(self._count)]
        slots = [asyncio.create_task(self._slot(i, started[i])) for i in range(self._count)]
        ready: list[bool] = await asyncio.gather(*started)
        if all(ready):
            log.info(
                "spangate.ready",
                address=f"http://{self._host}:{self._port}",
                config=self._source,
                workers=self._count,
                native=native.describe(),
            )
        elif not self._stopping.is_set():
            log.error("spangate.workers_failed_to_start", workers=self._count)
            self._failed = True
            self._stopping.set()
        codes = await asyncio.gather(*slots)
        # A worker stopped by our SIGTERM before its handler was installed (still
        # starting) exits by the signal: that is the stop we asked for, not a failure.
        clean = (0, -signal.SIGTERM) if self._signal is not None else (0,)
        ok = not self._failed and all(code in clean for code in codes)
        log.info("spangate.stopped", workers=self._count, exit_codes=codes)
        return 0 if ok else 1

    def _request_stop(self, sig: signal.Signals) -> None:
        if not self._stopping.is_set():
            self._signal = sig
            self._stopping.set()

    async def _slot(self, index: int, started: asyncio.Future[bool]) -> int:
        try:
            return await self._keep(index, started)
        except Exception as exc:  # cannot spawn at all (e.g. the interpreter is gone)
            # Any error, not only OSError: `run` waits on `started`, which must resolve.
            log.error("spangate.worker_spawn_failed", worker=index, error=str(exc))
            if not started.done():
                started.set_result(False)
            self._failed = True
            self._stopping.set()
            return 1

    async def _keep(self, index: int, started: asyncio.Future[bool]) -> int:
        """One worker position for the supervisor's lifetime; returns the last exit code."""
        proc, ready = await self._start(index)
        started.set_result(ready)
        if not ready:  # the supervisor gives up on the whole start
            return await self._stop(proc)
        while True:
            code = await self._exit_or_stop(proc)
            if code is None:
                return await self._stop(proc)
            log.warning("spangate.worker_exited", worker=index, pid=proc.pid, code=code)
            if not self._budget.allow():
                log.error("spangate.workers_crash_loop", limit=CRASH_LIMIT, window_s=CRASH_WINDOW_S)
                self._failed = True
                self._stopping.set()
                return code
            if await self._stop_requested_within(RESTART_DELAY_S):
                return code
            proc, ready = await self._start(index)
            if ready:
                log.info("spangate.worker_restarted", worker=index, pid=proc.pid)

    async def _start(self, index: int) -> tuple[asyncio.subprocess.Process, bool]:
        """Spawn worker `index` and wait for its ready line (False: died, timed out, or
        stop requested first). A worker that is too slow is killed, so it counts as a crash.
        Failing to spawn at all (OSError) means a broken install: it ends the supervisor."""
        read_fd, write_fd = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._argv(),
                env=worker_env(os.environ, self._runtime, index, write_fd, self._count),
                pass_fds=(write_fd,),
                stdin=asyncio.subprocess.DEVNULL,
                # preexec_fn is unsafe only if another thread holds a lock at fork; the
                # supervisor's only other threads are asyncio's waitpid watchers.
                preexec_fn=_die_with_parent(os.getpid()),
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)  # our copy: EOF on the pipe then means the worker is gone
        ready = await self._ready(read_fd)
        if not ready and proc.returncode is None and not self._stopping.is_set():
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        return proc, ready

    async def _ready(self, read_fd: int) -> bool:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", buffering=0)
        )
        try:
            line = asyncio.ensure_future(reader.readline())
            stop = asyncio.ensure_future(self._stopping.wait())
            await asyncio.wait(
                {line, stop}, timeout=READY_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
            )
            stop.cancel()
            if not line.done():
                line.cancel()
                return False
            return line.result() == _READY
        finally:
            transport.close()

    async def _exit_or_stop(self, proc: asyncio.subprocess.Process) -> int | None:
        """The worker's exit code, or None once a stop is requested while it runs."""
        exited = asyncio.ensure_future(proc.wait())
        stop = asyncio.ensure_future(self._stopping.wait())
        await asyncio.wait({exited, stop}, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if exited.done():
            return exited.result()
        exited.cancel()
        return None

    async def _stop(self, proc: asyncio.subprocess.Process) -> int:
        """Forward the stop signal; the worker drains as usual; kill it if it overstays."""
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                # Always SIGTERM: workers ignore SIGINT (a terminal's Ctrl-C reaches the
                # whole process group; the supervisor alone decides and forwards).
                proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(self._stop_after_s):
                return await proc.wait()
        except TimeoutError:
            log.error("spangate.worker_killed", pid=proc.pid, after_s=self._stop_after_s)
            proc.kill()
            return await proc.wait()

    async def _stop_requested_within(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        return self._stopping.is_set()

    def _argv(self) -> list[str]:
        argv = [sys.executable, "-m", "proxy", "serve", "--workers", "1"]
        argv += ["--host", self._host, "--port", str(self._port)]
        if self._config_path is not None:
            argv += ["--config", self._config_path]
        return argv
