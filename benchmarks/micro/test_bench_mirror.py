"""Micro-benchmarks of the mirror: the tap on the request path and the encode of one flush.

Run: ``python -m pytest benchmarks/micro/test_bench_mirror.py --benchmark-only -p no:cacheprovider``

What a stream write costs (the larger share of mirroring, paid per flush) needs a real sidecar:
``python -m benchmarks.mirror_write_cost``.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from driftserve.core.config import ModelConfig
from driftserve.server.dataplane import InferenceRequest
from driftserve.server.mirror import MirrorPublisher

FEATURES = 30


def _served(sample_rate: float = 1.0) -> Any:
    config = ModelConfig.model_validate({"drift": {"reference": "p.json", "mirror": {"sample_rate": sample_rate}}})
    return SimpleNamespace(model=SimpleNamespace(name="m", version=1, config=config, batched=True))


def _publisher() -> MirrorPublisher:
    # Never started: nothing is sent, so the staging fills; the capacity is large enough for every round.
    return MirrorPublisher("127.0.0.1:1", None, CollectorRegistry(), queue_capacity=1 << 30, flush_rows=1 << 30)  # type: ignore[arg-type]


def _request(rows: int) -> tuple[InferenceRequest, dict[str, np.ndarray]]:
    """A breast_cancer-shaped request as the V2 decoder gives it (read-only view over bytes) and its outputs."""
    wire = np.random.default_rng(0).random((rows, FEATURES)).astype(np.float32).tobytes()
    x = np.frombuffer(wire, np.float32).reshape(rows, FEATURES)
    outputs = {"label": np.zeros(rows, np.int64), "probabilities": np.zeros((rows, 2), np.float32)}
    return InferenceRequest("m", request_id="", inputs={"input": x}, arrival_ns=time.perf_counter_ns()), outputs


@pytest.mark.parametrize("rows", [1, 32])
def test_tap_per_request(benchmark: Any, rows: int) -> None:
    """Loop-thread cost of mirroring one request at sample rate 1.0 (copy into the staging)."""
    mirror, served = _publisher(), _served()
    request, outputs = _request(rows)

    taps = [0]

    def tap_and_empty() -> None:
        mirror.tap(served, request, outputs)
        taps[0] += 1
        if taps[0] % 2048 == 0:  # keep the staging warm and bounded, as flushes do
            mirror._drop_all()

    benchmark(tap_and_empty)
    assert taps[0] > 0


def test_tap_sampled_out(benchmark: Any) -> None:
    """A request the sampler skips (rate 0.001): what mirroring costs the other 999 of 1000."""
    mirror, served = _publisher(), _served(0.001)
    request, outputs = _request(1)
    benchmark(mirror.tap, served, request, outputs)


@pytest.mark.parametrize("requests", [100, 1000])
def test_flush_encode_and_serialize(benchmark: Any, requests: int) -> None:
    """One flush of ``requests`` one-row requests: the MirrorBatch built and serialized (divide by requests)."""
    mirror, served = _publisher(), _served()
    request, outputs = _request(1)

    def setup() -> tuple[tuple[()], dict[str, Any]]:
        for _ in range(requests):
            mirror.tap(served, request, outputs)
        return (), {}

    def flush() -> int:
        return sum(len(batch.SerializeToString()) for batch, _, _ in mirror._drain())

    size = benchmark.pedantic(flush, setup=setup, rounds=50)
    assert size > requests * FEATURES * 4
