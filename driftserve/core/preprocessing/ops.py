"""The ops of a preprocessing step, one pydantic model each (see :mod:`driftserve.core.preprocessing.spec`).

Each op validates its own parameters; statistics may be missing only when validation runs with
the ``ALLOW_UNFITTED`` context (templates for ``fit_spec``). Ops serialize back to the YAML
form ``{name: {params}}``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

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


def _unfitted_ok(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get(ALLOW_UNFITTED))


def _finite(value: float | None, key: str) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError(f"'{key}' must be a finite number, got {value!r}")
    return value


class BaseOp(BaseModel):
    """Base of all ops: serialized back in the YAML form ``{name: {params}}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: Ops that end a chain and may emit several columns.
    terminal: ClassVar[bool] = False
    if TYPE_CHECKING:
        # Each subclass declares ``op`` as a pydantic field with its own literal name.
        op: str

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


class ImputeOp(BaseOp):
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


class ClipOp(BaseOp):
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


class Log1pOp(BaseOp):
    """``log(1 + x)``; inputs must be > -1 (clip first when they may not be)."""

    op: Literal["log1p"] = "log1p"


class PassthroughOp(BaseOp):
    """The value unchanged (a feature the model takes as it comes)."""

    op: Literal["passthrough"] = "passthrough"


class StandardizeOp(BaseOp):
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


class MinMaxOp(BaseOp):
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


class BucketizeOp(BaseOp):
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
            if any(b2 <= b1 for b1, b2 in itertools.pairwise(b)):
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


class OneHotOp(BaseOp):
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


class HashOp(BaseOp):
    """Integer id hashed into ``buckets`` (see :data:`HASH_PRIME` for the exact function)."""

    op: Literal["hash"] = "hash"
    terminal: ClassVar[bool] = True
    buckets: int = Field(ge=2, le=MAX_ONEHOT_WIDTH)
    seed: int = Field(default=0, ge=0, lt=HASH_PRIME)
    output: Literal["index", "onehot"] = "onehot"

    def width(self) -> int:
        return 1 if self.output == "index" else self.buckets


Op = Annotated[
    ImputeOp | ClipOp | Log1pOp | PassthroughOp | StandardizeOp | MinMaxOp | BucketizeOp | OneHotOp | HashOp,
    Field(discriminator="op"),
]
OP_NAMES: tuple[str, ...] = (
    "impute",
    "clip",
    "log1p",
    "standardize",
    "minmax",
    "passthrough",
    "bucketize",
    "onehot",
    "hash",
)


def normalize_op(raw: Any, where: str) -> Any:
    """``log1p`` or ``{log1p: {}}`` or ``{standardize: {...}}`` -> ``{"op": name, **params}``."""
    if isinstance(raw, BaseOp):
        return raw
    params: Any  # parsed YAML: checked to be a mapping below
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
        raise ValueError(f"{where}: an op is a name or a one-key mapping {{name: {{params}}}}, got {raw!r}")
    if name not in OP_NAMES:
        raise ValueError(f"{where}: unknown op {name!r}; allowed: {', '.join(OP_NAMES)}")
    return {"op": name, **params}
