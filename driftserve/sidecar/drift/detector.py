"""Streaming drift detector for one model: per-feature sliding and cumulative windows.

``update`` bins a whole mirrored batch (inputs and, for prediction drift, outputs) with one
Numba call per group under a short lock; ``report`` snapshots the counts under the same lock and
computes PSI, KS, missing and unseen shares outside it, corrects KS p-values across features,
and applies alert hysteresis. Memory depends on features, bins and panes, never on rows seen.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from driftserve.core.drift_config import DriftConfig
from driftserve.sidecar.drift.hysteresis import LEVEL_NAMES, AlertTransition, HysteresisTracker
from driftserve.sidecar.drift.kernels import MISSING, UNSEEN, BinLayout
from driftserve.sidecar.drift.profile import FeatureProfile, ReferenceProfile
from driftserve.sidecar.drift.scoring import FeatureReference, FeatureScore, levels, score
from driftserve.sidecar.drift.stats import benjamini_hochberg, bonferroni
from driftserve.sidecar.drift.windows import PaneCopy, PaneRing, WindowSnapshot

logger = logging.getLogger(__name__)

SLIDING = "sliding"
CUMULATIVE = "cumulative"
WINDOWS = (SLIDING, CUMULATIVE)


@dataclass(frozen=True)
class FeatureWindowReport:
    """Drift evidence for one feature (or output column) over one window."""

    feature: str
    source: str
    window: str
    psi: float
    psi_expected: float
    ks_statistic: float
    ks_bound: float
    ks_pvalue: float
    ks_pvalue_corrected: float
    missing_share: float
    reference_missing_share: float
    unseen_categories: int
    window_rows: int
    status: str
    reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DriftReportData:
    """One evaluation of every monitored feature over every window."""

    model: str
    timestamp: float
    rows_total: int
    items: list[FeatureWindowReport]
    transitions: list[AlertTransition]

    def get(self, feature: str, window: str) -> FeatureWindowReport:
        """The item for ``feature`` and ``window``; KeyError names what exists."""
        for item in self.items:
            if item.feature == feature and item.window == window:
                return item
        raise KeyError(f"no report for feature {feature!r} window {window!r}; windows are {WINDOWS}")

    def with_status(self, *statuses: str) -> list[FeatureWindowReport]:
        """Items whose status is one of ``statuses``."""
        return [i for i in self.items if i.status in statuses]


@dataclass(frozen=True)
class GroupState:
    """One group's mergeable counts: the sliding window's panes and the cumulative window."""

    source: str
    ring: PaneRing
    panes: list[PaneCopy]
    cumulative: WindowSnapshot


class _Group:
    """Features read from one matrix (model inputs, or stacked output columns)."""

    def __init__(
        self, refs: list[FeatureReference], columns: list[int], profiles: list[FeatureProfile], cfg: DriftConfig
    ) -> None:
        self.refs = refs
        layout = BinLayout.build(columns, [p.edges for p in profiles], [p.kind == "categorical" for p in profiles])
        self.ring = PaneRing(layout, cfg.window.pane_seconds, cfg.window.panes)
        self.source = refs[0].source if refs else "input"


class ModelDriftMonitor:
    """Streaming PSI/KS drift detection of one model's inputs and outputs.

    Parameters
    ----------
    profile : ReferenceProfile
        Reference distributions; the column order of ``inputs`` is ``profile.feature_names``.
    config : DriftConfig
        The model's ``drift:`` section (features, bins, windows, thresholds).
    model : str
        Model name, carried into reports, transitions and metrics labels.
    """

    def __init__(self, profile: ReferenceProfile, config: DriftConfig, model: str) -> None:
        self.model = model
        self._config = config
        self._n_inputs = len(profile.features)
        by_name = {p.name: (j, p) for j, p in enumerate(profile.features)}
        wanted = config.features if config.features is not None else profile.feature_names
        unknown = [n for n in wanted if n not in by_name]
        if unknown:
            raise ValueError(
                f"drift.features {unknown} are not in the reference profile's features {profile.feature_names}"
            )
        wrong_kind = [n for n in config.categorical if n not in by_name or by_name[n][1].kind != "categorical"]
        if wrong_kind:
            raise ValueError(
                f"drift.categorical {wrong_kind} are not categorical features of the reference profile; "
                "rebuild the profile with them marked categorical"
            )
        picked = [by_name[n] for n in wanted]
        self._inputs = _Group(
            [FeatureReference.from_profile(p, "input", config.coarse_bins) for _, p in picked],
            [j for j, _ in picked],
            [p for _, p in picked],
            config,
        )
        self._output_profiles = list(profile.outputs) if config.monitor_outputs else []
        self._outputs = None
        if self._output_profiles:
            self._outputs = _Group(
                [FeatureReference.from_profile(p, "output", config.coarse_bins) for p in self._output_profiles],
                list(range(len(self._output_profiles))),
                self._output_profiles,
                config,
            )
        self._lock = threading.Lock()
        self._report_lock = threading.Lock()
        self._hysteresis = HysteresisTracker(config.hysteresis.min_consecutive)

    @property
    def state_nbytes(self) -> int:
        """Bytes of live count state; constant whatever the number of rows ingested."""
        return sum(g.ring.nbytes for g in self._groups())

    @property
    def rows_total(self) -> int:
        """Input rows ingested since start or the last :meth:`reset`."""
        return self._inputs.ring.total_rows

    def update(
        self, inputs: NDArray[np.floating], outputs: Mapping[str, NDArray[np.generic]] | None, now: float
    ) -> None:
        """Add one mirrored batch.

        Parameters
        ----------
        inputs : ndarray, shape (rows, n_features)
            Model inputs in the profile's feature order; NaN marks a missing value.
        outputs : mapping of str to ndarray, optional
            Output tensors by name (rows first); profiled columns are monitored. None skips them.
        now : float
            Arrival time in seconds (any monotonic origin); picks the sliding-window pane.
        """
        x = _as_batch(inputs, "inputs")
        if x.shape[1] != self._n_inputs:
            raise ValueError(f"inputs have {x.shape[1]} columns, the reference profile has {self._n_inputs} features")
        y = self._stack_outputs(outputs, x.shape[0]) if outputs is not None and self._outputs is not None else None
        with self._lock:
            self._inputs.ring.add(x, now)
            if y is not None and self._outputs is not None:
                self._outputs.ring.add(y, now)

    def report(self, now: float) -> DriftReportData:
        """Evaluate every feature over both windows and advance the alert hysteresis.

        Each call is one evaluation step of the hysteresis, so call it on a steady cadence.

        Parameters
        ----------
        now : float
            Current time in seconds, same origin as ``update``; panes older than the window
            are evicted first, so a quiet stream's sliding window empties.

        Returns
        -------
        DriftReportData
            Per feature and window: statistics, status and reasons; plus level transitions.
        """
        with self._lock:
            snapshots = []
            for group in self._groups():
                group.ring.advance(now)
                snapshots.append(group.ring.snapshot())
        return self.evaluate(snapshots, now, self.rows_total)

    def evaluate(
        self, snapshots: list[tuple[WindowSnapshot, WindowSnapshot]], now: float, rows_total: int
    ) -> DriftReportData:
        """Score (sliding, cumulative) counts per group and advance the alert hysteresis.

        :meth:`report` calls this on the monitor's own counts; a fleet aggregator calls it on
        counts merged from many sidecars, so both are judged by one and the same code.

        Parameters
        ----------
        snapshots : list of (WindowSnapshot, WindowSnapshot)
            Per group (inputs, then outputs when monitored), the sliding and cumulative counts,
            shaped like :meth:`group_states` gives them.
        now : float
            Evaluation time, carried into the report and the transitions.
        rows_total : int
            Input rows seen since start, for the report.
        """
        groups = self._groups()
        if len(snapshots) != len(groups):
            raise ValueError(f"expected counts for {len(groups)} groups, got {len(snapshots)}")
        with self._report_lock:
            items: list[FeatureWindowReport] = []
            transitions: list[AlertTransition] = []
            for w, window in enumerate(WINDOWS):
                scored = [
                    (ref, score(ref, snap[w].counts[f], *_extra(snap[w], f)))
                    for group, snap in zip(groups, snapshots)
                    for f, ref in enumerate(group.refs)
                ]
                corrected = self._correct(np.array([s.ks_pvalue for _, s in scored]))
                for (ref, s), p_corr in zip(scored, corrected):
                    items.append(self._judge(ref, s, float(p_corr), window, now, transitions))
        return DriftReportData(self.model, now, rows_total, items, transitions)

    def group_states(self) -> list[GroupState]:
        """Copies of every group's panes and cumulative counts, taken under the ingest lock."""
        with self._lock:
            return [
                GroupState(group.source, group.ring, group.ring.pane_copies(), group.ring.snapshot()[1])
                for group in self._groups()
            ]

    def reset(self) -> None:
        """Forget all live counts and alert states (e.g. after retraining on new data)."""
        with self._lock:
            for group in self._groups():
                group.ring.reset()
        with self._report_lock:
            self._hysteresis.reset()

    def _groups(self) -> list[_Group]:
        return [self._inputs] + ([self._outputs] if self._outputs is not None else [])

    def _correct(self, pvalues: NDArray[np.float64]) -> NDArray[np.float64]:
        return benjamini_hochberg(pvalues) if self._config.ks.correction == "bh" else bonferroni(pvalues)

    def _judge(
        self,
        ref: FeatureReference,
        s: FeatureScore,
        p_corr: float,
        window: str,
        now: float,
        transitions: list[AlertTransition],
    ) -> FeatureWindowReport:
        key = (ref.name, window)
        if s.rows < self._config.min_window_rows:
            if self._hysteresis.clear(key):
                logger.info(
                    "drift model=%s feature=%s window=%s: status reset, only %s rows in window",
                    self.model,
                    ref.name,
                    window,
                    s.rows,
                )
            status = "insufficient"
            reasons = [f"{s.rows} rows in window, fewer than min_window_rows={self._config.min_window_rows}"]
        else:
            enter, hold, reasons = levels(s, p_corr, ref, self._config)
            previous, level = self._hysteresis.step(key, enter, hold)
            status = LEVEL_NAMES[level]
            if level > enter:
                reasons.append(
                    f"{status} held until below clear thresholds for {self._config.hysteresis.min_consecutive} reports"
                )
            if level != previous:
                transitions.append(
                    AlertTransition(self.model, ref.name, window, LEVEL_NAMES[previous], status, now, list(reasons))
                )
        return FeatureWindowReport(
            feature=ref.name,
            source=ref.source,
            window=window,
            psi=s.psi,
            psi_expected=s.psi_expected,
            ks_statistic=s.ks_statistic,
            ks_bound=s.ks_bound,
            ks_pvalue=s.ks_pvalue,
            ks_pvalue_corrected=p_corr,
            missing_share=s.missing_share,
            reference_missing_share=ref.missing_share,
            unseen_categories=s.unseen,
            window_rows=s.rows,
            status=status,
            reasons=reasons,
        )

    def _stack_outputs(self, outputs: Mapping[str, NDArray[np.generic]], rows: int) -> NDArray[np.float64]:
        y = np.empty((rows, len(self._output_profiles)), dtype=np.float64)
        for j, prof in enumerate(self._output_profiles):
            if prof.tensor is None or prof.tensor not in outputs:
                raise ValueError(
                    f"outputs lack tensor {prof.tensor!r} (profiled as {prof.name!r}); got {sorted(outputs)}"
                )
            arr = np.asarray(outputs[prof.tensor])
            if arr.shape[:1] != (rows,):
                raise ValueError(f"output {prof.tensor!r} has shape {arr.shape}, expected {rows} rows like the inputs")
            if prof.column is None:
                if arr.ndim != 1:
                    raise ValueError(f"output {prof.tensor!r} has shape {arr.shape}, expected ({rows},)")
                y[:, j] = arr
            else:
                if arr.ndim != 2 or arr.shape[1] <= prof.column:
                    raise ValueError(f"output {prof.tensor!r} has shape {arr.shape}, expected (rows, > {prof.column})")
                y[:, j] = arr[:, prof.column]
        return y


def _extra(snap: WindowSnapshot, f: int) -> tuple[int, int, int]:
    return int(snap.extra[f, MISSING]), int(snap.extra[f, UNSEEN]), snap.rows


def _as_batch(arr: NDArray[np.generic], name: str) -> NDArray[np.floating]:
    """A C-contiguous float32/float64 matrix, converting integer input; errors say what was expected."""
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{name} must be a numpy array (rows x features), got {type(arr).__name__}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows x features), got shape {arr.shape}")
    if arr.dtype in (np.float32, np.float64):
        return np.ascontiguousarray(arr)
    if arr.dtype.kind in "iub":
        return np.ascontiguousarray(arr, dtype=np.float64)
    raise ValueError(f"{name} must hold numbers (float or integer), got dtype {arr.dtype}")
