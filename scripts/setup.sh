#!/usr/bin/env bash
# Installs what AIMatrix Node needs on a fresh Debian/Ubuntu machine into ./.venv.
# System packages: a C compiler and libgmp-dev (py-libp2p's fastecdsa builds from source),
# bubblewrap and libseccomp2 (sandbox layers), iproute2 and nftables (the network-namespace
# tests' NAT router, tests/netns/). Uses sudo when not run as root.
#
# Usage: scripts/setup.sh [--gpu]
#   (default)  CPU-only: the CPU build of torch (TorchScript jobs) and onnxruntime.
#   --gpu      for a machine with an NVIDIA GPU: torch's CUDA build and onnxruntime-gpu.
# It says at the end which it installed.
set -euo pipefail
cd "$(dirname "$0")/.."

GPU=0
for arg in "$@"; do
  case "$arg" in
    --gpu) GPU=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "setup: unknown option $arg (use --gpu or nothing)" >&2; exit 2 ;;
  esac
done

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
need=()
for pkg in gcc libgmp-dev bubblewrap libseccomp2 chromium iproute2 nftables; do
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
PIP=(.venv/bin/python -m pip install -q)
if [ "$GPU" = 1 ]; then
  # PyPI's Linux torch is the CUDA build; onnxruntime-gpu replaces onnxruntime (extra "gpu").
  "${PIP[@]}" "torch==2.13.0"
  "${PIP[@]}" -e ".[test,torch,gpu]"
  torch_kind="the CUDA build of torch $(.venv/bin/python -c 'import torch; print(torch.__version__)') and onnxruntime-gpu"
else
  # The CPU build of torch first, by its local version (+cpu): an open range, or plain
  # torch==2.13.0 from PyPI, would pull the multi-GB CUDA build. pip's configured
  # indexes are tried first, then PyTorch's CPU wheel index (quickly given up if offline).
  if "${PIP[@]}" "torch==2.13.0+cpu" 2>/dev/null \
    || "${PIP[@]}" --timeout 20 --retries 0 --index-url https://download.pytorch.org/whl/cpu \
      "torch==2.13.0+cpu" 2>/dev/null; then
    "${PIP[@]}" -e ".[test,torch]"
    torch_kind="the CPU-only build of torch $(.venv/bin/python -c 'import torch; print(torch.__version__)') and onnxruntime (CPU)"
  else
    "${PIP[@]}" -e ".[test]"
    torch_kind="onnxruntime (CPU) without torch: no CPU-only torch could be had, so TorchScript jobs are off (--gpu installs the CUDA build)"
  fi
fi
# trio-typing (pulled in by libp2p, which imports it at run time) ships `trio-stubs`, stubs
# for an old trio that shadow trio's own inline types for mypy: remove just the stubs.
rm -rf .venv/lib/python*/site-packages/trio-stubs
echo "setup: installed $torch_kind into .venv"
