"""Shadow deployment: run a candidate version on mirrored inputs and compare it with the primary.

The shadow sees the same raw inputs the primary served (``ModelVersion.run`` applies the model's
preprocessing itself) and is run once per mirrored *request*. Latency is compared like with like:
when the primary version can be loaded here too, it runs on the same request right beside the
shadow (alternating which goes first), so both inference times are measured the same way; the
primary's end-to-end server time (queueing, batching, the transport) is reported separately. It
runs in its own thread behind a bounded queue: a slow shadow drops batches (counted) and never
delays drift ingest of any model.

Comparison, cumulative since start: agreement of the decision (an integer label output when both
versions have one, else the arg-max of a 2-D float output), and mean/max absolute difference of
every float output both versions produce with the same shape.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from driftserve.core.errors import DriftserveError
from driftserve.core.model import ModelVersion
from driftserve.sidecar.ingest import BatchWorker, MirroredBatch
from driftserve.sidecar.metrics import ShadowMetrics

logger = logging.getLogger(__name__)

# Latency buckets from 10 µs to ~5 s.
LATENCY_SAMPLES = 4096


@dataclass(frozen=True)
class ShadowComparison:
    """Primary vs shadow over one batch: sums, so batches add up."""

    rows: int
    decided_rows: int
    agreeing_rows: int
    abs_delta_sum: float
    abs_delta_count: int
    max_abs_delta: float


def _decision(outputs: Mapping[str, np.ndarray], name: str) -> np.ndarray | None:
    array = outputs[name]
    if array.dtype.kind in "iub" and (array.ndim == 1 or (array.ndim == 2 and array.shape[1] == 1)):
        return array.reshape(-1)
    if array.dtype.kind == "f" and array.ndim == 2 and array.shape[1] > 1:
        decision: np.ndarray = np.argmax(array, axis=1)
        return decision
    return None


def compare_outputs(primary: Mapping[str, np.ndarray], shadow: Mapping[str, np.ndarray], rows: int) -> ShadowComparison:
    """Compare the outputs two versions gave for the same ``rows`` input rows."""
    common = [n for n in primary if n in shadow and primary[n].shape == shadow[n].shape]
    # Integer label outputs state the decision directly; prefer them over an arg-max of scores.
    ordered = sorted(common, key=lambda n: (primary[n].dtype.kind == "f", n))
    decided = agreeing = 0
    for name in ordered:
        p, s = _decision(primary, name), _decision(shadow, name)
        if p is not None and s is not None:
            decided, agreeing = rows, int(np.count_nonzero(p == s))
            break
    delta_sum, delta_count, delta_max = 0.0, 0, 0.0
    for name in common:
        if primary[name].dtype.kind != "f" or shadow[name].dtype.kind != "f":
            continue
        delta = np.abs(primary[name].astype(np.float64) - shadow[name].astype(np.float64)).reshape(-1)
        delta = delta[np.isfinite(delta)]
        if delta.size:
            delta_sum += float(delta.sum())
            delta_count += int(delta.size)
            delta_max = max(delta_max, float(delta.max()))
    return ShadowComparison(rows, decided, agreeing, delta_sum, delta_count, delta_max)


@dataclass(frozen=True)
class ShadowStats:
    """Cumulative shadow comparison of one model (NaN where nothing was measured yet)."""

    primary_version: str
    shadow_version: str
    rows: int
    agreement: float
    mean_abs_delta: float
    max_abs_delta: float
    primary_latency_p50_s: float  # end to end in the server
    shadow_latency_p50_s: float  # inference in the sidecar
    errors: int
    primary_inference_p50_s: float = math.nan  # inference in the sidecar, beside the shadow
    primary_inference_p99_s: float = math.nan
    shadow_latency_p99_s: float = math.nan


@dataclass(frozen=True)
class ShadowCounters:
    """The sums behind :class:`ShadowStats`, which add up across sidecars (fleet aggregation)."""

    primary_version: str
    shadow_version: str
    rows: int
    decided_rows: int
    agreeing_rows: int
    abs_delta_sum: float
    abs_delta_count: int
    max_abs_delta: float
    errors: int
    primary_latency_s: tuple[float, ...]
    shadow_latency_s: tuple[float, ...]

    def stats(self) -> ShadowStats:
        """Ratios, means and medians of these sums (NaN where nothing was measured yet)."""
        return ShadowStats(
            primary_version=self.primary_version,
            shadow_version=self.shadow_version,
            rows=self.rows,
            agreement=self.agreeing_rows / self.decided_rows if self.decided_rows else math.nan,
            mean_abs_delta=self.abs_delta_sum / self.abs_delta_count if self.abs_delta_count else math.nan,
            max_abs_delta=self.max_abs_delta if self.abs_delta_count else math.nan,
            primary_latency_p50_s=_median(self.primary_latency_s),
            shadow_latency_p50_s=_median(self.shadow_latency_s),
            errors=self.errors,
        )


class ShadowRunner:
    """Runs one model's shadow version on its mirrored batches in a dedicated thread."""

    def __init__(
        self,
        model: str,
        shadow: ModelVersion,
        max_batches: int,
        metrics: ShadowMetrics,
        load_primary: Callable[[str], ModelVersion | None] | None = None,
    ) -> None:
        self.model = model
        self.shadow = shadow
        # The primary version by its number, to time it beside the shadow (None: not available).
        self._load_primary = load_primary
        self._metrics = metrics
        self._lock = threading.Lock()
        self._primary_version = ""
        self._rows = self._decided = self._agreeing = self._errors = self._delta_count = 0
        self._delta_sum = self._delta_max = 0.0
        self._primary_latency: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self._shadow_latency: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self._primary_inference: deque[float] = deque(maxlen=LATENCY_SAMPLES)
        self._worker = BatchWorker(f"shadow-{model}", self._run_batch, max_batches, self._count_error)

    def start(self) -> None:
        """Start the shadow thread."""
        self._worker.start()

    def stop(self, timeout_s: float) -> None:
        """Stop the shadow thread."""
        self._worker.stop(timeout_s)

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until queued batches are compared (True) or ``timeout_s`` passes."""
        return self._worker.wait_idle(timeout_s)

    def offer(self, batch: MirroredBatch) -> None:
        """Queue a batch for the shadow; batches the shadow version itself served are skipped."""
        if batch.version == str(self.shadow.version):
            return
        if not self._worker.offer(batch):
            self._metrics.dropped.labels(self.model).inc(batch.rows)

    def snapshot(self) -> ShadowStats:
        """The comparison so far; also refreshes the gauges."""
        with self._lock:
            agreement = self._agreeing / self._decided if self._decided else math.nan
            mean_delta = self._delta_sum / self._delta_count if self._delta_count else math.nan
            stats = ShadowStats(
                primary_version=self._primary_version,
                shadow_version=str(self.shadow.version),
                rows=self._rows,
                agreement=agreement,
                mean_abs_delta=mean_delta,
                max_abs_delta=self._delta_max if self._delta_count else math.nan,
                primary_latency_p50_s=_median(self._primary_latency),
                shadow_latency_p50_s=_median(self._shadow_latency),
                errors=self._errors,
                primary_inference_p50_s=_median(self._primary_inference),
                primary_inference_p99_s=_p99(self._primary_inference),
                shadow_latency_p99_s=_p99(self._shadow_latency),
            )
        self._metrics.agreement.labels(self.model).set(stats.agreement)
        self._metrics.abs_delta.labels(self.model, "mean").set(stats.mean_abs_delta)
        self._metrics.abs_delta.labels(self.model, "max").set(stats.max_abs_delta)
        return stats

    def counters(self) -> ShadowCounters:
        """The comparison's sums so far, for a fleet aggregator to add up."""
        with self._lock:
            return ShadowCounters(
                self._primary_version,
                str(self.shadow.version),
                self._rows,
                self._decided,
                self._agreeing,
                self._delta_sum,
                self._delta_count,
                self._delta_max,
                self._errors,
                tuple(self._primary_latency),
                tuple(self._shadow_latency),
            )

    def _run_batch(self, batch: MirroredBatch) -> None:
        bounds = np.cumsum([0, *(batch.request_rows or [batch.rows])])
        parts: list[dict[str, np.ndarray]] = []
        latencies: list[float] = []
        primary_times: list[float] = []
        primary = self._load_primary(batch.version) if self._load_primary is not None else None
        try:
            for index, (start, stop) in enumerate(itertools.pairwise(bounds)):
                feed = {name: array[start:stop] for name, array in batch.inputs.items()}
                self.shadow.validate(feed)
                if primary is not None and index % 2:
                    primary_times.append(_timed(primary, feed)[1])
                outputs, took = _timed(self.shadow, feed)
                parts.append(outputs)
                latencies.append(took)
                if primary is not None and not index % 2:
                    primary_times.append(_timed(primary, feed)[1])
        except DriftserveError as exc:
            self._count_error(batch)
            logger.warning(
                "shadow model=%s version=%s failed on mirrored inputs: %s", self.model, self.shadow.version, exc.message
            )
            return
        shadow_out = {n: np.concatenate([p[n] for p in parts]) for n in parts[0]} if len(parts) > 1 else parts[0]
        result = compare_outputs(batch.outputs, shadow_out, batch.rows)
        histogram = self._metrics.latency
        for value in latencies:
            histogram.labels(self.model, "shadow").observe(value)
        for value in batch.latency_s:
            histogram.labels(self.model, "primary").observe(value)
        for value in primary_times:
            histogram.labels(self.model, "primary_inference").observe(value)
        self._metrics.rows.labels(self.model).inc(batch.rows)
        with self._lock:
            self._primary_version = batch.version
            self._rows += result.rows
            self._decided += result.decided_rows
            self._agreeing += result.agreeing_rows
            self._delta_sum += result.abs_delta_sum
            self._delta_count += result.abs_delta_count
            self._delta_max = max(self._delta_max, result.max_abs_delta)
            self._shadow_latency.extend(latencies)
            self._primary_latency.extend(batch.latency_s)
            self._primary_inference.extend(primary_times)

    def _count_error(self, batch: MirroredBatch) -> None:
        self._metrics.errors.labels(self.model).inc()
        with self._lock:
            self._errors += 1


def _timed(model: ModelVersion, feed: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
    started = time.perf_counter()
    outputs = model.run(feed)
    return outputs, time.perf_counter() - started


def _p99(values: deque[float]) -> float:
    return float(np.percentile(np.fromiter(values, dtype=np.float64), 99)) if values else math.nan


def _median(values: deque[float] | tuple[float, ...]) -> float:
    return float(np.median(np.fromiter(values, dtype=np.float64))) if values else math.nan
