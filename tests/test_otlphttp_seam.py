"""instrumentation/otlphttp.py without the SDK's private transport module
(`opentelemetry.exporter.http.transport._base`): it still imports, and hands the
exporters nothing, so they keep the SDK's own transport."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from instrumentation import otlphttp

URL = "http://127.0.0.1:9/v1/traces"

# An exporter class with the SDK's seam (`_transport`), as transport_kwargs sees one.
_CHECK = """
import sys
if sys.argv[1] == "absent":
    sys.modules["opentelemetry.exporter.http.transport._base"] = None  # import fails
from instrumentation import otlphttp

class Exporter:
    def __init__(self, *, endpoint=None, _transport=None):
        pass

print(otlphttp.SEAM, sorted(otlphttp.transport_kwargs(Exporter, "traces", sys.argv[2], {})))
"""


def check(module: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", _CHECK, module, URL],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    return out.stdout.strip()


def test_without_the_seam_module_the_sdks_transport_stays() -> None:
    assert check("absent") == "False []"


def test_with_the_seam_module_spangates_transport_is_passed() -> None:
    assert check("present") == "True ['_transport']"
    assert otlphttp.SEAM
