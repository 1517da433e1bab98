"""deploy/prometheus/ checked by promtool (Debian's prometheus package): the alerting
rules parse, their unit tests pass (rules.test.yml: the error rate is per route), and
the compose stack's Prometheus config is valid."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "prometheus"


def promtool(*args: str, cwd: Path = DEPLOY) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool is not installed (make system-deps installs prometheus)")
    return subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_rules_parse() -> None:
    result = promtool("check", "rules", "rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass() -> None:
    result = promtool("test", "rules", "rules.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_per_route_error_rate_is_unit_tested() -> None:
    """The rule whose sum over all routes once diluted a failing route keeps its test."""
    tested = {
        case["alertname"]
        for test in yaml.safe_load((DEPLOY / "rules.test.yml").read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    }
    assert "SpangateHighErrorRate" in tested


def test_compose_prometheus_config_is_valid(tmp_path: Path) -> None:
    """prometheus.yml as the compose stack mounts it, with its rule file where the
    container has it (/etc/prometheus/rules.yml) pointed at the repository's copy."""
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules.yml"]
    config["rule_files"] = [str(DEPLOY / "rules.yml")]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    result = promtool("check", "config", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
