"""What the reliability scenarios share: requests, one connection per client, metrics, results."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.common import READY_TIMEOUT_S, ServerProcess
from driftserve.api import grpc_service_pb2 as pb
from driftserve.api import grpc_service_pb2_grpc as pb_grpc

POLL_S = 0.05
# A channel of its own connection: grpc otherwise shares one TCP connection among all the
# channels of a process to the same target, and "N clients" would be N streams on one connection.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
# (send time, latency s, status code, model) of one request.
Record = tuple[float, float, str, str]


def infer_request(model: str, rows: int, width: int, seed: int = 0) -> pb.ModelInferRequest:
    """A V2 request of ``rows`` × ``width`` FP32 normal values (the models' input is [-1, 30])."""
    x = np.random.default_rng(seed).normal(size=(rows, width)).astype(np.float32)
    tensor = pb.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=list(x.shape))
    return pb.ModelInferRequest(model_name=model, inputs=[tensor], raw_input_contents=[x.tobytes()])


def scrape(port: int, timeout_s: float = 10.0) -> dict[str, list[tuple[dict[str, str], float]]]:
    """A /metrics page as {sample name: [(labels, value)]} (blocking: call it in a thread)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s).read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def metric_total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    """The sum of a sample's values over the label sets that match ``labels``."""
    return sum(v for got, v in samples.get(name, []) if all(got.get(k) == w for k, w in labels.items()))


def wait_started(process: ServerProcess, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Wait for the process's ready line, then confirm with one health/ready call.

    Polling only over gRPC (``ServerProcess.wait_ready``) waits out the channel's reconnect backoff
    after the first refused connection, seconds on top of the real start-up time.
    """
    if not process.child.wait_ready(timeout_s):
        raise RuntimeError(f"{process.label} did not start within {timeout_s:g} s; see {process.log_path}")
    process.wait_ready()


def rotated(items: list[Any], shift: int) -> list[Any]:
    """``items`` starting at index ``shift`` (mod len), so clients do not all start on one model."""
    k = shift % len(items)
    return items[k:] + items[:k]


def percentile_ms(latencies_s: list[float], q: float) -> float | None:
    return round(float(np.percentile(latencies_s, q)) * 1e3, 3) if latencies_s else None


async def infer_status(stub: pb_grpc.GRPCInferenceServiceStub, request: pb.ModelInferRequest, timeout_s: float) -> str:
    """Send one request; its status code's name ("OK" when it succeeded)."""
    try:
        await stub.ModelInfer(request, timeout=timeout_s)
    except grpc.aio.AioRpcError as exc:
        return str(exc.code().name)
    return "OK"


def finish(result: dict[str, Any], out: Path | None) -> int:
    """Print the result as JSON (and write it to ``out``); the exit code of its verdict."""
    text = json.dumps(result, indent=2)
    if out:
        out.write_text(text + "\n")
    print(text)
    return 0 if result["passed"] else 1
