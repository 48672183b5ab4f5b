"""One loaded model version: ONNX Runtime sessions, tensor specs, input validation, warmup.

Everything a request needs checked is checked here, before the request is queued, so that one bad
request can never poison the batch it would have joined. ``run`` is called from a batch worker
thread; ONNX Runtime and the Numba preprocessing kernel release the GIL.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from driftserve.core.config import DEFAULT_MAX_BATCH_SIZE, ModelConfig, TensorConfig
from driftserve.core.errors import ConfigError, InvalidArgument, ModelExecutionError, clip_list
from driftserve.core.tensors import ORT_TO_V2, V2_TO_NUMPY

logger = logging.getLogger(__name__)

_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@dataclass(frozen=True)
class TensorSpec:
    """A tensor as clients see it. ``dims`` excludes the batch dimension when the model batches."""

    name: str
    datatype: str
    dims: tuple[int, ...]

    @property
    def dtype(self) -> np.dtype:
        return V2_TO_NUMPY[self.datatype]


class ModelVersion:
    """A loaded, warmed-up version of one model, ready to run batches."""

    def __init__(self, name: str, version: int, path: Path, config: ModelConfig) -> None:
        self.name = name
        self.version = version
        self.path = path
        self.config = config
        self._preprocessor: Any = None
        self._transform_in_thread = False
        graph_bytes = self._graph_bytes()
        options = _session_options(config)
        self._sessions = [
            ort.InferenceSession(graph_bytes, sess_options=options, providers=["CPUExecutionProvider"])
            for _ in range(config.instances)
        ]
        session = self._sessions[0]
        self._graph_inputs = [i.name for i in session.get_inputs()]
        self.max_batch_size = _resolve_max_batch_size(config, session)
        self.batched = self.max_batch_size > 0
        self.inputs = self._client_inputs(session)
        # What validate() checks per input, computed once: (name, dtype, is BYTES, the exact
        # per-row shape when it has no variable dimension, else None, the spec).
        self._input_checks = [
            (name, spec.dtype, spec.datatype == "BYTES", None if -1 in spec.dims else tuple(spec.dims), spec)
            for name, spec in self.inputs.items()
        ]
        self.outputs = _merge_declared(
            "output", _graph_specs(session.get_outputs(), self.batched), config.outputs, path
        )
        self.output_names = list(self.outputs)

    # ------------------------------------------------------------------ loading
    def _graph_bytes(self) -> bytes:
        """The ONNX graph to run: the model itself, or preprocessing fused in front of it."""
        spec = self.config.preprocessing
        if spec is None:
            return self.path.read_bytes()
        from driftserve.core.preprocessing import prepare_model

        try:
            prepared = prepare_model(spec, onnx.load(str(self.path)))
        except ValueError as exc:
            raise ConfigError(f"{self.path}: preprocessing does not fit the model: {exc}") from None
        self._preprocessor = prepared.validator
        if prepared.preprocessor is not None:  # Numba backend: the model as it is, transform per batch
            self._transform_in_thread = True
            return self.path.read_bytes()
        return prepared.model.SerializeToString()

    def _client_inputs(self, session: ort.InferenceSession) -> dict[str, TensorSpec]:
        if self._preprocessor is None:
            return _merge_declared(
                "input", _graph_specs(session.get_inputs(), self.batched), self.config.inputs, self.path
            )
        pre = self._preprocessor
        dims = (len(pre.feature_names),) if self.batched else (-1, len(pre.feature_names))
        return {pre.raw_input_name: TensorSpec(pre.raw_input_name, pre.raw_datatype, dims)}

    def warmup(self) -> None:
        """Run every instance on synthetic batches so no client pays for lazy initialisation."""
        if self._preprocessor is not None:
            self._preprocessor.warmup()
        warm = self.config.warmup
        if not warm.enabled:
            return
        sizes = warm.batch_sizes or ([1, self.max_batch_size] if self.batched else [1])
        for rows in sorted(set(min(s, max(self.max_batch_size, 1)) for s in sizes)):
            feed = {name: _synthetic(spec, rows, self.batched) for name, spec in self.inputs.items()}
            for instance in range(len(self._sessions)):
                self.run(feed, instance)
        logger.info("warmed up %s v%s at batch sizes %s", self.name, self.version, sizes)

    # ------------------------------------------------------------------ request path
    def validate(self, inputs: dict[str, np.ndarray]) -> int:
        """Check names, datatypes and shapes of one request; return its row count.

        BYTES inputs are turned into text in place: ONNX string tensors hold UTF-8 text, so
        bytes that are not UTF-8 are a client error here rather than a failed batch later.
        """
        if inputs.keys() != self.inputs.keys():
            missing = [n for n in self.inputs if n not in inputs]
            extra = [n for n in inputs if n not in self.inputs]
            parts = []
            if missing:
                parts.append(f"missing input(s) {missing}")
            if extra:
                parts.append(f"unexpected input(s) {clip_list(extra)}")
            raise InvalidArgument(
                f"model '{self.name}' version {self.version}: {'; '.join(parts)}; expected exactly {list(self.inputs)}"
            )
        rows = -1
        batched = self.batched
        for name, dtype, is_bytes, fixed_body, spec in self._input_checks:
            array = inputs[name]
            if array.dtype != dtype and not (is_bytes and array.dtype.kind in "OSU"):
                raise InvalidArgument(
                    f"input '{name}': datatype {_v2_name(array.dtype)} but model '{self.name}' expects {spec.datatype}"
                )
            if is_bytes:
                inputs[name] = array = _as_text(array, name)
            shape = array.shape
            body = shape[1:] if batched else shape
            if (
                (body != fixed_body or (batched and not shape))
                if fixed_body is not None
                else (
                    len(shape) != len(spec.dims) + batched or any(d != -1 and d != s for d, s in zip(spec.dims, body))
                )
            ):
                want = ([-1] if self.batched else []) + list(spec.dims)
                raise InvalidArgument(f"input '{name}': shape {list(shape)} does not match the model's {want}")
            if batched:
                if shape[0] < 1:
                    raise InvalidArgument(f"input '{name}': batch dimension is {shape[0]}; need >= 1 row")
                if shape[0] > self.max_batch_size:
                    raise InvalidArgument(
                        f"input '{name}': {shape[0]} rows exceed max_batch_size {self.max_batch_size} "
                        f"of model '{self.name}'"
                    )
                if rows not in (-1, shape[0]):
                    raise InvalidArgument(
                        f"inputs disagree on the batch size: input '{name}' has {shape[0]} rows, another has {rows}"
                    )
                rows = shape[0]
        if self._preprocessor is not None:
            from driftserve.core.preprocessing import PreprocessingError

            try:
                self._preprocessor.validate(inputs[self._preprocessor.raw_input_name])
            except PreprocessingError as exc:
                raise InvalidArgument(str(exc)) from None
        return max(rows, 1)

    def check_outputs(self, requested: Sequence[str]) -> list[str]:
        """The output names to return: all when none are requested, else exactly those named."""
        if not requested:
            return self.output_names
        unknown = [n for n in requested if n not in self.outputs]
        if unknown:
            raise InvalidArgument(
                f"requested output(s) {clip_list(unknown)} not produced by model '{self.name}'; "
                f"available: {self.output_names}"
            )
        return list(requested)

    def run(self, inputs: Mapping[str, np.ndarray], instance: int = 0) -> dict[str, np.ndarray]:
        """Run one (possibly merged) batch; called from a worker thread."""
        feed: dict[str, np.ndarray]
        if self._transform_in_thread:
            raw = inputs[self._preprocessor.raw_input_name]
            feed = {self._graph_inputs[0]: self._preprocessor.transform(raw)}
        elif self._preprocessor is not None:
            feed = {self._graph_inputs[0]: inputs[self._preprocessor.raw_input_name]}
        else:
            feed = dict(inputs)
        try:
            results = self._sessions[instance].run(self.output_names, feed)
        except Exception as exc:  # ORT raises its own exception types; all mean a failed batch
            raise ModelExecutionError(
                f"ONNX Runtime failed on model '{self.name}' version {self.version}: {exc}"
            ) from exc
        return dict(zip(self.output_names, results))

    @property
    def instances(self) -> int:
        return len(self._sessions)


def load_model_version(name: str, version: int, path: Path, config: ModelConfig) -> ModelVersion:
    """Load and warm one version (blocking; call from a worker thread)."""
    started = time.perf_counter()
    try:
        model = ModelVersion(name, version, path, config)
    except (ConfigError, InvalidArgument):
        raise
    except Exception as exc:  # onnxruntime/onnx raise many types for a bad file
        raise ConfigError(f"{path}: cannot be loaded by ONNX Runtime: {exc}") from exc
    model.warmup()
    logger.info("loaded %s v%s in %.2f s", name, version, time.perf_counter() - started)
    return model


def _session_options(config: ModelConfig) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = config.runtime.intra_op_threads
    options.inter_op_num_threads = config.runtime.inter_op_threads
    options.graph_optimization_level = _OPT_LEVELS[config.runtime.graph_optimization_level]
    options.execution_mode = (
        ort.ExecutionMode.ORT_PARALLEL
        if config.runtime.execution_mode == "parallel"
        else ort.ExecutionMode.ORT_SEQUENTIAL
    )
    # Spinning worker threads burn the cores the event loop needs between batches.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def _resolve_max_batch_size(config: ModelConfig, session: ort.InferenceSession) -> int:
    first_dims_dynamic = all(
        len(t.shape) >= 1 and not isinstance(t.shape[0], int)
        for t in list(session.get_inputs()) + list(session.get_outputs())
    )
    if config.max_batch_size is None:
        return DEFAULT_MAX_BATCH_SIZE if first_dims_dynamic else 0
    if config.max_batch_size > 0 and not first_dims_dynamic:
        raise ConfigError(
            f"max_batch_size is {config.max_batch_size} but the graph's inputs/outputs do not all "
            "have a dynamic first (batch) dimension; set max_batch_size: 0"
        )
    return config.max_batch_size


def _graph_specs(args: Sequence[Any], batched: bool) -> dict[str, TensorSpec]:
    specs = {}
    for arg in args:
        datatype = ORT_TO_V2.get(arg.type)
        if datatype is None:
            raise ConfigError(f"tensor '{arg.name}' has type {arg.type}, which driftserve cannot serve")
        dims = tuple(d if isinstance(d, int) else -1 for d in arg.shape)
        specs[arg.name] = TensorSpec(arg.name, datatype, dims[1:] if batched else dims)
    return specs


def _merge_declared(
    kind: str, graph: dict[str, TensorSpec], declared: list[TensorConfig] | None, path: Path
) -> dict[str, TensorSpec]:
    """Config-declared tensors must agree with the graph; undeclared ones come from the graph."""
    if declared is None:
        return graph
    merged: dict[str, TensorSpec] = {}
    for tensor in declared:
        found = graph.get(tensor.name)
        if found is None:
            raise ConfigError(f"{path}: config declares {kind} '{tensor.name}' but the graph has {list(graph)}")
        if found.datatype != tensor.datatype:
            raise ConfigError(
                f"{path}: {kind} '{tensor.name}' is {found.datatype} in the graph, {tensor.datatype} in the config"
            )
        if len(found.dims) != len(tensor.dims) or any(g != -1 and g != c for g, c in zip(found.dims, tensor.dims)):
            raise ConfigError(
                f"{path}: {kind} '{tensor.name}' has dims {list(found.dims)} in the graph, {tensor.dims} in the config"
            )
        merged[tensor.name] = TensorSpec(tensor.name, tensor.datatype, tuple(tensor.dims))
    if kind == "input" and set(merged) != set(graph):
        raise ConfigError(f"{path}: config inputs {list(merged)} differ from the graph's {list(graph)}")
    return merged


def _synthetic(spec: TensorSpec, rows: int, batched: bool) -> np.ndarray:
    shape = ((rows,) if batched else ()) + tuple(1 if d == -1 else d for d in spec.dims)
    if spec.datatype == "BYTES":
        return np.full(shape, b"", dtype=np.object_)
    return np.zeros(shape, dtype=spec.dtype)


def _as_text(array: np.ndarray, name: str) -> np.ndarray:
    flat = array.reshape(-1)
    text = np.empty(flat.shape, dtype=np.object_)
    for i, item in enumerate(flat):
        if isinstance(item, bytes):
            try:
                text[i] = item.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidArgument(
                    f"input '{name}': element {i} is not valid UTF-8; ONNX string tensors hold text"
                ) from None
        else:
            text[i] = str(item)
    return text.reshape(array.shape)


def _v2_name(dtype: np.dtype) -> str:
    for name, candidate in V2_TO_NUMPY.items():
        if candidate == dtype:
            return name
    return str(dtype)
