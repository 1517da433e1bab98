"""deploy/k8s/sidecar.yaml read as Kubernetes would run it: every probe must reach a
listener the config actually opens where the kubelet looks (the pod IP for httpGet and
tcpSocket, inside the container for exec), and the exec probes' command is run for
real against spangate."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import spangate_thread
from receivers.rotel import free_port

from proxy.appkeys import STATE
from proxy.config import parse_config

SIDECAR = Path(__file__).resolve().parent.parent / "deploy" / "k8s" / "sidecar.yaml"
PROBES = ("readinessProbe", "livenessProbe", "startupProbe")


def manifests() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(SIDECAR.read_text()) if doc]


def spangate_config() -> dict[str, Any]:
    (configmap,) = [m for m in manifests() if m["kind"] == "ConfigMap"]
    config: dict[str, Any] = yaml.safe_load(configmap["data"]["spangate.yaml"])
    return config


def pod_spec() -> dict[str, Any]:
    (deployment,) = [m for m in manifests() if m["kind"] == "Deployment"]
    spec: dict[str, Any] = deployment["spec"]["template"]
    return spec


def spangate_container() -> dict[str, Any]:
    (container,) = [c for c in pod_spec()["spec"]["containers"] if c["name"] == "spangate"]
    found: dict[str, Any] = container
    return found


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listeners(config: dict[str, Any]) -> dict[int, tuple[str, frozenset[str] | None]]:
    """port -> (bound host, the paths it serves; None: any) for what the config opens."""
    server = config["server"]
    opened: dict[int, tuple[str, frozenset[str] | None]] = {server["port"]: (server["host"], None)}
    prometheus = config.get("telemetry", {}).get("prometheus", {})
    if prometheus.get("port") is not None:
        opened[prometheus["port"]] = (
            prometheus.get("host", server["host"]),
            frozenset({"/metrics"}),
        )
    return opened


def unreachable_from_pod_ip(probe: dict[str, Any], config: dict[str, Any]) -> str | None:
    """Why the kubelet's httpGet/tcpSocket `probe` would find nothing, or None. The
    kubelet connects to the pod IP (or `host`, a node-side address): a listener bound
    to loopback inside the pod cannot answer it."""
    check = probe.get("httpGet") or probe.get("tcpSocket")
    if check is None:
        return None
    if "host" in check:
        return f"host {check['host']!r}: not the pod's address"
    opened = listeners(config)
    port = check["port"]
    if port not in opened:
        return f"nothing listens on {port}"
    host, paths = opened[port]
    if loopback(host):
        return f"port {port} is bound to {host}, which the pod IP does not reach"
    if "httpGet" in probe and paths is not None and probe["httpGet"]["path"] not in paths:
        return f"port {port} serves only {sorted(paths)}"
    return None


def test_the_sidecar_config_is_valid() -> None:
    parse_config(spangate_config(), {})


def test_no_probe_targets_a_listener_the_pod_ip_cannot_reach() -> None:
    config = spangate_config()
    container = spangate_container()
    for name in PROBES:
        if name in container:
            assert unreachable_from_pod_ip(container[name], config) is None, name


def test_the_check_itself_flags_the_loopback_httpget() -> None:
    """The manifest's old probes (httpGet to the loopback-bound main port, or to the
    metrics port's /readyz) are what the check above refuses."""
    config = spangate_config()
    port = config["server"]["port"]
    metrics = config["telemetry"]["prometheus"]["port"]

    def get(path: str, port: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": port}}

    assert unreachable_from_pod_ip(get("/readyz", port), config)
    assert unreachable_from_pod_ip({"tcpSocket": {"port": port}}, config)
    assert unreachable_from_pod_ip(get("/readyz", metrics), config)
    assert unreachable_from_pod_ip(get("/metrics", metrics), config) is None


def test_exec_probes_ask_the_configured_listener_inside_the_container() -> None:
    config = spangate_config()
    address = f"{config['server']['host']}:{config['server']['port']}"
    container = spangate_container()
    paths = {}
    for name in ("readinessProbe", "livenessProbe"):
        command = container[name]["exec"]["command"]
        assert command[0] == "python"  # the image's (python:3.11-slim)
        assert command[-2] == address, name
        paths[name] = command[-1]
        assert container[name].get("timeoutSeconds", 1) >= 2, "the check's own timeout is 2 s"
    assert paths == {"readinessProbe": "/readyz", "livenessProbe": "/healthz"}


def test_scrape_annotation_names_a_listener_reachable_from_outside() -> None:
    annotations = pod_spec()["metadata"]["annotations"]
    probe = {"httpGet": {"path": annotations["prometheus.io/path"],
                         "port": int(annotations["prometheus.io/port"])}}  # fmt: skip
    assert unreachable_from_pod_ip(probe, spangate_config()) is None


def run_probe(name: str, address: str) -> int:
    """The manifest's exec probe `name`, run as the kubelet would, aimed at `address`."""
    command = list(spangate_container()[name]["exec"]["command"])
    command[0], command[-2] = sys.executable, address
    return subprocess.run(command, capture_output=True, timeout=30, check=False).returncode


@pytest.mark.parametrize("name", ["readinessProbe", "livenessProbe"])
def test_exec_probe_passes_against_a_running_spangate(name: str) -> None:
    with spangate_thread(spangate_config()) as server:
        assert run_probe(name, f"127.0.0.1:{server.port}") == 0


def test_readiness_fails_while_draining_and_liveness_still_passes() -> None:
    with spangate_thread(spangate_config()) as server:
        server.app[STATE].draining = True
        address = f"127.0.0.1:{server.port}"
        assert run_probe("readinessProbe", address) != 0
        assert run_probe("livenessProbe", address) == 0


def test_exec_probes_fail_when_nothing_listens() -> None:
    address = f"127.0.0.1:{free_port()}"
    assert run_probe("readinessProbe", address) != 0
    assert run_probe("livenessProbe", address) != 0
