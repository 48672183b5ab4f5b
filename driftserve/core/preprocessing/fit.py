"""Fill a template spec's statistics from training rows.

Each step is fitted in order along its chain, so a statistic describes the values its op
actually sees: the ``standardize`` after a ``log1p`` gets the mean and std of ``log1p(x)``.
Statistics already written in the template are kept as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from driftserve.core.preprocessing.errors import PreprocessingConfigError
from driftserve.core.preprocessing.reference import apply_scalar_op
from driftserve.core.preprocessing.spec import (
    ALLOW_UNFITTED,
    MAX_ONEHOT_WIDTH,
    BaseOp,
    BucketizeOp,
    ImputeOp,
    MinMaxOp,
    OneHotOp,
    PreprocessingSpec,
    StandardizeOp,
)

logger = logging.getLogger(__name__)


def load_template(template: PreprocessingSpec | Mapping[str, Any]) -> PreprocessingSpec:
    """A spec whose statistics may be missing (validated otherwise as strictly as any spec)."""
    if isinstance(template, PreprocessingSpec):
        return template
    return PreprocessingSpec.model_validate(template, context={ALLOW_UNFITTED: True})


def _fit_op(op: BaseOp, v: np.ndarray, where: str) -> dict[str, Any]:
    """The op's parameters with its missing statistics fitted on ``v`` (finite float64)."""
    params: dict[str, Any] = op.model_dump()[op.op]
    missing = op.missing_statistics()
    if not missing:
        return params
    if isinstance(op, StandardizeOp):
        std = float(np.std(v))
        if "std" in missing and not (np.isfinite(std) and std > 0):
            logger.warning("%s: training values are constant; standardize uses std 1.0", where)
            std = 1.0
        params.setdefault("mean", float(np.mean(v)))
        params.setdefault("std", std)
    elif isinstance(op, MinMaxOp):
        lo, hi = params.get("min", float(np.min(v))), params.get("max", float(np.max(v)))
        if not hi > lo:
            logger.warning("%s: training range is empty; minmax uses [min, min + 1]", where)
            hi = lo + 1.0
        params.update(min=lo, max=hi)
    elif isinstance(op, BucketizeOp):
        n = int(op.n_buckets)  # type: ignore[arg-type]
        quantiles = np.quantile(v, np.arange(1, n) / n)
        boundaries = np.unique(quantiles)
        if boundaries.size < n - 1:
            logger.info("%s: %d of %d quantile boundaries are distinct", where, boundaries.size, n - 1)
        params["boundaries"] = [float(b) for b in boundaries]
    elif isinstance(op, OneHotOp):
        values = np.unique(v)
        codes = values[values == np.trunc(values)]
        if codes.size == 0:
            raise PreprocessingConfigError(f"{where}: no integer category codes in the training data")
        if codes.size >= MAX_ONEHOT_WIDTH:
            raise PreprocessingConfigError(f"{where}: {codes.size} distinct codes; give 'categories' explicitly")
        if codes.size < values.size:
            logger.warning("%s: ignoring %d non-integer training values", where, values.size - codes.size)
        params["categories"] = [int(c) for c in codes]
    elif isinstance(op, ImputeOp):
        params["value"] = float(np.mean(v))
    return params


def fit_spec(
    x: np.ndarray, feature_names: Sequence[str], template: PreprocessingSpec | Mapping[str, Any]
) -> PreprocessingSpec:
    """A complete spec: ``template`` with its missing statistics fitted on training rows ``x``.

    ``x`` is ``[rows, len(feature_names)]``; every feature the spec's input names must be among
    ``feature_names`` (in any order). Training values may be NaN/inf only in features whose
    steps impute (missing values are left out of every statistic).
    """
    spec = load_template(template)
    x = np.asarray(x)
    names = [str(n) for n in feature_names]
    if x.ndim != 2 or x.shape[1] != len(names):
        raise PreprocessingConfigError(
            f"training data must be [rows, {len(names)}] to match feature_names, got {list(x.shape)}"
        )
    if x.shape[0] == 0:
        raise PreprocessingConfigError("training data has no rows")
    absent = [f for f in spec.input.features if f not in names]
    if absent:
        raise PreprocessingConfigError(f"training data lacks features {absent}; it has {names}")
    steps: list[dict[str, Any]] = []
    for i, step in enumerate(spec.steps):
        raw = x[:, names.index(step.feature)].astype(np.float64)
        finite = np.isfinite(raw)
        if not finite.all() and not step.imputes:
            raise PreprocessingConfigError(
                f"steps[{i}] (feature {step.feature!r}): training data has {int((~finite).sum())} "
                "non-finite values but the step has no impute"
            )
        if not finite.any():
            raise PreprocessingConfigError(f"steps[{i}] (feature {step.feature!r}): no finite training values")
        v = raw
        ops: list[dict[str, Any]] = []
        for j, op in enumerate(step.ops):
            where = f"steps[{i}] (feature {step.feature!r}) op {j} ({op.op})"
            params = _fit_op(op, raw[finite] if isinstance(op, ImputeOp) else v, where)
            ops.append({op.op: params})
            if op.terminal:
                break
            fitted = type(op).model_validate({"op": op.op, **params})
            v = apply_scalar_op(fitted, v)
            if not np.isfinite(v).all():
                raise PreprocessingConfigError(
                    f"{where}: gives non-finite values on the training data (add a clip before it)"
                )
        steps.append({"feature": step.feature, "ops": ops})
    fitted_spec = PreprocessingSpec.model_validate(
        {"backend": spec.backend, "input": spec.input.model_dump(), "steps": steps}
    )
    logger.info("fitted preprocessing on %d rows: %d steps, width %d", x.shape[0], len(steps), fitted_spec.output_width)
    return fitted_spec
