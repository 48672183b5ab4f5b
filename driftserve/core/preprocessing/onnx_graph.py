"""The ONNX compiler: a spec as a graph of standard ops (ai.onnx, opset >= 13).

The graph is vectorized across steps rather than built per feature, so its node count depends
on the chain depth and on which kinds of terminal op occur, not on the number of features. It
works on the transposed batch, one row per step (``V [S + 1, N]``): ONNX Runtime's ``Gather``
along axis 1 copies element by element and cost more than everything else together, while
gathering whole rows is a memcpy per row.

* raw ``[N, F]`` -> transpose -> float64 -> gather the row each step reads -> ``V``; the last
  row is a guard (see :func:`_chain`);
* impute, on the imputing rows only: ``Where(IsNaN | IsInf, fill, V)``, scattered back;
* chain position k: ``Min(Max(V, lo_k), hi_k)`` and ``(V - a_k) / b_k`` on all rows, with
  identity parameters (±inf, 0, 1) for steps doing something else there, which leave their
  values bit-for-bit unchanged; ``Log(V + 1)`` on the log1p rows only, scattered back;
* bucketize: count of ``V >= boundaries`` (padded with +inf); categories: ``Equal`` against
  the codes (padded with NaN, which equals nothing) and an unknown row ``1 - sum``; hash: the
  int64 ``Mul``/``Add``/``Mod`` arithmetic of ``ops.HASH_PRIME``; one-hot via ``Equal`` with a
  range;
* every piece concatenated, one row ``Gather`` puts them in step order, cast to float32 and
  transposed back to ``[N, width]``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from driftserve.core.preprocessing.plan import (
    OP_AFFINE,
    OP_CLIP,
    OP_LOG1P,
    TERM_BUCKET_INDEX,
    TERM_BUCKET_ONEHOT,
    TERM_CATEGORY_ONEHOT,
    TERM_HASH_INDEX,
    TERM_HASH_ONEHOT,
    TERM_VALUE,
    Plan,
    build_plan,
)
from driftserve.core.preprocessing.spec import HASH_ID_LIMIT, HASH_MULTIPLIER, HASH_PRIME, PreprocessingSpec

logger = logging.getLogger(__name__)

MIN_OPSET = 13
DEFAULT_OPSET = 17
OUTPUT_NAME = "preprocessed"
RAW_ELEM_TYPE = {"FP32": TensorProto.FLOAT, "FP64": TensorProto.DOUBLE}


class _GraphBuilder:
    """Collects nodes and initializers under one name prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}{hint}_{self._count}"

    def const(self, value: np.ndarray | np.generic | float | int, hint: str = "c") -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, **attrs: Any) -> str:
        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


def _guarded(values: np.ndarray, guard: object) -> np.ndarray:
    """Per-step parameters plus the guard row's, as a column ``[S + 1, 1]``."""
    return np.append(values, np.asarray(guard, dtype=values.dtype))[:, None]


def _on_rows(g: _GraphBuilder, v: str, rows: np.ndarray, hint: str) -> tuple[str, str]:
    """The ``rows`` of ``v`` and their indices in the shape ``ScatterND`` takes."""
    index = g.const(rows.astype(np.int64)[:, None], f"{hint}_rows")
    return g.op("Gather", [v, g.const(rows.astype(np.int64), f"{hint}_gather")], axis=0), index


def _chain(g: _GraphBuilder, plan: Plan, v: str) -> str:
    """Impute, then each chain position with identity parameters where a step does not act.

    ``v`` carries one extra guard row whose parameters are never 0 or 1: ONNX Runtime's no-op
    elimination drops a ``Sub``/``Div`` whose one-element constant reads as 0 or 1 in float32
    (a mean of 1e-58, say), which would break bit-exact agreement with the kernel.
    """
    imputing = np.flatnonzero(plan.impute)
    if imputing.size:
        sub, index = _on_rows(g, v, imputing, "impute")
        nonfinite = g.op("Or", [g.op("IsNaN", [sub]), g.op("IsInf", [sub])])
        filled = g.op("Where", [nonfinite, g.const(plan.fill[imputing][:, None], "impute_fill"), sub])
        v = g.op("ScatterND", [v, index, filled], "imputed")
    for k in range(plan.op_code.shape[1]):
        codes = plan.op_code[:, k]
        if (codes == OP_CLIP).any():
            lo = _guarded(np.where(codes == OP_CLIP, plan.op_a[:, k], -np.inf), -np.inf)
            hi = _guarded(np.where(codes == OP_CLIP, plan.op_b[:, k], np.inf), np.inf)
            v = g.op("Min", [g.op("Max", [v, g.const(lo, "clip_lo")]), g.const(hi, "clip_hi")], "clipped")
        logging_rows = np.flatnonzero(codes == OP_LOG1P)
        if logging_rows.size:
            sub, index = _on_rows(g, v, logging_rows, "log1p")
            logged = g.op("Log", [g.op("Add", [sub, g.const(np.float64(1.0), "one")])])
            v = g.op("ScatterND", [v, index, logged], "logged")
        if (codes == OP_AFFINE).any():
            a = _guarded(np.where(codes == OP_AFFINE, plan.op_a[:, k], 0.0), 2.0)
            b = _guarded(np.where(codes == OP_AFFINE, plan.op_b[:, k], 1.0), 2.0)
            v = g.op("Div", [g.op("Sub", [v, g.const(a, "affine_a")]), g.const(b, "affine_b")], "scaled")
    return v


def _onehot_rows(g: _GraphBuilder, index: str, width: int, dtype: type) -> str:
    """``[G, N]`` indices -> ``[G * width, N]`` float64 one-hot rows (group-major)."""
    return _rows_of(g, g.op("Equal", [_unsqueeze2(g, index), g.const(np.arange(width, dtype=dtype), "range")]))


def _unsqueeze2(g: _GraphBuilder, x: str) -> str:
    return g.op("Unsqueeze", [x, g.const(np.array([2], np.int64), "axes")])


def _rows_of(g: _GraphBuilder, cube: str) -> str:
    """A ``[G, N, K]`` boolean or float cube as ``[G * K, N]`` float64 rows."""
    as_double = g.op("Cast", [cube], to=TensorProto.DOUBLE)
    return g.op("Flatten", [g.op("Transpose", [as_double], perm=[0, 2, 1])], axis=2)


def _pieces(g: _GraphBuilder, plan: Plan, v: str) -> tuple[list[str], np.ndarray]:
    """Terminal ops by kind; returns the pieces and, per output column, its concat row."""
    pieces: list[str] = [v]
    perm = np.full(plan.width, -1, np.int64)
    offset: int = plan.term.shape[0] + 1  # the steps and the guard row

    def add(piece: str, rows: int) -> int:
        nonlocal offset
        pieces.append(piece)
        offset += rows
        return offset - rows

    for s in np.flatnonzero(plan.term == TERM_VALUE):
        perm[plan.out_start[s]] = s
    buckets = np.flatnonzero((plan.term == TERM_BUCKET_INDEX) | (plan.term == TERM_BUCKET_ONEHOT))
    if buckets.size:
        width = int(plan.term_len[buckets].max())
        bounds = np.full((buckets.size, 1, width), np.inf)
        for j, s in enumerate(buckets):
            o, n = plan.term_off[s], plan.term_len[s]
            bounds[j, 0, :n] = plan.term_values[o : o + n]
        vb = g.op("Gather", [v, g.const(buckets, "bucket_steps")], axis=0)
        ge = g.op("GreaterOrEqual", [_unsqueeze2(g, vb), g.const(bounds, "boundaries")])
        axes = g.const(np.array([2], np.int64), "axes")
        count = g.op("ReduceSum", [g.op("Cast", [ge], to=TensorProto.DOUBLE), axes], keepdims=0)
        at = add(count, buckets.size)
        onehot_at = -1
        if (plan.term[buckets] == TERM_BUCKET_ONEHOT).any():
            onehot_at = add(_onehot_rows(g, count, width + 1, np.float64), buckets.size * (width + 1))
        for j, s in enumerate(buckets):
            if plan.term[s] == TERM_BUCKET_INDEX:
                perm[plan.out_start[s]] = at + j
            else:
                n = plan.term_len[s] + 1
                perm[plan.out_start[s] : plan.out_start[s] + n] = onehot_at + j * (width + 1) + np.arange(n)
    cats = np.flatnonzero(plan.term == TERM_CATEGORY_ONEHOT)
    if cats.size:
        width = int(plan.term_len[cats].max())
        codes = np.full((cats.size, 1, width), np.nan)
        for j, s in enumerate(cats):
            o, n = plan.term_off[s], plan.term_len[s]
            codes[j, 0, plan.term_slots[o : o + n]] = plan.term_values[o : o + n]
        vc = g.op("Gather", [v, g.const(cats, "category_steps")], axis=0)
        eq = g.op("Equal", [_unsqueeze2(g, vc), g.const(codes, "codes")])
        axes = g.const(np.array([2], np.int64), "axes")
        known = g.op("ReduceSum", [g.op("Cast", [eq], to=TensorProto.DOUBLE), axes], keepdims=0)
        unknown = g.op("Sub", [g.const(np.float64(1.0), "one"), known])
        known_at = add(_rows_of(g, eq), cats.size * width)
        unknown_at = add(unknown, cats.size)
        for j, s in enumerate(cats):
            n = plan.term_len[s]
            perm[plan.out_start[s] : plan.out_start[s] + n] = known_at + j * width + np.arange(n)
            perm[plan.out_start[s] + n] = unknown_at + j
    hashed = np.flatnonzero((plan.term == TERM_HASH_INDEX) | (plan.term == TERM_HASH_ONEHOT))
    if hashed.size:
        vh = g.op("Gather", [v, g.const(hashed, "hash_steps")], axis=0)
        limit = np.float64(HASH_ID_LIMIT)
        clipped = g.op("Min", [g.op("Max", [vh, g.const(-limit, "id_min")]), g.const(limit, "id_max")])
        ids = g.op("Cast", [clipped], to=TensorProto.INT64)
        prime = g.const(np.int64(HASH_PRIME), "prime")
        scaled = g.op("Mul", [g.op("Mod", [ids, prime]), g.const(np.int64(HASH_MULTIPLIER), "multiplier")])
        mixed = g.op("Add", [scaled, g.const(plan.hash_seed[hashed][:, None], "seed")])
        h = g.op("Mod", [g.op("Mod", [mixed, prime]), g.const(plan.hash_buckets[hashed][:, None], "buckets")], "hashed")
        at = add(g.op("Cast", [h], to=TensorProto.DOUBLE), hashed.size)
        onehot = np.flatnonzero(plan.term[hashed] == TERM_HASH_ONEHOT)
        width = int(plan.hash_buckets[hashed[onehot]].max()) if onehot.size else 0
        onehot_at = add(_onehot_rows(g, h, width, np.int64), hashed.size * width) if onehot.size else -1
        for j, s in enumerate(hashed):
            if plan.term[s] == TERM_HASH_INDEX:
                perm[plan.out_start[s]] = at + j
            else:
                n = plan.hash_buckets[s]
                perm[plan.out_start[s] : plan.out_start[s] + n] = onehot_at + j * width + np.arange(n)
    if (perm < 0).any():  # pragma: no cover - a plan/graph mismatch is a bug, not bad input
        raise AssertionError(f"output columns without a source: {np.flatnonzero(perm < 0)}")
    return pieces, perm


def build_graph_nodes(
    spec: PreprocessingSpec,
    output_name: str,
    prefix: str = "preprocessing/",
    output_type: int = TensorProto.FLOAT,
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes and initializers mapping ``spec.input.name`` to ``output_name``.

    Values are rounded to float32 like every backend's; ``output_type`` DOUBLE widens them
    again for a model whose input is float64.
    """
    plan = build_plan(spec)
    g = _GraphBuilder(prefix)
    # Transpose before widening: ORT transposes float32 much faster than float64.
    columns = g.op("Transpose", [spec.input.name], "columns", perm=[1, 0])
    if spec.input.datatype == "FP32":
        columns = g.op("Cast", [columns], "raw64", to=TensorProto.DOUBLE)
    v = g.op("Gather", [columns, g.const(np.append(plan.feature, 0), "step_features")], "steps", axis=0)
    v = _chain(g, plan, v)
    pieces, perm = _pieces(g, plan, v)
    rows = g.op("Concat", pieces, "pieces", axis=0) if len(pieces) > 1 else pieces[0]
    ordered = g.op("Gather", [rows, g.const(perm, "order")], "ordered", axis=0)
    narrowed = g.op("Cast", [ordered], "narrowed", to=TensorProto.FLOAT)
    if output_type == TensorProto.DOUBLE:
        narrowed = g.op("Cast", [narrowed], "widened", to=TensorProto.DOUBLE)
    elif output_type != TensorProto.FLOAT:
        raise ValueError(f"preprocessing outputs float or double, not ONNX type {output_type}")
    g.nodes.append(helper.make_node("Transpose", [narrowed], [output_name], name=f"{prefix}out", perm=[1, 0]))
    return g.nodes, g.initializers


def build_preprocessing_model(spec: PreprocessingSpec, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """The spec alone as a model: raw ``[N, F]`` -> ``preprocessed`` float32 ``[N, width]``."""
    if opset < MIN_OPSET:
        raise ValueError(f"the preprocessing graph needs opset >= {MIN_OPSET}, got {opset}")
    nodes, inits = build_graph_nodes(spec, OUTPUT_NAME)
    graph = helper.make_graph(
        nodes,
        "preprocessing",
        [
            helper.make_tensor_value_info(
                spec.input.name, RAW_ELEM_TYPE[spec.input.datatype], ["batch", len(spec.input.features)]
            )
        ],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", spec.output_width])],
        initializer=inits,
    )
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="driftserve")
    model.ir_version = helper.find_min_ir_version_for(opsets)
    onnx.checker.check_model(model)
    return model
