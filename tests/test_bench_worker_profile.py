"""`python -m bench.worker_profile` runs against the current record and processor types:
it builds records by hand, so a change to what a record reads (it broke once, when
records began reading the response's Content-Encoding) must fail here, not at the next
profiling."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("kind", ["chat", "stream"])
def test_the_worker_profile_processes_its_canned_records(kind: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.worker_profile", kind],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,  # a hang guard; the run takes a few seconds
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert re.match(rf"{kind}: \d+ µs per record", run.stdout), run.stdout
