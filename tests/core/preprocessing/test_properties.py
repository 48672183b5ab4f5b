"""Property tests: for random specs and batches, Numba, fused ONNX and NumPy agree.

Batches mix ordinary values, extremes of the dtype, NaN/±inf, values at -1 and at boundaries,
and integer codes in and out of the categories. Where the NumPy validator accepts a batch, all
three transforms must agree within float32 tolerance; where it rejects one, the Numba validator
must reject it with the same message.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from driftserve.core.preprocessing import NumpyPreprocessor, PreprocessingError, PreprocessingSpec, compile_preprocessor
from tests.core.preprocessing.support import ATOL, RTOL, fused_transform, run_fused

_PARAM = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False)
_SCALE = st.floats(1e-3, 1e3, allow_nan=False, allow_infinity=False)


@st.composite
def _scalar_op(draw: st.DrawFn) -> list[Any]:
    kind = draw(st.sampled_from(["clip", "log1p", "standardize", "minmax", "passthrough"]))
    if kind == "clip":
        lo, hi = sorted(draw(st.lists(_PARAM, min_size=2, max_size=2)))
        bounds = draw(st.sampled_from([{"min": lo, "max": hi}, {"min": lo}, {"max": hi}]))
        return [{"clip": bounds}]
    if kind == "log1p":
        # Half the time guard the domain, as a real spec would; unguarded ones test validation.
        guard = draw(st.booleans())
        return ([{"clip": {"min": draw(st.floats(-0.999, 10.0))}}] if guard else []) + ["log1p"]
    if kind == "standardize":
        return [{"standardize": {"mean": draw(_PARAM), "std": draw(_SCALE)}}]
    if kind == "minmax":
        lo = draw(_PARAM)
        return [{"minmax": {"min": lo, "max": lo + draw(_SCALE)}}]
    return ["passthrough"]


@st.composite
def _terminal_op(draw: st.DrawFn) -> list[Any]:
    kind = draw(st.sampled_from(["none", "bucketize", "onehot", "hash"]))
    output = draw(st.sampled_from(["index", "onehot"]))
    if kind == "bucketize":
        bounds = sorted(set(draw(st.lists(st.sampled_from([-1.0, 0.0, 1.0, 2.5]) | _PARAM, min_size=1, max_size=6))))
        return [{"bucketize": {"boundaries": bounds, "output": output}}]
    if kind == "onehot":
        categories = draw(st.integers(1, 6) | st.lists(st.integers(-5, 12), min_size=1, max_size=6, unique=True))
        return [{"onehot": {"categories": categories}}]
    if kind == "hash":
        return [
            {"hash": {"buckets": draw(st.integers(2, 17)), "seed": draw(st.integers(0, 2**31 - 2)), "output": output}}
        ]
    return []


@st.composite
def specs(draw: st.DrawFn) -> PreprocessingSpec:
    n_features = draw(st.integers(1, 5))
    features = [f"f{i}" for i in range(n_features)]
    steps = []
    for _ in range(draw(st.integers(1, 6))):
        ops: list[Any] = []
        if draw(st.booleans()):
            ops.append({"impute": {"value": draw(_PARAM)}})
        for _ in range(draw(st.integers(0, 3))):
            ops.extend(draw(_scalar_op()))
        ops.extend(draw(_terminal_op()))
        steps.append({"feature": draw(st.sampled_from(features)), "ops": ops or ["passthrough"]})
    datatype = draw(st.sampled_from(["FP32", "FP64"]))
    return PreprocessingSpec.model_validate(
        {"input": {"name": "raw", "datatype": datatype, "features": features}, "steps": steps}
    )


def _values(dtype: np.dtype) -> st.SearchStrategy[float]:
    big = float(np.finfo(dtype).max)
    special = st.sampled_from(
        [0.0, -1.0, -0.5, 1.0, 2.5, -0.0, big, -big, 1e-30, float("nan"), float("inf"), -float("inf")]
    )
    codes = st.integers(-6, 14).map(float)
    width = 32 if dtype == np.float32 else 64
    ordinary = st.floats(-1e6, 1e6, width=width)
    anything = st.floats(width=width)
    return st.one_of(ordinary, codes, special, anything)


@st.composite
def cases(draw: st.DrawFn) -> tuple[PreprocessingSpec, np.ndarray]:
    spec = draw(specs())
    dtype = np.dtype(np.float32 if spec.input.datatype == "FP32" else np.float64)
    rows = draw(st.integers(1, 12))
    x = draw(hnp.arrays(dtype, (rows, len(spec.input.features)), elements=_values(dtype)))
    # Non-finite values only where the spec allows them, most of the time: otherwise nearly
    # every batch would be rejected and the transforms rarely compared.
    if draw(st.integers(0, 3)) > 0:
        allowed = {s.feature for s in spec.steps if s.imputes} - {s.feature for s in spec.steps if not s.imputes}
        for j, name in enumerate(spec.input.features):
            if name not in allowed:
                col = x[:, j]
                col[~np.isfinite(col)] = 0.0
    return spec, x


def _rejection(pre: Any, x: np.ndarray) -> str | None:
    try:
        pre.validate(x)
    except PreprocessingError as exc:
        return str(exc)
    return None


@pytest.mark.timeout(600)  # ~10 s normally; generous for a loaded CI box
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_backends_agree(case: tuple[PreprocessingSpec, np.ndarray]) -> None:
    spec, x = case
    oracle = NumpyPreprocessor(spec)
    numba = compile_preprocessor(spec)
    rejected = _rejection(oracle, x)
    assert _rejection(numba, x) == rejected
    if rejected is not None:
        event("rejected by validate")
        return
    event("transforms compared")
    expected = oracle.transform(x)
    np.testing.assert_allclose(numba.transform(x), expected, rtol=RTOL, atol=ATOL)
    fused = run_fused(fused_transform(spec), spec, x)
    np.testing.assert_allclose(fused, expected, rtol=RTOL, atol=ATOL)
    assert np.isfinite(expected).all()


@settings(max_examples=100, deadline=None)
@given(specs())
def test_output_width_matches_every_backend(spec: PreprocessingSpec) -> None:
    x = np.zeros((3, len(spec.input.features)), np.float32 if spec.input.datatype == "FP32" else np.float64)
    assert NumpyPreprocessor(spec).transform(x).shape == (3, spec.output_width)
    assert compile_preprocessor(spec, warmup=False).transform(x).shape == (3, spec.output_width)
