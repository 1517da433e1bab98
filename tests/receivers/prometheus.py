"""A real Prometheus (Debian package) scraping spangate's /metrics for integration tests."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from receivers.process import ReceiverProcess
from receivers.rotel import free_port


class PrometheusServer(ReceiverProcess):
    def __init__(self, target: str, metrics_path: str = "/metrics") -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.skip("prometheus is not installed (make system-deps installs it)")
        self._binary = binary
        self._dir = tempfile.TemporaryDirectory(prefix="prometheus-")
        self.port = free_port()
        config = Path(self._dir.name) / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: spangate\n    metrics_path: {metrics_path}\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n"
        )
        self._config = config
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PrometheusServer:
        self._log = (Path(self._dir.name) / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                self._binary,
                f"--config.file={self._config}",
                f"--storage.tsdb.path={self._dir.name}/data",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        self.stop()  # do not leak the process (or its data directory) when start fails
        raise AssertionError("prometheus did not become ready")

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=5) as response:
            payload = json.load(response)
        assert payload["status"] == "success", payload
        result: list[dict[str, Any]] = payload["data"]["result"]
        return result

    def wait_for(self, expr: str, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(expr)
            if result:
                return result
            time.sleep(0.25)
        raise AssertionError(f"no series for {expr!r} within {timeout}s")
