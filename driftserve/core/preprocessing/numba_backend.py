"""The Numba backend: typed wrapper that holds a plan and calls the generic kernels."""

from __future__ import annotations

import logging
import time

import numpy as np

from driftserve.core.preprocessing import kernels
from driftserve.core.preprocessing.base import (
    RAW_DTYPES,
    Preprocessor,
    SpecInput,
    Violation,
    check_array,
    violation_error,
)
from driftserve.core.preprocessing.plan import build_plan
from driftserve.core.preprocessing.spec import PreprocessingSpec

logger = logging.getLogger(__name__)


class NumbaPreprocessor(SpecInput):
    """A spec compiled to flat arrays and run by the shared ``@njit(nogil=True)`` kernels.

    ``validate`` runs on the request path before queueing; ``transform`` runs on a whole batch
    in the batch's worker thread and releases the GIL while the kernel runs. Safe to share
    between worker threads: the packed plan is read-only and every call has its own scratch.
    """

    def __init__(self, spec: PreprocessingSpec) -> None:
        self.spec = spec
        self._plan = build_plan(spec)
        ints, floats = kernels.pack(self._plan)
        self._transform_args = (ints, floats, self._plan.term_values, self._plan.term_slots)
        self._dtype = np.dtype(RAW_DTYPES[spec.input.datatype])

    @property
    def output_width(self) -> int:
        return self._plan.width

    def validate(self, x: np.ndarray) -> None:
        """Check shape and dtype, then scan for NaN/inf and out-of-domain values in one kernel."""
        x = check_array(self.spec, x)
        result = np.zeros(4, np.int64)
        kernels.validate_kernel(x, *self._transform_args, result)
        if result[3]:  # a Violation other than NONE
            step, row, k, kind = (int(v) for v in result)
            op = int(self._plan.op_pos[step, k])
            raw = x[row, self._plan.feature[step]]
            raise violation_error(self.spec, step, row, op, Violation(kind), raw)

    def transform(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Raw rows (validated) -> float32 ``[rows, output_width]``, C-contiguous.

        ``out`` lets a caller reuse one buffer across batches (large fresh arrays cost page
        faults); it must be float32, C-contiguous and exactly ``[rows, output_width]``.
        """
        x = check_array(self.spec, x)
        shape = (x.shape[0], self._plan.width)
        if out is None:
            out = np.empty(shape, np.float32)
        elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(
                f"out must be a C-contiguous float32 array of shape {list(shape)}, got {out.dtype} {list(out.shape)}"
            )
        kernels.transform_kernel(x, *self._transform_args, out)
        return out

    def warmup(self) -> None:
        """Compile (or load from Numba's disk cache) both kernels for this dtype and run them."""
        start = time.perf_counter()
        writable = np.zeros((2, self._plan.n_raw), self._dtype)
        readonly = writable.copy()
        # Tensors decoded zero-copy from a request are read-only, a distinct Numba type.
        readonly.setflags(write=False)
        for x in (writable, readonly):
            kernels.validate_kernel(x, *self._transform_args, np.zeros(4, np.int64))
            kernels.transform_kernel(x, *self._transform_args, np.empty((2, self._plan.width), np.float32))
        logger.info(
            "preprocessing kernels ready for input '%s' (%s, %d -> %d columns) in %.1f ms",
            self.spec.input.name,
            self.spec.input.datatype,
            self._plan.n_raw,
            self._plan.width,
            (time.perf_counter() - start) * 1e3,
        )


def compile_preprocessor(spec: PreprocessingSpec, *, warmup: bool = True) -> Preprocessor:
    """The Numba preprocessor for ``spec``, compiled and warmed unless ``warmup`` is False."""
    pre = NumbaPreprocessor(spec)
    if warmup:
        pre.warmup()
    return pre


def compile_validator(spec: PreprocessingSpec, *, warmup: bool = True) -> Preprocessor:
    """The request-path validator for either backend (the ONNX backend transforms inside ORT).

    It is the Numba preprocessor itself: its ``validate`` is what the ONNX path needs, and its
    ``transform`` stays available for debugging a fused model against the kernel.
    """
    return compile_preprocessor(spec, warmup=warmup)


__all__ = ["NumbaPreprocessor", "compile_preprocessor", "compile_validator"]
