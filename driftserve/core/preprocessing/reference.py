"""Plain NumPy implementation of a spec: the oracle the compiled backends are tested against.

Written for obviousness, straight from the spec objects (not from the flat plan the compiled
backends share), so that a mistake in the plan cannot hide in both sides of a comparison.
It is also what :func:`driftserve.core.preprocessing.fit_spec` runs to fit statistics step by step.
"""

from __future__ import annotations

import logging

import numpy as np

from driftserve.core.preprocessing.base import RAW_DTYPES, SpecInput, Violation, check_array, violation_error
from driftserve.core.preprocessing.errors import PreprocessingConfigError
from driftserve.core.preprocessing.spec import (
    HASH_ID_LIMIT,
    HASH_MULTIPLIER,
    HASH_PRIME,
    BaseOp,
    BucketizeOp,
    ClipOp,
    HashOp,
    ImputeOp,
    Log1pOp,
    MinMaxOp,
    OneHotOp,
    PassthroughOp,
    PreprocessingSpec,
    StandardizeOp,
    Step,
)

logger = logging.getLogger(__name__)


def apply_scalar_op(op: BaseOp, v: np.ndarray) -> np.ndarray:
    """One column-preserving op on float64 values (invalid inputs give NaN/inf, no warning)."""
    with np.errstate(all="ignore"):
        if isinstance(op, ImputeOp):
            assert op.value is not None, "impute is not fitted"
            return np.where(np.isfinite(v), v, op.value)
        if isinstance(op, ClipOp):
            lo = -np.inf if op.min is None else op.min
            hi = np.inf if op.max is None else op.max
            clipped: np.ndarray = np.minimum(np.maximum(v, lo), hi)
            return clipped
        if isinstance(op, Log1pOp):
            # log(1 + x) rather than np.log1p: exactly what the ONNX graph can compute.
            return np.log(1.0 + v)
        if isinstance(op, StandardizeOp):
            assert op.mean is not None and op.std is not None, "standardize is not fitted"
            return (v - op.mean) / op.std
        if isinstance(op, MinMaxOp):
            assert op.min is not None and op.max is not None, "minmax is not fitted"
            return (v - op.min) / (op.max - op.min)
        if isinstance(op, PassthroughOp):
            return v.copy()
    raise TypeError(f"{op.op} is not a column-preserving op")


def hash_ids(v: np.ndarray, buckets: int, seed: int) -> np.ndarray:
    """The documented id hash (see ``ops.HASH_PRIME``) as int64 bucket numbers."""
    with np.errstate(invalid="ignore"):  # NaN only reaches here from unvalidated input
        ids = np.trunc(np.clip(v, -HASH_ID_LIMIT, HASH_ID_LIMIT)).astype(np.int64)
    hashed: np.ndarray = ((ids % HASH_PRIME) * HASH_MULTIPLIER + seed) % HASH_PRIME % buckets
    return hashed


def _onehot(index: np.ndarray, width: int) -> np.ndarray:
    out = np.zeros((index.shape[0], width), dtype=np.float64)
    out[np.arange(index.shape[0]), index] = 1.0
    return out


def apply_terminal_op(op: BaseOp, v: np.ndarray) -> np.ndarray:
    """The last op of a step: ``[rows]`` float64 -> ``[rows, width]`` float64."""
    if isinstance(op, BucketizeOp):
        assert op.boundaries is not None, "bucketize is not fitted"
        index = np.searchsorted(np.asarray(op.boundaries, dtype=np.float64), v, side="right")
        return index[:, None].astype(np.float64) if op.output == "index" else _onehot(index, op.width())
    if isinstance(op, OneHotOp):
        codes = op.codes()
        slot_of = {float(c): i for i, c in enumerate(codes)}
        index = np.array([slot_of.get(float(x), len(codes)) for x in v], dtype=np.int64)
        return _onehot(index, len(codes) + 1)
    if isinstance(op, HashOp):
        h = hash_ids(v, op.buckets, op.seed)
        return h[:, None].astype(np.float64) if op.output == "index" else _onehot(h, op.buckets)
    return v[:, None]


def step_values(step: Step, column: np.ndarray) -> np.ndarray:
    """The float64 values a step's chain hands its terminal op (or emits, if it has none)."""
    v = column.astype(np.float64)
    for op in step.ops:
        if not op.terminal:
            v = apply_scalar_op(op, v)
    return v


class NumpyPreprocessor(SpecInput):
    """The oracle backend; also usable in production, though it holds the GIL throughout."""

    def __init__(self, spec: PreprocessingSpec) -> None:
        if not spec.fitted:
            raise PreprocessingConfigError(
                "preprocessing spec has statistics to fit: " + "; ".join(spec.missing_statistics())
            )
        self.spec = spec
        self._columns = [spec.feature_index(s.feature) for s in spec.steps]

    @property
    def output_width(self) -> int:
        return self.spec.output_width

    def validate(self, x: np.ndarray) -> None:
        """Scan step by step, row by row, op by op; raise on the first bad value."""
        x = check_array(self.spec, x)
        for s, (step, col) in enumerate(zip(self.spec.steps, self._columns, strict=True)):
            raw = x[:, col].astype(np.float64)
            if not step.imputes:
                bad = np.flatnonzero(~np.isfinite(raw))
                if bad.size:
                    r = int(bad[0])
                    raise violation_error(self.spec, s, r, 0, Violation.NON_FINITE_RAW, x[r, col])
            v = raw
            for j, op in enumerate(step.ops):
                if op.terminal:
                    break
                v = apply_scalar_op(op, v)
                bad = np.flatnonzero(~np.isfinite(v))
                if bad.size:
                    r = int(bad[0])
                    raise violation_error(self.spec, s, r, j, Violation.NON_FINITE_AFTER_OP, x[r, col])
            if not step.ops[-1].terminal:
                with np.errstate(over="ignore"):
                    bad = np.flatnonzero(~np.isfinite(v.astype(np.float32)))
                if bad.size:
                    r = int(bad[0])
                    raise violation_error(self.spec, s, r, 0, Violation.FLOAT32_OVERFLOW, x[r, col])

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = check_array(self.spec, x)
        parts = [
            apply_terminal_op(step.ops[-1], step_values(step, x[:, col]))
            for step, col in zip(self.spec.steps, self._columns, strict=True)
        ]
        with np.errstate(over="ignore", invalid="ignore"):
            out = np.concatenate(parts, axis=1).astype(np.float32)
        return np.ascontiguousarray(out)

    def warmup(self) -> None:
        """Nothing to compile; run once to fail early on a broken spec."""
        dtype = RAW_DTYPES[self.spec.input.datatype]
        self.transform(np.zeros((1, len(self.spec.input.features)), dtype=dtype))
