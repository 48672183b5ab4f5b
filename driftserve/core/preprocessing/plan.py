"""A spec flattened into numeric arrays: op codes and parameters per step.

Both compilers read this plan, so one generic Numba kernel serves every spec (nothing is
generated per spec, and the kernel's on-disk cache stays valid across models) and the ONNX
builder works from the same numbers the kernel uses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from driftserve.core.preprocessing.errors import PreprocessingConfigError
from driftserve.core.preprocessing.spec import (
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
)

logger = logging.getLogger(__name__)

# Column-preserving op codes. Affine is ``(x - a) / b`` (standardize and minmax).
OP_CLIP = 1
OP_LOG1P = 2
OP_AFFINE = 3

# Terminal kinds: how a step's final value becomes output columns.
TERM_VALUE = 0
TERM_BUCKET_INDEX = 1
TERM_BUCKET_ONEHOT = 2
TERM_CATEGORY_ONEHOT = 3
TERM_HASH_INDEX = 4
TERM_HASH_ONEHOT = 5


@dataclass(frozen=True, eq=False)
class Plan:
    """Per-step arrays (S steps, chains padded to L ops); see the module docstring."""

    n_raw: int
    width: int
    feature: np.ndarray  # int64 [S]: raw column the step reads
    impute: np.ndarray  # int64 [S]: 1 if non-finite raw values are replaced
    fill: np.ndarray  # float64 [S]: the impute value
    n_ops: np.ndarray  # int64 [S]: chain length (impute, passthrough and terminal excluded)
    op_code: np.ndarray  # int64 [S, L]
    op_a: np.ndarray  # float64 [S, L]: clip low / affine subtrahend
    op_b: np.ndarray  # float64 [S, L]: clip high / affine divisor
    op_pos: np.ndarray  # int64 [S, L]: position of the op in the step's ``ops`` (for messages)
    term: np.ndarray  # int64 [S]: TERM_* kind
    out_start: np.ndarray  # int64 [S]: first output column
    term_off: np.ndarray  # int64 [S]: offset into term_values / term_slots
    term_len: np.ndarray  # int64 [S]: boundaries, or category codes
    term_values: np.ndarray  # float64 [T]: boundaries, or category codes sorted ascending
    term_slots: np.ndarray  # int64 [T]: one-hot slot of each sorted category code
    hash_buckets: np.ndarray  # int64 [S]
    hash_seed: np.ndarray  # int64 [S]


def build_plan(spec: PreprocessingSpec) -> Plan:
    """Flatten a fitted spec; raise :class:`PreprocessingConfigError` if it is a template."""
    if not spec.fitted:
        raise PreprocessingConfigError(
            "preprocessing spec has statistics to fit: " + "; ".join(spec.missing_statistics())
        )
    n_steps = len(spec.steps)
    chains: list[list[tuple[int, float, float, int]]] = []
    feature = np.zeros(n_steps, np.int64)
    impute = np.zeros(n_steps, np.int64)
    fill = np.zeros(n_steps, np.float64)
    term = np.zeros(n_steps, np.int64)
    out_start = np.zeros(n_steps, np.int64)
    term_off = np.zeros(n_steps, np.int64)
    term_len = np.zeros(n_steps, np.int64)
    hash_buckets = np.ones(n_steps, np.int64)
    hash_seed = np.zeros(n_steps, np.int64)
    values: list[float] = []
    slots: list[int] = []
    column = 0
    for s, step in enumerate(spec.steps):
        feature[s] = spec.feature_index(step.feature)
        out_start[s] = column
        column += step.width
        chain: list[tuple[int, float, float, int]] = []
        term_off[s] = len(values)
        for j, op in enumerate(step.ops):
            if isinstance(op, ImputeOp):
                assert op.value is not None  # the spec is fitted (checked above)
                impute[s], fill[s] = 1, float(op.value)
            elif isinstance(op, ClipOp):
                lo = -np.inf if op.min is None else op.min
                hi = np.inf if op.max is None else op.max
                chain.append((OP_CLIP, lo, hi, j))
            elif isinstance(op, Log1pOp):
                chain.append((OP_LOG1P, 0.0, 0.0, j))
            elif isinstance(op, StandardizeOp):
                assert op.mean is not None and op.std is not None  # the spec is fitted
                chain.append((OP_AFFINE, op.mean, op.std, j))
            elif isinstance(op, MinMaxOp):
                assert op.min is not None and op.max is not None  # the spec is fitted
                chain.append((OP_AFFINE, op.min, op.max - op.min, j))
            elif isinstance(op, PassthroughOp):
                continue
            elif isinstance(op, BucketizeOp):
                term[s] = TERM_BUCKET_INDEX if op.output == "index" else TERM_BUCKET_ONEHOT
                assert op.boundaries is not None  # the spec is fitted
                values.extend(op.boundaries)
                slots.extend(range(len(op.boundaries)))
            elif isinstance(op, OneHotOp):
                term[s] = TERM_CATEGORY_ONEHOT
                codes = op.codes()
                order = sorted(range(len(codes)), key=codes.__getitem__)
                values.extend(float(codes[i]) for i in order)
                slots.extend(order)
            elif isinstance(op, HashOp):
                term[s] = TERM_HASH_INDEX if op.output == "index" else TERM_HASH_ONEHOT
                hash_buckets[s], hash_seed[s] = op.buckets, op.seed
            else:  # pragma: no cover - the spec's union is closed
                raise PreprocessingConfigError(f"op {op.op!r} has no compiled form")
        term_len[s] = len(values) - term_off[s]
        chains.append(chain)
    depth = max(1, max(len(c) for c in chains))
    op_code = np.zeros((n_steps, depth), np.int64)
    op_a = np.zeros((n_steps, depth), np.float64)
    op_b = np.ones((n_steps, depth), np.float64)
    op_pos = np.zeros((n_steps, depth), np.int64)
    for s, chain in enumerate(chains):
        for k, (code, a, b, pos) in enumerate(chain):
            op_code[s, k], op_a[s, k], op_b[s, k], op_pos[s, k] = code, a, b, pos
    n_ops = np.array([len(c) for c in chains], np.int64)
    plan = Plan(
        n_raw=len(spec.input.features),
        width=column,
        feature=feature,
        impute=impute,
        fill=fill,
        n_ops=n_ops,
        op_code=op_code,
        op_a=op_a,
        op_b=op_b,
        op_pos=op_pos,
        term=term,
        out_start=out_start,
        term_off=term_off,
        term_len=term_len,
        term_values=np.asarray(values, np.float64),
        term_slots=np.asarray(slots, np.int64),
        hash_buckets=hash_buckets,
        hash_seed=hash_seed,
    )
    logger.debug("preprocessing plan: %d steps, chain depth %d, width %d", n_steps, depth, column)
    return plan
