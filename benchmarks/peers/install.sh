#!/usr/bin/env bash
# Install the peer servers of benchmarks/peers into virtual environments of their own under
# .peers/ (git-ignored), never into driftserve's: their pins (numpy<2, older protobuf) conflict.
#
#   benchmarks/peers/install.sh [triton] [mlserver]     # default: both
#
#   .peers/triton    nvidia-pytriton (PyTriton, and the tritonserver binary with the Python
#                    backend that it bundles), onnxruntime, numpy
#   .peers/mlserver  mlserver, onnxruntime, numpy
#
# Idempotent: a venv whose .installed file lists the same packages is left alone. A peer that
# fails to install is reported and skipped; the exit status is 0 so that the benchmark still runs
# the others (it reports a missing peer as skipped, with the reason).
set -uo pipefail
cd "$(dirname "$0")/../.."
PEERS=${PEERS_DIR:-.peers}
PYTHON=${PEERS_PYTHON:-python3}
# The same onnxruntime as driftserve, so every server runs the same kernels.
ORT=${PEERS_ONNXRUNTIME:-$(grep -m1 '^onnxruntime==' constraints.txt)}
TRITON_PACKAGES="nvidia-pytriton==0.7.0 $ORT numpy<2"
# uvloop>=0.22 raises on asyncio.get_event_loop() outside a running loop, which MLServer 1.7.1's
# inference workers call at start-up: they die at once and every request fails.
MLSERVER_PACKAGES="mlserver==1.7.1 uvloop<0.22 $ORT numpy<2"

install_peer() {
  local name=$1 packages=$2 venv="$PEERS/$1" log="$PEERS/$1-install.log"
  if [ -f "$venv/.installed" ] && [ "$(cat "$venv/.installed")" = "$packages" ]; then
    echo "peer $name: already installed in $venv"
    return 0
  fi
  echo "peer $name: installing $packages into $venv (log: $log)"
  rm -rf "$venv"
  # shellcheck disable=SC2086  # the package list is meant to split into words
  if { "$PYTHON" -m venv "$venv" \
    && "$venv/bin/python" -m pip install --quiet --upgrade pip \
    && "$venv/bin/python" -m pip install --quiet $packages; } >"$log" 2>&1; then
    printf '%s' "$packages" >"$venv/.installed"
    echo "peer $name: installed"
  else
    # The benchmark reports the peer as skipped with this file's text as the reason.
    mkdir -p "$venv"
    { printf 'install of %s failed: ' "$packages"; grep -v '^WARNING' "$log" | tail -n 3 | tr '\n' ' '; } >"$venv/.failed"
    echo "peer $name: $(cat "$venv/.failed")" >&2
  fi
}

mkdir -p "$PEERS"
for peer in "${@:-triton mlserver}"; do
  for name in $peer; do
    case $name in
      triton) install_peer triton "$TRITON_PACKAGES" ;;
      mlserver) install_peer mlserver "$MLSERVER_PACKAGES" ;;
      *) echo "unknown peer $name (expected triton or mlserver)" >&2; exit 2 ;;
    esac
  done
done
exit 0
