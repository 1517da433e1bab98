"""Command line: `spangate serve`, `spangate check-config FILE`, `spangate --version`."""

from __future__ import annotations

import argparse
import json
import os
import sys

import msgspec

from instrumentation.logging import configure_logging, redactor_for
from proxy import __version__
from proxy.config import ConfigError, load_config
from proxy.listeners import check_listeners
from proxy.runtime import RuntimeConfig, compile_config, describe, port_problem


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spangate", description="OpenTelemetry-first sidecar proxy for LLM APIs"
    )
    parser.add_argument("--version", action="version", version=f"spangate {__version__}")
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="run the proxy (the default command)")
    serve.add_argument(
        "--config", help="YAML config file (default: $SPANGATE_CONFIG, else embedded)"
    )
    serve.add_argument("--host", help="listen address (overrides server.host)")
    serve.add_argument(
        "--port", type=_port, help="listen port (overrides server.port; 0 = any free)"
    )
    serve.add_argument(
        "--workers",
        type=_worker_count,
        help="processes sharing the port, Linux SO_REUSEPORT "
        "(default: $SPANGATE_WORKERS, else server.workers, else 1)",
    )
    check = commands.add_parser("check-config", help="validate a config file and print it resolved")
    check.add_argument("file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check-config":
        return _check(args.file)
    return _serve(
        getattr(args, "config", None),
        getattr(args, "host", None),
        getattr(args, "port", None),
        getattr(args, "workers", None),
    )


def _worker_count(text: str) -> int:
    """argparse type for --workers (and the check for SPANGATE_WORKERS): a whole number >= 1."""
    try:
        count = int(text)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return count


def _port(text: str) -> int:
    """argparse type for --port: the range and message of server.port (runtime._check_ports);
    a port past 65535 would otherwise reach the bind, which wraps it or picks any."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    problem = port_problem(port)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return port


def _load(path: str | None) -> RuntimeConfig:
    return compile_config(load_config(path))


def _check(path: str) -> int:
    try:
        runtime = _load(path)
    except ConfigError as exc:
        print(f"spangate: config error in {path}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(describe(runtime), indent=2))
    return 0


def _serve(path: str | None, host: str | None, port: int | None, workers: int | None) -> int:
    path = path or os.environ.get("SPANGATE_CONFIG") or None
    source = path or "embedded default"
    try:
        runtime = _load(path)
    except ConfigError as exc:
        print(f"spangate: config error in {source}: {exc}", file=sys.stderr)
        return 1
    runtime = _override_listen(runtime, host, port)
    try:
        count = _workers(workers, runtime)
    except argparse.ArgumentTypeError as exc:
        print(f"spangate: SPANGATE_WORKERS {exc}", file=sys.stderr)
        return 1
    try:
        # Again, now with --port, --host and --workers: compile_config saw the file's.
        check_listeners(runtime.config, count)
    except ConfigError as exc:
        print(f"spangate: config error in {source}: {exc}", file=sys.stderr)
        return 1
    configure_logging(redactor_for(runtime.config))
    if count > 1:
        from proxy.workers import supervise

        return supervise(runtime, path, source, count)
    from proxy.serve import serve

    return serve(runtime, source)


def _workers(flag: int | None, runtime: RuntimeConfig) -> int:
    """--workers, else $SPANGATE_WORKERS, else server.workers."""
    if flag is not None:
        return flag
    env = os.environ.get("SPANGATE_WORKERS")
    if env:
        return _worker_count(env)
    return runtime.config.server.workers


def _override_listen(runtime: RuntimeConfig, host: str | None, port: int | None) -> RuntimeConfig:
    server = runtime.config.server
    server = msgspec.structs.replace(
        server,
        host=host if host is not None else server.host,
        port=port if port is not None else server.port,
    )
    config = msgspec.structs.replace(runtime.config, server=server)
    return msgspec.structs.replace(runtime, config=config)
