"""Ingest of mirrored traffic: decode and check a ``MirrorBatch``, then count it off the event loop.

The gRPC handler only decodes (zero-copy views over the message bytes), checks shapes and puts the
batch on the model's bounded queue; one worker thread per model feeds the drift detector in
arrival order. A full queue drops the batch and counts it, so a flood costs at most
``queue_batches`` batches of memory per model and never stalls the stream of another model.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from driftserve.api import driftserve_pb2
from driftserve.core.errors import InvalidArgument
from driftserve.core.tensors import decode_raw

logger = logging.getLogger(__name__)

# Rejection reasons (label values of driftserve_sidecar_rejected_rows_total).
UNKNOWN_MODEL = "unknown_model"
MALFORMED = "malformed"
WIDTH_MISMATCH = "width_mismatch"
QUEUE_FULL = "queue_full"
UPDATE_ERROR = "update_error"
REASONS = (UNKNOWN_MODEL, MALFORMED, WIDTH_MISMATCH, QUEUE_FULL, UPDATE_ERROR)
# Buckets from 10 µs to ~2.6 s: a batch update is tens of µs to a few ms.
_POLL_S = 0.1


class RejectedBatch(Exception):
    """A mirrored batch that cannot be used; ``reason`` is the metric label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(slots=True)
class MirroredBatch:
    """One decoded mirrored batch; arrays are views over the message bytes (read-only)."""

    model: str
    version: str
    rows: int
    features: NDArray[np.floating] | None
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    request_rows: list[int]
    latency_s: list[float]
    received_s: float = field(default_factory=time.time)
    # The version to shadow (a rollout's candidate); "" = the config's shadow_version.
    shadow_version: str = ""


def _decode_tensors(tensors: list[driftserve_pb2.Tensor], rows: int, what: str) -> dict[str, np.ndarray]:
    decoded: dict[str, np.ndarray] = {}
    for tensor in tensors:
        label = f"{what} '{tensor.name}'"
        if not tensor.name or tensor.name in decoded:
            raise RejectedBatch(MALFORMED, f"{label}: tensor names must be non-empty and unique")
        try:
            array = decode_raw(tensor.datatype, list(tensor.shape), tensor.data, tensor.name, kind=what)
        except InvalidArgument as exc:
            raise RejectedBatch(MALFORMED, exc.message) from None
        if array.ndim == 0 or array.shape[0] != rows:
            raise RejectedBatch(
                MALFORMED,
                f"{label}: shape {list(array.shape)} but the batch says rows={rows}; "
                "the first dimension must equal rows",
            )
        decoded[tensor.name] = array
    return decoded


def feature_matrix(inputs: dict[str, np.ndarray], rows: int, n_features: int) -> NDArray[np.floating]:
    """The detector's (rows x features) matrix: input columns in message order, concatenated."""
    columns: list[np.ndarray] = []
    for name, array in inputs.items():
        if array.dtype.kind not in "fiub":
            raise RejectedBatch(
                MALFORMED, f"input '{name}': dtype {array.dtype} cannot be drift-monitored; expected a numeric tensor"
            )
        columns.append(array.reshape(rows, -1))
    width = sum(c.shape[1] for c in columns)
    if width != n_features:
        shapes = {name: list(a.shape) for name, a in inputs.items()}
        raise RejectedBatch(
            WIDTH_MISMATCH,
            f"inputs {shapes} give {width} feature columns per row; the reference profile has {n_features} features",
        )
    if len(columns) == 1 and columns[0].dtype in (np.float32, np.float64):
        return columns[0]
    return np.concatenate([c.astype(np.float64, copy=False) for c in columns], axis=1)


def decode_batch(message: driftserve_pb2.MirrorBatch, n_features: int | None) -> MirroredBatch:
    """Decode and check one message; ``n_features`` None skips the drift matrix (shadow only)."""
    rows = int(message.rows)
    if rows < 1:
        raise RejectedBatch(MALFORMED, f"batch for model '{message.model}' has rows={rows}; expected >= 1")
    if not message.inputs:
        raise RejectedBatch(MALFORMED, f"batch for model '{message.model}' has no input tensors")
    request_rows = list(message.request_rows)
    if request_rows and sum(request_rows) != rows:
        raise RejectedBatch(MALFORMED, f"request_rows sum to {sum(request_rows)} but the batch has rows={rows}")
    inputs = _decode_tensors(list(message.inputs), rows, "input")
    outputs = _decode_tensors(list(message.outputs), rows, "output")
    features = feature_matrix(inputs, rows, n_features) if n_features is not None else None
    return MirroredBatch(
        message.model,
        message.version,
        rows,
        features,
        inputs,
        outputs,
        request_rows,
        list(message.latency_s),
        shadow_version=message.shadow_version,
    )


class BatchWorker:
    """One thread running ``handle`` on queued batches in order, fed from a bounded queue.

    ``handle`` must not raise for bad data; an exception is logged and passed to ``on_error``
    so that a bug triggered by one batch never stops the worker.
    """

    def __init__(
        self,
        name: str,
        handle: Callable[[MirroredBatch], None],
        max_batches: int,
        on_error: Callable[[MirroredBatch], None],
    ) -> None:
        self.name = name
        self._handle = handle
        self._on_error = on_error
        self._queue: queue.Queue[MirroredBatch] = queue.Queue(maxsize=max_batches)
        self._stop = threading.Event()
        self._idle = threading.Condition()
        self._busy = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start the worker thread."""
        self._thread.start()

    def qsize(self) -> int:
        """Batches waiting (approximate, for the queue-depth gauge)."""
        return self._queue.qsize()

    def offer(self, batch: MirroredBatch) -> bool:
        """Queue a batch without waiting; False (batch dropped) when the queue is full or stopped."""
        if self._stop.is_set():
            return False
        with self._idle:
            try:
                self._queue.put_nowait(batch)
            except queue.Full:
                return False
            self._busy += 1
        return True

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until every queued batch is handled (True) or ``timeout_s`` passes (False)."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def stop(self, timeout_s: float) -> None:
        """Stop after the batch in hand; queued batches are discarded (mirroring is best effort)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                logger.warning("worker %s still busy after %.1f s", self.name, timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                batch = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            try:
                self._handle(batch)
            except Exception:  # a bug hit by one batch must not stop the model's ingest
                logger.exception("worker %s failed on a batch of model=%s", self.name, batch.model)
                self._on_error(batch)
            finally:
                with self._idle:
                    self._busy -= 1
                    if not self._busy:
                        self._idle.notify_all()
