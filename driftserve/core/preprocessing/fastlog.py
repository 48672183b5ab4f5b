"""A natural logarithm that LLVM can vectorize inside Numba loops.

A loop calling libm's ``log`` runs one value at a time (~7-15 ns each here); log1p steps are
the bulk of a typical spec's cost. This is fdlibm's ``__ieee754_log`` algorithm (reduce to
``m * 2**k`` with ``m`` in [sqrt(2)/2, sqrt(2)), then a degree-14 polynomial in ``s = f/(2+f)``)
written without branches, so the kernel's loop compiles to SIMD code. Error < 1 ulp, like
libm's; special values follow IEEE (log 0 = -inf, log x<0 = NaN, log inf = inf).

The algorithm and constants come from fdlibm e_log.c, under this notice:

    Copyright (C) 1993 by Sun Microsystems, Inc. All rights reserved.
    Developed at SunSoft, a Sun Microsystems, Inc. business.
    Permission to use, copy, modify, and distribute this software is freely granted,
    provided that this notice is preserved.

Kernels calling :func:`log` must use ``error_model="numpy"`` (no ZeroDivisionError check,
which would stop the vectorizer).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core.extending import intrinsic

_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_LG1 = 6.666666666666735130e-01
_LG2 = 3.999999999940941908e-01
_LG3 = 2.857142874366239149e-01
_LG4 = 2.222219843214978396e-01
_LG5 = 1.818357216161805012e-01
_LG6 = 1.531383769920937332e-01
_LG7 = 1.479819860511658591e-01
_SQRT2 = 1.4142135623730951
_TWO54 = 18014398509481984.0
_SMALLEST_NORMAL = 2.2250738585072014e-308
_MANTISSA = 0x000FFFFFFFFFFFFF
_EXPONENT_ONE = 0x3FF0000000000000


@intrinsic
def _bits(typingctx, x):  # type: ignore[no-untyped-def]
    """The IEEE-754 bits of a float64, as int64."""

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _from_bits(typingctx, x):  # type: ignore[no-untyped-def]
    """The float64 whose IEEE-754 bits are the given int64."""

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def log(y):  # type: ignore[no-untyped-def]
    """Natural logarithm of a float64, branch-free."""
    subnormal = y < _SMALLEST_NORMAL
    scaled = y * _TWO54 if subnormal else y
    bits: int = _bits(scaled)  # type: ignore[call-arg]  # numba's stub types an intrinsic's Python-level call
    k = np.float64(((bits >> 52) & 0x7FF) - 1023) - (54.0 if subnormal else 0.0)
    m = _from_bits((bits & _MANTISSA) | _EXPONENT_ONE)
    upper = m > _SQRT2
    m = m * 0.5 if upper else m
    k = k + 1.0 if upper else k
    f = m - 1.0
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (_LG2 + w * (_LG4 + w * _LG6))
    t2 = z * (_LG1 + w * (_LG3 + w * (_LG5 + w * _LG7)))
    hfsq = 0.5 * f * f
    v = k * _LN2_HI - ((hfsq - (s * (hfsq + (t2 + t1)) + k * _LN2_LO)) - f)
    v = -np.inf if y == 0.0 else v
    v = np.inf if y == np.inf else v
    return v if y >= 0.0 else np.nan
