"""The spec schema: the documented YAML parses, and every kind of mistake is named precisely."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

import driftserve.core.preprocessing.spec as spec_module
from driftserve.core.preprocessing import PreprocessingConfigError, PreprocessingSpec, load_template, parse_spec


def _documented_example() -> dict[str, Any]:
    doc = spec_module.__doc__ or ""
    block = doc.split("::\n\n", 1)[1].split("\n\n", 1)[0]
    return yaml.safe_load(block)["preprocessing"]


def _spec(steps: list[Any], features: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"input": {"name": "raw", "features": features or ["a", "b"]}, "steps": steps, **extra}


def _error(data: dict[str, Any]) -> str:
    with pytest.raises(PreprocessingConfigError) as info:
        parse_spec(data, source="models/m/config.yaml")
    return str(info.value)


def test_documented_example_parses_with_expected_width() -> None:
    spec = parse_spec(_documented_example())
    # 1 (log/standardize) + 1 (minmax) + 3 (2 boundaries) + 5 (4 codes + unknown) + 1 + 1
    assert spec.output_width == 12
    assert spec.backend == "numba"
    assert [s.width for s in spec.steps] == [1, 1, 3, 5, 1, 1]


def test_round_trip_through_config_mapping_is_lossless() -> None:
    spec = parse_spec(_documented_example())
    text = yaml.safe_dump({"preprocessing": spec.to_config()})
    again = parse_spec(yaml.safe_load(text)["preprocessing"])
    assert again == spec
    assert again.to_config() == spec.to_config()


def test_bare_names_and_null_params_mean_no_parameters() -> None:
    spec = parse_spec(_spec([{"feature": "a", "ops": ["log1p", {"passthrough": None}]}]))
    assert [op.op for op in spec.steps[0].ops] == ["log1p", "passthrough"]


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ([{"feature": "a", "ops": ["sqrt"]}], r"steps\.0: .*unknown op 'sqrt'; allowed: impute, clip"),
        ([{"feature": "a", "ops": [{"log1p": {}, "clip": {"min": 0}}]}], r"one-key mapping"),
        ([{"feature": "a", "ops": [{"log1p": {"base": 2}}]}], r"steps\.0\.ops\.0\.log1p\.base: Extra inputs"),
        ([{"feature": "a", "ops": [{"standardize": {"mean": 1.0}}]}], r"standardize needs 'std'"),
        ([{"feature": "a", "ops": [{"standardize": {"mean": 1, "std": 0}}]}], r"'std' must be > 0"),
        ([{"feature": "a", "ops": [{"clip": {}}]}], r"clip needs 'min', 'max' or both"),
        ([{"feature": "a", "ops": [{"clip": {"min": 2, "max": 1}}]}], r"'min' \(2.0\) is greater than 'max'"),
        ([{"feature": "a", "ops": [{"minmax": {"min": 1, "max": 1}}]}], r"must be greater than 'min'"),
        ([{"feature": "a", "ops": ["log1p", {"impute": {"value": 0}}]}], r"op 1 \(impute\): impute must be the first"),
        ([{"feature": "a", "ops": [{"hash": {"buckets": 4}}, "log1p"]}], r"op 0 \(hash\): .*must be the last op"),
        ([{"feature": "a", "ops": [{"bucketize": {"boundaries": [2, 1]}}]}], r"strictly increasing"),
        ([{"feature": "a", "ops": [{"bucketize": {"boundaries": []}}]}], r"must not be empty"),
        ([{"feature": "a", "ops": [{"onehot": {"categories": [1, 1]}}]}], r"duplicate codes"),
        ([{"feature": "a", "ops": [{"impute": {}}]}], r"strategy 'constant' needs 'value'"),
        ([{"feature": "a", "ops": [{"impute": {"value": float("nan")}}]}], r"'value' must be a finite"),
        ([{"feature": "a", "ops": [{"hash": {"buckets": 1}}]}], r"buckets: Input should be greater than or equal to 2"),
        ([{"feature": "z", "ops": ["log1p"]}], r"steps\[0\] reads feature 'z', which is not in input\.features"),
        ([{"feature": "a", "ops": []}], r"steps\.0\.ops: List should have at least 1 item"),
        ([], r"steps: List should have at least 1 item"),
    ],
)
def test_mistakes_are_named(steps: list[Any], expected: str) -> None:
    message = _error(_spec(steps))
    assert message.startswith("models/m/config.yaml: preprocessing")
    assert re.search(expected, message), message


def test_unknown_top_level_key_and_backend_are_rejected() -> None:
    assert "preprocessing.backend: Input should be 'numba' or 'onnx'" in _error(
        _spec([{"feature": "a", "ops": ["log1p"]}], backend="torch")
    )
    assert "preprocessing.stages: Extra inputs are not permitted" in _error(
        _spec([{"feature": "a", "ops": ["log1p"]}], stages=[])
    )


def test_duplicate_features_and_bad_datatype_are_rejected() -> None:
    data = _spec([{"feature": "a", "ops": ["log1p"]}], features=["a", "b", "a"])
    assert "repeated: ['a']" in _error(data)
    data = _spec([{"feature": "a", "ops": ["log1p"]}])
    data["input"]["datatype"] = "INT64"
    assert "preprocessing.input.datatype: Input should be 'FP32' or 'FP64'" in _error(data)


def test_templates_need_the_unfitted_context() -> None:
    template = _spec(
        [
            {
                "feature": "a",
                "ops": [
                    {"standardize": {}},
                ],
            },
            {"feature": "b", "ops": [{"bucketize": {"n_buckets": 4}}]},
        ]
    )
    with pytest.raises(ValidationError, match="standardize needs 'mean' and 'std'"):
        PreprocessingSpec.model_validate(template)
    spec = load_template(template)
    assert not spec.fitted
    assert spec.missing_statistics() == [
        "steps[0] (feature 'a') op 0 (standardize): mean",
        "steps[0] (feature 'a') op 0 (standardize): std",
        "steps[1] (feature 'b') op 0 (bucketize): boundaries",
    ]


def test_output_width_counts_every_terminal_form() -> None:
    spec = parse_spec(
        _spec(
            [
                {"feature": "a", "ops": [{"bucketize": {"boundaries": [1, 2, 3], "output": "index"}}]},
                {"feature": "a", "ops": [{"bucketize": {"boundaries": [1, 2, 3]}}]},
                {"feature": "b", "ops": [{"onehot": {"categories": 3}}]},
                {"feature": "b", "ops": [{"onehot": {"categories": [10, 20]}}]},
                {"feature": "b", "ops": [{"hash": {"buckets": 7}}]},
                {"feature": "b", "ops": [{"hash": {"buckets": 7, "output": "index"}}]},
            ]
        )
    )
    assert spec.output_width == 1 + 4 + 4 + 3 + 7 + 1


def test_spec_embeds_in_a_model_config() -> None:
    """How the server's config model uses it: an optional key, errors located under it."""

    class ModelConfig(BaseModel):
        model_config = ConfigDict(extra="forbid")
        max_batch_size: int
        preprocessing: PreprocessingSpec | None = None

    config = ModelConfig.model_validate({"max_batch_size": 8, "preprocessing": _documented_example()})
    assert config.preprocessing is not None and config.preprocessing.output_width == 12
    assert ModelConfig.model_validate({"max_batch_size": 8}).preprocessing is None
    bad = _documented_example()
    bad["steps"][0]["ops"][2] = {"standardize": {"mean": 1.0}}
    with pytest.raises(ValidationError) as info:
        ModelConfig.model_validate({"max_batch_size": 8, "preprocessing": bad})
    (error,) = info.value.errors()
    assert error["loc"][:5] == ("preprocessing", "steps", 0, "ops", 2)
    assert "standardize needs 'std'" in error["msg"]
