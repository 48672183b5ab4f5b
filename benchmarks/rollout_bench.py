"""Client latency while a rollout runs vs steady state, side by side (not a timed test).

One ``driftserve serve`` process serves ``breast_cancer_lr`` from the example repository, managed
by a rollout (gate on the holdout, a shadow stage, canary steps). Rounds alternate: a steady round
(no rollout) and a rollout round (a new version is published by rename, then discovered, gated,
shadowed, stepped through the canary and promoted while the clients send requests). Each round's
client p50/p99 is recorded; the report gives the medians over rounds and the ratio.

    python -m benchmarks.rollout_bench --model-repository examples/repository --rounds 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

import grpc
import numpy as np

from benchmarks.common import start_driftserve
from driftserve.api import driftserve_pb2 as pb
from driftserve.api import driftserve_pb2_grpc as pb_grpc

MODEL = "breast_cancer_lr"
CONFIG = """\
max_batch_size: 64
batching: {enabled: true, max_queue_delay_us: 0}
deployment:
  validation: {data: data/holdout.npz, labels: data/holdout.npz, metric: accuracy, min: 0.9}
  rollout:
    shadow: {requests: 200}
    steps: [10, 50, 100]
    step_duration_s: 2
    analysis_interval_s: 0.5
    compare_share: 0.25
    keep_previous_s: 0
    thresholds: {max_p99_ratio: 100, min_agreement: 0.5, max_output_psi: 10}
"""


def _clients(
    address: str, x: np.ndarray, clients: int, stop: threading.Event, out: list[float]
) -> list[threading.Thread]:
    def run(seed: int) -> None:
        rng = np.random.default_rng(seed)
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.PredictorStub(channel)
            while not stop.is_set():
                row = x[int(rng.integers(len(x))) :][:1]
                tensor = pb.Tensor(name="input", datatype="FP32", shape=row.shape, data=row.tobytes())
                started = time.perf_counter()
                stub.Predict(pb.PredictRequest(model=MODEL, inputs=[tensor]), timeout=30)
                out.append(time.perf_counter() - started)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    return threads


def _round(address: str, x: np.ndarray, clients: int, action: object) -> list[float]:
    latencies: list[float] = []
    stop = threading.Event()
    threads = _clients(address, x, clients, stop, latencies)
    assert callable(action)
    action()
    stop.set()
    for thread in threads:
        thread.join(30)
    return latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=Path("examples/repository"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="rollout-bench-"))
    model_dir = work / "repo" / MODEL
    shutil.copytree(args.model_repository / MODEL / "data", model_dir / "data")
    (model_dir / "1").mkdir(parents=True)
    shutil.copy(args.model_repository / MODEL / "1" / "model.onnx", model_dir / "1" / "model.onnx")
    (model_dir / "config.yaml").write_text(CONFIG)
    candidate = (args.model_repository / MODEL / "2" / "model.onnx").read_bytes()
    with np.load(model_dir / "data" / "holdout.npz") as npz:
        x = np.ascontiguousarray(npz["X"], dtype=np.float32)
    server = start_driftserve(work / "repo", work, ["--poll-interval-s", "0.2"])
    server.wait_ready()
    models = pb_grpc.ModelsStub(grpc.insecure_channel(server.target))
    steady: list[list[float]] = []
    rollout: list[list[float]] = []
    version = 1
    try:
        for _ in range(args.rounds):
            rollout_s = 0.0

            def publish_and_wait() -> None:
                nonlocal version, rollout_s
                version += 1
                target = model_dir / str(version) / "model.onnx"
                target.parent.mkdir()
                (target.parent / ".tmp").write_bytes(candidate)
                started = time.monotonic()
                os.replace(target.parent / ".tmp", target)
                while True:
                    status = models.Status(pb.ModelRef(model=MODEL), timeout=30)
                    if status.candidate == str(version) and status.stage in ("primary", "rolled_back", "failed"):
                        break
                    time.sleep(0.1)
                rollout_s = time.monotonic() - started
                print(f"rollout to v{version}: {status.stage} in {rollout_s:.1f} s", flush=True)

            rollout.append(_round(server.target, x, args.clients, publish_and_wait))
            steady.append(_round(server.target, x, args.clients, partial(time.sleep, rollout_s)))
    finally:
        server.stop()
    print(f"{args.clients} clients, {args.rounds} interleaved rounds; medians over rounds")
    print("| round kind | requests/round | p50 ms | p99 ms |")
    print("|---|---|---|---|")
    for name, rounds in (("steady", steady), ("during rollout", rollout)):
        p50 = statistics.median(float(np.percentile(r, 50)) * 1e3 for r in rounds)
        p99 = statistics.median(float(np.percentile(r, 99)) * 1e3 for r in rounds)
        print(f"| {name} | {statistics.median(len(r) for r in rounds):.0f} | {p50:.2f} | {p99:.2f} |")
    ratio = statistics.median(
        float(np.percentile(b, 99)) / float(np.percentile(a, 99)) for a, b in zip(steady, rollout)
    )
    print(f"p99 ratio rollout/steady (median of per-round ratios): {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
