#!/usr/bin/env bash
# `make bench`: install what the harness needs, then run it.
#   bash bench/run.sh            all configurations (env knobs: see bench/harness.py)
#   bash bench/run.sh profile    py-spy profile of spangate-full under wrk load
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
  echo "bench: installing nginx-light and wrk (Debian)" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx-light wrk
fi
command -v taskset >/dev/null || { echo "bench: taskset (util-linux) is required" >&2; exit 1; }
[ -x "$PY" ] || { echo "bench: no .venv; run 'make bench' (it creates it)" >&2; exit 1; }

# Bench-only tools go into the venv here; they are not project dependencies.
"$PY" -c "import matplotlib" 2>/dev/null || .venv/bin/pip install -q matplotlib
"$PY" -c "import rotel" 2>/dev/null || .venv/bin/pip install -q rotel
# spangate as `make run` serves it: its hot modules compiled (a no-op when up to date).
"$PY" -m proxy.native build
# LiteLLM (BENCH_LITELLM=1 or BENCH_CONFIGS=...,litellm) is not installed here: it needs a
# venv of its own, which bench/litellm.py creates on first use in bench/.litellm-venv/.

if [ "${1:-}" = "profile" ]; then
  [ -x .venv/bin/py-spy ] || .venv/bin/pip install -q py-spy
  exec "$PY" -m bench.profile
fi
exec "$PY" -m bench.harness
