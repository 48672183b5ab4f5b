"""One rollout per model: gate → shadow → canary steps → primary, persisted, with rollback.

The controller works through the repository's seams only: it loads a candidate beside the
serving versions (``load_candidate``), makes it routable (``add_version``), steers traffic by the
entry's ``canary`` weights and switches the default by its ``primary`` (one assignment on the
event loop: a request routed before it finishes on the version that took it), and drains
versions it retires (``retire_version``). It sees traffic through the data plane's observer
hook (``observe`` / ``observe_failure``), which costs one dict lookup per request when no rollout
runs. Every stage change is written to the state store before it takes effect on traffic where
that matters, so a restarted server resumes the rollout at its persisted stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from driftserve.core.config import RolloutConfig
from driftserve.core.errors import FailedPrecondition, NotFound
from driftserve.core.rollout_state import (
    CANARY,
    FAILED,
    MAX_REJECTED,
    PRIMARY,
    ROLLED_BACK,
    SHADOW,
    VALIDATING,
    RolloutState,
    StateStore,
)
from driftserve.server.repository import ModelRepository, ServedVersion, check_model_name
from driftserve.server.rollout import analysis
from driftserve.server.rollout.gate import GateResult, run_gate
from driftserve.server.rollout.metrics import RolloutMetrics
from driftserve.server.rollout.sidecar_shadow import SidecarShadow

logger = logging.getLogger(__name__)

# Requests run on the other version at once, off the request path (shadow runs, canary checks).
MAX_COMPARE_INFLIGHT = 8
# Defaults when a model has a validation gate but no rollout section: promote after the gate.
GATE_ONLY = RolloutConfig(steps=[100.0], step_duration_s=0.0)


@dataclass
class _Run:
    """The live part of one model's rollout (the persisted part is ``state``)."""

    state: RolloutState
    config: RolloutConfig
    primary: ServedVersion | None = None
    candidate: ServedVersion | None = None
    window: analysis.StepWindow | None = None
    comparing: bool = False  # shadow stage: run the candidate on primary-served requests
    compare_share: float = 0.0  # canary: share of candidate requests re-run on the primary
    baseline_p99_s: float = math.nan
    inflight: int = 0
    gate_done: asyncio.Event = field(default_factory=asyncio.Event)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    promote_now: bool = False
    task: asyncio.Task[None] | None = None


class RolloutController:
    """Runs the rollouts of one repository; the server's ``Models`` service and poller call it."""

    def __init__(
        self,
        repository: ModelRepository,
        store: StateStore,
        metrics: RolloutMetrics,
        sidecar: SidecarShadow | None = None,
    ) -> None:
        self.repository = repository
        self.store = store
        self.metrics = metrics
        # With a sidecar the shadow stage runs there; without one, in this process off the request path.
        self.sidecar = sidecar
        self.states: dict[str, RolloutState] = store.load_all()
        self._runs: dict[str, _Run] = {}
        self._retire_tasks: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # Set in a worker of ``--workers``: every control call (load, unload, promote, rollback) is
        # refused with it, since it would change only the worker that one connection reached.
        self.control_refusal: str | None = None
        for name, state in self.states.items():
            repository.pinned[name] = state.primary
            metrics.set_stage(name, state.stage, state.step, state.weight)

    # ------------------------------------------------------------------ starting
    async def resume(self) -> None:
        """Restart the rollouts a previous process left active, at their persisted stage."""
        for name, state in list(self.states.items()):
            entry = self.repository.models.get(name)
            if not state.active or entry is None or not entry.ready or entry.config is None:
                continue
            logger.info("model %s: resuming the rollout of version %d at %s", name, state.candidate, _where(state))
            self._start(name, state, _rollout_config(entry.config.deployment.rollout))

    async def request_load(self, name: str, version: int | None = None) -> str:
        """Load a model, or roll out a new version of a managed one; returns what happened.

        Waits for the gate: a candidate that fails it raises FailedPrecondition with the reason,
        and the current version keeps serving. The rest of the rollout runs in the background.
        """
        self._check_control()
        check_model_name(name)
        entry = self.repository.models.get(name)
        if entry is None or not entry.ready or entry.config is None or not entry.config.deployment.managed:
            await self.repository.load(name)
            return "loaded"
        run = self._runs.get(name)
        if run is not None:
            raise FailedPrecondition(
                f"model '{name}': a rollout of version {run.state.candidate} is in progress ({_where(run.state)}); "
                "one per model: promote or roll it back first"
            )
        primary = entry.default_version().version
        on_disk = self.repository.versions_on_disk(name)
        if version is None:
            newer = [v for v in on_disk if v > primary]
            if not newer:
                await self.repository.load(name)
                return f"no version newer than {primary} on disk; reloaded the configuration"
            version = max(newer)
        elif version == primary:
            raise FailedPrecondition(f"model '{name}': version {version} is already the primary")
        elif version not in on_disk:
            model_dir = self.repository.root / name
            raise NotFound(
                f"model '{name}' has no complete version {version} (no {model_dir / str(version) / 'model.onnx'}); "
                f"versions on disk: {on_disk}"
            )
        run = self.begin(name, version)
        await run.gate_done.wait()
        if run.state.stage == FAILED:
            raise FailedPrecondition(f"model '{name}' version {version} failed its gate: {run.state.reason}")
        return f"version {version} passed the gate; rollout {_where(run.state)}"

    def begin(self, name: str, version: int) -> _Run:
        """Start rolling out ``version`` (the poller's entry point; no waiting)."""
        entry = self.repository.entry(name)
        assert entry.config is not None
        primary = entry.default_version().version
        previous = self.states.get(name)
        state = RolloutState(model=name, candidate=version, primary=primary)
        if previous is not None:
            state.rejected = dict(previous.rejected)
        self._retire_previous_now(name)
        return self._start(name, state, _rollout_config(entry.config.deployment.rollout))

    def _start(self, name: str, state: RolloutState, config: RolloutConfig) -> _Run:
        run = _Run(state, config)
        self._runs[name] = run
        self._save(state)
        run.task = asyncio.get_running_loop().create_task(self._drive(run), name=f"rollout-{name}")
        return run

    def active(self, name: str) -> bool:
        return name in self._runs

    def rejected(self, name: str) -> dict[str, str]:
        state = self.states.get(name)
        return dict(state.rejected) if state is not None else {}

    # ------------------------------------------------------------------ the stages
    async def _drive(self, run: _Run) -> None:
        state, name = run.state, run.state.model
        try:
            if not await self._gate(run):
                return
            assert run.candidate is not None
            # Pin the default first: a routable candidate must never become the default by being
            # the highest loaded version.
            self.repository.pinned[name] = state.primary
            self.repository.entry(name).primary = state.primary
            self.repository.add_version(name, run.candidate)
            shadow = run.config.shadow
            if state.stage in (VALIDATING, SHADOW) and (shadow.duration_s > 0 or shadow.requests > 0):
                self._enter(run, SHADOW, -1, 0.0)
                if self.sidecar is not None:
                    self.sidecar.request(name, state.candidate)
                else:
                    run.comparing = True
                passed = await self._hold(run, shadow.duration_s, shadow.requests, in_sidecar=self.sidecar is not None)
                run.comparing = False
                if self.sidecar is not None:
                    self.sidecar.release(name)
                if not passed:
                    return
            first = max(state.step, 0) if state.stage == CANARY else 0
            for step in range(first, len(run.config.steps)):
                if run.promote_now:
                    break
                weight = run.config.steps[step] / 100.0
                self._enter(run, CANARY, step, weight)
                self.repository.entry(name).canary = {state.candidate: weight}
                run.compare_share = run.config.compare_share
                if not await self._hold(run, run.config.step_duration_s, run.config.step_requests):
                    return
            await self._promote(run)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not leave traffic on a half-rolled-out candidate
            logger.exception("model %s: rollout of version %d failed", name, state.candidate)
            await self._roll_back(run, f"rollout error: {type(exc).__name__}: {exc}", "error")
        finally:
            run.gate_done.set()
            if self.sidecar is not None:
                self.sidecar.release(name)
            if self._runs.get(name) is run:
                del self._runs[name]

    async def _gate(self, run: _Run) -> bool:
        """Load, warm and gate the candidate in the background; False (and FAILED) when it fails."""
        state, name = run.state, run.state.model
        self._enter(run, state.stage if state.stage != VALIDATING else VALIDATING, state.step, 0.0)
        run.primary = self.repository.entry(name).versions.get(state.primary)
        entry_config = self.repository.entry(name).config
        try:
            run.candidate = await self.repository.load_candidate(name, state.candidate)
        except Exception as exc:
            result = GateResult(False, getattr(exc, "message", f"{type(exc).__name__}: {exc}"))
        else:
            validation = entry_config.deployment.validation if entry_config and state.stage == VALIDATING else None
            loop = asyncio.get_running_loop()
            primary_model = run.primary.model if run.primary is not None else None
            result = await loop.run_in_executor(None, run_gate, primary_model, run.candidate.model, validation)
        self.metrics.gate.labels(name, "passed" if result.passed else "failed").inc()
        if result.passed:
            detail = f" ({result.metric} {result.score:.4f})" if result.metric else ""
            logger.info("model %s: version %d passed the gate%s", name, state.candidate, detail)
            state.analysis = {
                "gate": {"metric": result.metric, "score": _finite(result.score), "p99_ms": _finite(result.p99_ms)}
            }
            run.gate_done.set()
            return True
        logger.error(
            "model %s: version %d failed the gate (version %d keeps serving): %s",
            name,
            state.candidate,
            state.primary,
            result.reason,
        )
        if run.candidate is not None:
            await self.repository.retire_version(
                name, state.candidate, run.candidate, f"failed the gate: {result.reason}"
            )
        self._reject(state, result.reason)
        self._enter(run, FAILED, -1, 0.0, result.reason)
        self.metrics.rollbacks.labels(name, "gate").inc()
        run.gate_done.set()
        return False

    async def _hold(self, run: _Run, duration_s: float, min_requests: int, in_sidecar: bool = False) -> bool:
        """Hold a stage, judging it every analysis interval; False once it breached (rolled back).

        ``in_sidecar``: the shadow stage is judged on the sidecar's comparison instead of this
        process's samples; until the sidecar reports on the candidate the stage only waits."""
        window = analysis.StepWindow()
        run.window = window
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            run.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.wake.wait(), run.config.analysis_interval_s)
            if run.promote_now:  # an operator's promotion overrides the remaining analysis
                return True
            if in_sidecar:
                checks, samples = await self._sidecar_checks(run)
            else:
                checks = analysis.judge(window, run.config.thresholds, run.config.min_samples, run.baseline_p99_s)
                samples = window.candidate.requests
            gate = run.state.analysis.get("gate")
            run.state.analysis = {**({"gate": gate} if gate else {}), **{c.name: c.as_dict() for c in checks}}
            self._save(run.state, durable=False)  # the latest analysis, for status and the dashboard
            breached = analysis.breaches(checks)
            if breached:
                reason = "; ".join(analysis.describe(c) for c in breached)
                await self._roll_back(run, f"{_where(run.state)}: {reason}", breached[0].name)
                return False
            if loop.time() - started >= duration_s and samples >= min_requests and (checks or not in_sidecar):
                if len(window.primary.latencies_s) >= run.config.min_samples:
                    run.baseline_p99_s = window.primary.p99_s()
                self._save(run.state)
                return True

    async def _sidecar_checks(self, run: _Run) -> tuple[list[analysis.Check], int]:
        """The sidecar's comparison of this candidate as checks, and its compared rows."""
        assert self.sidecar is not None
        reading = await self.sidecar.reading(run.state.model)
        if reading is None or reading.shadow_version != str(run.state.candidate):
            return [], 0
        checks = analysis.judge_sidecar(
            reading.rows,
            reading.agreement,
            reading.errors,
            reading.shadow_inference_p99_s,
            reading.primary_inference_p99_s,
            run.config.thresholds,
            run.config.min_samples,
        )
        return checks, reading.rows

    async def _promote(self, run: _Run) -> None:
        state, name = run.state, run.state.model
        entry = self.repository.entry(name)
        state.previous = state.primary
        state.primary = state.candidate
        self.repository.pinned[name] = state.candidate
        self._enter(run, PRIMARY, -1, 0.0)
        entry.primary, entry.canary = state.candidate, {}
        self.metrics.promotions.labels(name).inc()
        logger.info(
            "model %s: version %d promoted; version %s stays loaded for %.0f s",
            name,
            state.candidate,
            state.previous,
            run.config.keep_previous_s,
        )
        self._schedule_retire(name, state.previous, run.config.keep_previous_s)

    async def _roll_back(self, run: _Run, reason: str, label: str) -> None:
        """Weight 0 at once, the candidate drained (or kept for pinned requests), the reason recorded."""
        state, name = run.state, run.state.model
        entry = self.repository.models.get(name)
        if entry is not None:
            entry.canary = {}
            entry.primary = state.primary
        run.comparing = False
        self._reject(state, reason)
        self._enter(run, ROLLED_BACK, -1, 0.0, reason)
        self.metrics.rollbacks.labels(name, label).inc()
        logger.warning(
            "model %s: version %d rolled back (version %d serves): %s", name, state.candidate, state.primary, reason
        )
        if run.candidate is None or not run.config.keep_failed:
            # Also marks a candidate whose load was still running UNAVAILABLE, with the reason.
            await self.repository.retire_version(name, state.candidate, run.candidate, f"rolled back: {reason}")

    # ------------------------------------------------------------------ manual actions
    async def promote(self, name: str) -> str:
        """Promote the candidate now, skipping the remaining steps (after its gate)."""
        self._check_control()
        run = self._runs.get(name)
        if run is None or not run.gate_done.is_set():
            raise FailedPrecondition(
                f"model '{name}' has no rollout past its gate to promote; status: {self._summary(name)}"
            )
        run.promote_now = True
        run.wake.set()
        if run.task is not None:
            await asyncio.shield(run.task)
        return f"version {run.state.candidate} is the primary"

    async def rollback(self, name: str) -> str:
        """Roll back the running rollout, or the last promotion while the previous version is loaded."""
        self._check_control()
        run = self._runs.get(name)
        if run is not None:
            if run.task is not None:
                run.task.cancel()
                await asyncio.gather(run.task, return_exceptions=True)
            self._runs.pop(name, None)
            await self._roll_back(run, f"manual rollback at {_where(run.state)}", "manual")
            return f"version {run.state.candidate} rolled back; version {run.state.primary} serves"
        state = self.states.get(name)
        entry = self.repository.models.get(name)
        if (
            state is None
            or state.stage != PRIMARY
            or state.previous is None
            or entry is None
            or state.previous not in entry.versions
        ):
            raise FailedPrecondition(
                f"model '{name}': nothing to roll back (no rollout running, no previous version loaded); "
                f"status: {self._summary(name)}"
            )
        promoted, previous = state.primary, state.previous
        self._cancel_retire(name)
        entry.primary, entry.canary = previous, {}
        self.repository.pinned[name] = previous
        state.candidate, state.primary, state.previous = promoted, previous, None
        reason = f"manual rollback of promoted version {promoted}"
        self._reject(state, reason)
        state.stage, state.step, state.weight, state.reason = ROLLED_BACK, -1, 0.0, reason
        self._save(state)
        self.metrics.set_stage(name, ROLLED_BACK, -1, 0.0)
        self.metrics.rollbacks.labels(name, "manual").inc()
        logger.warning("model %s: %s; version %d serves again", name, reason, previous)
        await self.repository.retire_version(name, promoted, reason=reason)
        return f"version {previous} serves again; version {promoted} unloaded"

    async def unload(self, name: str, version: int | None = None) -> str:
        """Unload a model (its rollout ends), or one version that is not the primary."""
        self._check_control()
        check_model_name(name)
        if version is None:
            if name in self._runs:
                await self.rollback(name)
            await self.repository.unload(name)
            return f"model '{name}' unloaded"
        entry = self.repository.entry(name)
        if version not in entry.versions:
            raise NotFound(f"model '{name}' has no loaded version {version}; loaded: {sorted(entry.versions)}")
        if entry.default_version().version == version:
            raise FailedPrecondition(f"model '{name}': version {version} is the primary; unload the model instead")
        run = self._runs.get(name)
        if run is not None and run.state.candidate == version:
            return await self.rollback(name)
        await self.repository.retire_version(name, version, reason="unloaded")
        return f"model '{name}' version {version} unloaded"

    def _check_control(self) -> None:
        if self.control_refusal is not None:
            raise FailedPrecondition(self.control_refusal)

    def status(self, name: str) -> RolloutState | None:
        check_model_name(name)
        if name not in self.repository.models and name not in self.states:
            raise NotFound(f"unknown model '{name}'; available: {sorted(self.repository.models)}")
        return self.states.get(name)

    async def close(self) -> None:
        """Stop the rollout tasks (their state stays persisted, to resume at the next start)."""
        tasks = [r.task for r in self._runs.values() if r.task is not None]
        tasks += [*self._retire_tasks.values(), *self._tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.sidecar is not None:
            await self.sidecar.close()

    # ------------------------------------------------------------------ the observer hook
    def observe(
        self, served: ServedVersion, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray], latency_ns: int
    ) -> None:
        """A request ``served`` answered (its batcher time ``latency_ns``); called on the event loop."""
        run = self._runs.get(served.name)
        if run is None or run.window is None:
            return
        window = run.window
        candidate = run.candidate
        if candidate is not None and served is candidate:
            _record(window.candidate, outputs, latency_ns)
            if run.compare_share and run.primary is not None and random.random() < run.compare_share:
                self._compare(run, window, inputs, outputs, run.primary, window.primary, timed=False)
        elif run.primary is not None and served is run.primary:
            _record(window.primary, outputs, latency_ns)
            if run.comparing and candidate is not None:
                self._compare(run, window, inputs, outputs, candidate, window.candidate, timed=True)

    def observe_failure(self, served: ServedVersion, latency_ns: int) -> None:
        """A request ``served`` took failed."""
        run = self._runs.get(served.name)
        if run is None or run.window is None:
            return
        if served is run.candidate:
            run.window.candidate.requests += 1
            run.window.candidate.failures += 1
        elif served is run.primary:
            run.window.primary.requests += 1
            run.window.primary.failures += 1

    def _compare(
        self,
        run: _Run,
        window: analysis.StepWindow,
        inputs: dict[str, np.ndarray],
        outputs: dict[str, np.ndarray],
        other: ServedVersion,
        samples: analysis.VersionSamples,
        timed: bool,
    ) -> None:
        """Run the same inputs on ``other`` off the request path and count agreement; dropped
        when ``MAX_COMPARE_INFLIGHT`` runs are already going (never queues without bound).

        ``timed``: the run's latency is a sample of ``other`` (shadow runs, the candidate's only
        latency); re-runs on the primary are not, since an idle re-run is no sample of the
        primary under live load (its live requests are)."""
        if run.inflight >= MAX_COMPARE_INFLIGHT:
            return
        run.inflight += 1

        async def compare() -> None:
            started = time.perf_counter_ns()
            try:
                rows = other.model.validate(dict(inputs))
                theirs = await other.batcher.submit(inputs, rows)
            except Exception:
                if samples is window.candidate:  # a shadow run that failed counts as a candidate failure
                    samples.requests += 1
                    samples.failures += 1
                return
            finally:
                run.inflight -= 1
            if timed:
                _record(samples, theirs, time.perf_counter_ns() - started)
            else:
                samples.scores.extend(analysis.output_scores(theirs).tolist())
            window.add_comparison(*analysis.agreement(outputs, theirs))

        task = asyncio.get_running_loop().create_task(compare())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ helpers
    def _enter(self, run: _Run, stage: str, step: int, weight: float, reason: str = "") -> None:
        state = run.state
        state.stage, state.step, state.weight, state.reason = stage, step, weight, reason
        self._save(state)
        self.metrics.set_stage(state.model, stage, step, weight)
        if stage in (SHADOW, CANARY):
            logger.info("model %s: version %d at %s", state.model, state.candidate, _where(state))

    def _save(self, state: RolloutState, durable: bool = True) -> None:
        self.states[state.model] = state
        self.store.save(state, durable)

    @staticmethod
    def _reject(state: RolloutState, reason: str) -> None:
        state.rejected[str(state.candidate)] = reason
        while len(state.rejected) > MAX_REJECTED:
            state.rejected.pop(next(iter(state.rejected)))

    def _schedule_retire(self, name: str, version: int | None, after_s: float) -> None:
        if version is None:
            return

        async def retire() -> None:
            await asyncio.sleep(after_s)
            entry = self.repository.models.get(name)
            if entry is not None and version in entry.versions and entry.default_version().version != version:
                await self.repository.retire_version(name, version, reason="replaced by a promoted version")
            state = self.states.get(name)
            if state is not None and state.previous == version:
                state.previous = None
                self._save(state)
            self._retire_tasks.pop(name, None)

        self._cancel_retire(name)
        self._retire_tasks[name] = asyncio.get_running_loop().create_task(retire())

    def _cancel_retire(self, name: str) -> None:
        task = self._retire_tasks.pop(name, None)
        if task is not None:
            task.cancel()

    def _retire_previous_now(self, name: str) -> None:
        """A new rollout starts: the version kept for rollback of the last one goes now."""
        state = self.states.get(name)
        if state is not None and state.previous is not None and name in self._retire_tasks:
            self._schedule_retire(name, state.previous, 0.0)

    def _summary(self, name: str) -> str:
        state = self.states.get(name)
        return _where(state) if state is not None else "no rollout yet"


def _record(samples: analysis.VersionSamples, outputs: dict[str, np.ndarray], latency_ns: int) -> None:
    samples.requests += 1
    samples.latencies_s.append(latency_ns / 1e9)
    samples.scores.extend(analysis.output_scores(outputs).tolist())


def _rollout_config(config: RolloutConfig | None) -> RolloutConfig:
    return config if config is not None else GATE_ONLY


def _where(state: RolloutState) -> str:
    if state.stage == CANARY:
        return f"canary step {state.step + 1} ({state.weight * 100:g}%)"
    return state.stage


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
