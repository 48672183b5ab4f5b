"""The dynamic batcher in-process, over a recording fake model (public API only: submit/close)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from driftserve.core.config import BatchingConfig
from driftserve.core.errors import DeadlineExceeded, ModelExecutionError, ResourceExhausted
from driftserve.server.batcher import Batcher
from driftserve.server.metrics import ServerMetrics
from driftserve.server.statistics import ModelStatistics


class RecordingModel:
    """Doubles its input; records each batch's first column; can be paused or made to fail."""

    name = "fake"
    version = 1
    batched = True

    def __init__(self, max_batch_size: int = 8, instances: int = 1) -> None:
        self.max_batch_size = max_batch_size
        self.instances = instances
        self.batches: list[list[float]] = []
        self.threads: list[str] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail_when: Callable[[np.ndarray], bool] = lambda x: False

    def run(self, inputs: dict[str, np.ndarray], instance: int = 0) -> dict[str, np.ndarray]:
        self.gate.wait(10)
        self.threads.append(threading.current_thread().name)
        x = inputs["x"]
        self.batches.append(x[:, 0].tolist())
        if self.fail_when(x):
            raise ModelExecutionError("boom")
        return {"y": x * 2}


def run(coro_factory: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(coro_factory(), 20))


def make(model: RecordingModel, **config: Any) -> tuple[Batcher, ModelStatistics, CollectorRegistry]:
    config.setdefault("inline_when_idle_us", 0)  # the gate would block the event loop itself
    config.setdefault("adaptive_delay", False)  # tests below pin the delay rules themselves
    registry = CollectorRegistry()
    stats = ModelStatistics()
    return Batcher(model, BatchingConfig(**config), stats, ServerMetrics(registry)), stats, registry  # type: ignore[arg-type]


def rows(*values: float) -> np.ndarray:
    return np.array([[v] for v in values], dtype=np.float32)


def test_outputs_split_back_per_request_for_varying_row_counts() -> None:
    async def body() -> None:
        model = RecordingModel(max_batch_size=64)
        batcher, stats, _ = make(model, max_queue_delay_us=5000)
        rng = np.random.default_rng(1)
        inputs = [rng.random((int(n), 3)).astype(np.float32) for n in rng.integers(1, 9, size=30)]
        results = await asyncio.gather(*(batcher.submit({"x": x}, len(x)) for x in inputs))
        for x, out in zip(inputs, results):
            np.testing.assert_array_equal(out["y"], x * 2)
        assert stats.inference_count == sum(len(x) for x in inputs)
        assert stats.execution_count < len(inputs)
        assert all(len(b) <= 64 for b in model.batches)
        await batcher.close()

    run(body)


def test_batch_closes_at_max_rows_without_waiting_for_the_delay() -> None:
    async def body() -> None:
        model = RecordingModel(max_batch_size=4)
        batcher, _, _ = make(model, max_queue_delay_us=60_000_000)
        results = await asyncio.gather(*(batcher.submit({"x": rows(i)}, 1) for i in range(4)))
        assert [r["y"][0, 0] for r in results] == [0, 2, 4, 6]
        assert model.batches == [[0, 1, 2, 3]]
        await batcher.close()

    run(body)


def test_preferred_batch_size_closes_early() -> None:
    async def body() -> None:
        model = RecordingModel(max_batch_size=16)
        batcher, _, _ = make(model, max_queue_delay_us=60_000_000, preferred_batch_sizes=[3])
        await asyncio.gather(*(batcher.submit({"x": rows(i)}, 1) for i in range(3)))
        assert model.batches == [[0, 1, 2]]
        await batcher.close()

    run(body)


def test_requests_are_never_split() -> None:
    async def body() -> None:
        model = RecordingModel(max_batch_size=4)
        batcher, _, _ = make(model, max_queue_delay_us=1000)
        model.gate.clear()
        first = asyncio.ensure_future(batcher.submit({"x": rows(9)}, 1))
        await asyncio.sleep(0.05)  # the first batch is now executing and holds the instance
        tasks = [asyncio.ensure_future(batcher.submit({"x": rows(*[float(k)] * 3)}, 3)) for k in range(3)]
        await asyncio.sleep(0.01)
        model.gate.set()
        await asyncio.gather(first, *tasks)
        assert all(len(b) <= 4 for b in model.batches)
        assert sorted(b for batch in model.batches[1:] for b in batch) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
        assert [len(b) for b in model.batches[1:]] == [3, 3, 3]
        await batcher.close()

    run(body)


def test_priority_orders_the_queue() -> None:
    async def body() -> None:
        model = RecordingModel(max_batch_size=1)
        batcher, _, _ = make(model, max_queue_delay_us=0, priority_levels=2, default_priority_level=2)
        model.gate.clear()
        blocker = asyncio.ensure_future(batcher.submit({"x": rows(-1)}, 1))
        await asyncio.sleep(0.05)
        low = [asyncio.ensure_future(batcher.submit({"x": rows(10 + i)}, 1, priority=2)) for i in range(3)]
        default = asyncio.ensure_future(batcher.submit({"x": rows(20)}, 1))  # 0 -> default level 2
        high = [asyncio.ensure_future(batcher.submit({"x": rows(1 + i)}, 1, priority=1)) for i in range(2)]
        await asyncio.sleep(0.01)
        model.gate.set()
        await asyncio.gather(blocker, *low, default, *high)
        assert [b[0] for b in model.batches] == [-1, 1, 2, 10, 11, 12, 20]
        await batcher.close()

    run(body)


def test_deadline_expires_in_queue_without_compute() -> None:
    async def body() -> None:
        model = RecordingModel(max_batch_size=8)
        batcher, stats, registry = make(model, max_queue_delay_us=60_000_000)
        loop = asyncio.get_running_loop()
        with pytest.raises(DeadlineExceeded, match="no compute was spent"):
            await batcher.submit({"x": rows(1)}, 1, deadline=loop.time() + 0.05)
        assert model.batches == [] and stats.execution_count == 0 and batcher.queue_depth == 0
        assert (
            registry.get_sample_value(
                "driftserve_batcher_rejections_total", {"model": "fake", "version": "1", "reason": "deadline"}
            )
            == 1
        )
        await batcher.close()

    run(body)


def test_cancelled_request_leaves_the_queue() -> None:
    async def body() -> None:
        model = RecordingModel(max_batch_size=8)
        batcher, stats, registry = make(model, max_queue_delay_us=60_000_000)
        task = asyncio.ensure_future(batcher.submit({"x": rows(1)}, 1))
        await asyncio.sleep(0.02)
        assert batcher.queue_depth == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert batcher.queue_depth == 0 and stats.execution_count == 0
        assert (
            registry.get_sample_value(
                "driftserve_batcher_rejections_total", {"model": "fake", "version": "1", "reason": "cancelled"}
            )
            == 1
        )
        await batcher.close()

    run(body)


def test_full_queue_refuses_at_once() -> None:
    async def body() -> None:
        model = RecordingModel(max_batch_size=8)
        batcher, _, registry = make(model, max_queue_delay_us=60_000_000, max_queue_size=2)
        queued = [asyncio.ensure_future(batcher.submit({"x": rows(i)}, 1)) for i in range(2)]
        await asyncio.sleep(0.01)
        with pytest.raises(ResourceExhausted, match="queue of model 'fake' version 1 is full"):
            await batcher.submit({"x": rows(9)}, 1)
        assert (
            registry.get_sample_value(
                "driftserve_batcher_rejections_total", {"model": "fake", "version": "1", "reason": "queue_full"}
            )
            == 1
        )
        for task in queued:
            task.cancel()
        await asyncio.gather(*queued, return_exceptions=True)
        await batcher.close()

    run(body)


def test_failure_is_confined_to_its_batch() -> None:
    async def body() -> None:
        model = RecordingModel(max_batch_size=2)
        model.fail_when = lambda x: bool((x == 666).any())
        batcher, stats, _ = make(model, max_queue_delay_us=60_000_000)
        doomed = await asyncio.gather(
            batcher.submit({"x": rows(666)}, 1), batcher.submit({"x": rows(1)}, 1), return_exceptions=True
        )
        assert all(isinstance(r, ModelExecutionError) for r in doomed)
        fine = await asyncio.gather(batcher.submit({"x": rows(2)}, 1), batcher.submit({"x": rows(3)}, 1))
        assert [f["y"][0, 0] for f in fine] == [4, 6]
        assert stats.execution_count == 1
        await batcher.close()

    run(body)


def test_instances_run_batches_concurrently() -> None:
    async def body() -> None:
        model = RecordingModel(max_batch_size=1, instances=2)
        batcher, _, _ = make(model, max_queue_delay_us=0)
        model.gate.clear()
        tasks = [asyncio.ensure_future(batcher.submit({"x": rows(i)}, 1)) for i in range(2)]
        await asyncio.sleep(0.05)
        # Both batches were dispatched while the first still blocks: two worker threads.
        assert batcher.queue_depth == 0
        model.gate.set()
        await asyncio.gather(*tasks)
        await batcher.close()

    run(body)


def test_disabled_batching_runs_each_request_alone() -> None:
    async def body() -> None:
        model = RecordingModel(max_batch_size=8)
        batcher, _, _ = make(model, enabled=False, max_queue_delay_us=100_000)
        await asyncio.gather(*(batcher.submit({"x": rows(i)}, 1) for i in range(5)))
        assert sorted(len(b) for b in model.batches) == [1, 1, 1, 1, 1]
        await batcher.close()

    run(body)


def test_cheap_batches_run_inline_when_idle_and_on_threads_under_load() -> None:
    async def body() -> None:
        model = RecordingModel(max_batch_size=8)
        batcher, _, _ = make(model, max_queue_delay_us=0, inline_when_idle_us=100_000)
        for i in range(5):
            await batcher.submit({"x": rows(i)}, 1)
        main = threading.current_thread().name
        # The first batch proves the model cheap on a worker thread; then idle batches run inline.
        assert model.threads[0] != main and model.threads[-1] == main
        model.threads.clear()
        results = await asyncio.gather(*(batcher.submit({"x": rows(i)}, 1) for i in range(16)))
        assert [r["y"][0, 0] for r in results] == [2 * i for i in range(16)]
        assert any(name != main for name in model.threads), "queued work goes to worker threads"
        await batcher.close()

    run(body)


def test_adaptive_delay_skips_waiting_when_no_other_request_is_coming() -> None:
    async def body() -> None:
        model = RecordingModel(max_batch_size=8)
        batcher, stats, _ = make(model, max_queue_delay_us=300_000, adaptive_delay=True)
        # One client, one request at a time: the first wait gathers nobody, so later ones skip it.
        await batcher.submit({"x": rows(0)}, 1)
        assert stats.queue.ns >= 300_000_000, "the first request waits out the delay"
        first_wait = stats.queue.ns
        for i in range(1, 4):
            out = await batcher.submit({"x": rows(i)}, 1)
            assert out["y"][0, 0] == 2 * i
        assert model.batches == [[0], [1], [2], [3]]
        assert (stats.queue.ns - first_wait) / 3 < 300_000_000, "later requests did not wait"
        # Overlapping requests bring the delay back: these two share one batch.
        results = await asyncio.gather(batcher.submit({"x": rows(7)}, 1), batcher.submit({"x": rows(8)}, 1))
        assert [r["y"][0, 0] for r in results] == [14, 16]
        assert model.batches[-1] == [7, 8]
        await batcher.close()

    run(body)


def test_adaptive_delay_closes_when_every_recent_client_is_queued() -> None:
    async def body() -> None:
        model = RecordingModel(max_batch_size=64)
        delay_ns = 300_000_000
        batcher, stats, _ = make(model, max_queue_delay_us=delay_ns // 1000, adaptive_delay=True)

        async def cycles(clients: int, n: int) -> None:
            """Closed loop: each client sends its next request once its last one returned."""

            async def client(c: int) -> None:
                for i in range(n):
                    await batcher.submit({"x": rows(100 * c + i)}, 1)

            await asyncio.gather(*(client(c) for c in range(clients)))

        # No history yet: the first batch of 4 waits out the delay; then 4 are known to be in flight.
        await cycles(4, 1)
        assert model.batches[0] == [0, 100, 200, 300] and stats.queue.ns >= 4 * delay_ns
        waited = stats.queue.ns
        await cycles(4, 6)
        assert [len(b) for b in model.batches[1:]] == [4] * 6, "every batch holds all four clients"
        assert stats.queue.ns - waited < 6 * 4 * delay_ns // 10, "and closes without waiting out the delay"
        # Load drops to 2 clients: a window's worth of batches waits for the missing two, then no more.
        await cycles(2, 12)
        last = model.batches[-3:]
        assert [len(b) for b in last] == [2, 2, 2]
        before = stats.queue.ns
        await cycles(2, 3)
        assert stats.queue.ns - before < 3 * 2 * delay_ns // 10, "the peak follows the load down"
        await batcher.close()

    asyncio.run(asyncio.wait_for(body(), 30))


def test_a_probe_of_the_slo_controller_waits_for_a_full_batch() -> None:
    # While the controller probes (a saturated server, see batch_controller), the batch that forms
    # ignores the target and the everyone-is-here rule: requests 10 ms apart, which a target of one
    # row would run one by one, share one batch; the probe ends when that batch closes.
    async def body() -> None:
        model = RecordingModel(max_batch_size=8)
        batcher, _, _ = make(model, slo_p99_ms=500.0, adaptive_delay=True)
        await batcher.submit({"x": rows(0.0)}, 1)
        controller = batcher._controller
        assert controller is not None
        controller.target_rows = 1
        controller.probing, controller.probe_delay_ns = True, 300_000_000

        async def later(delay_s: float, value: float) -> dict[str, np.ndarray]:
            await asyncio.sleep(delay_s)
            return await batcher.submit({"x": rows(value)}, 1)

        await asyncio.gather(*(later(0.01 * i, float(i)) for i in (1, 2, 3)))
        assert model.batches[-1] == [1.0, 2.0, 3.0]
        assert not controller.probing
        await batcher.close()

    run(body)
