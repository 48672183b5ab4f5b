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
  :data:`HASH_PRIME`): at most one of these, and only as the last op. ``output`` picks
  ``index`` (one column) or ``onehot`` (default) for bucketize and hash.

Arithmetic is float64 in every backend and the result is rounded to float32 once; ``log1p`` is
computed as ``log(1 + x)``, which ONNX can express, with each backend's float64 log (all within
1 ulp), so backends agree to float32 precision. Statistics left
out (``value`` of a mean impute, ``mean``/``std``, ``min``/``max`` of minmax, ``boundaries`` with
``n_buckets``, ``categories``) make a *template* that :func:`server.preprocessing.fit_spec` fills
from training rows; a spec served by the model must be complete.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

logger = logging.getLogger(__name__)

#: The context key that lets statistics be missing (templates for ``fit_spec``).
ALLOW_UNFITTED = "allow_unfitted"
#: Hash of an integer id: ``((id mod P) * HASH_MULTIPLIER + seed) mod P mod buckets``, all in
#: int64 with non-negative remainders. P = 2**31 - 1, so no product overflows int64 and ONNX
#: (Mul/Add/Mod on int64) reproduces it exactly. Ids are float values truncated toward zero
#: after clipping to ±2**53, the range where float64 holds every integer.
HASH_PRIME = 2_147_483_647
HASH_MULTIPLIER = 1_540_483_477
HASH_ID_LIMIT = float(2**53)
#: Guard against a one-hot that would blow the model input up by accident.
MAX_ONEHOT_WIDTH = 65_536

_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.\-]*$"


def _unfitted_ok(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get(ALLOW_UNFITTED))


def _finite(value: float | None, key: str) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError(f"'{key}' must be a finite number, got {value!r}")
    return value


class _Op(BaseModel):
    """Base of all ops: serialized back in the YAML form ``{name: {params}}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: Ops that end a chain and may emit several columns.
    terminal: ClassVar[bool] = False

    @model_serializer(mode="wrap")
    def _as_mapping(self, handler: Any) -> dict[str, Any]:
        data = {k: v for k, v in handler(self).items() if v is not None}
        name = data.pop("op")
        return {name: data}

    def width(self) -> int:
        """Columns this op emits (1 unless terminal)."""
        return 1

    def missing_statistics(self) -> list[str]:
        """Parameter names still to be fitted."""
        return []


class ImputeOp(_Op):
    """Replace NaN and ±inf by a constant or by the training mean."""

    op: Literal["impute"] = "impute"
    strategy: Literal["constant", "mean"] = "constant"
    value: float | None = None

    @field_validator("value")
    @classmethod
    def _check_value(cls, v: float | None) -> float | None:
        return _finite(v, "value")

    @model_validator(mode="after")
    def _check_complete(self, info: ValidationInfo) -> ImputeOp:
        if self.value is None and (self.strategy == "constant" or not _unfitted_ok(info)):
            raise ValueError(
                f"impute with strategy '{self.strategy}' needs 'value'"
                + (" (fill it with fit_spec)" if self.strategy == "mean" else "")
            )
        return self

    def missing_statistics(self) -> list[str]:
        return ["value"] if self.value is None else []


class ClipOp(_Op):
    """Clamp to ``[min, max]``; either bound may be left out."""

    op: Literal["clip"] = "clip"
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _check_bounds(self) -> ClipOp:
        _finite(self.min, "min")
        _finite(self.max, "max")
        if self.min is None and self.max is None:
            raise ValueError("clip needs 'min', 'max' or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"clip 'min' ({self.min}) is greater than 'max' ({self.max})")
        return self


class Log1pOp(_Op):
    """``log(1 + x)``; inputs must be > -1 (clip first when they may not be)."""

    op: Literal["log1p"] = "log1p"


class PassthroughOp(_Op):
    """The value unchanged (a feature the model takes as it comes)."""

    op: Literal["passthrough"] = "passthrough"


class StandardizeOp(_Op):
    """``(x - mean) / std``."""

    op: Literal["standardize"] = "standardize"
    mean: float | None = None
    std: float | None = None

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> StandardizeOp:
        _finite(self.mean, "mean")
        _finite(self.std, "std")
        if self.std is not None and self.std <= 0:
            raise ValueError(f"standardize 'std' must be > 0, got {self.std}")
        if self.missing_statistics() and not _unfitted_ok(info):
            raise ValueError(f"standardize needs {' and '.join(repr(k) for k in self.missing_statistics())}")
        return self

    def missing_statistics(self) -> list[str]:
        return [k for k in ("mean", "std") if getattr(self, k) is None]


class MinMaxOp(_Op):
    """``(x - min) / (max - min)``: maps the training range onto [0, 1]."""

    op: Literal["minmax"] = "minmax"
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> MinMaxOp:
        _finite(self.min, "min")
        _finite(self.max, "max")
        if self.min is not None and self.max is not None and not self.max > self.min:
            raise ValueError(f"minmax 'max' ({self.max}) must be greater than 'min' ({self.min})")
        if self.missing_statistics() and not _unfitted_ok(info):
            raise ValueError(f"minmax needs {' and '.join(repr(k) for k in self.missing_statistics())}")
        return self

    def missing_statistics(self) -> list[str]:
        return [k for k in ("min", "max") if getattr(self, k) is None]


class BucketizeOp(_Op):
    """Bucket index = number of boundaries <= x (0..len(boundaries))."""

    op: Literal["bucketize"] = "bucketize"
    terminal: ClassVar[bool] = True
    boundaries: list[float] | None = None
    n_buckets: int | None = Field(default=None, ge=2, le=MAX_ONEHOT_WIDTH)
    output: Literal["index", "onehot"] = "onehot"

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> BucketizeOp:
        b = self.boundaries
        if b is not None:
            if not b:
                raise ValueError("bucketize 'boundaries' must not be empty")
            if not all(math.isfinite(v) for v in b):
                raise ValueError(f"bucketize 'boundaries' must be finite, got {b}")
            if any(b2 <= b1 for b1, b2 in zip(b, b[1:], strict=False)):
                raise ValueError(f"bucketize 'boundaries' must be strictly increasing, got {b}")
            if len(b) + 1 > MAX_ONEHOT_WIDTH:
                raise ValueError(f"bucketize has {len(b)} boundaries; at most {MAX_ONEHOT_WIDTH - 1}")
        elif self.n_buckets is None:
            raise ValueError("bucketize needs 'boundaries' (or 'n_buckets' for fit_spec)")
        elif not _unfitted_ok(info):
            raise ValueError("bucketize needs 'boundaries' (fill them with fit_spec from 'n_buckets')")
        return self

    def width(self) -> int:
        if self.output == "index":
            return 1
        if self.boundaries is None:
            raise ValueError("bucketize width is unknown before its boundaries are fitted")
        return len(self.boundaries) + 1

    def missing_statistics(self) -> list[str]:
        return ["boundaries"] if self.boundaries is None else []


class OneHotOp(_Op):
    """One column per integer category plus a trailing unknown slot."""

    op: Literal["onehot"] = "onehot"
    terminal: ClassVar[bool] = True
    categories: int | list[int] | None = None

    @field_validator("categories")
    @classmethod
    def _check_categories(cls, v: int | list[int] | None) -> int | list[int] | None:
        if isinstance(v, int):
            if not 1 <= v < MAX_ONEHOT_WIDTH:
                raise ValueError(f"onehot 'categories' count must be in [1, {MAX_ONEHOT_WIDTH - 1}], got {v}")
        elif v is not None:
            if not v or len(v) >= MAX_ONEHOT_WIDTH:
                raise ValueError(f"onehot 'categories' list must have 1..{MAX_ONEHOT_WIDTH - 1} codes")
            if len(set(v)) != len(v):
                raise ValueError(f"onehot 'categories' has duplicate codes: {v}")
            if any(abs(c) > HASH_ID_LIMIT for c in v):
                raise ValueError("onehot 'categories' codes must be within ±2**53")
        return v

    @model_validator(mode="after")
    def _check(self, info: ValidationInfo) -> OneHotOp:
        if self.categories is None and not _unfitted_ok(info):
            raise ValueError("onehot needs 'categories' (a count k for codes 0..k-1, or a list)")
        return self

    def codes(self) -> list[int]:
        """The category codes in slot order."""
        if self.categories is None:
            raise ValueError("onehot categories are not fitted yet")
        if isinstance(self.categories, int):
            return list(range(self.categories))
        return list(self.categories)

    def width(self) -> int:
        return len(self.codes()) + 1

    def missing_statistics(self) -> list[str]:
        return ["categories"] if self.categories is None else []


class HashOp(_Op):
    """Integer id hashed into ``buckets`` (see :data:`HASH_PRIME` for the exact function)."""

    op: Literal["hash"] = "hash"
    terminal: ClassVar[bool] = True
    buckets: int = Field(ge=2, le=MAX_ONEHOT_WIDTH)
    seed: int = Field(default=0, ge=0, lt=HASH_PRIME)
    output: Literal["index", "onehot"] = "onehot"

    def width(self) -> int:
        return 1 if self.output == "index" else self.buckets


Op = Annotated[
    Union[
        ImputeOp, ClipOp, Log1pOp, PassthroughOp, StandardizeOp, MinMaxOp, BucketizeOp, OneHotOp, HashOp
    ],
    Field(discriminator="op"),
]
OP_NAMES: tuple[str, ...] = (
    "impute", "clip", "log1p", "standardize", "minmax", "passthrough", "bucketize", "onehot", "hash"
)


def _normalize_op(raw: Any, where: str) -> Any:
    """``log1p`` or ``{log1p: {}}`` or ``{standardize: {...}}`` -> ``{"op": name, **params}``."""
    if isinstance(raw, _Op):
        return raw
    if isinstance(raw, str):
        name, params = raw, {}
    elif isinstance(raw, Mapping) and "op" in raw:
        return dict(raw)
    elif isinstance(raw, Mapping) and len(raw) == 1:
        name, params = next(iter(raw.items()))
        params = {} if params is None else params
        if not isinstance(params, Mapping):
            raise ValueError(f"{where}: parameters of '{name}' must be a mapping, got {params!r}")
    else:
        raise ValueError(
            f"{where}: an op is a name or a one-key mapping {{name: {{params}}}}, got {raw!r}"
        )
    if name not in OP_NAMES:
        raise ValueError(f"{where}: unknown op {name!r}; allowed: {', '.join(OP_NAMES)}")
    return {"op": name, **params}


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
            ops = [_normalize_op(op, f"{where} op {i}") for i, op in enumerate(data["ops"])]
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
        seen: set[str] = set()
        dupes = sorted({f for f in v if f in seen or seen.add(f)})  # type: ignore[func-returns-value]
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
                    f"steps[{i}] reads feature {step.feature!r}, which is not in input.features "
                    f"{self.input.features}"
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
