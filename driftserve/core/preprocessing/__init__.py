"""Compiled preprocessing: a declarative per-feature spec run before (or fused into) the model.

Public surface (see :mod:`driftserve.core.preprocessing.spec` for the YAML form)::

    spec = parse_spec(config["preprocessing"], source="models/m/config.yaml")
    prepared = prepare_model(spec, onnx.load(path))   # at model load: checks, compiles, warms
    prepared.validator.validate(x)                    # per request, before queueing
    prepared.preprocessor.transform(batch)            # per batch (Numba backend; None if fused)

Backends: :class:`NumbaPreprocessor` (``compile_preprocessor``), the ONNX graph fused in front
of the model (``fuse_into_model``), and :class:`NumpyPreprocessor`, the reference oracle.
"""

from driftserve.core.preprocessing.base import Preprocessor
from driftserve.core.preprocessing.errors import PreprocessingConfigError, PreprocessingError
from driftserve.core.preprocessing.fit import fit_spec, load_template
from driftserve.core.preprocessing.fuse import check_output_width, fuse_into_model
from driftserve.core.preprocessing.loader import PreparedModel, parse_spec, prepare_model
from driftserve.core.preprocessing.numba_backend import NumbaPreprocessor, compile_preprocessor, compile_validator
from driftserve.core.preprocessing.onnx_graph import build_preprocessing_model
from driftserve.core.preprocessing.reference import NumpyPreprocessor
from driftserve.core.preprocessing.spec import PreprocessingSpec

__all__ = [
    "NumbaPreprocessor",
    "NumpyPreprocessor",
    "PreparedModel",
    "PreprocessingConfigError",
    "PreprocessingError",
    "PreprocessingSpec",
    "Preprocessor",
    "build_preprocessing_model",
    "check_output_width",
    "compile_preprocessor",
    "compile_validator",
    "fit_spec",
    "fuse_into_model",
    "load_template",
    "parse_spec",
    "prepare_model",
]
