"""What one mirror stream write costs the sending process: a fixed part per write and a part per row.

The server's mirror sender writes ``MirrorBatch`` messages on a grpc.aio client stream from the event
loop. This script does the same from its own uvloop process to a real sidecar process (the
breast_cancer_lr profile, 30 features), pacing writes of N one-row requests at a fixed row rate, and
reads its own CPU time (user + system) per write and per row. A paced run without writes (timers
only) is subtracted, so the figures are the write's alone. Rounds interleave the batch sizes; the
table gives medians. A fit of ``cost = fixed + per_row × N`` over the sizes says how often to flush:
the fixed part is paid per write, so pacing writes by time caps it per second instead of per request.

    python -m benchmarks.mirror_write_cost --model-repository examples/repository [--rounds 3]

Writes ``benchmarks/results/mirror_write_cost.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import uvloop

from benchmarks.common import markdown_table, start_sidecar
from benchmarks.mirror_bench import make_repository
from driftserve.api import driftserve_pb2 as pb
from driftserve.api import driftserve_pb2_grpc as pb_grpc
from driftserve.core.machine import machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MODEL = "breast_cancer_lr_mirrored"  # make_repository's copy with a drift section
FEATURES = 30


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def mirror_batch(rows: int) -> pb.MirrorBatch:
    """A batch shaped like the server's for ``rows`` one-row requests of breast_cancer_lr."""
    x = np.random.default_rng(rows).normal(size=(rows, FEATURES)).astype(np.float32)
    now = time.time()
    return pb.MirrorBatch(
        model=MODEL,
        version="2",
        rows=rows,
        inputs=[pb.Tensor(name="input", datatype="FP32", shape=[rows, FEATURES], data=x.tobytes())],
        outputs=[
            pb.Tensor(name="label", datatype="INT64", shape=[rows], data=np.zeros(rows, np.int64).tobytes()),
            pb.Tensor(name="probabilities", datatype="FP32", shape=[rows, 2], data=np.zeros((rows, 2), "f4").tobytes()),
        ],
        request_ids=[""] * rows,
        request_rows=[1] * rows,
        arrival_unix_s=[now] * rows,
        latency_s=[0.001] * rows,
        sender="mirror_write_cost",
    )


async def paced(call: Any, batch: pb.MirrorBatch | None, interval_s: float, duration_s: float) -> tuple[float, int]:
    """CPU seconds spent writing ``batch`` (None: only the timers) every ``interval_s``, and the count."""
    writes = max(1, int(duration_s / interval_s))
    before, start = cpu_s(), time.perf_counter()
    for i in range(writes):
        if batch is not None:
            await call.write(batch)
        await asyncio.sleep(max(0.0, start + (i + 1) * interval_s - time.perf_counter()))
    return cpu_s() - before, writes


async def measure(address: str, sizes: list[int], rate: float, duration_s: float, rounds: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, float]]] = {}
    async with grpc.aio.insecure_channel(address) as channel:
        call = pb_grpc.MirrorStub(channel).Publish()
        await call.wait_for_connection()
        await paced(call, mirror_batch(sizes[0]), 0.01, 1.0)  # warm-up
        for round_index in range(rounds):
            order = sizes if round_index % 2 == 0 else sizes[::-1]
            for rows in order:
                interval_s = rows / rate
                idle_cpu, writes = await paced(call, None, interval_s, duration_s)
                write_cpu, _ = await paced(call, mirror_batch(rows), interval_s, duration_s)
                per_write_us = max(write_cpu - idle_cpu, 0.0) / writes * 1e6
                runs.setdefault(str(rows), []).append(
                    {"writes": writes, "cpu_us_per_write": per_write_us, "cpu_us_per_row": per_write_us / rows}
                )
                print(
                    f"round {round_index + 1}: {rows} rows per write, {writes} writes: "
                    f"{per_write_us:.0f} µs CPU per write, {per_write_us / rows:.2f} µs per row",
                    flush=True,
                )
        await call.done_writing()
        await call
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=ROOT / "examples" / "repository")
    parser.add_argument("--sizes", default="25,100,500,2000", help="rows per write, comma-separated")
    parser.add_argument("--rate", type=float, default=2000.0, help="mirrored rows per second")
    parser.add_argument("--seconds", type=float, default=4.0, help="per size and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repository"
        make_repository(args.model_repository, repo)
        sidecar, address = start_sidecar(repo, Path(tmp))
        try:
            sidecar.wait_ready()
            runs = uvloop.run(measure(address, sizes, args.rate, args.seconds, args.rounds))
        finally:
            sidecar.stop()
    median = {size: statistics.median(r["cpu_us_per_write"] for r in runs[str(size)]) for size in sizes}
    per_row_us, fixed_us = np.polyfit(np.array(sizes, float), np.array([median[s] for s in sizes]), 1)
    info = machine()
    command = "python -m benchmarks.mirror_write_cost " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "### Mirror stream writes: CPU of the sending process per write",
        "",
        f"`{command}` — grpc.aio client stream from a uvloop process to a real sidecar process, "
        f"{args.rate:g} mirrored rows/s, {args.seconds:g} s per size, {args.rounds} rounds (sizes interleaved), "
        f"medians; the same pacing without writes subtracted; {info['nproc']} cores, {info['cpu']}, shared with "
        f"other work; {info['date_utc']} UTC.",
        "",
        *markdown_table(
            ("rows per write", "writes/s", "CPU per write (µs)", "CPU per row (µs)"),
            ((s, f"{args.rate / s:g}", f"{median[s]:.0f}", f"{median[s] / s:.2f}") for s in sizes),
        ),
        "",
        f"Least-squares fit: {fixed_us:.0f} µs per write + {per_row_us:.2f} µs per row.",
        "",
    ]
    (args.out / "mirror_write_cost.json").write_text(
        json.dumps(
            {
                "command": command,
                "machine": info,
                "rate_rows_per_s": args.rate,
                "runs": runs,
                "median_cpu_us_per_write": {str(s): median[s] for s in sizes},
                "fit": {"fixed_us_per_write": fixed_us, "us_per_row": per_row_us},
            },
            indent=2,
        )
    )
    (args.out / "mirror_write_cost.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
