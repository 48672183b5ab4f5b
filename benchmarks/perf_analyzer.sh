#!/usr/bin/env bash
# Run Triton's perf_analyzer against driftserve (or any Open Inference Protocol server).
#
#   benchmarks/perf_analyzer.sh -i grpc -u 127.0.0.1:8001 -m breast_cancer_mlp --concurrency-range 1:8
#
# The PyPI package `perf-analyzer` is an empty placeholder; the manylinux wheel of
# tritonclient==2.41.0 (a test dependency, installed by `make setup`) carries the binary. It links
# against libb64 (Debian: libb64-0d) and libcudart.so.12 (PyPI: nvidia-cuda-runtime-cu12), which
# this script installs on first use into tools/ (git-ignored). The test suite never needs it.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
TOOLS=tools/cuda-runtime
PA=${PERF_ANALYZER:-$VENV/bin/perf_analyzer}

# A machine without registry access can bring the binary and its two libraries itself:
# PERF_ANALYZER=/path/to/perf_analyzer PERF_ANALYZER_LIB_DIR=/dir/with/libb64+libcudart.
if [ -n "${PERF_ANALYZER_LIB_DIR:-}" ]; then
  export LD_LIBRARY_PATH="$PERF_ANALYZER_LIB_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  exec "$PA" "$@"
fi

if [ ! -x "$PA" ]; then
  "$VENV/bin/python" -m pip install --quiet "tritonclient[grpc]==2.41.0"
fi
if ! ldconfig -p | grep -q libb64.so; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq libb64-0d
  else
    echo "perf_analyzer needs libb64: run 'sudo apt-get install libb64-0d'" >&2
    exit 2
  fi
fi
if [ ! -e "$TOOLS/nvidia/cuda_runtime/lib/libcudart.so.12" ]; then
  "$VENV/bin/python" -m pip install --quiet --target "$TOOLS" nvidia-cuda-runtime-cu12
fi
export LD_LIBRARY_PATH="$PWD/$TOOLS/nvidia/cuda_runtime/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if [ "${1:-}" = "--setup-only" ]; then
  exit 0
fi
exec "$PA" "$@"
