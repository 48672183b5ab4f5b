"""The gate before any traffic: a candidate must be compatible with the primary and score well.

Compatible: the same inputs (names, datatypes, dims) and every output of the primary with the same
datatype and dims, so no client request that works today fails on the candidate. Scored: on the
model's holdout file (``deployment.validation``), with accuracy, F1 (positive class 1), ROC AUC or
RMSE, and optionally the p99 of one-row inference. Everything here is blocking and runs on a
loader thread while the primary keeps serving.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from driftserve.core.config import ValidationConfig
from driftserve.core.errors import ConfigError
from driftserve.core.model import ModelVersion, TensorSpec

# Rows scored per inference call on the holdout (within any max_batch_size).
SCORE_CHUNK_ROWS = 256


@dataclass(frozen=True)
class GateResult:
    """What the gate measured; ``reason`` is empty when the candidate passed."""

    passed: bool
    reason: str
    metric: str = ""
    score: float = float("nan")
    p99_ms: float = float("nan")


def incompatibility(primary: ModelVersion, candidate: ModelVersion) -> str:
    """Why ``candidate`` cannot replace ``primary`` for today's clients ("" when it can)."""
    problems = []
    if primary.batched != candidate.batched:
        problems.append(f"batching differs (max_batch_size {primary.max_batch_size} vs {candidate.max_batch_size})")
    for name, spec in primary.inputs.items():
        other = candidate.inputs.get(name)
        if other is None:
            problems.append(f"input '{name}' is missing")
        elif (other.datatype, other.dims) != (spec.datatype, spec.dims):
            problems.append(f"input '{name}' is {_spec(other)}, the primary's is {_spec(spec)}")
    extra = [n for n in candidate.inputs if n not in primary.inputs]
    if extra:
        problems.append(f"extra input(s) {extra}")
    for name, spec in primary.outputs.items():
        other = candidate.outputs.get(name)
        if other is None:
            problems.append(f"output '{name}' is missing")
        elif (other.datatype, other.dims) != (spec.datatype, spec.dims):
            problems.append(f"output '{name}' is {_spec(other)}, the primary's is {_spec(spec)}")
    if not problems:
        return ""
    return f"incompatible with version {primary.version}: " + "; ".join(problems)


def _spec(spec: TensorSpec) -> str:
    return f"{spec.datatype} {list(spec.dims)}"


def run_gate(primary: ModelVersion | None, candidate: ModelVersion, validation: ValidationConfig | None) -> GateResult:
    """Compatibility, then the holdout score and latency; never raises for a bad candidate."""
    if primary is not None:
        problem = incompatibility(primary, candidate)
        if problem:
            return GateResult(False, problem)
    if validation is None:
        return GateResult(True, "")
    model_dir = candidate.path.parent.parent
    try:
        inputs, labels = load_holdout(model_dir, validation, candidate)
        outputs = _run_all(candidate, inputs)
        score = score_outputs(outputs, labels, validation)
    except ConfigError as exc:
        return GateResult(False, exc.message, validation.metric)
    except Exception as exc:  # a model that fails on its own holdout fails the gate, whatever the error
        return GateResult(False, f"scoring on the holdout failed: {type(exc).__name__}: {exc}", validation.metric)
    if not np.isfinite(score):
        return GateResult(False, f"{validation.metric} on the holdout is {score}", validation.metric, score)
    if validation.min is not None and score < validation.min:
        return GateResult(
            False,
            f"{validation.metric} {score:.4f} on the holdout is below min {validation.min:g}",
            validation.metric,
            score,
        )
    if validation.max is not None and score > validation.max:
        return GateResult(
            False,
            f"{validation.metric} {score:.4f} on the holdout is above max {validation.max:g}",
            validation.metric,
            score,
        )
    p99_ms = float("nan")
    if validation.max_p99_ms is not None:
        p99_ms = _p99_ms(candidate, inputs, validation.latency_runs)
        if p99_ms > validation.max_p99_ms:
            return GateResult(
                False,
                f"p99 of one-row inference {p99_ms:.3f} ms is above max_p99_ms {validation.max_p99_ms:g}",
                validation.metric,
                score,
                p99_ms,
            )
    return GateResult(True, "", validation.metric, score, p99_ms)


def load_holdout(
    model_dir: Path, validation: ValidationConfig, model: ModelVersion
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The holdout inputs (by input name) and labels; ConfigError naming the file when unusable."""
    data_path, labels_path = model_dir / validation.data, model_dir / validation.labels
    names = list(model.inputs)
    raw = _read_arrays(data_path)
    if len(raw) == 1 and len(names) == 1 and names[0] not in raw:
        inputs = {names[0]: next(iter(raw.values()))}
    else:
        missing = [n for n in names if n not in raw]
        if missing:
            raise ConfigError(
                f"{data_path}: holds {sorted(raw)}, not the input(s) {missing} (or 'X' for a one-input model)"
            )
        inputs = {n: raw[n] for n in names}
    inputs = {n: np.ascontiguousarray(a, dtype=model.inputs[n].dtype) for n, a in inputs.items()}
    label_arrays = _read_arrays(labels_path, prefer="y")
    labels = label_arrays.get("y", next(iter(label_arrays.values())))
    labels = np.asarray(labels).reshape(-1)
    rows = {len(a) for a in inputs.values()}
    if rows != {len(labels)}:
        raise ConfigError(f"{labels_path}: {len(labels)} labels for {sorted(rows)} input rows in {data_path}")
    if len(labels) == 0:
        raise ConfigError(f"{data_path}: the holdout has no rows")
    return inputs, labels


def _read_arrays(path: Path, prefer: str = "X") -> dict[str, np.ndarray]:
    if not path.is_file():
        raise ConfigError(f"{path}: holdout file not found (deployment.validation)")
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ConfigError(f"{path}: not a .npy or .npz file numpy can read: {exc}") from None
    if isinstance(loaded, np.ndarray):
        return {prefer: loaded}
    with loaded:
        arrays = {key: loaded[key] for key in loaded.files}
    if prefer == "X" and "y" in arrays and len(arrays) > 1:
        arrays.pop("y")
    if prefer == "X" and "feature_names" in arrays and len(arrays) > 1:
        arrays.pop("feature_names")
    if not arrays:
        raise ConfigError(f"{path}: holds no arrays")
    return arrays


def _run_all(model: ModelVersion, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    rows = len(next(iter(inputs.values())))
    chunk = min(SCORE_CHUNK_ROWS, model.max_batch_size) if model.batched else 1
    parts = [model.run({n: a[i : i + chunk] for n, a in inputs.items()}) for i in range(0, rows, chunk)]
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def _p99_ms(model: ModelVersion, inputs: dict[str, np.ndarray], runs: int) -> float:
    rows = len(next(iter(inputs.values())))
    timings = []
    for i in range(runs):
        row = i % rows
        feed = {n: a[row : row + 1] for n, a in inputs.items()}
        started = time.perf_counter()
        model.run(feed)
        timings.append(time.perf_counter() - started)
    return float(np.percentile(timings, 99) * 1e3)


def score_outputs(outputs: dict[str, np.ndarray], labels: np.ndarray, validation: ValidationConfig) -> float:
    """The configured metric of the outputs against ``labels``."""
    metric = validation.metric
    if metric in ("accuracy", "f1"):
        predicted = predicted_labels(outputs, validation.output)
        truth = labels.astype(np.int64)
        if metric == "accuracy":
            return float(np.mean(predicted == truth))
        tp = float(np.sum((predicted == 1) & (truth == 1)))
        fp = float(np.sum((predicted == 1) & (truth != 1)))
        fn = float(np.sum((predicted != 1) & (truth == 1)))
        return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    values = _float_output(outputs, validation.output)
    if metric == "auc":
        scores = values[:, -1] if values.ndim == 2 else values.reshape(-1)
        return roc_auc(scores, labels.astype(np.int64))
    flat = values[:, 0] if values.ndim == 2 and values.shape[1] == 1 else values.reshape(len(labels), -1)[:, 0]
    return float(np.sqrt(np.mean((flat.astype(np.float64) - labels.astype(np.float64)) ** 2)))


def predicted_labels(outputs: dict[str, np.ndarray], name: str | None = None) -> np.ndarray:
    """Class labels: an integer output as it is, else the arg-max of a 2-D float output."""
    candidates = [name] if name else sorted(outputs, key=lambda n: (outputs[n].dtype.kind == "f", n))
    for key in candidates:
        array = outputs[key]
        if array.dtype.kind in "iub" and array.size == len(array):
            return array.reshape(-1).astype(np.int64)
        if array.dtype.kind == "f" and array.ndim == 2 and array.shape[1] > 1:
            labels: np.ndarray = np.argmax(array, axis=1).astype(np.int64)
            return labels
    raise ConfigError(f"no output gives class labels (an integer label or 2-D scores); outputs: {sorted(outputs)}")


def _float_output(outputs: dict[str, np.ndarray], name: str | None) -> np.ndarray:
    for key in [name] if name else sorted(outputs):
        if outputs[key].dtype.kind == "f":
            values: np.ndarray = outputs[key].astype(np.float64)
            return values
    raise ConfigError(f"no float output to score; outputs: {sorted(outputs)}")


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC by the rank statistic (ties share their mean rank)."""
    positive = labels == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
