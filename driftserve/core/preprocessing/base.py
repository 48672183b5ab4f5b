"""What every preprocessing backend offers the server, and the checks and messages they share.

Sharing the message builders keeps the wording of a client error identical whichever backend
found it, so tests can compare backends error for error.
"""

from __future__ import annotations

import logging
from enum import IntEnum
from typing import Protocol, runtime_checkable

import numpy as np

from driftserve.core.preprocessing.errors import PreprocessingError
from driftserve.core.preprocessing.spec import PreprocessingSpec

logger = logging.getLogger(__name__)

RAW_DTYPES: dict[str, type[np.floating]] = {"FP32": np.float32, "FP64": np.float64}


@runtime_checkable
class Preprocessor(Protocol):
    """A compiled spec: validates one request's raw rows and transforms a whole batch."""

    @property
    def raw_input_name(self) -> str: ...

    @property
    def raw_datatype(self) -> str: ...

    @property
    def feature_names(self) -> list[str]: ...

    @property
    def output_width(self) -> int: ...

    def validate(self, x: np.ndarray) -> None:
        """Raise :class:`PreprocessingError` if ``x`` cannot be transformed (cheap, per request)."""
        ...

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Validated raw rows -> float32 C-contiguous ``[rows, output_width]``."""
        ...

    def warmup(self) -> None:
        """Compile and run once, so that no client request pays for compilation."""
        ...


class SpecInput:
    """The raw-input description every backend reports the same way (from ``self.spec``)."""

    spec: PreprocessingSpec

    @property
    def raw_input_name(self) -> str:
        return self.spec.input.name

    @property
    def raw_datatype(self) -> str:
        return self.spec.input.datatype

    @property
    def feature_names(self) -> list[str]:
        return list(self.spec.input.features)


class Violation(IntEnum):
    """Why a value was rejected; shared with the Numba validator's result codes."""

    NONE = 0
    NON_FINITE_RAW = 1
    NON_FINITE_AFTER_OP = 2
    FLOAT32_OVERFLOW = 3


def check_array(spec: PreprocessingSpec, x: object) -> np.ndarray:
    """Check rank, width and dtype of a raw batch; return it C-contiguous."""
    name = spec.input.name
    n = len(spec.input.features)
    if not isinstance(x, np.ndarray):
        raise PreprocessingError(f"input '{name}' must be a numpy array, got {type(x).__name__}")
    if x.ndim == 2 and x.shape[1] == n and x.dtype.type is RAW_DTYPES[spec.input.datatype]:
        # The common case, kept cheap: this runs for every request.
        if not x.dtype.isnative:  # e.g. '>f4' from a big-endian buffer; Numba needs native order
            return x.astype(x.dtype.newbyteorder("="))
        return x if x.flags.c_contiguous else np.ascontiguousarray(x)
    expected = np.dtype(RAW_DTYPES[spec.input.datatype])
    if x.ndim != 2:
        raise PreprocessingError(f"input '{name}' must have shape [batch, {n}], got {list(x.shape)}")
    if x.shape[1] != n:
        raise PreprocessingError(
            f"input '{name}' has {x.shape[1]} features per row, expected {n} "
            f"({', '.join(spec.input.features[:5])}{', ...' if n > 5 else ''})"
        )
    if x.dtype != expected:
        raise PreprocessingError(f"input '{name}' has datatype {x.dtype}, expected {spec.input.datatype} ({expected})")
    return np.ascontiguousarray(x)


def violation_error(
    spec: PreprocessingSpec, step: int, row: int, op: int, kind: Violation, raw_value: np.floating
) -> PreprocessingError:
    """The client-facing error for the first bad value found (step, row, op).

    ``raw_value`` is the client's value as a scalar of the input dtype, so it prints as sent
    (``3e+38`` for float32, not its float64 widening).
    """
    s = spec.steps[step]
    column = spec.feature_index(s.feature)
    where = f"feature '{s.feature}' (column {column})"
    if kind == Violation.NON_FINITE_RAW:
        what = "NaN" if np.isnan(raw_value) else ("inf" if raw_value > 0 else "-inf")
        msg = (
            f"{where} has {what} in row {row}, but its steps have no impute; send a finite value "
            "or add an impute op to every step that reads this feature"
        )
    elif kind == Violation.NON_FINITE_AFTER_OP:
        name = s.ops[op].op
        hint = " (log1p needs inputs > -1)" if name == "log1p" else " (the result overflows)"
        msg = (
            f"{where} value {raw_value!s} in row {row} gives a non-finite result at "
            f"steps[{step}] op {op} ({name}){hint}"
        )
    else:
        msg = f"{where} value {raw_value!s} in row {row} transforms to a value outside the float32 range"
    return PreprocessingError(msg, feature=s.feature)
