"""Run spangate for tests: in a background thread (same process, so in-memory
telemetry readers work and sync SDK clients don't block a test's loop), or as a
real subprocess (signals, exporters, the CLI)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from proxy.app import create_app
from proxy.config import parse_config
from proxy.runtime import RuntimeConfig, compile_config

REPO = Path(__file__).resolve().parent.parent


def runtime_for(config: dict[str, Any], env: dict[str, str] | None = None) -> RuntimeConfig:
    return compile_config(parse_config(config, env or {}))


class SpangateThread:
    """create_app() served on 127.0.0.1:0 by a loop in its own thread."""

    def __init__(self, runtime: RuntimeConfig, app: web.Application | None = None) -> None:
        self.app = app if app is not None else create_app(runtime)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner = web.AppRunner(self.app, handler_cancellation=True, access_log=None)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SpangateThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        from proxy.appkeys import STATE

        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.app[STATE].ready = True

    def stop(self) -> None:
        try:
            leaked = asyncio.run_coroutine_threadsafe(self._cleanup(), self._loop).result(30)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
        # Every test checks the pool too: a response some path never released would
        # hold its connection slot for good (the pool would run dry in production).
        assert leaked == 0, f"{leaked} upstream connection(s) never released"

    async def _cleanup(self) -> int:
        from proxy.appkeys import UPSTREAM

        await self._runner.cleanup()
        return self.app[UPSTREAM].in_use

    def __enter__(self) -> SpangateThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def spangate_thread(config: dict[str, Any]) -> Iterator[SpangateThread]:
    with SpangateThread(runtime_for(config)) as server:
        yield server


class SpangateProcess:
    """`python -m proxy serve` with a config file, listening on a free port."""

    def __init__(
        self,
        config: dict[str, Any],
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="spangate-test-")
        self.config_path = Path(self._dir.name) / "spangate.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.stdout_path = Path(self._dir.name) / "stdout.log"
        self._env = {**os.environ, **(env or {})}
        self._args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 20) -> SpangateProcess:
        self._stdout = self.stdout_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "proxy",
                "serve",
                "--config",
                str(self.config_path),
                "--port",
                "0",
                *self._args,
            ],
            stdout=self._stdout,
            stderr=subprocess.STDOUT,
            env=self._env,
            cwd=REPO,
            # Its own process group: a test can signal spangate's whole group (as a
            # terminal's Ctrl-C does) without reaching pytest.
            start_new_session=True,
        )
        ready = self.wait_for_log("spangate.ready", timeout)
        self.url = ready["address"]
        return self

    def logs(self) -> list[dict[str, Any]]:
        lines = self.stdout_path.read_bytes().splitlines()
        out = []
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"event": "<non-json>", "raw": line.decode("utf-8", "replace")})
        return out

    def raw_output(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def wait_for_log(self, event: str, timeout: float = 20) -> dict[str, Any]:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in self.logs():
                if entry.get("event") == event:
                    return entry
            assert self.proc is not None
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {event!r} log line; output:\n{self.raw_output()}")

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stdout.close()
        self._dir.cleanup()

    def __enter__(self) -> SpangateProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
