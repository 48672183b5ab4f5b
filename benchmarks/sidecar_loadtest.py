"""Load test of the sidecar's ingest: a publisher process streams MirrorBatches through real gRPC.

``python -m benchmarks.sidecar_loadtest run --out benchmarks/results/sidecar.json`` builds a synthetic
repository (one model, 30 numeric features, a 1000-bin profile), starts ``driftserve sidecar`` as a
subprocess, and for each batch size runs ``python -m benchmarks.sidecar_loadtest publish`` in another
process as fast as gRPC flow control allows. Ingest is measured on the sidecar's own metrics:
batches its worker finished (``driftserve_sidecar_ingest_duration_seconds_count{stage="update"}``)
and rows it dropped; the sidecar's RSS and CPU are sampled with psutil once a second, so a long
run shows whether memory stays flat. Also usable against a deployed sidecar to size it.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from driftserve.api import driftserve_pb2
from driftserve.core.machine import machine
from driftserve.core.processes import Child, start_child, start_process

logger = logging.getLogger(__name__)

MODEL = "loadtest"
N_FEATURES = 30
# Distinct rows streamed in a loop; enough that repeating them does not itself look like drift.
DISTINCT_ROWS = 65_536


def synthetic_repository(root: Path, rows: int = 20_000, seed: int = 0) -> Path:
    """``root/loadtest``: a drift section and a profile of 30 normal features; no ONNX model needed."""
    from driftserve.sidecar.drift.profile import build_profile

    x = np.random.default_rng(seed).normal(size=(rows, N_FEATURES)).astype(np.float32)
    model_dir = root / MODEL
    build_profile(x, [f"f{j:02d}" for j in range(N_FEATURES)]).save(model_dir / "profile.json")
    (model_dir / "config.yaml").write_text(yaml.safe_dump({"drift": {"reference": "profile.json"}}))
    return root


def _batch(rows: int, rng: np.random.Generator) -> driftserve_pb2.MirrorBatch:
    x = rng.normal(size=(rows, N_FEATURES)).astype("<f4")
    requests = max(rows // 64, 1)
    sizes = [rows // requests] * requests
    sizes[-1] += rows - sum(sizes)
    return driftserve_pb2.MirrorBatch(
        model=MODEL,
        version="1",
        rows=rows,
        inputs=[driftserve_pb2.Tensor(name="input", datatype="FP32", shape=[rows, N_FEATURES], data=x.tobytes())],
        request_ids=[str(i) for i in range(requests)],
        request_rows=sizes,
        arrival_unix_s=[time.time()] * requests,
        latency_s=[0.001] * requests,
        sender="loadtest",
    )


def publish(address: str, rows_per_batch: int, duration_s: float, seed: int = 1) -> dict[str, Any]:
    """Stream pre-built batches for ``duration_s`` on one Publish call; what was sent and accepted."""
    import grpc

    from driftserve.api import driftserve_pb2_grpc

    rng = np.random.default_rng(seed)
    batches = [_batch(rows_per_batch, rng) for _ in range(max(DISTINCT_ROWS // rows_per_batch, 1))]
    sent = 0
    started = time.perf_counter()
    deadline = started + duration_s

    def stream() -> Any:
        nonlocal sent
        while time.perf_counter() < deadline:
            yield batches[sent % len(batches)]
            sent += 1

    with grpc.insecure_channel(address) as channel:
        summary = driftserve_pb2_grpc.MirrorStub(channel).Publish(stream(), timeout=duration_s + 60)
    elapsed = time.perf_counter() - started
    return {
        "rows_per_batch": rows_per_batch,
        "sent_batches": sent,
        "accepted_batches": summary.batches,
        "accepted_rows": summary.rows,
        "elapsed_s": elapsed,
    }


def _metrics(http_port: int) -> dict[tuple[str, str], float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=30).read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())))] = s.value
    return out


def _start_sidecar(repository: Path) -> Child:
    sidecar = start_child(
        "sidecar",
        [
            "sidecar",
            "--model-repository",
            str(repository),
            "--listen",
            "127.0.0.1:0",
            "--http-port",
            "0",
            "--log-level",
            "WARNING",
        ],
        output="keep",
    )
    if not sidecar.wait_ready():
        raise RuntimeError(f"sidecar exited with {sidecar.kill()} before its ready line:\n{sidecar.output()}")
    return sidecar


def _run_one(announced: dict[str, str], proc: Any, rows_per_batch: int, duration_s: float) -> dict[str, Any]:
    port = int(announced["http_port"])
    before = _metrics(port)
    cpu_before = proc.cpu_times()
    child = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.sidecar_loadtest",
            "publish",
            "--address",
            announced["address"],
            "--rows-per-batch",
            str(rows_per_batch),
            "--duration-s",
            str(duration_s),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    sent = json.loads(child.stdout.strip().splitlines()[-1])
    drain_started = time.perf_counter()
    while _metrics(port).get(("driftserve_sidecar_queue_batches", f"model={MODEL}"), 0.0) > 0:
        time.sleep(0.05)
    drain_s = time.perf_counter() - drain_started
    after = _metrics(port)
    cpu_after = proc.cpu_times()
    done = after[("driftserve_sidecar_ingest_duration_seconds_count", "stage=update")] - before.get(
        ("driftserve_sidecar_ingest_duration_seconds_count", "stage=update"), 0.0
    )
    dropped = (
        after[("driftserve_sidecar_rejected_rows_total", "reason=queue_full")]
        - before[("driftserve_sidecar_rejected_rows_total", "reason=queue_full")]
    )
    wall = sent["elapsed_s"] + drain_s
    cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    return {
        **sent,
        "drain_s": drain_s,
        "ingested_rows": done * rows_per_batch,
        "dropped_rows": dropped,
        "ingested_rows_per_s": done * rows_per_batch / wall,
        "sidecar_cpu_s": cpu,
        "rows_per_sidecar_cpu_s": done * rows_per_batch / cpu if cpu else float("nan"),
    }


def run(batch_sizes: list[int], duration_s: float, soak_s: float, rounds: int) -> dict[str, Any]:
    """Throughput per batch size (interleaved rounds), then a soak run sampling RSS once a second."""
    import psutil

    with tempfile.TemporaryDirectory(prefix="driftserve-loadtest-") as tmp:
        sidecar = _start_sidecar(synthetic_repository(Path(tmp)))
        announced = sidecar.announced
        proc = psutil.Process(sidecar.pid)
        try:
            throughput = [_run_one(announced, proc, size, duration_s) for _ in range(rounds) for size in batch_sizes]
            rss: list[tuple[float, int]] = []
            publisher = [sys.executable, "-m", "benchmarks.sidecar_loadtest", "publish"]
            soak = start_process(
                "publisher",
                [
                    *publisher,
                    "--address",
                    announced["address"],
                    "--rows-per-batch",
                    str(max(batch_sizes)),
                    "--duration-s",
                    str(soak_s),
                ],
                output="keep",
            )
            started = time.monotonic()
            while soak.process.poll() is None:
                rss.append((round(time.monotonic() - started, 1), proc.memory_info().rss))
                time.sleep(1.0)
            soak_result = json.loads((soak.output().strip() or "{}").splitlines()[-1])
        finally:
            exit_code = sidecar.terminate(30)
    return {
        "throughput": throughput,
        "soak": {**soak_result, "rss_bytes": rss},
        "sidecar_exit_code": exit_code,
        "machine": machine(),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sidecar_loadtest", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    pub = sub.add_parser("publish", help="stream synthetic batches to a running sidecar; prints a JSON line")
    pub.add_argument("--address", required=True)
    pub.add_argument("--rows-per-batch", type=int, default=2048)
    pub.add_argument("--duration-s", type=float, default=10.0)
    r = sub.add_parser("run", help="start a sidecar, measure ingest per batch size and RSS over a soak run")
    r.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 512, 2048])
    r.add_argument("--duration-s", type=float, default=5.0, help="seconds per throughput measurement")
    r.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the batch sizes")
    r.add_argument("--soak-s", type=float, default=60.0, help="seconds of the RSS soak run")
    r.add_argument("--out", type=Path, help="write the JSON result here")
    args = parser.parse_args(argv)
    if args.command == "publish":
        print(json.dumps(publish(args.address, args.rows_per_batch, args.duration_s)), flush=True)
        return 0
    result = run(args.batch_sizes, args.duration_s, args.soak_s, args.rounds)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
