"""Drift closes the loop, end to end on one machine: drift → retrain → gate → shadow → canary → promote.

    make demo                                       # or:
    python -m examples.rollout_demo --source examples/repository [--hold-s 120]

It copies ``breast_cancer_lr`` version 1 from the example repository into a fresh repository whose
config has a drift section (with ``examples.retrain`` as the alert's command hook), a validation
gate and a rollout, and starts ``driftserve run`` (server + sidecar) with repository polling on.
Clients send holdout rows, then rows whose ``mean_concavity`` is scaled up (drift), after writing
those rows with their labels to ``data/recent.npz`` as an application would collect them. The
sidecar alerts, the hook trains version 2 on the training plus the recent rows and publishes it by
rename, and the server gates it, shadows it in the sidecar, steps it through the canary and
promotes it. Each stage is printed as it happens; the dashboard (``http://127.0.0.1:<port>/dashboard``)
shows drift, the shadow comparison and the rollout panel. It takes a few minutes.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np

from driftserve.api import driftserve_pb2 as pb
from driftserve.api import driftserve_pb2_grpc as pb_grpc
from driftserve.core.ports import free_port
from examples.build_repository import load_split
from examples.files import npz_bytes, write_atomic

MODEL = "breast_cancer_lr"
SHIFTED_FEATURE = "mean_concavity"
SHIFT_FACTOR = 2.5
CLIENTS = 4
READY_TIMEOUT_S = 120.0

CONFIG = """\
# The demo's model: drift alerts retrain it, and every new version is rolled out on evidence.
max_batch_size: 64
batching: {{enabled: true, max_queue_delay_us: 0}}
deployment:
  validation: {{data: data/holdout.npz, labels: data/holdout.npz, metric: accuracy, min: 0.85}}
  rollout:
    shadow: {{duration_s: 5, requests: 200}}
    steps: [10, 50, 100]
    step_duration_s: 5
    step_requests: 100
    analysis_interval_s: 1
    min_samples: 100
    compare_share: 0.5
    keep_previous_s: 120
    thresholds: {{max_error_rate: 0.01, max_p99_ratio: 10, min_agreement: 0.6, max_output_psi: 5.0}}
drift:
  reference: data/profile.json
  min_window_rows: 300
  window: {{pane_seconds: 2, panes: 10}}
  mirror: {{sample_rate: 1.0}}
  actions:
    command: [{python}, -m, examples.retrain, --model-dir, {model_dir}]
    cooldown_s: 3600
    timeout_s: 180
"""


def build(source: Path, work: Path) -> Path:
    """The demo repository under ``work`` with version 1 of the example model."""
    model_dir = work / "repository" / MODEL
    shutil.copytree(source / MODEL / "data", model_dir / "data")
    (model_dir / "1").mkdir(parents=True)
    shutil.copy(source / MODEL / "1" / "model.onnx", model_dir / "1" / "model.onnx")
    (model_dir / "config.yaml").write_text(CONFIG.format(python=sys.executable, model_dir=model_dir))
    return model_dir


def start(repository: Path, ports: dict[str, int]) -> subprocess.Popen[str]:
    """``driftserve run`` with polling on; returns once it says it is up."""
    argv = [
        sys.executable, "-m", "driftserve", "run", "--model-repository", str(repository),
        "--host", "127.0.0.1", "--grpc-port", str(ports["grpc"]), "--metrics-port", str(ports["metrics"]),
        "--sidecar-listen", f"127.0.0.1:{ports['sidecar']}", "--sidecar-http-port", str(ports["http"]),
        "--poll-interval-s", "1", "--log-level", "WARNING",
    ]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ready = threading.Event()

    def echo() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("driftserve is up"):
                ready.set()
            elif "retrained" in line or "rolled back" in line or "failed the gate" in line:
                print(f"  [driftserve] {line.rstrip()}", flush=True)

    threading.Thread(target=echo, daemon=True).start()
    if not ready.wait(READY_TIMEOUT_S):
        process.kill()
        raise SystemExit("driftserve run did not become ready")
    return process


class Traffic:
    """Clients sending one row per request from ``rows`` (swapped to drifted rows mid-way)."""

    def __init__(self, address: str, rows: np.ndarray) -> None:
        self.rows = rows
        self.sent = 0
        self.failed = 0
        self.stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(address, i), daemon=True) for i in range(CLIENTS)]
        for thread in self._threads:
            thread.start()

    def _run(self, address: str, seed: int) -> None:
        rng = np.random.default_rng(seed)
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.PredictorStub(channel)
            while not self.stop.is_set():
                rows = self.rows
                row = rows[int(rng.integers(len(rows))) :][:1]
                tensor = pb.Tensor(name="input", datatype="FP32", shape=row.shape, data=row.tobytes())
                try:
                    stub.Predict(pb.PredictRequest(model=MODEL, inputs=[tensor]), timeout=10)
                    self.sent += 1
                except grpc.RpcError:
                    self.failed += 1
                time.sleep(0.002)

    def close(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(15)


def follow(address: str, timeout_s: float) -> str:
    """Print each rollout stage as it changes; return the final stage of a rollout of version >= 2."""
    models = pb_grpc.ModelsStub(grpc.insecure_channel(address))
    seen = ""
    deadline = time.monotonic() + timeout_s
    started = time.monotonic()
    while time.monotonic() < deadline:
        status = models.Status(pb.ModelRef(model=MODEL), timeout=10)
        where = status.stage + (
            f" step {status.step + 1} ({status.weight * 100:g}%)" if status.stage == "canary" else ""
        )
        if status.stage and where != seen:
            seen = where
            detail = f" — {status.reason}" if status.reason else ""
            print(f"{time.monotonic() - started:6.1f} s  version {status.candidate}: {where}{detail}", flush=True)
        if status.stage in ("primary", "rolled_back", "failed") and status.candidate not in ("", "1"):
            return status.stage
        time.sleep(0.25)
    return "timed out"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=Path("examples/repository"), help="built example repository")
    parser.add_argument("--work", type=Path, help="directory for the demo repository [default: a new temporary one]")
    parser.add_argument("--timeout-s", type=float, default=600.0, help="give up after this long [default 600]")
    parser.add_argument("--hold-s", type=float, default=0.0, help="keep everything running this long at the end")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="driftserve-demo-"))
    model_dir = build(args.source, work)
    x_holdout, y_holdout, names = load_split(model_dir / "data" / "holdout.npz")
    ports = {name: free_port() for name in ("grpc", "metrics", "sidecar", "http")}
    process = start(work / "repository", ports)
    address = f"127.0.0.1:{ports['grpc']}"
    print(f"driftserve run is up: gRPC {address}, dashboard http://127.0.0.1:{ports['http']}/dashboard", flush=True)
    traffic = Traffic(address, x_holdout)
    try:
        time.sleep(10)
        drifted = x_holdout.copy()
        drifted[:, list(names).index(SHIFTED_FEATURE)] *= SHIFT_FACTOR
        write_atomic(model_dir / "data" / "recent.npz", npz_bytes({"X": drifted, "y": y_holdout}))
        print(
            f"drift: {SHIFTED_FEATURE} x{SHIFT_FACTOR} from now on (labelled rows saved to data/recent.npz)", flush=True
        )
        traffic.rows = drifted
        final = follow(address, args.timeout_s)
        print(f"rollout ended: {final}; {traffic.sent} requests answered, {traffic.failed} failed", flush=True)
        subprocess.run([sys.executable, "-m", "driftserve", "models", "--address", address, "list"], check=False)
        if args.hold_s:
            print(f"holding for {args.hold_s:g} s: dashboard http://127.0.0.1:{ports['http']}/dashboard", flush=True)
            time.sleep(args.hold_s)
        return 0 if final == "primary" and traffic.failed == 0 else 1
    finally:
        traffic.close()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


if __name__ == "__main__":
    raise SystemExit(main())
