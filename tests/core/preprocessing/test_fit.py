"""fit_spec: statistics come from the values each op sees, and bad training data is refused."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from driftserve.core.preprocessing import NumpyPreprocessor, PreprocessingConfigError, fit_spec

NAMES = ["skewed", "normal", "code"]


def _template(steps: list[Any]) -> dict[str, Any]:
    return {"backend": "onnx", "input": {"name": "raw", "features": ["skewed", "normal", "code"]}, "steps": steps}


@pytest.fixture
def data() -> np.ndarray:
    rng = np.random.default_rng(1)
    x = np.column_stack([rng.exponential(5.0, 400), rng.normal(3.0, 2.0, 400), rng.integers(0, 4, 400)])
    x[::50, 0] = np.nan
    return x


def test_chain_statistics_follow_the_chain(data: np.ndarray) -> None:
    spec = fit_spec(
        data,
        NAMES,
        _template(
            [
                {"feature": "skewed", "ops": [{"impute": {"strategy": "mean"}}, "log1p", {"standardize": {}}]},
                {"feature": "normal", "ops": [{"minmax": {"min": 0.0}}]},
                {"feature": "normal", "ops": [{"bucketize": {"n_buckets": 4}}]},
                {"feature": "code", "ops": [{"onehot": {}}]},
            ]
        ),
    )
    assert spec.fitted and spec.backend == "onnx"
    skewed = data[:, 0]
    fill = float(np.nanmean(skewed))
    logged = np.log1p(np.where(np.isnan(skewed), fill, skewed))
    impute, _, standardize = spec.steps[0].ops
    assert impute.value == pytest.approx(fill)
    assert standardize.mean == pytest.approx(logged.mean())
    assert standardize.std == pytest.approx(logged.std())
    minmax = spec.steps[1].ops[0]
    assert (minmax.min, minmax.max) == (0.0, pytest.approx(data[:, 1].max()))
    assert spec.steps[2].ops[0].boundaries == pytest.approx(np.quantile(data[:, 1], [0.25, 0.5, 0.75]).tolist())
    assert spec.steps[3].ops[0].categories == [0, 1, 2, 3]
    out = NumpyPreprocessor(spec).transform(data.astype(np.float32))
    assert out[:, 0].mean() == pytest.approx(0.0, abs=1e-6)
    assert out[:, 0].std() == pytest.approx(1.0, abs=1e-5)
    assert out[:, 2:6].sum(axis=0) == pytest.approx([100, 100, 100, 100], abs=2)


def test_given_statistics_are_kept(data: np.ndarray) -> None:
    spec = fit_spec(data, NAMES, _template([{"feature": "normal", "ops": [{"standardize": {"mean": 5.0}}]}]))
    op = spec.steps[0].ops[0]
    assert op.mean == 5.0
    assert op.std == pytest.approx(data[:, 1].std())


def test_feature_order_of_training_data_does_not_matter(data: np.ndarray) -> None:
    template = _template([{"feature": "normal", "ops": [{"standardize": {}}]}])
    a = fit_spec(data, NAMES, template)
    b = fit_spec(data[:, ::-1], NAMES[::-1], template)
    assert a == b


def test_constant_feature_gets_unit_scale() -> None:
    x = np.column_stack([np.ones(10), np.zeros(10), np.zeros(10)])
    spec = fit_spec(
        x,
        NAMES,
        _template(
            [
                {
                    "feature": "skewed",
                    "ops": [
                        {"standardize": {}},
                    ],
                },
                {"feature": "normal", "ops": [{"minmax": {}}]},
            ]
        ),
    )
    assert (spec.steps[0].ops[0].mean, spec.steps[0].ops[0].std) == (1.0, 1.0)
    assert (spec.steps[1].ops[0].min, spec.steps[1].ops[0].max) == (0.0, 1.0)


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (
            [{"feature": "skewed", "ops": [{"standardize": {}}]}],
            r"steps\[0\] \(feature 'skewed'\): training data has 8 non-finite values but the step has no impute",
        ),
        (
            [{"feature": "normal", "ops": [{"clip": {"min": -5}}, "log1p"]}],
            r"op 1 \(log1p\): gives non-finite values on the training data",
        ),
    ],
)
def test_unusable_training_data_is_refused(data: np.ndarray, steps: list[Any], message: str) -> None:
    with pytest.raises(PreprocessingConfigError, match=message):
        fit_spec(data, NAMES, _template(steps))


def test_training_data_shape_and_names_are_checked(data: np.ndarray) -> None:
    template = _template([{"feature": "normal", "ops": [{"standardize": {}}]}])
    with pytest.raises(PreprocessingConfigError, match=r"must be \[rows, 2\] to match feature_names"):
        fit_spec(data, NAMES[:2], template)
    with pytest.raises(PreprocessingConfigError, match=r"lacks features \['skewed'\]"):
        fit_spec(data, ["x", "normal", "code"], template)
