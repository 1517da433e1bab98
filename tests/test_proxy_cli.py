"""The command line as a real subprocess: `python -m proxy --version | check-config | serve`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import REPO
from receivers.rotel import free_port

from proxy import __version__

GOOD_CONFIG: dict[str, Any] = {
    "providers": {
        "openai": {
            "kind": "openai",
            "base_url": "http://127.0.0.1:9/",
            "api_key": "${SPANGATE_CLI_TEST_KEY}",
        },
        "anthropic": {"kind": "anthropic", "base_url": "http://127.0.0.1:9"},
        "azure-eu": {
            "kind": "azure_openai",
            "base_url": "https://myres.openai.azure.com",
            "api_version": "2024-10-21",
        },
    },
    "models": {
        "fast": {
            "targets": [
                {"provider": "openai", "model": "gpt-4o-mini"},
                {"provider": "azure-eu", "model": "gpt4o-deploy"},
            ]
        },
        "claude": {"targets": [{"provider": "anthropic", "model": "claude-sonnet-4-6"}]},
    },
}
SECRET = "sk-cli-test-secret-9f8e7d"


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without SPANGATE_CONFIG or OTEL_* settings, plus `extra`."""
    env = {
        k: v for k, v in os.environ.items() if k != "SPANGATE_CONFIG" and not k.startswith("OTEL_")
    }
    return {**env, **extra}


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "proxy", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env if env is not None else clean_env(),
        timeout=60,
        check=False,
    )


def write_config(tmp_path: Path, config: Any, name: str = "spangate.yaml") -> Path:
    path = tmp_path / name
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    return path


def assert_no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text
        assert 'File "' not in text


# --------------------------------------------------------------------------- --version


def test_version_prints_the_package_version() -> None:
    """`--version` prints `spangate <version>` and exits 0."""
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"spangate {__version__}"


# --------------------------------------------------------------------------- check-config


def test_check_config_prints_resolved_providers_and_models(tmp_path: Path) -> None:
    """check-config on a valid file prints providers and aliases (no secrets) and exits 0."""
    path = write_config(tmp_path, GOOD_CONFIG)
    result = run_cli("check-config", str(path), env=clean_env(SPANGATE_CLI_TEST_KEY=SECRET))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    described = json.loads(result.stdout)
    assert set(described["providers"]) == {"openai", "anthropic", "azure-eu"}
    assert described["providers"]["openai"]["base_url"] == "http://127.0.0.1:9"
    assert described["providers"]["openai"]["api_key"] == "configured"
    assert described["providers"]["anthropic"]["api_key"] == "forwarded from client"
    assert described["providers"]["azure-eu"]["kind"] == "azure_openai"
    assert described["models"]["fast"]["targets"] == ["openai/gpt-4o-mini", "azure-eu/gpt4o-deploy"]
    assert described["models"]["claude"]["targets"] == ["anthropic/claude-sonnet-4-6"]
    assert SECRET not in result.stdout


def test_check_config_names_an_unknown_provider_by_key(tmp_path: Path) -> None:
    """A target naming an unknown provider: exit 1, message with the exact key path."""
    config = {
        "providers": {
            "openai": {"kind": "openai", "base_url": "https://api.openai.com"},
            "anthropic": {"kind": "anthropic", "base_url": "https://api.anthropic.com"},
        },
        "models": {
            "gpt-4o": {
                "targets": [
                    {"provider": "openai", "model": "gpt-4o"},
                    {"provider": "azure-eu", "model": "gpt-4o"},
                ]
            }
        },
    }
    result = run_cli("check-config", str(write_config(tmp_path, config)))
    assert result.returncode == 1
    assert (
        "models.gpt-4o.targets[1].provider: unknown provider 'azure-eu' (known: anthropic, openai)"
        in result.stderr
    )
    assert result.stdout == ""
    assert_no_traceback(result.stderr)


def test_check_config_names_a_missing_environment_variable(tmp_path: Path) -> None:
    """`${VAR}` without a default and VAR unset: exit 1, naming the variable and the key."""
    path = write_config(tmp_path, GOOD_CONFIG)
    result = run_cli("check-config", str(path))  # SPANGATE_CLI_TEST_KEY is not set
    assert result.returncode == 1
    assert "SPANGATE_CLI_TEST_KEY" in result.stderr
    assert "providers.openai.api_key" in result.stderr
    assert_no_traceback(result.stderr)


def test_check_config_uses_the_default_of_an_unset_variable(tmp_path: Path) -> None:
    """`${VAR:-default}` with VAR unset takes the default; `$$` is a literal dollar."""
    config = {
        "providers": {
            "openai": {
                "kind": "openai",
                "base_url": "${SPANGATE_CLI_TEST_URL:-http://127.0.0.1:8000}",
                "headers": {"x-price": "$$5"},
            }
        }
    }
    result = run_cli("check-config", str(write_config(tmp_path, config)))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["providers"]["openai"]["base_url"] == "http://127.0.0.1:8000"


def test_check_config_refuses_an_unclosed_env_reference_in_an_api_key(tmp_path: Path) -> None:
    """`"${OPENAI_API_KEY"` (no closing brace) used to be sent upstream as the key: it
    is a config error naming the key and quoting the reference, never the variable."""
    config = {"providers": {"o": {"kind": "openai", "base_url": "http://a"}}}
    config["providers"]["o"]["api_key"] = "${SPANGATE_CLI_TEST_KEY"
    path = write_config(tmp_path, config)
    result = run_cli("check-config", str(path), env=clean_env(SPANGATE_CLI_TEST_KEY=SECRET))
    assert result.returncode == 1
    assert "providers.o.api_key: '${SPANGATE_CLI_TEST_KEY' is not closed" in result.stderr
    assert SECRET not in result.stderr
    assert_no_traceback(result.stderr)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
    ],
)
def test_check_config_and_serve_refuse_a_bad_otlp_setting_from_the_environment(
    tmp_path: Path, variable: str, value: str
) -> None:
    """A scheme-less OTLP endpoint or an unknown protocol in the environment stops
    check-config and serve with an error naming the variable, as the config keys do."""
    path = write_config(tmp_path, {"providers": {"o": {"kind": "openai", "base_url": "http://a"}}})
    for args in (("check-config", str(path)), ("serve", "--config", str(path), "--port", "0")):
        result = run_cli(*args, env=clean_env(**{variable: value}))
        assert result.returncode == 1
        assert f"{variable} (environment variable): " in result.stderr
        assert "spangate.ready" not in result.stdout
        assert_no_traceback(result.stdout, result.stderr)


def test_check_config_rejects_an_alias_mixing_wire_formats(tmp_path: Path) -> None:
    """An alias with OpenAI and Anthropic targets: exit 1, naming the alias."""
    config = {
        "providers": {
            "openai": {"kind": "openai", "base_url": "https://api.openai.com"},
            "anthropic": {"kind": "anthropic", "base_url": "https://api.anthropic.com"},
        },
        "models": {
            "mixed": {
                "targets": [
                    {"provider": "openai", "model": "gpt-4o"},
                    {"provider": "anthropic", "model": "claude-sonnet-4-6"},
                ]
            }
        },
    }
    result = run_cli("check-config", str(write_config(tmp_path, config)))
    assert result.returncode == 1
    assert "models.mixed.targets" in result.stderr
    assert_no_traceback(result.stderr)


def test_check_config_on_a_missing_file_says_so(tmp_path: Path) -> None:
    """A path that does not exist: exit 1 with `cannot read config file`."""
    result = run_cli("check-config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 1
    assert "cannot read config file" in result.stderr
    assert_no_traceback(result.stderr)


def _metrics_on(server_port: int, metrics_port: int) -> dict[str, Any]:
    return {
        "providers": {"o": {"kind": "openai", "base_url": "http://a"}},
        "server": {"port": server_port},
        "telemetry": {"prometheus": {"port": metrics_port}},
    }


def test_check_config_refuses_a_metrics_port_that_is_the_server_port(tmp_path: Path) -> None:
    """telemetry.prometheus.port equal to server.port (same host) used to pass check-config
    and then stop `serve` with a bind error: exit 1, naming both keys."""
    result = run_cli("check-config", str(write_config(tmp_path, _metrics_on(9464, 9464))))
    assert result.returncode == 1
    assert "telemetry.prometheus.port: 9464 is server.port too" in result.stderr
    assert result.stdout == ""
    assert_no_traceback(result.stderr)


@pytest.mark.parametrize(
    ("server_host", "metrics_host"),
    [("localhost", "127.0.0.1"), ("0.0.0.0", "127.0.0.1")],
    ids=["name-and-its-address", "wildcard"],
)
def test_check_config_refuses_a_metrics_port_on_the_server_port_of_an_address_both_bind(
    tmp_path: Path, server_host: str, metrics_host: str
) -> None:
    """Hosts written differently that bind one address (a name and what it resolves to,
    a wildcard and an address it covers) on one port: exit 1, naming both keys and the
    hosts, before serve would fail to bind."""
    config = _metrics_on(9464, 9464)
    config["server"]["host"] = server_host
    config["telemetry"]["prometheus"]["host"] = metrics_host
    result = run_cli("check-config", str(write_config(tmp_path, config)))
    assert result.returncode == 1
    assert "telemetry.prometheus.port: 9464 is server.port too" in result.stderr
    assert f"server.host {server_host!r}, telemetry.prometheus.host {metrics_host!r}" in (
        result.stderr
    )
    assert result.stdout == ""
    assert_no_traceback(result.stderr)


@pytest.mark.parametrize("flag", ["--port", "--workers"])
def test_serve_refuses_a_metrics_port_the_flags_put_on_the_server_port(
    tmp_path: Path, flag: str
) -> None:
    """`--port`, or `--workers` (worker i serves /metrics on telemetry.prometheus.port + i),
    can make a config that check-config passed collide: serve refuses it as a config
    error naming both keys, before it binds anything, instead of failing on a listener."""
    port = free_port()
    if flag == "--port":
        config, args = _metrics_on(4000, port), ("--port", str(port))
    else:
        config, args = _metrics_on(port + 1, port), ("--workers", "2")
    path = write_config(tmp_path, config)
    assert run_cli("check-config", str(path)).returncode == 0
    result = run_cli("serve", "--config", str(path), *args)
    assert result.returncode == 1
    assert result.stderr.startswith("spangate: config error")
    assert "telemetry.prometheus.port: " in result.stderr
    assert "server.port" in result.stderr
    assert "spangate.ready" not in result.stdout
    assert_no_traceback(result.stdout, result.stderr)


# --------------------------------------------------------------------------- serve


INVALID_CONFIGS = {
    "unknown-key": {"providers": {"o": {"kind": "openai", "base_url": "http://a"}}, "bogus": 1},
    "unknown-kind": {"providers": {"o": {"kind": "nope", "base_url": "http://a"}}},
    "bad-base-url": {"providers": {"o": {"kind": "openai", "base_url": "ftp://a"}}},
    "azure-without-version": {"providers": {"a": {"kind": "azure_openai", "base_url": "http://a"}}},
    "no-providers": {"providers": {}},
    "not-yaml": "providers: [unclosed\n",
    "not-a-mapping": "- just\n- a list\n",
    # Each used to pass check-config and then stop `serve` with a traceback (re.error).
    "bad-redact-pattern": {
        "providers": {"o": {"kind": "openai", "base_url": "http://a"}},
        "telemetry": {"redact_patterns": ["([a-z"]},
    },
    # Used to be accepted, and sampled every request as if unset.
    "unknown-sampler": {
        "providers": {"o": {"kind": "openai", "base_url": "http://a"}},
        "telemetry": {"traces_sampler": "bogus"},
    },
    # Used to be accepted, and every export then failed with an SDK error in the log.
    "schemeless-otlp-endpoint": {
        "providers": {"o": {"kind": "openai", "base_url": "http://a"}},
        "telemetry": {"otlp_endpoint": "collector:4317"},
    },
    # Both used to stop check-config and serve with a ValueError traceback (urlsplit).
    "unclosed-ipv6-base-url": {"providers": {"o": {"kind": "openai", "base_url": "http://[::1"}}},
    "bad-ipv6-base-url": {"providers": {"o": {"kind": "openai", "base_url": "http://[zz]"}}},
    # Used to be accepted and ignored: /metrics stayed on the main listener.
    "prometheus-host-without-port": {
        "providers": {"o": {"kind": "openai", "base_url": "http://a"}},
        "telemetry": {"prometheus": {"host": "0.0.0.0"}},
    },
}
EXPECTED_KEY = {
    "unknown-key": "bogus",
    "unknown-kind": "providers.o.kind",
    "bad-base-url": "providers.o.base_url",
    "azure-without-version": "providers.a.api_version",
    "no-providers": "providers",
    "not-yaml": "YAML",
    "not-a-mapping": "mapping",
    "bad-redact-pattern": "telemetry.redact_patterns[0]",
    "unknown-sampler": "telemetry.traces_sampler",
    "schemeless-otlp-endpoint": "telemetry.otlp_endpoint",
    "prometheus-host-without-port": "telemetry.prometheus.host",
    "unclosed-ipv6-base-url": "providers.o.base_url",
    "bad-ipv6-base-url": "providers.o.base_url",
}


@pytest.mark.parametrize("case", sorted(INVALID_CONFIGS))
def test_serve_with_an_invalid_config_exits_nonzero_without_traceback(
    tmp_path: Path, case: str
) -> None:
    """`serve --config BAD` exits non-zero with a one-line reason naming the key; no traceback."""
    path = write_config(tmp_path, INVALID_CONFIGS[case])
    result = run_cli("serve", "--config", str(path), "--port", "0")
    assert result.returncode != 0
    assert_no_traceback(result.stdout, result.stderr)
    assert result.stderr.startswith("spangate: config error")
    assert EXPECTED_KEY[case] in result.stderr
    assert "spangate.ready" not in result.stdout


@pytest.mark.parametrize("base_url", ["http://[::1", "http://[zz]"])
def test_check_config_refuses_a_bad_ipv6_base_url_at_its_key(tmp_path: Path, base_url: str) -> None:
    """An unclosed or invalid bracketed host is a config error naming the key and saying
    how to write an IPv6 address, with no traceback; `serve --workers 2` refuses it too."""
    path = write_config(tmp_path, {"providers": {"o": {"kind": "openai", "base_url": base_url}}})
    for args in (("check-config", str(path)), ("serve", "--config", str(path), "--workers", "2")):
        result = run_cli(*args)
        assert result.returncode == 1
        assert_no_traceback(result.stdout, result.stderr)
        assert "providers.o.base_url: " in result.stderr
        assert "IPv6 address must be a valid address in closed brackets" in result.stderr
        assert "spangate.ready" not in result.stdout


@pytest.mark.parametrize("port", ["65536", "99999", "-1", "4000x"])
def test_serve_refuses_a_port_flag_out_of_range_before_loading_anything(port: str) -> None:
    """`--port` outside 0..65535 (or not a number) is refused with server.port's message,
    instead of serving on a wrapped or random port."""
    result = run_cli("serve", "--port", port)
    assert result.returncode == 2
    assert_no_traceback(result.stdout, result.stderr)
    expected = "must be a whole number" if port == "4000x" else "must be between 0 and 65535"
    assert f"argument --port: {expected}" in result.stderr
    assert "spangate.ready" not in result.stdout


@contextmanager
def serving(tmp_path: Path, *args: str, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m proxy serve ARGS` with stdout+stderr in tmp_path/out.log; SIGTERM on exit."""
    with (tmp_path / "out.log").open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def wait_for_event(proc: subprocess.Popen[bytes], log: Path, event: str) -> dict[str, Any]:
    """The first JSON log line with this event (bounded wait; fails if the process exits)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        for line in log.read_bytes().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("event") == event:
                return entry
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"no {event!r} line; output:\n{log.read_text(errors='replace')}")


def test_serve_without_config_uses_the_embedded_default(tmp_path: Path) -> None:
    """`serve --port 0` with no config logs spangate.ready with config "embedded default"."""
    with serving(tmp_path, "--port", "0", env=clean_env()) as proc:
        ready = wait_for_event(proc, tmp_path / "out.log", "spangate.ready")
        assert ready["config"] == "embedded default"
        assert ready["address"].startswith("http://127.0.0.1:")
        assert not ready["address"].endswith(":0")
        with urllib.request.urlopen(ready["address"] + "/healthz", timeout=10) as resp:
            assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    output = (tmp_path / "out.log").read_text()
    assert_no_traceback(output)
    assert '"spangate.stopped"' in output


def test_serve_reads_spangate_config_from_the_environment(tmp_path: Path) -> None:
    """With no --config, SPANGATE_CONFIG names the file; the ready line says which."""
    path = write_config(
        tmp_path, {"providers": {"local": {"kind": "openai", "base_url": "http://127.0.0.1:9"}}}
    )
    with serving(tmp_path, "--port", "0", env=clean_env(SPANGATE_CONFIG=str(path))) as proc:
        ready = wait_for_event(proc, tmp_path / "out.log", "spangate.ready")
        assert ready["config"] == str(path)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
