"""Numba kernels over a flat :class:`~server.preprocessing.plan.Plan` (private; no checks here).

One generic transform kernel and one validation kernel serve every spec. Loops run step by
step with the rows innermost, so each op's branch is taken once per step, not once per value.
Both are ``nogil``: a batch transformed in a worker thread does not hold up the event loop.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from server.preprocessing.plan import (
    OP_AFFINE,
    OP_CLIP,
    OP_LOG1P,
    TERM_BUCKET_INDEX,
    TERM_BUCKET_ONEHOT,
    TERM_CATEGORY_ONEHOT,
    TERM_HASH_INDEX,
    TERM_HASH_ONEHOT,
    TERM_VALUE,
)
from server.preprocessing.spec import HASH_ID_LIMIT, HASH_MULTIPLIER, HASH_PRIME

# Violation codes, equal to base.Violation (kept numeric so the kernel can return them).
_NON_FINITE_RAW = 1
_NON_FINITE_AFTER_OP = 2
_FLOAT32_OVERFLOW = 3


@njit(cache=True, nogil=True)
def _load(x, f, impute, fill, buf):  # type: ignore[no-untyped-def]
    n = x.shape[0]
    if impute:
        for r in range(n):
            v = np.float64(x[r, f])
            buf[r] = v if np.isfinite(v) else fill
    else:
        for r in range(n):
            buf[r] = np.float64(x[r, f])


@njit(cache=True, nogil=True)
def _apply(code, a, b, buf, n):  # type: ignore[no-untyped-def]
    if code == OP_CLIP:
        for r in range(n):
            v = buf[r]
            if v < a:
                v = a
            if v > b:
                v = b
            buf[r] = v
    elif code == OP_LOG1P:
        for r in range(n):
            buf[r] = np.log(1.0 + buf[r])
    elif code == OP_AFFINE:
        for r in range(n):
            buf[r] = (buf[r] - a) / b


@njit(cache=True, nogil=True)
def _count_le(values, off, length, v):  # type: ignore[no-untyped-def]
    """Number of ``values[off:off+length]`` (sorted) that are <= v."""
    lo = 0
    hi = length
    while lo < hi:
        mid = (lo + hi) >> 1
        if values[off + mid] <= v:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, nogil=True)
def _hash(v, buckets, seed):  # type: ignore[no-untyped-def]
    if v < -HASH_ID_LIMIT:
        v = -HASH_ID_LIMIT
    elif v > HASH_ID_LIMIT:
        v = HASH_ID_LIMIT
    ident = np.int64(v)
    return ((ident % HASH_PRIME) * HASH_MULTIPLIER + seed) % HASH_PRIME % buckets


@njit(cache=True, nogil=True)
def transform_kernel(  # type: ignore[no-untyped-def]
    x, feature, impute, fill, n_ops, op_code, op_a, op_b, term, out_start,
    term_off, term_len, term_values, term_slots, hash_buckets, hash_seed, out,
):
    """Fill ``out`` (float32 [rows, width], any content) from raw rows ``x``."""
    n = x.shape[0]
    buf = np.empty(n, np.float64)
    for s in range(feature.shape[0]):
        _load(x, feature[s], impute[s], fill[s], buf)
        for k in range(n_ops[s]):
            _apply(op_code[s, k], op_a[s, k], op_b[s, k], buf, n)
        c = out_start[s]
        kind = term[s]
        off = term_off[s]
        length = term_len[s]
        if kind == TERM_VALUE:
            for r in range(n):
                out[r, c] = np.float32(buf[r])
        elif kind == TERM_BUCKET_INDEX:
            for r in range(n):
                out[r, c] = np.float32(_count_le(term_values, off, length, buf[r]))
        elif kind == TERM_BUCKET_ONEHOT:
            for r in range(n):
                for j in range(length + 1):
                    out[r, c + j] = 0.0
                out[r, c + _count_le(term_values, off, length, buf[r])] = 1.0
        elif kind == TERM_CATEGORY_ONEHOT:
            for r in range(n):
                for j in range(length + 1):
                    out[r, c + j] = 0.0
                i = _count_le(term_values, off, length, buf[r])
                slot = length
                if i > 0 and term_values[off + i - 1] == buf[r]:
                    slot = term_slots[off + i - 1]
                out[r, c + slot] = 1.0
        elif kind == TERM_HASH_INDEX:
            for r in range(n):
                out[r, c] = np.float32(_hash(buf[r], hash_buckets[s], hash_seed[s]))
        elif kind == TERM_HASH_ONEHOT:
            buckets = hash_buckets[s]
            for r in range(n):
                for j in range(buckets):
                    out[r, c + j] = 0.0
                out[r, c + _hash(buf[r], buckets, hash_seed[s])] = 1.0


@njit(cache=True, nogil=True)
def validate_kernel(  # type: ignore[no-untyped-def]
    x, feature, impute, fill, n_ops, op_code, op_a, op_b, term, result,
):
    """Find the first bad value, step by step, then row by row, then op by op.

    Writes ``[step, row, chain index, violation]`` into ``result`` (int64 [4]); violation 0
    means the batch is clean.
    """
    n = x.shape[0]
    buf = np.empty(n, np.float64)
    result[:] = 0
    for s in range(feature.shape[0]):
        f = feature[s]
        if not impute[s]:
            for r in range(n):
                if not np.isfinite(x[r, f]):
                    result[0], result[1], result[3] = s, r, _NON_FINITE_RAW
                    return
        _load(x, f, impute[s], fill[s], buf)
        for k in range(n_ops[s]):
            _apply(op_code[s, k], op_a[s, k], op_b[s, k], buf, n)
            for r in range(n):
                if not np.isfinite(buf[r]):
                    result[0], result[1], result[2], result[3] = s, r, k, _NON_FINITE_AFTER_OP
                    return
        if term[s] == TERM_VALUE:
            for r in range(n):
                if not np.isfinite(np.float32(buf[r])):
                    result[0], result[1], result[3] = s, r, _FLOAT32_OVERFLOW
                    return
