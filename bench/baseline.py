"""`BENCH_BASELINE=<git revision>`: spangate-full as of that revision, in the same run.

This machine's speed drifts from day to day by more than most optimisations
are worth, so "faster than last week's table" proves nothing. Running the
older revision side by side does: the revision is checked out into a git
worktree under bench/work/ (reused across runs) and started exactly like
spangate-full, with the worktree as its working directory, so `python -m
proxy` imports that revision's code (same venv: dependencies are today's). A
revision with compiled modules (proxy/native.py) gets them built in its worktree, as
`make bench` builds the current ones, so that the two run alike.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bench.configs import Configuration, Running, Setup, full_telemetry, start_spangate
from bench.procs import REPO

ENV = "BENCH_BASELINE"


def configuration() -> Configuration | None:
    revision = os.environ.get(ENV, "").strip()
    if not revision:
        return None
    name = f"spangate-full@{_short(revision)}"

    def start(setup: Setup) -> Running:
        source = checkout(revision)
        upstream = f"http://127.0.0.1:{setup.upstream_port}"
        return start_spangate(
            setup.procs,
            name,
            upstream,
            full_telemetry(setup.otlp_port, setup.otlp_http_port),
            source=source,
        )

    return Configuration(name, f"spangate-full as of revision {revision}", start)


def checkout(revision: str) -> Path:
    """A detached worktree of `revision` under bench/work/ (created once)."""
    short = _short(revision)
    path = REPO / "bench" / "work" / f"baseline-{short}"
    if not (path / "proxy").is_dir():
        subprocess.run(
            ["git", "worktree", "add", "--detach", "--force", str(path), revision],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
    if (path / "proxy" / "native.py").is_file():
        subprocess.run([sys.executable, "-m", "proxy.native", "build"], cwd=path, check=True)
    return path


def _short(revision: str) -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", revision],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{ENV}={revision}: not a git revision here ({out.stderr.strip()})")
    return out.stdout.strip()
