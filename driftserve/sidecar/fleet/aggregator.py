"""The fleet aggregator's state: replicas' pulled window states, merged and judged like one sidecar.

``FleetState`` offers what the transports need of a report source (``models``, ``report``,
``refresh_all``), so the sidecar's own Monitor servicer, JSON API, dashboard and metrics serve
fleet-wide reports unchanged. ``pull_once`` (on the event loop, every ``pull_interval_s``)
resolves the replica names, pulls every sidecar's ``GetWindowState`` concurrently with a deadline
and keeps the last good state of each; a report merges them (``merge``) and hands the merged
counts to the same ``ModelDriftMonitor.evaluate`` a sidecar uses, so scoring, multiple-test
correction, hysteresis, alerts and actions are one code path.

A replica whose pull fails is *stale*: its last state stays merged (its rows were real; its
sliding panes age out by the clock) until ``forget_after_s``, then it is *unreachable* and no
longer merged. A replica that returns is merged from its new state (a new instance id when the
sidecar restarted). A missing replica never delays a report: reports read whatever was pulled last.

Pulls reach secured sidecars with ``replica_client.ReplicaClient`` (TLS, mutual TLS, a bearer
token); a replica that refuses a pull (no or wrong token, a token without scope ``monitor``, a
failed TLS handshake) is listed like one that is down, with the refusal and its fix as the error,
counted by reason in ``driftserve_fleet_pull_rejections_total`` and logged once per change.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from prometheus_client import CollectorRegistry

from driftserve.api import driftserve_pb2, driftserve_pb2_grpc
from driftserve.core.config import CONFIG_FILENAME, ModelConfig, load_model_config
from driftserve.core.errors import ConfigError
from driftserve.sidecar.drift.actions import AlertDispatcher
from driftserve.sidecar.drift.detector import ModelDriftMonitor
from driftserve.sidecar.drift.profile import ReferenceProfile
from driftserve.sidecar.fleet.discovery import parse_targets, resolve
from driftserve.sidecar.fleet.merge import merge_group, merge_shadow, window_panes
from driftserve.sidecar.fleet.metrics import FleetMetrics
from driftserve.sidecar.fleet.replica_client import ReplicaClient
from driftserve.sidecar.fleet.settings import FleetSettings
from driftserve.sidecar.metrics import DriftMetrics, ShadowMetrics
from driftserve.sidecar.replicas import CONTRIBUTING, INCOMPATIBLE, STALE, UNREACHABLE, FleetView, ReplicaStatus
from driftserve.sidecar.state import ModelReport, UnknownModel
from driftserve.sidecar.window_state import (
    FORMAT_VERSION,
    DecodedModel,
    GroupLayout,
    StateMismatch,
    decode_model,
    layout_digest,
)

logger = logging.getLogger(__name__)

# A replica's state grows with features x bins x panes (30 x 1,000 x 6 busy panes: ~240 KiB), past
# gRPC's default 4 MiB only for very wide models; this bound still keeps one reply from flooding memory.
MAX_STATE_BYTES = 256 * 1024 * 1024
NOT_PULLED = "not pulled yet"


@dataclass
class FleetModel:
    """One model as the aggregator judges it: a detector that never ingests, fed merged counts."""

    name: str
    config: ModelConfig
    monitor: ModelDriftMonitor | None
    layouts: list[GroupLayout]
    pane_seconds: float
    panes: int
    dispatcher: AlertDispatcher | None
    latest: ModelReport | None = None
    latest_monotonic: float = 0.0
    report_lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class ReplicaRecord:
    """What the aggregator holds of one replica address after a pull round."""

    address: str
    instance_id: str
    ok: bool  # the last pull succeeded
    error: str  # why the last pull failed or was refused
    pulled_unix: float | None  # when the held states were pulled
    states: dict[str, DecodedModel]
    model_errors: dict[str, str]


def _load_fleet_model(model_dir: Path) -> FleetModel | None:
    config = load_model_config(model_dir)
    if config.drift is None and config.deployment.shadow_version is None:
        logger.info(
            "model %s has no drift section in %s and no shadow version; not aggregated", model_dir.name, CONFIG_FILENAME
        )
        return None
    monitor = dispatcher = None
    layouts: list[GroupLayout] = []
    pane_seconds, panes = 1.0, 1
    if config.drift is not None:
        profile = ReferenceProfile.load(model_dir / config.drift.reference)
        monitor = ModelDriftMonitor(profile, config.drift, model_dir.name)
        for group in monitor.group_states():
            features, bins = group.cumulative.counts.shape
            layouts.append(GroupLayout(group.source, features, bins, layout_digest(group.ring)))
        pane_seconds, panes = config.drift.window.pane_seconds, config.drift.window.panes
        dispatcher = AlertDispatcher(config.drift.actions, model_dir.name)
    return FleetModel(model_dir.name, config, monitor, layouts, pane_seconds, panes, dispatcher)


class FleetState:
    """Pulls replicas' window states and serves merged, fleet-wide reports."""

    def __init__(self, settings: FleetSettings, registry: CollectorRegistry) -> None:
        self._settings = settings
        self._targets = parse_targets(settings.replicas)
        # Reads the --replica-* files now: a bad one stops the start with one line naming the flag.
        self.client = ReplicaClient.load(
            settings.replica_tls_ca, settings.replica_tls_cert, settings.replica_tls_key, settings.replica_token_file
        )
        self._refused: dict[str, str] = {}  # address -> reason of its last refusal, to log each change once
        self._drift_metrics = DriftMetrics(registry)
        self._shadow_metrics = ShadowMetrics(registry)
        self.metrics = FleetMetrics(registry)
        self.models: dict[str, FleetModel] = {}
        # Until the first round ends, every --replicas entry is listed as not pulled yet.
        self._records: dict[str, ReplicaRecord] = {
            str(t): ReplicaRecord(str(t), "", False, NOT_PULLED, None, {}, {}) for t in self._targets
        }
        self._pulled = False
        self._round_lock: asyncio.Lock | None = None  # made inside the running loop
        self._records_lock = threading.Lock()
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stop = threading.Event()
        self._refresher = threading.Thread(target=self._refresh_loop, name="fleet-report", daemon=True)

    # ------------------------------------------------------------------ loading
    def load(self) -> None:
        """Load every model with a ``drift:`` section or a shadow version; bad ones are logged and skipped."""
        root = self._settings.model_repository
        if not root.is_dir():
            raise ConfigError(f"model repository {root} is not a directory")
        for model_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
            try:
                model = _load_fleet_model(model_dir)
            except (ConfigError, ValueError) as exc:
                logger.error("model %s not aggregated: %s", model_dir.name, getattr(exc, "message", exc))
                continue
            if model is not None:
                self.models[model.name] = model
        logger.info("aggregating %s from replicas %s", sorted(self.models), self._settings.replicas)

    def start(self) -> None:
        """Start the report refresher thread (pulls run on the event loop, see :meth:`pull_once`)."""
        self._refresher.start()

    async def close(self, timeout_s: float = 2.0) -> None:
        """Stop the refresher and the actions, close the replica channels."""
        self._stop.set()
        if self._refresher.is_alive():
            await asyncio.to_thread(self._refresher.join, timeout_s)
        for model in self.models.values():
            if model.dispatcher is not None:
                await asyncio.to_thread(model.dispatcher.close, timeout_s)
        for channel in self._channels.values():
            await channel.close(None)
        self._channels.clear()

    # ------------------------------------------------------------------ pulling
    def replicas(self) -> list[ReplicaRecord]:
        """The records of the last pull round, by address."""
        with self._records_lock:
            return [self._records[a] for a in sorted(self._records)]

    async def pull_once(self) -> None:
        """One round: resolve the replicas, pull them all concurrently, keep what answered.

        Rounds never overlap (a round asked for during another waits for it), so the records
        always come from the newest round.
        """
        if self._round_lock is None:
            self._round_lock = asyncio.Lock()
        async with self._round_lock:
            await self._pull_round()

    async def _pull_round(self) -> None:
        started = time.perf_counter()
        addresses, resolve_errors = await asyncio.to_thread(resolve, self._targets)
        answers = await asyncio.gather(*(self._pull(a) for a in addresses))
        now = time.time()
        decoded = await asyncio.to_thread(self._decode_all, addresses, answers, now)
        with self._records_lock:
            previous = self._records if self._pulled else {}
        records: dict[str, ReplicaRecord] = {}
        for address, record in decoded.items():
            old = previous.get(address)
            if not record.ok and old is not None and old.pulled_unix is not None:
                record = ReplicaRecord(
                    address, old.instance_id, False, record.error, old.pulled_unix, old.states, old.model_errors
                )
            records[address] = record
        for address, old in previous.items():
            if address not in records and old.pulled_unix is not None:
                records[address] = ReplicaRecord(
                    address,
                    old.instance_id,
                    False,
                    "no longer resolved from --replicas",
                    old.pulled_unix,
                    old.states,
                    old.model_errors,
                )
        for target, error in resolve_errors.items():
            records.setdefault(target, ReplicaRecord(target, "", False, error, None, {}, {}))
        for address, record in list(records.items()):
            if record.pulled_unix is not None and now - record.pulled_unix > self._settings.forget_after_s:
                if address not in addresses and address not in resolve_errors:
                    del records[address]
                else:
                    records[address] = ReplicaRecord(address, "", False, record.error, None, {}, {})
        for address in [a for a in self._channels if a not in records]:
            await self._channels.pop(address).close(None)
            self._refused.pop(address, None)
        with self._records_lock:
            self._records = records
            self._pulled = True
        self._count_statuses(records.values())
        self.metrics.pull_duration.observe(time.perf_counter() - started)

    async def _pull(self, address: str) -> driftserve_pb2.WindowStateResponse | str:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = self.client.channel(
                address, options=[("grpc.max_receive_message_length", MAX_STATE_BYTES)]
            )
        stub = driftserve_pb2_grpc.MonitorStub(channel)
        try:
            response: driftserve_pb2.WindowStateResponse = await stub.GetWindowState(
                driftserve_pb2.WindowStateRequest(),
                timeout=self._settings.pull_timeout_s,
                metadata=self.client.metadata,
            )
        except grpc.aio.AioRpcError as exc:
            self.metrics.pull_errors.inc()
            return self._failed(address, exc.code(), exc.details() or "")
        if self._refused.pop(address, None) is not None:
            logger.info("replica %s accepts the pulls again", address)
        return response

    def _failed(self, address: str, code: grpc.StatusCode, details: str) -> str:
        """The error of a failed pull; a refusal is counted by reason and logged when it is new."""
        refusal = self.client.refusal(code, details)
        if refusal is None:
            return f"{code.name}: {details}{self.client.hint(code)}"
        self.metrics.pull_rejections.labels(refusal.reason).inc()
        if self._refused.get(address) != refusal.reason:
            self._refused[address] = refusal.reason
            logger.error("replica %s %s; it is left out of the fleet report until it accepts", address, refusal.message)
        return refusal.message

    def _decode_all(
        self, addresses: list[str], answers: list[driftserve_pb2.WindowStateResponse | str], now: float
    ) -> dict[str, ReplicaRecord]:
        records = {}
        for address, answer in zip(addresses, answers):
            if isinstance(answer, str):
                records[address] = ReplicaRecord(address, "", False, answer, None, {}, {})
                continue
            states: dict[str, DecodedModel] = {}
            errors: dict[str, str] = {}
            by_name = {m.model: m for m in answer.models}
            for name, model in self.models.items():
                if answer.format_version != FORMAT_VERSION:
                    errors[name] = (
                        f"window state format v{answer.format_version}; this aggregator reads v{FORMAT_VERSION} "
                        "(run the same driftserve release on both)"
                    )
                elif name not in by_name:
                    errors[name] = f"does not monitor model {name!r} (it monitors {sorted(by_name)})"
                else:
                    try:
                        states[name] = decode_model(by_name[name], model.layouts)
                    except StateMismatch as exc:
                        errors[name] = str(exc)
            if errors:
                self.metrics.pull_errors.inc()
                logger.warning("replica %s: %s", address, "; ".join(errors.values()))
            records[address] = ReplicaRecord(address, answer.instance_id, True, "", now, states, errors)
        return records

    def _count_statuses(self, records: Iterable[ReplicaRecord]) -> None:
        totals = dict.fromkeys((CONTRIBUTING, STALE, UNREACHABLE, INCOMPATIBLE), 0)
        for record in records:
            if record.ok:
                totals[INCOMPATIBLE if record.model_errors and not record.states else CONTRIBUTING] += 1
            else:
                totals[STALE if record.states else UNREACHABLE] += 1
        for status, value in totals.items():
            self.metrics.replicas.labels(status).set(value)

    # ------------------------------------------------------------------ reports
    def report(self, name: str, max_age_s: float | None = None) -> ModelReport:
        """The latest fleet report of ``name``, merged and evaluated now if older than ``max_age_s``."""
        model = self.models.get(name)
        if model is None:
            raise UnknownModel(f"model {name!r} is not aggregated here; aggregated: {sorted(self.models)}")
        return self._refresh(model, self._settings.report_interval_s if max_age_s is None else max_age_s)

    @property
    def rollout_state_dir(self) -> Path | None:
        """None: rollouts belong to each replica's server; the fleet page has no rollout panel."""
        return None

    def refresh_all(self, max_age_s: float) -> None:
        """Evaluate every model whose report is older than ``max_age_s`` (the scrape hook)."""
        for model in self.models.values():
            self._refresh(model, max_age_s)

    def _refresh(self, model: FleetModel, max_age_s: float) -> ModelReport:
        with model.report_lock:
            if model.latest is not None and time.monotonic() - model.latest_monotonic < max_age_s:
                return model.latest
            now = time.time()
            parts, fleet = self._contributions(model.name, now)
            started = time.perf_counter()
            items, rows_total = [], sum(p.rows_total for p in parts)
            if model.monitor is not None:
                first, last = window_panes(now, model.pane_seconds, model.panes)
                snapshots = [
                    merge_group([p.groups[g] for p in parts], layout, first, last)
                    for g, layout in enumerate(model.layouts)
                ]
                self.metrics.merge_duration.observe(time.perf_counter() - started)
                data = model.monitor.evaluate(snapshots, now, rows_total)
                self._drift_metrics.publish(data)
                assert model.dispatcher is not None
                model.dispatcher.dispatch(data)
                items = data.items
            shadow = None
            if model.config.deployment.shadow_version is not None:
                counters = merge_shadow([p.shadow for p in parts if p.shadow is not None])
                if counters is not None:
                    shadow = counters.stats()
                    self._shadow_metrics.agreement.labels(model.name).set(shadow.agreement)
                    self._shadow_metrics.abs_delta.labels(model.name, "mean").set(shadow.mean_abs_delta)
                    self._shadow_metrics.abs_delta.labels(model.name, "max").set(shadow.max_abs_delta)
            model.latest = ModelReport(
                model=model.name,
                generated_unix_s=now,
                rows_seen=rows_total,
                batches_seen=sum(p.batches_seen for p in parts),
                items=items,
                shadow=shadow,
                fleet=fleet,
            )
            model.latest_monotonic = time.monotonic()
            return model.latest

    def _contributions(self, name: str, now: float) -> tuple[list[DecodedModel], FleetView]:
        """The replica states merged into ``name``'s report, and every replica's status for it."""
        parts: list[DecodedModel] = []
        statuses: list[ReplicaStatus] = []
        merged_from: dict[str, str] = {}  # instance id -> address, so one sidecar is never merged twice
        for record in self.replicas():
            state = record.states.get(name)
            age = now - record.pulled_unix if record.pulled_unix is not None and state is not None else math.nan
            rows = state.rows_total if state is not None else 0
            if state is not None and record.instance_id in merged_from:
                status, error = INCOMPATIBLE, f"same sidecar as {merged_from[record.instance_id]}; merged once"
                age, rows = math.nan, 0
            elif state is not None:
                merged_from[record.instance_id] = record.address
                parts.append(state)
                status, error = (CONTRIBUTING, "") if record.ok else (STALE, record.error)
            elif record.ok:
                status, error = INCOMPATIBLE, record.model_errors.get(name, f"sent no state for {name!r}")
            else:
                status, error = UNREACHABLE, record.error
            statuses.append(ReplicaStatus(record.address, record.instance_id, status, age, rows, error))
        return parts, FleetView(tuple(statuses))

    def _refresh_loop(self) -> None:
        interval = self._settings.report_interval_s
        while not self._stop.wait(interval):
            try:
                self.refresh_all(interval / 2)
            except Exception:  # the refresher must outlive any one bad evaluation
                logger.exception("fleet report evaluation failed")
