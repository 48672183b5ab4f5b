"""Fuse the preprocessing graph in front of a model, so one ONNX Runtime call runs both.

Done by hand rather than with ``onnx.compose.merge_models``: that helper refuses graphs that
share a tensor name, and the raw input is commonly called ``input`` like the model's own input.
Here the model's input is renamed to the preprocessing output throughout the graph (subgraphs
included), the preprocessing nodes go first, and the raw tensor becomes the only input. The
model keeps its IR version and opsets; the preprocessing nodes use the model's ai.onnx opset
(their semantics are the same from opset 13 on), and a model older than 13 is converted up.
"""

from __future__ import annotations

import logging

import onnx
from onnx import TensorProto, helper, version_converter

from driftserve.core.preprocessing.errors import PreprocessingConfigError
from driftserve.core.preprocessing.onnx_graph import MIN_OPSET, RAW_ELEM_TYPE, build_graph_nodes
from driftserve.core.preprocessing.spec import PreprocessingSpec

logger = logging.getLogger(__name__)

_PREFIX = "driftserve_preprocessing/"


def model_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are real inputs (old exporters also list initializers as inputs)."""
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def _tensor_names(graph: onnx.GraphProto) -> set[str]:
    names = {i.name for i in graph.input} | {o.name for o in graph.output}
    names |= {i.name for i in graph.initializer} | {v.name for v in graph.value_info}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                names |= _tensor_names(attr.g)
            for sub in attr.graphs:
                names |= _tensor_names(sub)
    return names


def _rename(graph: onnx.GraphProto, old: str, new: str, top: bool = True) -> None:
    """Rename uses of tensor ``old`` to ``new``, including subgraphs that capture it.

    Top-level outputs keep their names (the caller bridges them), so clients see the same
    outputs as before.
    """
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _rename(attr.g, old, new, top=False)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    _rename(sub, old, new, top=False)
    for out in graph.output if not top else []:
        if out.name == old:
            out.name = new
    for vi in graph.value_info:
        if vi.name == old:
            vi.name = new


def input_width(value_info: onnx.ValueInfoProto) -> int | None:
    dims = value_info.type.tensor_type.shape.dim
    if len(dims) != 2:
        raise PreprocessingConfigError(
            f"model input '{value_info.name}' must be 2-D [batch, features] to take preprocessed "
            f"rows, but it has {len(dims)} dimensions"
        )
    return dims[1].dim_value if dims[1].HasField("dim_value") else None


def check_output_width(spec: PreprocessingSpec, model_width: int | None, where: str = "model") -> None:
    """Raise :class:`PreprocessingConfigError` if the steps' width differs from the model's."""
    if model_width is None:
        logger.warning("%s: input width is dynamic; cannot check preprocessing width %d", where, spec.output_width)
        return
    if model_width != spec.output_width:
        per_step = ", ".join(f"{s.feature}:{s.width}" for s in spec.steps)
        raise PreprocessingConfigError(
            f"{where}: preprocessing produces {spec.output_width} columns but the model input "
            f"takes {model_width} (columns per step: {per_step})"
        )


def _ai_onnx_opset(model: onnx.ModelProto) -> int:
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            return int(opset.version)
    raise PreprocessingConfigError("model imports no ai.onnx opset")


def fuse_into_model(
    spec: PreprocessingSpec, model: onnx.ModelProto, model_input_name: str | None = None
) -> onnx.ModelProto:
    """A copy of ``model`` whose single input is the raw tensor ``spec.input.name``.

    The outputs are the model's. Raises :class:`PreprocessingConfigError` when the model has
    several inputs and none is named, the named input is missing, the widths differ, or the raw
    input's name is already used by another tensor of the model.
    """
    inputs = model_inputs(model)
    if model_input_name is None:
        if len(inputs) != 1:
            raise PreprocessingConfigError(
                f"model has inputs {[i.name for i in inputs]}; name the one preprocessing feeds"
            )
        target = inputs[0]
    else:
        matches = [i for i in inputs if i.name == model_input_name]
        if not matches:
            raise PreprocessingConfigError(
                f"model has no input '{model_input_name}'; its inputs are {[i.name for i in inputs]}"
            )
        target = matches[0]
    check_output_width(spec, input_width(target), f"model input '{target.name}'")
    elem_type = target.type.tensor_type.elem_type
    if elem_type not in (TensorProto.FLOAT, TensorProto.DOUBLE):
        raise PreprocessingConfigError(
            f"model input '{target.name}' has type {TensorProto.DataType.Name(elem_type)}; "
            "preprocessing feeds FLOAT or DOUBLE inputs"
        )

    fused = onnx.ModelProto()
    fused.CopyFrom(model)
    opset = _ai_onnx_opset(fused)
    if opset < MIN_OPSET:
        logger.info("converting model from ai.onnx opset %d to %d for fusing", opset, MIN_OPSET)
        try:
            fused = version_converter.convert_version(fused, MIN_OPSET)
        except Exception as exc:  # the converter raises plain RuntimeErrors per op
            raise PreprocessingConfigError(
                f"model uses ai.onnx opset {opset}; fusing needs >= {MIN_OPSET} and the conversion failed: {exc}"
            ) from exc
    graph = fused.graph
    taken = _tensor_names(graph) - {target.name}
    if spec.input.name in taken:
        raise PreprocessingConfigError(
            f"preprocessing input name '{spec.input.name}' is already a tensor of the model; choose another input.name"
        )
    if any(name.startswith(_PREFIX) for name in taken):
        raise PreprocessingConfigError(f"model already contains '{_PREFIX}' tensors; is it fused twice?")

    joint = f"{_PREFIX}output"
    _rename(graph, target.name, joint)
    nodes, inits = build_graph_nodes(spec, joint, prefix=_PREFIX, output_type=elem_type)
    batch = target.type.tensor_type.shape.dim[0]
    batch_dim = batch.dim_param or batch.dim_value or "batch"
    raw = helper.make_tensor_value_info(
        spec.input.name, RAW_ELEM_TYPE[spec.input.datatype], [batch_dim, len(spec.input.features)]
    )
    kept_inputs = [i for i in graph.input if i.name != target.name]
    del graph.input[:]
    graph.input.extend([raw, *kept_inputs])
    old_nodes = list(graph.node)
    if any(o.name == target.name for o in graph.output):
        # The model hands its input straight back as an output; keep that output's name.
        nodes.append(helper.make_node("Identity", [joint], [target.name], name=f"{_PREFIX}passthrough"))
    del graph.node[:]
    graph.node.extend([*nodes, *old_nodes])
    graph.initializer.extend(inits)
    onnx.checker.check_model(fused)
    logger.info(
        "fused preprocessing (%d nodes, %d -> %d columns) in front of model input '%s'",
        len(nodes),
        len(spec.input.features),
        spec.output_width,
        target.name,
    )
    return fused
