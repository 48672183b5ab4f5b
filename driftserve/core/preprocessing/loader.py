"""What the server does with a model's ``preprocessing:`` section at load time.

:func:`prepare_model` is the one call the model loader needs: it checks the spec against the
model, compiles and warms what runs per request, and returns the model ONNX Runtime should load
(the original for the Numba backend, the fused one for the ONNX backend).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import onnx
from pydantic import ValidationError

from driftserve.core.preprocessing.base import Preprocessor
from driftserve.core.preprocessing.errors import PreprocessingConfigError
from driftserve.core.preprocessing.fuse import check_output_width, fuse_into_model, input_width, model_inputs
from driftserve.core.preprocessing.numba_backend import compile_preprocessor, compile_validator
from driftserve.core.preprocessing.spec import PreprocessingSpec

logger = logging.getLogger(__name__)


def parse_spec(data: Mapping[str, Any], source: str = "config.yaml") -> PreprocessingSpec:
    """Validate a ``preprocessing:`` mapping; errors name the source and every bad key."""
    try:
        return PreprocessingSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"preprocessing.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            if err["loc"]
            else f"preprocessing: {err['msg']}"
            for err in exc.errors(include_url=False)
        )
        raise PreprocessingConfigError(f"{source}: {problems}") from exc


@dataclass(frozen=True)
class PreparedModel:
    """The model to load into ORT and the objects the request path calls.

    ``validator.validate`` runs per request before queueing (both backends);
    ``preprocessor.transform`` runs per batch before ORT, and is ``None`` when the
    preprocessing is fused into ``model`` (then the raw tensor is fed to ORT as it is).
    """

    model: onnx.ModelProto
    validator: Preprocessor
    preprocessor: Preprocessor | None
    raw_input_name: str
    model_input_name: str


def prepare_model(
    spec: PreprocessingSpec, model: onnx.ModelProto, model_input_name: str | None = None
) -> PreparedModel:
    """Check, compile and warm ``spec`` for ``model`` (call at model load, never per request)."""
    inputs = model_inputs(model)
    names = [i.name for i in inputs]
    if model_input_name is None and len(inputs) != 1:
        raise PreprocessingConfigError(f"model has inputs {names}; name the one preprocessing feeds")
    target = model_input_name or names[0]
    if target not in names:
        raise PreprocessingConfigError(f"model has no input '{target}'; its inputs are {names}")
    if spec.backend == "onnx":
        fused = fuse_into_model(spec, model, target)
        return PreparedModel(fused, compile_validator(spec), None, spec.input.name, target)
    check_output_width(spec, input_width(inputs[names.index(target)]), f"model input '{target}'")
    pre = compile_preprocessor(spec)
    return PreparedModel(model, pre, pre, spec.input.name, target)
