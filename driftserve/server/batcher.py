"""Dynamic batching: one batcher per served model version.

A request puts its rows and a future on the queue with its arrival time and deadline. The batcher
waits for a free model instance, then closes a batch when it holds ``max_batch_size`` rows, when
the rows waiting form a preferred batch size, or when the oldest request has waited
``max_queue_delay_us`` — or at once when waiting has stopped paying. ``adaptive_delay`` adds two
rules. A batch closes as soon as every request that was recently in flight at once is here: the
batcher remembers the peak of queued plus running requests over the last few batches, and N
closed-loop clients that all wait on the previous batch cannot send more than N (so 8 clients get
batches of 8 without waiting out a delay sized for 32). And after a batch waited out the whole
delay and still held a single request, batches close at once until a request arrives while others
are queued or running; at low load waiting only adds latency.
A cheap batch with nothing else queued runs on the event loop itself (``inline_when_idle_us``),
which saves the two thread hand-offs that dominate latency at low load. While one batch computes
on a worker thread, the next one fills. Requests
are never split; a request whose deadline passes in the queue fails with DEADLINE_EXCEEDED before
any compute; a cancelled RPC leaves the queue; a full queue refuses at once (load shedding). An
error fails exactly the requests of its batch, and output rows are counted back per request.

With ``slo_p99_ms`` a ``BatchController`` chooses the delay, a target batch (rows that close a
batch at once) and a batch limit (rows one batch may take) from what it measures; the rules above
stay, with its numbers in place of the fixed ones, except while the controller probes a
saturated server for clients it cannot see: then one batch waits for its limit or the probe's
delay, nothing else. The batcher tells it of each arrival, each
batch it closes and each batch that completes, and publishes its state to the metrics and
ModelStatistics whenever it recomputes (a few times a second at most).

With batching disabled each request is its own batch, and the same queue bound still applies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from driftserve.core import gil_cpu
from driftserve.core.config import BatchingConfig
from driftserve.core.cpu_pressure import CpuPressure
from driftserve.core.errors import (
    DEFAULT_RETRY_AFTER_MS,
    DeadlineExceeded,
    DriftserveError,
    ModelExecutionError,
    ResourceExhausted,
    Unavailable,
)
from driftserve.core.model import ModelVersion
from driftserve.core.thread_names import name_native_thread
from driftserve.server.batch_controller import BatchController, ControllerSettings
from driftserve.server.metrics import HistogramRecorder, ServerMetrics, counter_writer
from driftserve.server.statistics import ModelStatistics

logger = logging.getLogger(__name__)

Outputs = dict[str, np.ndarray]
_EWMA_WEIGHT = 0.2
# Batches over which the peak of in-flight requests is remembered: long enough that one batch
# closed by its delay short of a client does not lower it, short enough to follow load that drops.
_PEAK_WINDOW = 8


@dataclass(eq=False, slots=True)
class _Pending:
    """One queued request."""

    inputs: Mapping[str, np.ndarray]
    rows: int
    future: asyncio.Future[Outputs]
    arrival_ns: int
    level: int
    timer: asyncio.TimerHandle | None = None
    queued: bool = True


@dataclass
class _BatchTimings:
    input_ns: int = 0
    infer_ns: int = 0
    output_ns: int = 0
    results: list[Outputs] = field(default_factory=list)


class Batcher:
    """Queues requests of one model version and runs them in batches on worker threads."""

    def __init__(
        self,
        model: ModelVersion,
        config: BatchingConfig,
        statistics: ModelStatistics,
        metrics: ServerMetrics,
    ) -> None:
        self.model = model
        self.config = config
        self.statistics = statistics
        self._enabled = config.enabled and model.batched
        self._max_rows = model.max_batch_size if model.batched else 1
        self._delay_ns = config.max_queue_delay_us * 1000
        self._preferred = frozenset(config.preferred_batch_sizes)
        self._levels = max(config.priority_levels, 1)
        self._default_level = (config.default_priority_level or self._levels) - 1
        self._queues: list[deque[_Pending]] = [deque() for _ in range(self._levels)]
        self._pending_requests = 0
        self._pending_rows = 0
        self._free_instances = list(range(model.instances))
        # When each instance's running batch was dispatched: the instance is busy from then until
        # _complete runs on the loop, thread hand-offs and loop lag included, and that occupancy
        # (not the compute alone) is what the SLO controller must plan batches with.
        self._dispatched_ns = [0] * model.instances
        self._loop = asyncio.get_running_loop()
        # One long-lived thread per instance fed by a SimpleQueue; results come back with one
        # call_soon_threadsafe. (run_in_executor adds a concurrent Future, a chained asyncio
        # Future and their callbacks per batch, all on the event loop thread.)
        self._jobs: queue.SimpleQueue[tuple[list[_Pending], int] | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._worker, name=f"batch-{model.name}-{model.version}_{i}", daemon=True)
            for i in range(model.instances)
        ]
        for thread in self._threads:
            thread.start()
        self._wakeup = asyncio.Event()
        self._running = 0
        self._closing = False
        self._inline_limit_ns = config.inline_when_idle_us * 1000
        self._adaptive = config.adaptive_delay
        # Adaptive delay: cleared when a batch waited out the whole delay and still held one
        # request; set again as soon as a request arrives while others are queued or running.
        self._company_seen = True
        # Adaptive delay: requests of running batches, the in-flight peak since the last batch
        # closed, the peaks of recent batches, and their max (None until one batch has closed).
        self._running_requests = 0
        self._peak_inflight = 0
        self._recent_peaks: deque[int] = deque(maxlen=_PEAK_WINDOW)
        self._expected_inflight: int | None = None
        # Starts high so a model proves itself cheap (on worker threads) before running inline.
        self._compute_ewma_ns = float(self._inline_limit_ns)
        self._idle = asyncio.Event()
        self._idle.set()
        version = str(model.version)
        self._m_batch_rows = HistogramRecorder(metrics.batch_size.labels(model.name, version))
        self._m_batch_requests = HistogramRecorder(metrics.batch_requests.labels(model.name, version))
        self._m_queue = HistogramRecorder(metrics.queue_duration.labels(model.name, version))
        self._m_compute = HistogramRecorder(metrics.compute_duration.labels(model.name, version))
        self._m_depth = counter_writer(metrics.queue_depth.labels(model.name, version))
        self._m_rejected: Callable[[str], None] = lambda reason: metrics.rejections.labels(
            model.name, version, reason
        ).inc()
        self._metrics = metrics
        self._controller: BatchController | None = None
        if config.slo_p99_ms is not None and self._enabled:
            settings = ControllerSettings(
                objective_ns=int(config.slo_p99_ms * 1_000_000),
                max_delay_ns=config.delay_bound_us * 1000,
                max_rows=self._max_rows,
            )
            pressure = CpuPressure()
            stall = pressure.stall_ns if pressure.available else None
            # The controller is fed on the event loop's thread: thread time there is the loop's,
            # plus that of the threads --gil-cpu put on the loop's CPU.
            self._controller = BatchController(settings, time.perf_counter_ns(), stall, gil_cpu.shared_cpu_ns)
            self._publish_controller()
        self._task = self._loop.create_task(self._run(), name=f"batcher-{model.name}-{model.version}")

    # ------------------------------------------------------------------ public API
    async def submit(
        self,
        inputs: Mapping[str, np.ndarray],
        rows: int,
        deadline: float | None = None,
        priority: int = 0,
    ) -> Outputs:
        """Queue one validated request; return its outputs (rows of this request only).

        ``deadline`` is an absolute ``loop.time()``; ``priority`` follows Triton (1 is highest,
        0 is the default level).
        """
        if self._closing:
            self._m_rejected("shutdown")
            raise Unavailable(f"model '{self.model.name}' version {self.model.version} is unloading")
        if self._pending_requests >= self.config.max_queue_size:
            self._m_rejected("queue_full")
            raise ResourceExhausted(
                f"queue of model '{self.model.name}' version {self.model.version} is full "
                f"({self.config.max_queue_size} requests waiting); retry later or add capacity",
                retry_after_ms=max(DEFAULT_RETRY_AFTER_MS, self.config.max_queue_delay_us // 1000),
            )
        level = self._default_level if priority <= 0 else min(priority, self._levels) - 1
        future: asyncio.Future[Outputs] = self._loop.create_future()
        if self._pending_requests or self._running:
            self._company_seen = True  # requests overlap: waiting for a fuller batch can pay off
        item = _Pending(inputs, rows, future, time.perf_counter_ns(), level)
        if self._controller is not None and self._controller.on_arrival(item.arrival_ns, rows):
            self._publish_controller()
        if deadline is not None:
            if deadline <= self._loop.time():
                self._m_rejected("deadline")
                raise DeadlineExceeded("deadline expired before the request was queued")
            item.timer = self._loop.call_at(deadline, self._expire, item)
        self._queues[level].append(item)
        self._pending_requests += 1
        self._pending_rows += rows
        inflight = self._pending_requests + self._running_requests
        if inflight > self._peak_inflight:
            self._peak_inflight = inflight
        self._m_depth.set(self._pending_requests)
        if self._free_instances and (self._pending_requests == 1 or self._closes_now()):
            # The batch loop needs waking only when this request starts a batch (to arm the
            # delay timer, which later arrivals cannot move) or makes it close now. With every
            # instance busy it sleeps until one frees (_complete wakes it). Waking it for every
            # other arrival would only send it back to sleep.
            self._wakeup.set()
        try:
            return await future
        except asyncio.CancelledError:
            if item.queued:
                self._dequeue(item)
                self._m_depth.set(self._pending_requests)
                self._m_rejected("cancelled")
            raise

    @property
    def queue_depth(self) -> int:
        return self._pending_requests

    async def close(self, drain_timeout_s: float = 10.0) -> None:
        """Refuse new requests, let queued and running ones finish, then stop the worker threads."""
        self._closing = True
        self._wakeup.set()
        deadline = self._loop.time() + drain_timeout_s
        while (self._pending_requests or self._running) and self._loop.time() < deadline:
            self._idle.clear()
            try:
                await asyncio.wait_for(self._idle.wait(), max(deadline - self._loop.time(), 0.001))
            except TimeoutError:
                break
        for waiting in self._queues:
            while waiting:
                item = waiting.popleft()
                if item.queued:
                    self._dequeue(item)
                    if not item.future.done():
                        item.future.set_exception(Unavailable("model unloaded before the request ran"))
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._stop_workers()

    def _stop_workers(self) -> None:
        """Fail batches still waiting for a thread, then let each worker thread exit."""
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self._complete(Unavailable("batch cancelled at shutdown"), *job)
        for _ in self._threads:
            self._jobs.put(None)

    # ------------------------------------------------------------------ queue bookkeeping
    def _dequeue(self, item: _Pending) -> None:
        item.queued = False
        self._pending_requests -= 1
        self._pending_rows -= item.rows
        if item.timer is not None:
            item.timer.cancel()
        if not self._pending_requests and not self._running:
            self._idle.set()

    def _expire(self, item: _Pending) -> None:
        if not item.queued:
            return
        self._dequeue(item)
        self._m_depth.set(self._pending_requests)
        self._m_rejected("deadline")
        self.statistics.fail.add(time.perf_counter_ns() - item.arrival_ns)
        if not item.future.done():
            item.future.set_exception(
                DeadlineExceeded(
                    f"deadline expired after {(time.perf_counter_ns() - item.arrival_ns) / 1e6:.2f} ms "
                    f"in the queue of model '{self.model.name}'; no compute was spent on it"
                )
            )

    def _oldest_arrival_ns(self) -> int | None:
        oldest = None
        for waiting in self._queues:
            while waiting and not waiting[0].queued:
                waiting.popleft()
            if waiting and (oldest is None or waiting[0].arrival_ns < oldest):
                oldest = waiting[0].arrival_ns
        return oldest

    def _closes_now(self) -> bool:
        """Whether the queue as it stands closes a batch, whatever the time."""
        controller = self._controller
        if controller is not None:
            if controller.probing:  # a probe waits for a full batch or its delay, nothing else
                return self._pending_rows >= controller.limit_rows
            if self._pending_rows >= min(controller.target_rows, controller.limit_rows):
                return True
        if not self._enabled or self._pending_rows >= self._max_rows or self._pending_rows in self._preferred:
            return True
        if self._adaptive:
            if not self._company_seen:
                return True  # the last full wait gathered nobody and no request has overlapped since
            expected = self._expected_inflight
            # Everyone recently in flight is here: nobody else is coming soon.
            return expected is not None and self._pending_requests + self._running_requests >= expected
        return False

    def _wait_ns(self) -> int:
        """How long until a batch should close (0: now)."""
        if self._closes_now():
            return 0
        oldest = self._oldest_arrival_ns()
        if oldest is None:
            return 0
        controller = self._controller
        if controller is None:
            delay_ns = self._delay_ns
        else:
            delay_ns = controller.probe_delay_ns if controller.probing else controller.delay_ns
        return max(0, delay_ns - (time.perf_counter_ns() - oldest))

    def _take_batch(self) -> list[_Pending]:
        """Pop requests by priority then arrival, up to the row limit, never splitting one."""
        batch: list[_Pending] = []
        rows = 0
        limit = self._max_rows if self._controller is None else self._controller.limit_rows
        for waiting in self._queues:
            while waiting:
                item = waiting[0]
                if not item.queued:
                    waiting.popleft()
                    continue
                if batch and (rows + item.rows > limit or not self._enabled):
                    return batch
                waiting.popleft()
                self._dequeue(item)
                batch.append(item)
                rows += item.rows
        return batch

    # ------------------------------------------------------------------ the loop
    async def _run(self) -> None:
        while True:
            while not self._pending_requests or not self._free_instances:
                self._wakeup.clear()
                await self._wakeup.wait()
            wait_ns = self._wait_ns()
            waited = False
            while wait_ns > 0 and self._pending_requests:
                waited = True
                self._wakeup.clear()
                timer = self._loop.call_later(wait_ns / 1e9, self._wakeup.set)
                await self._wakeup.wait()
                timer.cancel()
                wait_ns = self._wait_ns()
            by_delay = not self._closes_now()
            batch = self._take_batch()
            if waited and len(batch) == 1 and not self._pending_requests:
                self._company_seen = False
            self._m_depth.set(self._pending_requests)  # once per batch, not per request
            if not batch:
                continue
            self._running_requests += len(batch)
            self._recent_peaks.append(self._peak_inflight)
            self._expected_inflight = max(self._recent_peaks)
            self._peak_inflight = self._pending_requests + self._running_requests
            instance = self._free_instances.pop()
            self._running += 1
            dispatched_ns = time.perf_counter_ns()
            self._dispatched_ns[instance] = dispatched_ns
            if self._controller is not None:
                backlogged = self._pending_rows >= self._controller.limit_rows
                gathered_ns = dispatched_ns - batch[0].arrival_ns
                self._controller.on_close(self._expected_inflight or 0, by_delay, backlogged, gathered_ns)
            for item in batch:
                queued_ns = dispatched_ns - item.arrival_ns
                self.statistics.queue.add(queued_ns)
                self._m_queue.observe(queued_ns / 1e9)
            if self._inline_ok():
                # Idle and cheap: running here saves two thread hand-offs, the larger cost at low load.
                try:
                    outcome: _BatchTimings | BaseException = self._execute(batch, instance)
                except Exception as exc:  # reported per request by _complete, like a thread's error
                    outcome = exc
                self._complete(outcome, batch, instance)
                continue
            self._jobs.put((batch, instance))

    def _worker(self) -> None:
        """Worker thread: run batches and hand each outcome back to the event loop."""
        name_native_thread("batch-" + self.model.name)
        gil_cpu.release()  # started by the loop, whose mask may be the GIL's one CPU; ORT runs here
        while (job := self._jobs.get()) is not None:
            batch, instance = job
            try:
                outcome: _BatchTimings | BaseException = self._execute(batch, instance)
            except BaseException as exc:  # reported per request by _complete; the thread lives on
                outcome = exc
            try:
                self._loop.call_soon_threadsafe(self._complete, outcome, batch, instance)
            except RuntimeError:  # the loop is closed: nobody is waiting for these requests
                return

    def _inline_ok(self) -> bool:
        """Run on the event loop only when nothing else waits or runs and batches are cheap."""
        return (
            self._inline_limit_ns > 0
            and self._running == 1
            and not self._pending_requests
            and self._compute_ewma_ns < self._inline_limit_ns
        )

    def _execute(self, batch: list[_Pending], instance: int) -> _BatchTimings:
        """Merge, run and split one batch (worker thread)."""
        timings = _BatchTimings()
        t0 = time.perf_counter_ns()
        if len(batch) == 1:
            merged = batch[0].inputs
        else:
            merged = {name: np.concatenate([item.inputs[name] for item in batch], axis=0) for name in batch[0].inputs}
        t1 = time.perf_counter_ns()
        outputs = self.model.run(merged, instance)
        t2 = time.perf_counter_ns()
        total_rows = sum(item.rows for item in batch)
        if self.model.batched:
            for name, array in outputs.items():
                if array.ndim == 0 or array.shape[0] != total_rows:
                    raise ModelExecutionError(
                        f"model '{self.model.name}' output '{name}' has shape {list(array.shape)} "
                        f"for a batch of {total_rows} rows; cannot split it back per request"
                    )
        if len(batch) == 1:
            timings.results.append(outputs)
        else:
            offset = 0
            for item in batch:
                end = offset + item.rows
                timings.results.append({name: array[offset:end] for name, array in outputs.items()})
                offset = end
        t3 = time.perf_counter_ns()
        timings.input_ns, timings.infer_ns, timings.output_ns = t1 - t0, t2 - t1, t3 - t2
        return timings

    def _publish_controller(self) -> None:
        """Copy the controller's state to ModelStatistics and the metrics (on each recomputation)."""
        assert self._controller is not None
        state = self._controller.state()
        self.statistics.batch_control = state
        self._metrics.set_controller_state(self.model.name, str(self.model.version), state)

    def _complete(self, outcome: _BatchTimings | BaseException, batch: list[_Pending], instance: int) -> None:
        self._free_instances.append(instance)
        self._running -= 1
        self._running_requests -= len(batch)
        if self._pending_requests:
            # An instance is free for what waits. With nothing queued the batch loop stays asleep:
            # the next arrival wakes it (waking it here would cost a task step per batch for nothing).
            self._wakeup.set()
        rows = sum(item.rows for item in batch)
        error = outcome if isinstance(outcome, BaseException) else None
        if isinstance(outcome, _BatchTimings):
            timings = outcome
            compute_ns = timings.input_ns + timings.infer_ns + timings.output_ns
            self._compute_ewma_ns += (compute_ns - self._compute_ewma_ns) * _EWMA_WEIGHT
            self.statistics.record_batch(rows, len(batch), timings.input_ns, timings.infer_ns, timings.output_ns)
            self._m_compute.observe(compute_ns / 1e9)
            self._m_batch_rows.observe(rows)
            self._m_batch_requests.observe(len(batch))
            now_ns = time.perf_counter_ns()
            if self._controller is not None and self._controller.on_batch(
                now_ns, rows, now_ns - self._dispatched_ns[instance], [item.arrival_ns for item in batch]
            ):
                self._publish_controller()
            for item, result in zip(batch, timings.results):
                if not item.future.done():
                    item.future.set_result(result)
        else:
            assert error is not None
            if not isinstance(error, DriftserveError):
                logger.error("batch of %s failed unexpectedly", self.model.name, exc_info=error)
                error = ModelExecutionError(f"batch failed: {error}")
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(type(error)(error.message))
        if not self._pending_requests and not self._running:
            self._idle.set()
