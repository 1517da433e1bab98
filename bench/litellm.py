"""LiteLLM proxy as a comparison configuration (`BENCH_LITELLM=1` or `BENCH_CONFIGS=litellm`).

LiteLLM runs from its own venv, `bench/.litellm-venv/` (git-ignored, a few hundred MB),
created on first use with `python3 -m venv` + `pip install 'litellm[proxy]==VERSION'` and
reused afterwards; never the project's .venv. It is started like the other proxies: pinned
to the proxy core, bound to 127.0.0.1 on a free port, one uvicorn worker (in the process
we start, so its PID is the one doing the work), a generated config in the run's work dir
routing the benchmark's model to the same nginx upstream, no database, no callbacks, its
own telemetry off, logging quiet.

Streaming: the stream client sends `x-bench-stream: 1` so that nginx answers with SSE.
LiteLLM forwards a client's `x-*` headers upstream only with
`general_settings.forward_client_headers_to_llm_api: true`, which the generated config
sets; the request body already says `stream: true`, which LiteLLM turns into a streaming
upstream call and re-encodes chunk by chunk.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import canned
from bench.configs import Configuration, Running, Setup, clean_env
from bench.procs import PROXY_CORE, REPO, Procs, free_port, wait_http_ok

NAME = "litellm"
#: The newest release whose `[proxy]` extra resolves from the package registry reachable
#: here: 1.108.10 and later pin litellm-enterprise / litellm-proxy-extras / litellm-proxy
#: releases that are not published on it.
VERSION = "1.108.0"
VENV = REPO / "bench" / ".litellm-venv"
_PYTHON = VENV / "bin" / "python"
_EXECUTABLE = VENV / "bin" / "litellm"
#: Creating the venv downloads a few hundred MB; bounded all the same.
_INSTALL_TIMEOUT_S = 900.0
#: LiteLLM imports a lot before it listens: 10-30 s is usual on this machine.
_READY_TIMEOUT_S = 120.0


def installed_version() -> str | None:
    """The litellm version in bench/.litellm-venv, or None when there is none (or it is broken)."""
    if not _PYTHON.exists() or not _EXECUTABLE.exists():
        return None
    probe = "from importlib.metadata import version; print(version('litellm'))"
    try:
        out = subprocess.run(
            [str(_PYTHON), "-c", probe], capture_output=True, text=True, timeout=60, check=False
        )
    except subprocess.TimeoutExpired:
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def ensure_venv(workdir: Path, log: Callable[[str], None]) -> str:
    """bench/.litellm-venv with litellm[proxy]==VERSION in it; creates or fixes it if needed."""
    found = installed_version()
    if found == VERSION:
        log(f"LiteLLM {found}: reusing {VENV.relative_to(REPO)}")
        return found
    python3 = shutil.which("python3")
    if python3 is None:
        raise RuntimeError("LiteLLM: python3 not found on PATH, cannot create its venv")
    install_log = workdir / "litellm-install.log"
    what = "creating" if found is None else f"replacing litellm {found} in"
    log(
        f"LiteLLM: {what} {VENV.relative_to(REPO)} and installing 'litellm[proxy]=={VERSION}' "
        f"(a few hundred MB, ~1 min; pip output in {install_log})"
    )
    steps = [[python3, "-m", "venv", str(VENV)]] if not _PYTHON.exists() else []
    steps.append(
        [str(_PYTHON), "-m", "pip", "install", "--quiet", f"litellm[proxy]=={VERSION}"],
    )
    deadline = time.monotonic() + _INSTALL_TIMEOUT_S
    with install_log.open("ab") as out:
        for argv in steps:
            try:
                done = subprocess.run(
                    argv,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    timeout=max(deadline - time.monotonic(), 1.0),
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise RuntimeError(
                    f"LiteLLM install timed out after {_INSTALL_TIMEOUT_S:g} s: {' '.join(argv)}; "
                    f"see {install_log}"
                ) from exc
            if done.returncode != 0:
                raise RuntimeError(
                    f"LiteLLM install failed (exit {done.returncode}): {' '.join(argv)}\n"
                    f"{_tail(install_log)}\nfull output: {install_log}"
                )
    found = installed_version()
    if found != VERSION:
        raise RuntimeError(
            f"LiteLLM install finished but {_PYTHON} reports litellm {found!r}, "
            f"expected {VERSION}; see {install_log}"
        )
    log(f"LiteLLM {found} installed in {VENV.relative_to(REPO)}")
    return found


def _tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace").splitlines()
    # pip repeats a warning for every missing local index directory: keep the rest.
    kept = [line for line in text if not line.startswith("WARNING: Location ")]
    return "\n".join(kept[-lines:])


def proxy_config(upstream_port: int) -> dict[str, Any]:
    """One model, the benchmark's, routed to the nginx upstream; nothing else switched on."""
    return {
        "model_list": [
            {
                "model_name": canned.MODEL,
                "litellm_params": {
                    "model": f"openai/{canned.MODEL}",
                    "api_base": f"http://127.0.0.1:{upstream_port}/v1",
                    "api_key": "sk-bench-upstream-not-a-key",
                },
            }
        ],
        "litellm_settings": {
            "drop_params": True,
            "set_verbose": False,
            "callbacks": [],
            "success_callback": [],
            "failure_callback": [],
        },
        "general_settings": {
            # LiteLLM refuses to start without one; it is the bearer token the load clients
            # send, so every request goes through LiteLLM's key check, as in a deployment.
            "master_key": canned.CLIENT_KEY,
            # Forwards the client's x-* headers upstream: x-bench-stream makes nginx stream.
            "forward_client_headers_to_llm_api": True,
        },
    }


def _env() -> dict[str, str]:
    drop = ("DATABASE_URL", "LITELLM_MASTER_KEY", "REDIS_HOST", "REDIS_URL", "VIRTUAL_ENV")
    env = {k: v for k, v in clean_env().items() if k not in drop}
    return {
        **env,
        "LITELLM_LOG": "ERROR",
        # No fetch of the model price list from the internet at startup: use the bundled one.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY_DISABLED": "true",
        "LITELLM_DONT_SHOW_FEEDBACK_BOX": "true",
        "NO_DOCS": "True",
        "DISABLE_ADMIN_UI": "True",
    }


def start(procs: Procs, upstream_port: int) -> Running:
    if not _EXECUTABLE.exists():
        raise RuntimeError(f"LiteLLM is not installed in {VENV} (the harness installs it first)")
    port = free_port()
    path = procs.workdir / f"{NAME}.yaml"
    path.write_text(json.dumps(proxy_config(upstream_port), indent=2))  # JSON is YAML
    argv = [str(_EXECUTABLE), "--config", str(path), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--num_workers", "1"]
    proc = procs.start(NAME, argv, PROXY_CORE, env=_env())
    started = time.monotonic()
    try:
        wait_http_ok(proc, f"http://127.0.0.1:{port}/health/readiness", _READY_TIMEOUT_S)
    except RuntimeError as exc:
        raise RuntimeError(f"LiteLLM did not start: {exc}") from exc
    ready_s = time.monotonic() - started
    (procs.workdir / f"{NAME}.ready").write_text(f"ready after {ready_s:.1f} s, pid {proc.pid}\n")
    return Running(NAME, f"http://127.0.0.1:{port}", proc)


def _start(setup: Setup) -> Running:
    return start(setup.procs, setup.upstream_port)


CONFIGURATION = Configuration(
    NAME,
    f"LiteLLM proxy {VERSION} (own venv, one uvicorn worker, no database or callbacks), "
    "same upstream",
    _start,
)


def wanted() -> bool:
    """BENCH_LITELLM=1 adds the configuration to any run."""
    return os.environ.get("BENCH_LITELLM") == "1"
