#!/usr/bin/env bash
# Installs what AIMatrix Node needs on a fresh Debian/Ubuntu machine into ./.venv.
# System packages: a C compiler and libgmp-dev (py-libp2p's fastecdsa builds from source),
# bubblewrap and libseccomp2 (sandbox layers). Uses sudo when not run as root.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
need=()
for pkg in gcc libgmp-dev bubblewrap libseccomp2; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "setup: please install: ${need[*]} (no apt-get here)" >&2
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# The CPU build of torch first: an open range alone would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0" || echo "setup: torch 2.13.0 unavailable; TorchScript jobs will be skipped" >&2
.venv/bin/python -m pip install -q -e ".[test,torch]" 2>/dev/null || .venv/bin/python -m pip install -q -e ".[test]"
# trio-typing (pulled in by libp2p, which imports it at run time) ships `trio-stubs`, stubs
# for an old trio that shadow trio's own inline types for mypy: remove just the stubs.
rm -rf .venv/lib/python*/site-packages/trio-stubs
