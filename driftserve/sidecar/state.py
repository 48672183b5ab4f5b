"""The sidecar's models: drift monitors, ingest workers, shadows, and their latest reports.

``SidecarState`` is the one domain object behind every transport (Mirror and Monitor gRPC, the
HTTP API, the dashboard, Prometheus). Reports are evaluated on a steady cadence by one refresher
thread, because each evaluation is one step of the alert hysteresis; a reader that finds the last
report older than the cadence (a scrape right after start) triggers the evaluation itself, under
the model's lock, so steps are never doubled.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry

from driftserve.api import driftserve_pb2
from driftserve.core.config import CONFIG_FILENAME, MODEL_FILENAME, ModelConfig, load_model_config
from driftserve.core.errors import ConfigError
from driftserve.core.model import ModelVersion, load_model_version
from driftserve.sidecar.drift.actions import AlertDispatcher
from driftserve.sidecar.drift.detector import SLIDING, DriftReportData, FeatureWindowReport, ModelDriftMonitor
from driftserve.sidecar.drift.profile import ReferenceProfile
from driftserve.sidecar.ingest import (
    QUEUE_FULL,
    UNKNOWN_MODEL,
    UPDATE_ERROR,
    BatchWorker,
    MirroredBatch,
    RejectedBatch,
    decode_batch,
)
from driftserve.sidecar.metrics import DriftMetrics, IngestMetrics, ShadowMetrics
from driftserve.sidecar.replicas import FleetView
from driftserve.sidecar.rollout_panel import state_directory
from driftserve.sidecar.settings import SidecarSettings
from driftserve.sidecar.shadow import ShadowRunner, ShadowStats
from driftserve.sidecar.traffic import TrafficSnapshot, TrafficTracker

logger = logging.getLogger(__name__)

# Distinct unknown model names remembered for "log once"; a bound so junk names cannot grow memory.
_MAX_REMEMBERED_UNKNOWN = 1024
_REPEAT_LOG_S = 60.0
# Evaluations kept per feature for the dashboard's sparklines (5 minutes at the default 1 s cadence).
HISTORY_POINTS = 300


class UnknownModel(KeyError):
    """A report was asked for a model the sidecar does not monitor."""


@dataclass(frozen=True)
class ModelReport:
    """What every view shows of one model: drift items per feature and window, and the shadow.

    ``psi_history`` holds, per ``(source, feature)``, the sliding window's PSI excess over its
    no-drift expectation at each of the last evaluations (oldest first; NaN while too few rows);
    ``traffic_history`` the mirrored request rate and server p99 latency at the same evaluations.
    """

    model: str
    generated_unix_s: float
    rows_seen: int
    batches_seen: int
    items: list[FeatureWindowReport]
    shadow: ShadowStats | None
    fleet: FleetView | None = None  # set when a fleet aggregator merged the report from replicas
    traffic: TrafficSnapshot | None = None
    psi_history: Mapping[tuple[str, str], tuple[float, ...]] = field(default_factory=dict)
    traffic_history: tuple[tuple[float, float], ...] = ()


@dataclass
class MonitoredModel:
    """One model's live state in the sidecar."""

    name: str
    config: ModelConfig
    monitor: ModelDriftMonitor | None
    n_features: int | None
    dispatcher: AlertDispatcher | None
    shadow: ShadowRunner | None
    worker: BatchWorker | None = None
    batches_seen: int = 0
    latest: ModelReport | None = None
    latest_monotonic: float = 0.0
    report_lock: threading.Lock = field(default_factory=threading.Lock)
    outputs_warned: bool = False
    traffic: TrafficTracker = field(default_factory=TrafficTracker)
    psi_history: dict[tuple[str, str], deque[float]] = field(default_factory=dict)
    traffic_history: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=HISTORY_POINTS))

    def record_history(self, items: list[FeatureWindowReport], traffic: TrafficSnapshot) -> None:
        """Append one evaluation to the bounded sparkline histories (under ``report_lock``)."""
        for item in items:
            if item.window == SLIDING:
                # A window below min_window_rows is not judged: its PSI is noise, so it is a gap.
                excess = item.psi - item.psi_expected if math.isfinite(item.psi_expected) else item.psi
                excess = math.nan if item.status == "insufficient" else excess
                key = (item.source, item.feature)
                self.psi_history.setdefault(key, deque(maxlen=HISTORY_POINTS)).append(excess)
        self.traffic_history.append((traffic.requests_per_s, traffic.latency_p99_s))

    model_dir: Path | None = None
    # The version a rollout asked to shadow ("" = the config's shadow_version), and versions that
    # could not be loaded (not retried for every batch).
    requested_shadow: str = ""
    unloadable: set[str] = field(default_factory=set)
    # Primary versions loaded here to time them beside the shadow (None: could not be loaded).
    primaries: dict[str, ModelVersion | None] = field(default_factory=dict)


def _warm_up(monitor: ModelDriftMonitor, n_features: int) -> None:
    """Compile the binning kernel for every array type ingest passes, then forget the rows.

    Decoded inputs are read-only views (float32, or float64 for FP64 inputs) and concatenated
    ones are writable float64; Numba compiles one specialisation per type, which costs seconds
    the first time, so it happens at load instead of stalling the first mirrored batches.
    """
    for dtype, writable in ((np.float32, False), (np.float64, False), (np.float64, True)):
        rows = np.zeros((1, n_features), dtype=dtype)
        rows.flags.writeable = writable
        monitor.update(rows, None, 0.0)
    monitor.reset()


class SidecarState:
    """Loads the monitored models of a repository, routes mirrored batches, evaluates reports."""

    def __init__(self, settings: SidecarSettings, registry: CollectorRegistry) -> None:
        self._settings = settings
        self.metrics = IngestMetrics(registry)
        self._drift_metrics = DriftMetrics(registry)
        self._shadow_metrics = ShadowMetrics(registry)
        self.models: dict[str, MonitoredModel] = {}
        self._unknown_seen: set[str] = set()
        self._last_logged: dict[tuple[str, str], float] = {}
        self._stop = threading.Event()
        self._refresher = threading.Thread(target=self._refresh_loop, name="drift-report", daemon=True)

    @property
    def rollout_state_dir(self) -> Path:
        """Where the server persists rollout state (read by the dashboard's rollout panel)."""
        return state_directory(self._settings.model_repository, self._settings.state_dir)

    # ------------------------------------------------------------------ loading
    def load(self) -> None:
        """Load every model with a ``drift:`` section or a shadow version; bad ones are logged and skipped."""
        root = self._settings.model_repository
        if not root.is_dir():
            raise ConfigError(f"model repository {root} is not a directory")
        for model_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
            try:
                model = self._load_model(model_dir)
            except (ConfigError, ValueError) as exc:
                logger.error("model %s not monitored: %s", model_dir.name, getattr(exc, "message", exc))
                continue
            if model is not None:
                self._add(model)
        logger.info(
            "monitoring %s",
            {n: ("drift" if m.monitor else "") + (" shadow" if m.shadow else "") for n, m in self.models.items()},
        )

    def _load_model(self, model_dir: Path) -> MonitoredModel | None:
        config = load_model_config(model_dir)
        name = model_dir.name
        shadow_version = config.deployment.shadow_version if self._settings.shadow else None
        rollouts = config.deployment.rollout is not None and self._settings.shadow
        if config.drift is None and shadow_version is None and not rollouts:
            logger.info(
                "model %s has no drift section in %s, no shadow version and no rollout; not monitored",
                name,
                CONFIG_FILENAME,
            )
            return None
        monitor = dispatcher = None
        n_features = None
        if config.drift is not None:
            profile = ReferenceProfile.load(model_dir / config.drift.reference)
            monitor = ModelDriftMonitor(profile, config.drift, name)
            n_features = len(profile.features)
            _warm_up(monitor, n_features)
            dispatcher = AlertDispatcher(config.drift.actions, name)
        model = MonitoredModel(name, config, monitor, n_features, dispatcher, None, model_dir=model_dir)
        if shadow_version is not None:
            path = model_dir / str(shadow_version) / MODEL_FILENAME
            if not path.is_file():
                raise ConfigError(
                    f"{model_dir / CONFIG_FILENAME}: deployment.shadow_version {shadow_version} has no {path}"
                )
            model.shadow = self._shadow_runner(model, load_model_version(name, shadow_version, path, config))
        return model

    def _shadow_runner(self, model: MonitoredModel, version: ModelVersion) -> ShadowRunner:
        return ShadowRunner(
            model.name,
            version,
            self._settings.shadow_queue_batches,
            self._shadow_metrics,
            lambda number: self._primary(model, number),
        )

    def _primary(self, model: MonitoredModel, number: str) -> ModelVersion | None:
        """The primary version ``number`` loaded here (shadow thread), to time it beside the shadow."""
        if number not in model.primaries:
            model.primaries.clear()  # only the current primary is kept
            model.primaries[number] = self._load_version(model, number)
        return model.primaries[number]

    def _load_version(self, model: MonitoredModel, number: str) -> ModelVersion | None:
        if model.model_dir is None or not number.isdigit():
            return None
        path = model.model_dir / number / MODEL_FILENAME
        try:
            return load_model_version(model.name, int(number), path, load_model_config(model.model_dir))
        except Exception as exc:  # a version that cannot load here is reported, never fatal
            logger.warning("model %s: version %s cannot be loaded in the sidecar: %s", model.name, number, exc)
            return None

    def _follow_rollout(self, model: MonitoredModel, wanted: str) -> None:
        """Ingest thread: run the version a rollout's shadow stage names, and stop it afterwards."""
        if wanted == model.requested_shadow:
            return
        previous = model.shadow
        if wanted:
            if wanted in model.unloadable:
                return
            version = self._load_version(model, wanted)
            if version is None:
                model.unloadable.add(wanted)
                return
            runner = self._shadow_runner(model, version)
            runner.start()
            model.shadow = runner
            logger.info("model %s: shadowing rollout candidate version %s", model.name, wanted)
        else:
            model.shadow = None
            logger.info(
                "model %s: rollout shadow stage over; shadow version %s stopped", model.name, model.requested_shadow
            )
        model.requested_shadow = wanted
        if previous is not None:
            previous.stop(2.0)

    def _add(self, model: MonitoredModel) -> None:
        model.worker = BatchWorker(
            f"ingest-{model.name}",
            lambda b: self._ingest(model, b),
            self._settings.queue_batches,
            lambda b: self._count(UPDATE_ERROR, b.rows),
        )
        self.metrics.queue_depth.labels(model.name).set_function(model.worker.qsize)
        self.models[model.name] = model

    def start(self) -> None:
        """Start the ingest workers, shadows and the report refresher."""
        for model in self.models.values():
            assert model.worker is not None
            model.worker.start()
            if model.shadow is not None:
                model.shadow.start()
        self._refresher.start()

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop every thread; queued batches are dropped (mirroring is best effort)."""
        self._stop.set()
        if self._refresher.is_alive():
            self._refresher.join(timeout_s)
        for model in self.models.values():
            if model.worker is not None:
                model.worker.stop(timeout_s)
            if model.shadow is not None:
                model.shadow.stop(timeout_s)
            if model.dispatcher is not None:
                model.dispatcher.close(timeout_s)

    # ------------------------------------------------------------------ ingest
    def submit(self, message: driftserve_pb2.MirrorBatch) -> int:
        """Decode, check and queue one mirrored batch (event loop; never blocks). Rows accepted."""
        rows = int(message.rows)
        model = self.models.get(message.model)
        if model is None:
            self._count(UNKNOWN_MODEL, rows)
            if message.model not in self._unknown_seen and len(self._unknown_seen) < _MAX_REMEMBERED_UNKNOWN:
                self._unknown_seen.add(message.model)
                logger.warning(
                    "mirrored batches for model %r ignored: not monitored here (monitored: %s)",
                    message.model,
                    sorted(self.models),
                )
            return 0
        started = time.perf_counter()
        try:
            batch = decode_batch(message, model.n_features)
        except RejectedBatch as exc:
            self._count(exc.reason, rows)
            self._log_limited(model.name, exc.reason, exc.message)
            return 0
        self.metrics.duration.labels("decode").observe(time.perf_counter() - started)
        assert model.worker is not None
        if not model.worker.offer(batch):
            self._count(QUEUE_FULL, batch.rows)
            self._log_limited(
                model.name, QUEUE_FULL, f"ingest queue full ({self._settings.queue_batches} batches); dropping"
            )
            return 0
        self.metrics.batches.inc()
        self.metrics.rows.inc(batch.rows)
        return batch.rows

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until every queued batch (and shadow run) is done; for tests and benchmarks."""
        deadline = time.monotonic() + timeout_s
        for model in self.models.values():
            assert model.worker is not None
            if not model.worker.wait_idle(max(deadline - time.monotonic(), 0.0)):
                return False
            if model.shadow is not None and not model.shadow.wait_idle(max(deadline - time.monotonic(), 0.0)):
                return False
        return True

    def _ingest(self, model: MonitoredModel, batch: MirroredBatch) -> None:
        """Worker thread: feed the detector, then hand the batch to the shadow."""
        started = time.perf_counter()
        if model.monitor is not None and batch.features is not None:
            try:
                model.monitor.update(batch.features, batch.outputs, batch.received_s)
            except ValueError as exc:
                # Outputs that do not match the profiled ones: keep monitoring the inputs.
                if not model.outputs_warned:
                    model.outputs_warned = True
                    logger.warning("model %s: output drift off for mismatching batches: %s", model.name, exc)
                model.monitor.update(batch.features, None, batch.received_s)
        model.batches_seen += 1
        model.traffic.observe(batch)
        self.metrics.duration.labels("update").observe(time.perf_counter() - started)
        if self._settings.shadow and batch.shadow_version != model.requested_shadow:
            self._follow_rollout(model, batch.shadow_version)
        if model.shadow is not None:
            model.shadow.offer(batch)

    def _count(self, reason: str, rows: int) -> None:
        self.metrics.rejected.labels(reason).inc(max(rows, 0))

    def _log_limited(self, model: str, reason: str, message: str) -> None:
        now = time.monotonic()
        last = self._last_logged.get((model, reason))
        if last is None or now - last >= _REPEAT_LOG_S:
            self._last_logged[(model, reason)] = now
            level = logging.INFO if reason == QUEUE_FULL else logging.WARNING
            logger.log(level, "mirrored batch for model %s rejected (%s): %s", model, reason, message)

    # ------------------------------------------------------------------ reports
    def report(self, name: str, max_age_s: float | None = None) -> ModelReport:
        """The latest report of ``name``, evaluated now if older than ``max_age_s`` (default: the cadence)."""
        model = self.models.get(name)
        if model is None:
            raise UnknownModel(f"model {name!r} is not monitored by this sidecar; monitored: {sorted(self.models)}")
        return self._refresh(model, self._settings.report_interval_s if max_age_s is None else max_age_s)

    def refresh_all(self, max_age_s: float) -> None:
        """Evaluate every model whose report is older than ``max_age_s`` (the scrape hook)."""
        for model in self.models.values():
            self._refresh(model, max_age_s)

    def _refresh(self, model: MonitoredModel, max_age_s: float) -> ModelReport:
        with model.report_lock:
            if model.latest is not None and time.monotonic() - model.latest_monotonic < max_age_s:
                return model.latest
            now = time.time()
            data: DriftReportData | None = model.monitor.report(now) if model.monitor is not None else None
            if data is not None:
                self._drift_metrics.publish(data)
                assert model.dispatcher is not None
                model.dispatcher.dispatch(data)
            items = data.items if data else []
            traffic = model.traffic.snapshot()
            model.record_history(items, traffic)
            model.latest = ModelReport(
                model=model.name,
                generated_unix_s=now,
                rows_seen=data.rows_total if data else 0,
                batches_seen=model.batches_seen,
                items=items,
                shadow=model.shadow.snapshot() if model.shadow is not None else None,
                traffic=traffic,
                psi_history={key: tuple(values) for key, values in model.psi_history.items()},
                traffic_history=tuple(model.traffic_history),
            )
            model.latest_monotonic = time.monotonic()
            return model.latest

    def _refresh_loop(self) -> None:
        interval = self._settings.report_interval_s
        while not self._stop.wait(interval):
            try:
                # Half the cadence: a scrape-triggered evaluation just before does not double-step.
                self.refresh_all(interval / 2)
            except Exception:  # the refresher must outlive any one bad evaluation
                logger.exception("drift report evaluation failed")
