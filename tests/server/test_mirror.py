"""The mirror tap in-process: what a fake ``driftserve.v1.Mirror`` sidecar receives, and what is dropped.

The publisher only reads ``name``, ``version``, ``config`` and ``batched`` of ``served.model``, so
most tests tap a stub with a real ``ModelConfig``; one drives the real data plane over an identity
ONNX model to cover the decoded-request path.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import numpy as np
import pytest
from onnx import TensorProto
from prometheus_client import CollectorRegistry

from driftserve.api import driftserve_pb2 as pb
from driftserve.api import driftserve_pb2_grpc as pb_grpc
from driftserve.api import grpc_service_pb2 as v2pb
from driftserve.core.config import ModelConfig
from driftserve.core.ports import free_port
from driftserve.core.tensors import decode_raw
from driftserve.server import mirror as mirror_module
from driftserve.server.dataplane import DataPlane, InferenceRequest
from driftserve.server.grpc_v2 import decode_request
from driftserve.server.metrics import ServerMetrics
from driftserve.server.mirror import MirrorPublisher
from driftserve.server.repository import ModelRepository
from tests.server.support import write_identity_model

WAIT_S = 10.0


class FakeSidecar(pb_grpc.MirrorServicer):
    """Records every MirrorBatch written to it, in arrival order."""

    def __init__(self) -> None:
        self.batches: list[pb.MirrorBatch] = []

    async def Publish(self, request_iterator: AsyncIterator[pb.MirrorBatch], context: Any) -> pb.PublishSummary:
        async for batch in request_iterator:
            self.batches.append(batch)
        return pb.PublishSummary(batches=len(self.batches))

    @property
    def rows(self) -> int:
        return sum(b.rows for b in self.batches)


async def start_sidecar() -> tuple[grpc.aio.Server, FakeSidecar, str]:
    server = grpc.aio.server()
    sidecar = FakeSidecar()
    pb_grpc.add_MirrorServicer_to_server(sidecar, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, sidecar, f"127.0.0.1:{port}"


def run(coro_factory: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(coro_factory(), 30))


async def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def served(name: str = "m", sample_rate: float = 1.0, batched: bool = True, version: int = 1) -> Any:
    drift = {"reference": "profile.json", "mirror": {"sample_rate": sample_rate}}
    config = ModelConfig.model_validate({"drift": drift})
    return SimpleNamespace(model=SimpleNamespace(name=name, version=version, config=config, batched=batched))


def request(inputs: dict[str, np.ndarray], request_id: str) -> InferenceRequest:
    return InferenceRequest("m", request_id=request_id, inputs=inputs, arrival_ns=time.perf_counter_ns())


def publisher(address: str, registry: CollectorRegistry | None = None, **kw: Any) -> MirrorPublisher:
    kw.setdefault("flush_interval_s", 0.01)
    return MirrorPublisher(address, None, registry or CollectorRegistry(), **kw)  # type: ignore[arg-type]


def records(registry: CollectorRegistry, outcome: str, model: str = "m") -> float:
    value = registry.get_sample_value("driftserve_mirror_records_total", {"model": model, "outcome": outcome})
    return value or 0.0


def received(batches: list[pb.MirrorBatch], kind: str) -> dict[str, np.ndarray]:
    """Each tensor of ``kind`` ("inputs"/"outputs") decoded and concatenated over the batches."""
    parts: dict[str, list[np.ndarray]] = {}
    for batch in batches:
        for t in getattr(batch, kind):
            parts.setdefault(t.name, []).append(decode_raw(t.datatype, list(t.shape), t.data, t.name))
    return {name: np.concatenate(arrays) for name, arrays in parts.items()}


def dead_address() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens there


def numeric_request(rng: np.random.Generator, rows: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    inputs = {
        "x": rng.normal(size=(rows, 3)).astype(np.float32),
        "ids": rng.integers(-(2**40), 2**40, size=(rows, 2), dtype=np.int64),
        "pixels": rng.integers(0, 256, size=(rows, 2, 2), dtype=np.uint8),
    }
    outputs = {
        "score": rng.normal(size=(rows,)).astype(np.float64),
        "half": rng.normal(size=(rows, 2)).astype(np.float16),
        "flag": rng.random(rows) > 0.5,
    }
    return inputs, outputs


def test_rows_ids_and_arrays_arrive_byte_identical_and_in_order() -> None:
    rng = np.random.default_rng(1)
    sent = [numeric_request(rng, int(rng.integers(1, 5))) for _ in range(60)]

    async def scenario() -> list[pb.MirrorBatch]:
        server, sidecar, address = await start_sidecar()
        registry = CollectorRegistry()
        mirror = publisher(address, registry, flush_rows=16)
        mirror.start()
        try:
            await wait_for(lambda: mirror._connected, "the Publish stream")
            for i, (inputs, outputs) in enumerate(sent):
                mirror.tap(served(), request(inputs, f"req-{i}"), outputs)
                if i % 7 == 0:
                    await asyncio.sleep(0)  # let flushes interleave with taps
            total = sum(inputs["x"].shape[0] for inputs, _ in sent)
            await wait_for(lambda: sidecar.rows == total, "every row")
            assert records(registry, "sent") == len(sent) and records(registry, "dropped") == 0
            assert registry.get_sample_value("driftserve_mirror_rows_sent_total", {"model": "m"}) == total
            assert registry.get_sample_value("driftserve_mirror_batches_sent_total") == len(sidecar.batches)
            return sidecar.batches
        finally:
            await mirror.close()
            await server.stop(None)

    batches = run(scenario)
    assert len(batches) > 1  # several flushes, still one ordered stream
    assert [i for b in batches for i in b.request_ids] == [f"req-{i}" for i in range(len(sent))]
    assert [r for b in batches for r in b.request_rows] == [inputs["x"].shape[0] for inputs, _ in sent]
    for batch in batches:
        assert batch.model == "m" and batch.version == "1" and batch.sender
        assert sum(batch.request_rows) == batch.rows
        assert len(batch.arrival_unix_s) == len(batch.latency_s) == len(batch.request_ids)
        assert all(0 <= latency < WAIT_S for latency in batch.latency_s)
        assert [t.name for t in batch.inputs] == ["x", "ids", "pixels"]
        assert [t.datatype for t in batch.outputs] == ["FP64", "FP16", "BOOL"]
    for kind, index in (("inputs", 0), ("outputs", 1)):
        got = received(batches, kind)
        for name, array in got.items():
            expected = np.concatenate([pair[index][name] for pair in sent])
            assert array.dtype == expected.dtype and array.shape == expected.shape
            assert array.tobytes() == expected.tobytes(), name


def test_tapped_arrays_can_change_after_the_tap_without_changing_what_is_shipped() -> None:
    rng = np.random.default_rng(2)
    inputs, outputs = numeric_request(rng, 3)
    expected = {name: a.copy() for name, a in {**inputs, **outputs}.items()}

    async def scenario() -> list[pb.MirrorBatch]:
        server, sidecar, address = await start_sidecar()
        mirror = publisher(address)  # not started yet: the rows wait in the staging
        try:
            mirror.tap(served(), request(inputs, "a"), outputs)
            for array in (*inputs.values(), *outputs.values()):
                array[...] = 0  # the request's buffers are reused or freed after the response
            mirror.start()
            await wait_for(lambda: sidecar.rows == 3, "the staged rows")
            return sidecar.batches
        finally:
            await mirror.close()
            await server.stop(None)

    batches = run(scenario)
    got = {**received(batches, "inputs"), **received(batches, "outputs")}
    assert {name: a.tobytes() for name, a in got.items()} == {name: a.tobytes() for name, a in expected.items()}


def test_bytes_inputs_and_outputs_are_staged_as_objects() -> None:
    words = [["alpha", "é"], ["", "a much longer string than the others"], ["x", "y"]]

    async def scenario() -> list[pb.MirrorBatch]:
        server, sidecar, address = await start_sidecar()
        mirror = publisher(address)
        mirror.start()
        try:
            for i, row in enumerate(words):
                text = np.array([row], dtype=np.object_)
                label = np.array([row[0].upper()])  # fixed-width unicode, as NumPy makes it
                mirror.tap(served(), request({"text": text}, str(i)), {"label": label, "n": np.array([i])})
            await wait_for(lambda: sidecar.rows == len(words), "the text rows")
            return sidecar.batches
        finally:
            await mirror.close()
            await server.stop(None)

    batches = run(scenario)
    assert {t.datatype for b in batches for t in (*b.inputs, *b.outputs) if t.name != "n"} == {"BYTES"}
    text = received(batches, "inputs")["text"]
    assert [[item.decode() for item in row] for row in text] == words
    labels = received(batches, "outputs")["label"]
    assert [item.decode() for item in labels] == [row[0].upper() for row in words]


def test_a_layout_change_seals_the_staging_and_both_groups_arrive() -> None:
    widths = [4, 4, 4, 6, 6, 4]  # a model with a variable second dimension

    async def scenario() -> list[pb.MirrorBatch]:
        server, sidecar, address = await start_sidecar()
        mirror = publisher(address)
        try:
            for i, width in enumerate(widths):
                x = np.full((2, width), i, dtype=np.float32)
                mirror.tap(served(), request({"x": x}, str(i)), {"y": x[:, :1].copy()})
            fp64 = np.zeros((1, 4), np.float64)  # same shape, another dtype
            mirror.tap(served(), request({"x": fp64}, "fp64"), {"y": np.zeros((1, 1), np.float32)})
            mirror.start()
            await wait_for(lambda: sidecar.rows == 2 * len(widths) + 1, "every group")
            return sidecar.batches
        finally:
            await mirror.close()
            await server.stop(None)

    batches = run(scenario)
    assert [list(b.request_ids) for b in batches] == [["0", "1", "2"], ["3", "4"], ["5"], ["fp64"]]
    assert [(b.inputs[0].datatype, list(b.inputs[0].shape)) for b in batches] == [
        ("FP32", [6, 4]),
        ("FP32", [4, 6]),
        ("FP32", [2, 4]),
        ("FP64", [1, 4]),
    ]
    for batch in batches[:3]:
        tensor = batch.inputs[0]
        values = decode_raw(tensor.datatype, list(tensor.shape), tensor.data, "x")
        ids = [int(i) for i in batch.request_ids]
        assert (values[:, 0] == np.repeat(ids, 2)).all()


def test_empty_dimensions_are_staged_too() -> None:
    async def scenario() -> list[pb.MirrorBatch]:
        server, sidecar, address = await start_sidecar()
        mirror = publisher(address)
        mirror.start()
        try:
            for i in range(2):
                inputs = {"x": np.zeros((2, 0), np.float32)}
                mirror.tap(served(), request(inputs, str(i)), {"y": np.ones((2, 1), np.int8)})
            await wait_for(lambda: sidecar.rows == 4, "four rows")
            return sidecar.batches
        finally:
            await mirror.close()
            await server.stop(None)

    batches = run(scenario)
    assert received(batches, "inputs")["x"].shape == (4, 0)
    assert received(batches, "outputs")["y"].tolist() == [[1]] * 4


def test_non_batched_models_ship_one_row_per_request() -> None:
    async def scenario() -> list[pb.MirrorBatch]:
        server, sidecar, address = await start_sidecar()
        mirror = publisher(address)
        mirror.start()
        try:
            for i in range(3):
                x = np.full((2, 3), i, dtype=np.float32)  # no batch dimension: the whole array is one row
                mirror.tap(served(batched=False), request({"x": x}, str(i)), {"y": np.array([i], np.int64)})
            await wait_for(lambda: sidecar.rows == 3, "three rows")
            return sidecar.batches
        finally:
            await mirror.close()
            await server.stop(None)

    batches = run(scenario)
    assert [r for b in batches for r in b.request_rows] == [1, 1, 1]
    x = received(batches, "inputs")["x"]
    assert x.shape == (3, 2, 3) and (x[:, 0, 0] == [0, 1, 2]).all()
    assert received(batches, "outputs")["y"].shape == (3, 1)


def test_a_full_staging_drops_and_counts_then_sends_what_it_kept() -> None:
    async def scenario() -> None:
        server, sidecar, address = await start_sidecar()
        registry = CollectorRegistry()
        mirror = publisher(address, registry, queue_capacity=8)  # rows
        try:
            for i in range(6):  # 2 rows each: 4 fit, 2 are dropped
                x = np.full((2, 3), i, dtype=np.float32)
                mirror.tap(served(), request({"x": x}, str(i)), {"y": x.copy()})
            assert records(registry, "dropped") == 2 and records(registry, "sent") == 0
            # The depth is what waits now: 4 staged records, none once they are sent.
            assert registry.get_sample_value("driftserve_mirror_queue_depth_records") == 4
            mirror.start()
            await wait_for(lambda: records(registry, "sent") == 4, "the kept records")
            assert [i for b in sidecar.batches for i in b.request_ids] == ["0", "1", "2", "3"]
            assert registry.get_sample_value("driftserve_mirror_queue_depth_records") == 0
        finally:
            await mirror.close()
            await server.stop(None)

    run(scenario)


def test_without_a_sidecar_nothing_raises_and_every_record_is_dropped() -> None:
    async def scenario() -> None:
        registry = CollectorRegistry()
        mirror = publisher(dead_address(), registry)
        mirror.start()
        try:
            for i in range(200):
                x = np.full((1, 3), i, dtype=np.float32)
                mirror.tap(served(), request({"x": x}, str(i)), {"y": x.copy()})
                if i % 50 == 0:
                    await asyncio.sleep(0.01)
            await wait_for(lambda: records(registry, "dropped") == 200, "every record dropped")
            assert records(registry, "sent") == 0
            assert registry.get_sample_value("driftserve_mirror_connected") == 0
        finally:
            await mirror.close()

    run(scenario)


def test_close_drops_and_counts_what_is_still_staged() -> None:
    async def scenario() -> None:
        registry = CollectorRegistry()
        mirror = publisher(dead_address(), registry)
        for i in range(5):
            mirror.tap(served(), request({"x": np.ones((1, 3), np.float32)}, str(i)), {"y": np.ones((1,))})
        await mirror.close()
        assert records(registry, "dropped") == 5

    run(scenario)


def test_close_sends_what_is_staged_while_the_sidecar_is_connected() -> None:
    async def scenario() -> FakeSidecar:
        server, sidecar, address = await start_sidecar()
        registry = CollectorRegistry()
        mirror = publisher(address, registry, flush_interval_s=3600.0)  # only close() flushes
        mirror.start()
        try:
            await wait_for(lambda: mirror._connected, "the Publish stream")
            for i in range(5):
                mirror.tap(served(), request({"x": np.full((1, 3), i, np.float32)}, str(i)), {"y": np.ones((1,))})
            await mirror.close()
            assert records(registry, "sent") == 5 and records(registry, "dropped") == 0
            assert registry.get_sample_value("driftserve_mirror_queue_depth_records") == 0
            return sidecar
        finally:
            await server.stop(None)

    sidecar = run(scenario)
    assert [i for b in sidecar.batches for i in b.request_ids] == ["0", "1", "2", "3", "4"]
    assert received(sidecar.batches, "inputs")["x"][:, 0].tolist() == [0, 1, 2, 3, 4]


def test_sampled_out_requests_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    rate, taps = 0.25, 400
    monkeypatch.setattr(mirror_module.random, "random", random.Random(5).random)
    draws = random.Random(5)
    expected_kept = sum(draws.random() < rate for _ in range(taps))

    async def scenario() -> CollectorRegistry:
        registry = CollectorRegistry()
        mirror = publisher(dead_address(), registry)
        model = served(sample_rate=rate)
        for i in range(taps):
            mirror.tap(model, request({"x": np.ones((1, 3), np.float32)}, str(i)), {"y": np.ones((1,))})
        await mirror.close()
        return registry

    registry = run(scenario)
    assert records(registry, "sampled_out") == taps - expected_kept
    assert records(registry, "dropped") == expected_kept  # closed before any flush
    assert 50 < expected_kept < 150


def test_models_without_drift_or_shadow_are_not_tapped() -> None:
    registry = CollectorRegistry()
    mirror = publisher(dead_address(), registry)
    plain = SimpleNamespace(model=SimpleNamespace(name="m", version=1, config=ModelConfig(), batched=True))
    mirror.tap(plain, request({"x": np.ones((1, 3), np.float32)}, "0"), {"y": np.ones((1,))})
    assert records(registry, "sampled_out") == records(registry, "dropped") == 0
    assert mirror._staged_rows == 0


def test_the_data_plane_taps_decoded_requests(tmp_path: Path) -> None:
    config = "max_batch_size: 8\ndrift:\n  reference: profile.json\n  mirror: {sample_rate: 1.0}\n"
    write_identity_model(tmp_path / "ident", TensorProto.FLOAT, config)
    rng = np.random.default_rng(3)
    xs = [rng.normal(size=(int(rng.integers(1, 4)), 3)).astype(np.float32) for _ in range(20)]

    async def scenario() -> list[pb.MirrorBatch]:
        server, sidecar, address = await start_sidecar()
        registry = CollectorRegistry()
        repository = ModelRepository(tmp_path, ServerMetrics(registry))
        await repository.load_all()
        mirror = MirrorPublisher(address, repository, registry, flush_interval_s=0.01)
        mirror.start()
        try:
            dataplane = DataPlane(repository, mirror)
            for i, x in enumerate(xs):
                message = v2pb.ModelInferRequest(
                    model_name="ident",
                    id=f"r{i}",
                    raw_input_contents=[x.tobytes()],
                    inputs=[v2pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=x.shape)],
                )
                await dataplane.infer(decode_request(message))
            await wait_for(lambda: sidecar.rows == sum(len(x) for x in xs), "every served row")
            return sidecar.batches
        finally:
            await mirror.close()
            await repository.close()
            await server.stop(None)

    batches = run(scenario)
    expected = np.concatenate(xs)
    assert received(batches, "inputs")["x"].tobytes() == expected.tobytes()
    assert received(batches, "outputs")["y"].tobytes() == expected.tobytes()
    assert [i for b in batches for i in b.request_ids] == [f"r{i}" for i in range(len(xs))]
    assert {b.model for b in batches} == {"ident"} and {b.version for b in batches} == {"1"}
