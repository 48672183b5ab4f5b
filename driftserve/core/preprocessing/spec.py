"""The declarative ``preprocessing:`` section of a model's ``config.yaml``.

A spec names the raw tensor clients send and lists *steps*; each step reads one raw feature,
runs it through an ordered chain of ops and emits one or more columns of the model's input.
The model input is the steps' outputs concatenated in step order; a raw feature may feed several
steps, and raw features no step reads are ignored (and not validated)::

    preprocessing:
      backend: numba                  # numba (kernel before ORT) | onnx (graph fused into model)
      input:
        name: raw                     # the tensor clients send, [batch, len(features)]
        datatype: FP32                # FP32 | FP64
        features: [mean_radius, mean_area, size_code, customer_id]
      steps:
        - feature: mean_radius
          ops:
            - impute: {strategy: mean, value: 14.1}   # NaN/inf -> value (constant or mean)
            - log1p                                   # bare name for ops without parameters
            - standardize: {mean: 2.69, std: 0.23}    # (x - mean) / std
        - feature: mean_area
          ops:
            - clip: {min: 0.0, max: 2500.0}
            - minmax: {min: 0.0, max: 2500.0}         # (x - min) / (max - min)
        - feature: mean_area
          ops: [{bucketize: {boundaries: [400.0, 700.0], output: onehot}}]   # 3 columns
        - feature: size_code
          ops: [{onehot: {categories: 4}}]            # codes 0..3 + unknown slot: 5 columns
        - feature: customer_id
          ops: [{hash: {buckets: 16, seed: 7, output: index}}]               # 1 column
        - feature: mean_radius
          ops: [passthrough]

Ops and rules:

* ``impute`` (first op only): replaces NaN and ±inf. Only features whose every step starts with
  an impute may carry non-finite values; elsewhere they are a client error.
* ``clip`` (``min`` and/or ``max``), ``log1p`` (inputs must be > -1), ``standardize``,
  ``minmax``, ``passthrough``: one column each, any order, repeatable.
* ``bucketize`` (``boundaries`` strictly increasing; index = number of boundaries <= x),
  ``onehot`` (integer ``categories``: a count k for codes 0..k-1 or an explicit list; anything
  else lands in the trailing unknown slot), ``hash`` (integer ids into ``buckets``, see
  :data:`driftserve.core.preprocessing.ops.HASH_PRIME`): at most one of these, and only as the last
  op. ``output`` picks ``index`` (one column) or ``onehot`` (default) for bucketize and hash.

Arithmetic is float64 in every backend and the result is rounded to float32 once; ``log1p`` is
computed as ``log(1 + x)``, which ONNX can express, with each backend's float64 log (all within
1 ulp), so backends agree to float32 precision. Statistics left
out (``value`` of a mean impute, ``mean``/``std``, ``min``/``max`` of minmax, ``boundaries`` with
``n_buckets``, ``categories``) make a *template* that :func:`driftserve.core.preprocessing.fit_spec` fills
from training rows; a spec served by the model must be complete.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from driftserve.core.preprocessing.ops import (
    ALLOW_UNFITTED,
    HASH_ID_LIMIT,
    HASH_MULTIPLIER,
    HASH_PRIME,
    MAX_ONEHOT_WIDTH,
    OP_NAMES,
    BaseOp,
    BucketizeOp,
    ClipOp,
    HashOp,
    ImputeOp,
    Log1pOp,
    MinMaxOp,
    OneHotOp,
    Op,
    PassthroughOp,
    StandardizeOp,
    normalize_op,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ALLOW_UNFITTED",
    "HASH_ID_LIMIT",
    "HASH_MULTIPLIER",
    "HASH_PRIME",
    "MAX_ONEHOT_WIDTH",
    "OP_NAMES",
    "BaseOp",
    "BucketizeOp",
    "ClipOp",
    "HashOp",
    "ImputeOp",
    "InputSpec",
    "Log1pOp",
    "MinMaxOp",
    "OneHotOp",
    "Op",
    "PassthroughOp",
    "PreprocessingSpec",
    "StandardizeOp",
    "Step",
]

_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.\-]*$"


class Step(BaseModel):
    """One raw feature through a chain of ops, giving one or more model-input columns."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    feature: str = Field(min_length=1)
    ops: list[Op] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _normalize(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and isinstance(data.get("ops"), list):
            where = f"feature {data.get('feature')!r}"
            ops = [normalize_op(op, f"{where} op {i}") for i, op in enumerate(data["ops"])]
            return {**data, "ops": ops}
        return data

    @model_validator(mode="after")
    def _check_order(self) -> Step:
        for i, op in enumerate(self.ops):
            where = f"feature {self.feature!r} op {i} ({op.op})"
            if isinstance(op, ImputeOp) and i != 0:
                raise ValueError(f"{where}: impute must be the first op of a step")
            if op.terminal and i != len(self.ops) - 1:
                raise ValueError(
                    f"{where}: {op.op} emits {'an index' if op.op != 'onehot' else 'one-hot'} "
                    "columns, so it must be the last op of a step"
                )
        return self

    @property
    def imputes(self) -> bool:
        """Whether non-finite raw values are allowed (the chain starts with an impute)."""
        return isinstance(self.ops[0], ImputeOp)

    @property
    def width(self) -> int:
        return self.ops[-1].width()


class InputSpec(BaseModel):
    """The raw tensor clients send: ``[batch, len(features)]`` of ``datatype``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=_NAME_PATTERN)
    datatype: Literal["FP32", "FP64"] = "FP32"
    features: list[str] = Field(min_length=1)

    @field_validator("features")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        dupes = sorted(name for name, count in Counter(v).items() if count > 1)
        if dupes:
            raise ValueError(f"feature names must be unique; repeated: {dupes}")
        if any(not f for f in v):
            raise ValueError("feature names must not be empty")
        return v


class PreprocessingSpec(BaseModel):
    """The whole ``preprocessing:`` section (see the module docstring for the YAML form)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    backend: Literal["numba", "onnx"] = "numba"
    input: InputSpec
    steps: list[Step] = Field(min_length=1)

    @model_validator(mode="after")
    def _check_features(self) -> PreprocessingSpec:
        known = set(self.input.features)
        for i, step in enumerate(self.steps):
            if step.feature not in known:
                raise ValueError(
                    f"steps[{i}] reads feature {step.feature!r}, which is not in input.features {self.input.features}"
                )
        unused = [f for f in self.input.features if f not in {s.feature for s in self.steps}]
        if unused:
            logger.info("preprocessing ignores raw features no step reads: %s", unused)
        return self

    @property
    def fitted(self) -> bool:
        """Whether every statistic is present (the spec can be compiled)."""
        return not self.missing_statistics()

    def missing_statistics(self) -> list[str]:
        """``"steps[i] (feature 'f') op j (name): key"`` for every statistic still missing."""
        return [
            f"steps[{i}] (feature {s.feature!r}) op {j} ({op.op}): {key}"
            for i, s in enumerate(self.steps)
            for j, op in enumerate(s.ops)
            for key in op.missing_statistics()
        ]

    @property
    def output_width(self) -> int:
        """Width of the model input the steps produce."""
        return sum(step.width for step in self.steps)

    def feature_index(self, name: str) -> int:
        """Column of ``name`` in the raw tensor."""
        return self.input.features.index(name)

    def to_config(self) -> dict[str, Any]:
        """The plain mapping to write under ``preprocessing:`` in a config.yaml."""
        return self.model_dump(mode="json")
