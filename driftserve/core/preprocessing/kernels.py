"""Numba kernels over a packed :class:`~driftserve.core.preprocessing.plan.Plan` (private; no checks here).

One generic transform kernel and one validation kernel serve every spec. Loops run step by
step with the rows innermost, so each op's branch is taken once per step and the row loops
vectorize (``error_model="numpy"`` drops the division-by-zero check that would prevent it; the
spec guarantees nonzero divisors). The plan travels as two packed arrays (plus the terminal
tables) because each array argument costs a few hundred nanoseconds of dispatch. Both kernels
are ``nogil``: a batch transformed in a worker thread does not hold up the event loop.
"""

from __future__ import annotations

from typing import Literal, TypedDict

import numpy as np
from numba import njit

from driftserve.core.preprocessing import fastlog
from driftserve.core.preprocessing.plan import (
    OP_AFFINE,
    OP_CLIP,
    OP_LOG1P,
    TERM_BUCKET_INDEX,
    TERM_CATEGORY_ONEHOT,
    TERM_HASH_INDEX,
    TERM_HASH_ONEHOT,
    TERM_VALUE,
    Plan,
)
from driftserve.core.preprocessing.spec import HASH_ID_LIMIT, HASH_MULTIPLIER, HASH_PRIME

# Columns of the packed int64 table [S, _I_OPS + L].
_I_FEATURE, _I_IMPUTE, _I_N_OPS, _I_TERM, _I_OUT, _I_TERM_OFF, _I_TERM_LEN = 0, 1, 2, 3, 4, 5, 6
_I_BUCKETS, _I_SEED, _I_OPS = 7, 8, 9
# Columns of the packed float64 table [S, 1 + 2L]: fill, then (a, b) per chain position.
_F_FILL, _F_OPS = 0, 1

# Violation codes, equal to base.Violation (kept numeric so the kernel can return them).
_NON_FINITE_RAW = 1
_NON_FINITE_AFTER_OP = 2
_FLOAT32_OVERFLOW = 3


class _JitOptions(TypedDict):
    cache: bool
    nogil: bool
    error_model: Literal["python", "numpy"]


_JIT: _JitOptions = {"cache": True, "nogil": True, "error_model": "numpy"}


def pack(plan: Plan) -> tuple[np.ndarray, np.ndarray]:
    """The plan's per-step arrays as one int64 and one float64 table (C-contiguous)."""
    ints = np.column_stack(
        [
            plan.feature,
            plan.impute,
            plan.n_ops,
            plan.term,
            plan.out_start,
            plan.term_off,
            plan.term_len,
            plan.hash_buckets,
            plan.hash_seed,
            plan.op_code,
        ]
    ).astype(np.int64)
    params = np.empty((plan.op_a.shape[0], 2 * plan.op_a.shape[1]), np.float64)
    params[:, 0::2], params[:, 1::2] = plan.op_a, plan.op_b
    floats = np.column_stack([plan.fill, params])
    return np.ascontiguousarray(ints), np.ascontiguousarray(floats)


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _hash(v, buckets, seed):  # type: ignore[no-untyped-def]
    v = -HASH_ID_LIMIT if v < -HASH_ID_LIMIT else v
    v = HASH_ID_LIMIT if v > HASH_ID_LIMIT else v
    ident = np.int64(v)
    return ((ident % HASH_PRIME) * HASH_MULTIPLIER + seed) % HASH_PRIME % buckets


@njit(**_JIT)
def _run(x, ints, floats, term_values, term_slots, out, result, check):  # type: ignore[no-untyped-def]
    """Transform (``check`` False) or validate (``check`` True) a batch, step by step.

    One body for both so that validation sees exactly the values the transform computes.
    Everything per step is written out here rather than in helper functions: passing arrays
    to a helper costs atomic reference-count updates (~50 ns per step, even with no rows).
    Validation writes ``[step, row, chain index, violation]`` into ``result`` and stops at the
    first bad value.
    """
    n = x.shape[0]
    buf = np.empty(n, np.float64)
    for s in range(ints.shape[0]):
        f = ints[s, _I_FEATURE]
        impute = ints[s, _I_IMPUTE]
        if check and not impute:
            for r in range(n):
                if not np.isfinite(x[r, f]):
                    result[0], result[1], result[3] = s, r, _NON_FINITE_RAW
                    return
        if impute:
            fill = floats[s, _F_FILL]
            for r in range(n):
                v = np.float64(x[r, f])
                buf[r] = v if np.isfinite(v) else fill
        else:
            for r in range(n):
                buf[r] = np.float64(x[r, f])
        for k in range(ints[s, _I_N_OPS]):
            code = ints[s, _I_OPS + k]
            a = floats[s, _F_OPS + 2 * k]
            b = floats[s, _F_OPS + 2 * k + 1]
            if code == OP_CLIP:
                for r in range(n):
                    v = buf[r]
                    v = a if v < a else v
                    buf[r] = b if v > b else v
            elif code == OP_LOG1P:
                for r in range(n):
                    buf[r] = fastlog.log(1.0 + buf[r])
            elif code == OP_AFFINE:
                for r in range(n):
                    buf[r] = (buf[r] - a) / b
            if check:
                for r in range(n):
                    if not np.isfinite(buf[r]):
                        result[0], result[1], result[2], result[3] = s, r, k, _NON_FINITE_AFTER_OP
                        return
        kind = ints[s, _I_TERM]
        c = ints[s, _I_OUT]
        if check:
            if kind == TERM_VALUE:
                for r in range(n):
                    if not np.isfinite(np.float32(buf[r])):
                        result[0], result[1], result[3] = s, r, _FLOAT32_OVERFLOW
                        return
            continue
        if kind == TERM_VALUE:
            for r in range(n):
                out[r, c] = np.float32(buf[r])
            continue
        off = ints[s, _I_TERM_OFF]
        length = ints[s, _I_TERM_LEN]
        buckets = ints[s, _I_BUCKETS]
        seed = ints[s, _I_SEED]
        for r in range(n):
            v = buf[r]
            if kind == TERM_HASH_INDEX:
                out[r, c] = np.float32(_hash(v, buckets, seed))
            elif kind == TERM_HASH_ONEHOT:
                for j in range(buckets):
                    out[r, c + j] = 0.0
                out[r, c + _hash(v, buckets, seed)] = 1.0
            else:
                # Binary search: lo = number of table values <= v (sorted boundaries or codes).
                lo = 0
                hi = length
                while lo < hi:
                    mid = (lo + hi) >> 1
                    if term_values[off + mid] <= v:
                        lo = mid + 1
                    else:
                        hi = mid
                if kind == TERM_BUCKET_INDEX:
                    out[r, c] = np.float32(lo)
                    continue
                slot = lo
                if kind == TERM_CATEGORY_ONEHOT:
                    slot = length
                    if lo > 0 and term_values[off + lo - 1] == v:
                        slot = term_slots[off + lo - 1]
                for j in range(length + 1):
                    out[r, c + j] = 0.0
                out[r, c + slot] = 1.0


@njit(**_JIT)
def transform_kernel(x, ints, floats, term_values, term_slots, out):  # type: ignore[no-untyped-def]
    """Fill ``out`` (float32 [rows, width], any content) from raw rows ``x``."""
    _run(x, ints, floats, term_values, term_slots, out, np.zeros(4, np.int64), False)


@njit(**_JIT)
def validate_kernel(x, ints, floats, term_values, term_slots, result):  # type: ignore[no-untyped-def]
    """Find the first bad value, step by step, then row by row, then op by op.

    Writes ``[step, row, chain index, violation]`` into ``result`` (int64 [4]); violation 0
    means the batch is clean.
    """
    result[:] = 0
    _run(x, ints, floats, term_values, term_slots, np.empty((0, 0), np.float32), result, True)
