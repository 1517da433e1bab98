"""Processes the harness starts: pinned launch, readiness, CPU and memory readings, stop by PID.

Every process is started by us, tracked in a `Procs` stack and stopped by its
own PID (SIGTERM, then SIGKILL after a grace period) — never by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
#: Core of the proxy under test; upstream, receiver and load generators use the other one.
PROXY_CORE = "0"
LOAD_CORE = "1"
_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    #: Readiness waits are multiplied by this (a process under valgrind starts ~20x slower).
    patience: float = 1.0

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace_s: float = 10.0) -> None:
        if not self.alive():
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)


@dataclass
class Procs:
    """The processes of one run, stopped in reverse start order."""

    workdir: Path
    started: list[Proc] = field(default_factory=list)
    #: Rewrites a process's argv before it starts (e.g. to run it under valgrind).
    wrap: Callable[[str, list[str]], list[str]] | None = None
    patience: float = 1.0

    def start(
        self,
        name: str,
        argv: Sequence[str],
        core: str,
        env: Mapping[str, str] | None = None,
        cwd: Path = REPO,
    ) -> Proc:
        log = self.workdir / f"{name}.log"
        argv = self.wrap(name, list(argv)) if self.wrap is not None else list(argv)
        with log.open("ab") as out:
            popen = subprocess.Popen(
                ["taskset", "-c", core, *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                env=dict(env) if env is not None else None,
            )
        proc = Proc(name, popen, log, self.patience)
        self.started.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.started:
            self.started.remove(proc)

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            proc.stop()
        self.started.clear()


def wait_tcp(proc: Proc, port: int, timeout_s: float = 20.0) -> None:
    timeout_s *= proc.patience
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _check_alive(proc)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{proc.name} did not listen on {port} within {timeout_s} s: see {proc.log}")


def wait_http_ok(proc: Proc, url: str, timeout_s: float = 30.0) -> None:
    timeout_s *= proc.patience
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _check_alive(proc)
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready at {url} within {timeout_s} s: see {proc.log}")


def _check_alive(proc: Proc) -> None:
    if not proc.alive():
        raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}: see {proc.log}")


def tree(pid: int) -> list[int]:
    """The process and all its live descendants: a helper process the proxy spawns counts too."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                pending.extend(int(child) for child in task.read_text().split())
    return found


def stat_times(stat: Path) -> tuple[float, float]:
    """(user, system) CPU seconds from a /proc stat file: a process's or a thread's
    (/proc/<pid>/task/<tid>/stat)."""
    text = stat.read_text()
    fields = text[text.rindex(")") + 2 :].split()
    # After the command name: state is field 3, utime field 14, stime field 15.
    return int(fields[11]) / _TICKS, int(fields[12]) / _TICKS


def _own_cpu_seconds(pid: int) -> float:
    return sum(stat_times(Path(f"/proc/{pid}/stat")))


@dataclass(frozen=True)
class CpuReading:
    """CPU a process tree has used so far; `later - earlier` is the seconds between.

    /proc/<pid>/stat counts in ticks (10 ms here): 100 sequential streams at ~0.6 ms
    are 6 ticks, and an A/B of a few per cent drowns in the rounding. Each thread's
    /proc/<pid>/task/<tid>/schedstat counts the same run time in nanoseconds, but only
    while the thread lives: the difference uses it when every thread of the first
    reading is still there (and the kernel has schedstat), the ticks otherwise.
    """

    ticks_s: float
    exact_s: float | None
    tasks: frozenset[tuple[int, int]]
    processes: int = 1

    def __sub__(self, earlier: CpuReading) -> float:
        coarse = self.ticks_s - earlier.ticks_s
        if self.exact_s is None or earlier.exact_s is None or not earlier.tasks <= self.tasks:
            return coarse
        fine = self.exact_s - earlier.exact_s
        # The ticks count every thread, the exited too, rounded down at each end: more
        # than a tick apart per process, a thread born and gone in between took its
        # nanoseconds with it.
        return (
            fine if abs(fine - coarse) < max(self.processes, earlier.processes) / _TICKS else coarse
        )


def _run_ns(pid: int) -> tuple[int | None, set[tuple[int, int]]]:
    """Nanoseconds the live threads of `pid` ran (None without schedstat), and them."""
    total: int | None = 0
    tasks = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        tasks.add((pid, int(task.name)))
        try:
            run_ns = int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            total = None
            continue
        total = None if total is None else total + run_ns
    return total, tasks


def cpu_seconds(pid: int) -> CpuReading:
    """utime + stime of the process tree (all threads), from /proc/<pid>/stat, and the
    same to the nanosecond from its threads' schedstat (see CpuReading)."""
    ticks, tasks, members = 0.0, set(), tree(pid)
    exact: int | None = 0
    for member in members:
        with contextlib.suppress(OSError):
            ticks += _own_cpu_seconds(member)
            member_ns, member_tasks = _run_ns(member)
            tasks |= member_tasks
            exact = None if exact is None or member_ns is None else exact + member_ns
    exact_s = None if exact is None else exact / 1e9
    return CpuReading(ticks, exact_s, frozenset(tasks), len(members))


def core_busy_seconds(core: str) -> float:
    """Non-idle time of one CPU core (all processes), from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, line.split()[1:9])
            return (user + nice + system + irq + softirq + steal) / _TICKS
    raise RuntimeError(f"no cpu{core} in /proc/stat")


def _own_memory_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} in /proc/{pid}/status")


def memory_mb(pid: int, key: str = "VmRSS") -> float:
    """A `kB` line of /proc/<pid>/status (VmRSS, VmHWM) in MB, summed over the process tree."""
    total = 0
    for member in tree(pid):
        with contextlib.suppress(OSError):
            total += _own_memory_kb(member, key)
    return total / 1024


def settle_cpu(pid: int, timeout_s: float = 3.0, quiet_s: float = 0.3) -> None:
    """Wait until the process stops burning CPU (its queues drained), bounded by `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = cpu_seconds(pid)
        if now - last < 1 / _TICKS + 1e-9:  # under a tick in `quiet_s`: idle
            return
        last = now
