"""Each backend against hand-computed values, and the client errors validate() raises."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from driftserve.core.preprocessing import (
    NumpyPreprocessor,
    PreprocessingConfigError,
    PreprocessingError,
    PreprocessingSpec,
    Preprocessor,
    compile_preprocessor,
    kernels,
    load_template,
    parse_spec,
)
from driftserve.core.preprocessing.spec import HASH_MULTIPLIER, HASH_PRIME
from tests.core.preprocessing.support import fused_transform, run_fused

NAN = float("nan")
INF = float("inf")


def _spec(steps: list[Any], features: list[str], datatype: str = "FP32") -> PreprocessingSpec:
    return parse_spec({"input": {"name": "raw", "datatype": datatype, "features": features}, "steps": steps})


class _Fused:
    """The fused ONNX graph behind the same transform() call as the other backends."""

    def __init__(self, spec: PreprocessingSpec) -> None:
        self.spec = spec
        self.sess = fused_transform(spec)

    def transform(self, x: np.ndarray) -> np.ndarray:
        return run_fused(self.sess, self.spec, x)


BACKENDS: dict[str, Callable[[PreprocessingSpec], Any]] = {
    "numpy": NumpyPreprocessor,
    "numba": compile_preprocessor,
    "onnx": _Fused,
}


@pytest.fixture(params=sorted(BACKENDS))
def make(request: pytest.FixtureRequest) -> Callable[[PreprocessingSpec], Any]:
    return BACKENDS[request.param]


def _hash(ident: int, buckets: int, seed: int) -> int:
    return ((ident % HASH_PRIME) * HASH_MULTIPLIER + seed) % HASH_PRIME % buckets


def test_scalar_chain_values(make: Callable[[PreprocessingSpec], Any]) -> None:
    spec = _spec(
        [
            {
                "feature": "a",
                "ops": [
                    {"impute": {"strategy": "mean", "value": 3.0}},
                    "log1p",
                    {"standardize": {"mean": 1.0, "std": 0.5}},
                ],
            },
            {"feature": "b", "ops": [{"clip": {"min": 0.0, "max": 10.0}}, {"minmax": {"min": 0.0, "max": 4.0}}]},
            {"feature": "b", "ops": ["passthrough"]},
        ],
        ["a", "b"],
    )
    x = np.array([[NAN, -2.0], [0.0, 20.0], [INF, 1.0]], np.float32)
    expected = np.array(
        [
            [(math.log(4.0) - 1.0) / 0.5, 0.0, -2.0],
            [(0.0 - 1.0) / 0.5, 2.5, 20.0],
            [(math.log(4.0) - 1.0) / 0.5, 0.25, 1.0],
        ],
        np.float32,
    )
    out = make(spec).transform(x)
    assert out.dtype == np.float32 and out.shape == (3, 3)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)


def test_terminal_op_values(make: Callable[[PreprocessingSpec], Any]) -> None:
    spec = _spec(
        [
            {"feature": "v", "ops": [{"bucketize": {"boundaries": [0.0, 10.0], "output": "index"}}]},
            {"feature": "v", "ops": [{"bucketize": {"boundaries": [0.0, 10.0]}}]},
            {"feature": "code", "ops": [{"onehot": {"categories": [7, 3]}}]},
            {"feature": "id", "ops": [{"hash": {"buckets": 5, "seed": 11, "output": "index"}}]},
            {"feature": "id", "ops": [{"hash": {"buckets": 3}}]},
        ],
        ["v", "code", "id"],
        datatype="FP64",
    )
    x = np.array([[-1.0, 3.0, 42.0], [0.0, 7.0, -42.9], [10.0, 2.5, 2.0**60], [99.0, -3.0, 0.0]])
    out = make(spec).transform(x)
    # v: bucket index = number of boundaries <= v; code: slots 7 -> 0, 3 -> 1, else unknown (2);
    # id: truncated toward zero and clipped to 2**53 before hashing.
    buckets = [(0, [1, 0, 0]), (1, [0, 1, 0]), (2, [0, 0, 1]), (2, [0, 0, 1])]
    codes = [[0, 1, 0], [1, 0, 0], [0, 0, 1], [0, 0, 1]]
    ids = [42, -42, 2**53, 0]
    expected = []
    for (index, bucket), code, ident in zip(buckets, codes, ids, strict=True):
        hashed = [0, 0, 0]
        hashed[_hash(ident, 3, 0)] = 1
        expected.append([index, *bucket, *code, _hash(ident, 5, 11), *hashed])
    np.testing.assert_array_equal(out, np.array(expected, np.float32))


def test_empty_batch_gives_empty_output(make: Callable[[PreprocessingSpec], Any]) -> None:
    spec = _spec([{"feature": "a", "ops": [{"onehot": {"categories": 2}}]}], ["a"])
    assert make(spec).transform(np.zeros((0, 1), np.float32)).shape == (0, 3)


@pytest.fixture(params=["numpy", "numba"])
def validating(request: pytest.FixtureRequest) -> Callable[[PreprocessingSpec], Preprocessor]:
    return BACKENDS[request.param]


_GUARDED = [
    {"feature": "safe", "ops": [{"impute": {"value": 0.0}}, "log1p"]},
    {"feature": "mean_radius", "ops": [{"standardize": {"mean": 0.0, "std": 1.0}}]},
    {"feature": "skew", "ops": ["log1p"]},
    {"feature": "big", "ops": [{"standardize": {"mean": 0.0, "std": 0.5}}]},
]
_FEATURES = ["safe", "mean_radius", "skew", "big"]


@pytest.mark.parametrize(
    ("column", "row", "value", "message"),
    [
        (1, 5, NAN, "feature 'mean_radius' (column 1) has NaN in row 5, but its steps have no impute"),
        (1, 2, -INF, "feature 'mean_radius' (column 1) has -inf in row 2"),
        (
            2,
            3,
            -2.0,
            "feature 'skew' (column 2) value -2.0 in row 3 gives a non-finite result at steps[2] op 0 (log1p) "
            "(log1p needs inputs > -1)",
        ),
        (3, 0, 3e38, "feature 'big' (column 3) value 3e+38 in row 0 transforms to a value outside the float32 range"),
    ],
)
def test_validate_names_the_bad_feature(
    validating: Callable[[PreprocessingSpec], Preprocessor], column: int, row: int, value: float, message: str
) -> None:
    pre = validating(_spec(_GUARDED, _FEATURES))
    x = np.ones((6, 4), np.float32)
    x[:, 0] = [NAN, INF, -INF, 1.0, 2.0, NAN]  # imputed: always fine
    pre.validate(x)
    x[row, column] = value
    with pytest.raises(PreprocessingError) as info:
        pre.validate(x)
    assert str(info.value).startswith(message), str(info.value)
    assert info.value.feature == _FEATURES[column]


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.ones((2, 3), np.float32), "input 'raw' has 3 features per row, expected 4 (safe, mean_radius, skew, big)"),
        (np.ones(4, np.float32), "input 'raw' must have shape [batch, 4], got [4]"),
        (np.ones((2, 4), np.float64), "input 'raw' has datatype float64, expected FP32 (float32)"),
        ([[1.0, 2.0, 3.0, 4.0]], "input 'raw' must be a numpy array, got list"),
    ],
)
def test_validate_rejects_wrong_shapes_and_dtypes(
    validating: Callable[[PreprocessingSpec], Preprocessor], x: Any, message: str
) -> None:
    with pytest.raises(PreprocessingError) as info:
        validating(_spec(_GUARDED, _FEATURES)).validate(x)
    assert str(info.value) == message
    assert info.value.feature is None


def test_unseen_categories_are_not_errors(validating: Callable[[PreprocessingSpec], Preprocessor]) -> None:
    pre = validating(_spec([{"feature": "c", "ops": [{"onehot": {"categories": 2}}]}], ["c"]))
    x = np.array([[0.0], [1.0], [2.0], [-1.0], [0.5], [1e30]], np.float32)
    pre.validate(x)
    np.testing.assert_array_equal(pre.transform(x)[:, 2], [0, 0, 1, 1, 1, 1])


def test_non_contiguous_input_is_accepted(validating: Callable[[PreprocessingSpec], Preprocessor]) -> None:
    pre = validating(_spec([{"feature": "b", "ops": [{"standardize": {"mean": 1.0, "std": 2.0}}]}], ["a", "b"]))
    wide = np.arange(12, dtype=np.float32).reshape(3, 4)
    x = wide[:, 1:3]
    assert not x.flags.c_contiguous
    pre.validate(x)
    out = pre.transform(x)
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(out[:, 0], (wide[:, 2] - 1.0) / 2.0)


def test_unfitted_spec_cannot_be_compiled() -> None:
    template = load_template(
        {"input": {"name": "raw", "features": ["a"]}, "steps": [{"feature": "a", "ops": [{"standardize": {}}]}]}
    )
    for backend in (NumpyPreprocessor, compile_preprocessor):
        with pytest.raises(
            PreprocessingConfigError, match=r"statistics to fit: steps\[0\] \(feature 'a'\) op 0 \(standardize\): mean"
        ):
            backend(template)


def test_numba_backend_reports_its_interface() -> None:
    pre = compile_preprocessor(_spec(_GUARDED, _FEATURES))
    assert isinstance(pre, Preprocessor)
    assert (pre.raw_input_name, pre.raw_datatype, pre.feature_names, pre.output_width) == ("raw", "FP32", _FEATURES, 4)


@pytest.mark.parametrize(
    ("standardize", "terminal", "expected"),
    [
        # -1e-58 is not category 0: the value must not be rounded through float32 on the way.
        ({"mean": 1e-58, "std": 1.0}, {"onehot": {"categories": 1}}, [0.0, 1.0]),
        # 1 / (1 + 2**-40) is just below the boundary 1.0.
        ({"mean": 0.0, "std": 1.0 + 2.0**-40}, {"bucketize": {"boundaries": [1.0], "output": "index"}}, [0.0]),
    ],
)
def test_parameters_near_zero_or_one_are_applied_exactly(
    make: Callable[[PreprocessingSpec], Any],
    standardize: dict[str, float],
    terminal: dict[str, Any],
    expected: list[float],
) -> None:
    spec = _spec([{"feature": "a", "ops": [{"standardize": standardize}, terminal]}], ["a"])
    np.testing.assert_array_equal(
        make(spec).transform(np.array([[1.0 if "bucketize" in terminal else 0.0]], np.float32)), [expected]
    )


def test_numba_transform_fills_a_given_buffer() -> None:
    spec = _spec([{"feature": "a", "ops": [{"onehot": {"categories": 2}}]}], ["a"])
    pre = compile_preprocessor(spec)
    x = np.array([[1.0], [5.0]], np.float32)
    out = np.full((2, 3), 7.0, np.float32)
    assert pre.transform(x, out=out) is out
    np.testing.assert_array_equal(out, [[0, 1, 0], [0, 0, 1]])
    with pytest.raises(
        ValueError, match=r"out must be a C-contiguous float32 array of shape \[2, 3\], got float32 \[3, 3\]"
    ):
        pre.transform(x, out=np.empty((3, 3), np.float32))


def test_request_buffers_never_compile_after_warmup() -> None:
    """Read-only (zero-copy decoded) and big-endian inputs run on what warmup compiled."""
    spec = _spec([{"feature": "a", "ops": ["log1p", {"onehot": {"categories": 3}}]}], ["a"])
    pre = compile_preprocessor(spec)
    compiled = (len(kernels.transform_kernel.signatures), len(kernels.validate_kernel.signatures))
    readonly = np.frombuffer(np.array([0.0, 1.0, 6.0], np.float32).tobytes(), np.float32).reshape(3, 1)
    assert not readonly.flags.writeable
    big_endian = np.array([[0.0], [1.0], [6.0]], ">f4")
    for x in (readonly, big_endian, readonly[::2]):
        pre.validate(x)
        expected = NumpyPreprocessor(spec).transform(np.asarray(x, np.float32))
        np.testing.assert_array_equal(pre.transform(x), expected)
    assert (len(kernels.transform_kernel.signatures), len(kernels.validate_kernel.signatures)) == compiled
