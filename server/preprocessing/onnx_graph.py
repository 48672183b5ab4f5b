"""The ONNX compiler: a spec as a graph of standard ops (ai.onnx, opset >= 13).

The graph is vectorized across steps rather than built per feature, so its node count depends
on the chain depth and on which kinds of terminal op occur, not on the number of features:

* raw ``[N, F]`` -> float64, gather the column each step reads -> ``V [N, S + 1]`` (the last
  column is a guard, see :func:`_chain`);
* impute: ``Where(IsNaN | IsInf) & mask, fill, V)``;
* chain position k: ``Min(Max(V, lo_k), hi_k)``, ``Where(log_k, Log(V + 1), V)``,
  ``(V - a_k) / b_k``, with identity parameters (±inf, False, 0, 1) for steps doing something
  else at that position, which leave their values bit-for-bit unchanged;
* bucketize: count of ``V >= boundaries`` (padded with +inf); categories: ``Equal`` against
  the codes (padded with NaN, which equals nothing) and an unknown column ``1 - sum``; hash: the
  int64 ``Mul``/``Add``/``Mod`` arithmetic of ``spec.HASH_PRIME``; one-hot via ``Equal`` with a
  range;
* every piece concatenated, one ``Gather`` puts the columns in step order, cast to float32.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from server.preprocessing.plan import (
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
from server.preprocessing.spec import HASH_ID_LIMIT, HASH_MULTIPLIER, HASH_PRIME, PreprocessingSpec

logger = logging.getLogger(__name__)

MIN_OPSET = 13
DEFAULT_OPSET = 17
OUTPUT_NAME = "preprocessed"
_ELEM_TYPE = {"FP32": TensorProto.FLOAT, "FP64": TensorProto.DOUBLE}


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

    def const(self, value: np.ndarray | float | int, hint: str = "c") -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, **attrs: object) -> str:
        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


def _guarded(values: np.ndarray, guard: object) -> np.ndarray:
    """Per-step parameters plus the guard column's (see :func:`_chain`)."""
    return np.append(values, np.asarray(guard, dtype=values.dtype))


def _chain(g: _GraphBuilder, plan: Plan, v: str) -> str:
    """Impute, then each chain position with identity parameters where a step does not act.

    ``v`` carries one extra guard column whose parameters are never 0 or 1: ONNX Runtime's
    no-op elimination drops a ``Sub``/``Div`` whose one-element constant reads as 0 or 1 in
    float32 (a mean of 1e-58, say), which would break bit-exact agreement with the kernel.
    """
    if plan.impute.any():
        nonfinite = g.op("Or", [g.op("IsNaN", [v]), g.op("IsInf", [v])])
        mask = g.op("And", [nonfinite, g.const(_guarded(plan.impute.astype(bool), False), "impute_mask")])
        v = g.op("Where", [mask, g.const(_guarded(plan.fill, 0.0), "impute_fill"), v], "imputed")
    for k in range(plan.op_code.shape[1]):
        codes = plan.op_code[:, k]
        if (codes == OP_CLIP).any():
            lo = _guarded(np.where(codes == OP_CLIP, plan.op_a[:, k], -np.inf), -np.inf)
            hi = _guarded(np.where(codes == OP_CLIP, plan.op_b[:, k], np.inf), np.inf)
            v = g.op("Min", [g.op("Max", [v, g.const(lo, "clip_lo")]), g.const(hi, "clip_hi")], "clipped")
        if (codes == OP_LOG1P).any():
            log = g.op("Log", [g.op("Add", [v, g.const(np.float64(1.0), "one")])])
            v = g.op("Where", [g.const(_guarded(codes == OP_LOG1P, False), "log_mask"), log, v], "logged")
        if (codes == OP_AFFINE).any():
            a = _guarded(np.where(codes == OP_AFFINE, plan.op_a[:, k], 0.0), 2.0)
            b = _guarded(np.where(codes == OP_AFFINE, plan.op_b[:, k], 1.0), 2.0)
            v = g.op("Div", [g.op("Sub", [v, g.const(a, "affine_a")]), g.const(b, "affine_b")], "scaled")
    return v


def _onehot(g: _GraphBuilder, index: str, width: int, dtype: type) -> str:
    """``[N, G]`` indices -> ``[N, G * width]`` float64 (group-major)."""
    axes = g.const(np.array([2], np.int64), "axes")
    eq = g.op("Equal", [g.op("Unsqueeze", [index, axes]), g.const(np.arange(width, dtype=dtype), "range")])
    return g.op("Flatten", [g.op("Cast", [eq], to=TensorProto.DOUBLE)], axis=1)


def _pieces(g: _GraphBuilder, plan: Plan, v: str) -> tuple[list[str], np.ndarray]:
    """Terminal ops by kind; returns the pieces and, per output column, its concat column."""
    pieces: list[str] = [v]
    perm = np.full(plan.width, -1, np.int64)
    offset = plan.term.shape[0] + 1  # the steps and the guard column

    def add(piece: str, width: int) -> int:
        nonlocal offset
        pieces.append(piece)
        offset += width
        return offset - width

    for s in np.flatnonzero(plan.term == TERM_VALUE):
        perm[plan.out_start[s]] = s
    buckets = np.flatnonzero((plan.term == TERM_BUCKET_INDEX) | (plan.term == TERM_BUCKET_ONEHOT))
    if buckets.size:
        width = int(plan.term_len[buckets].max())
        bounds = np.full((buckets.size, width), np.inf)
        for j, s in enumerate(buckets):
            o, n = plan.term_off[s], plan.term_len[s]
            bounds[j, :n] = plan.term_values[o : o + n]
        axes2 = g.const(np.array([2], np.int64), "axes")
        vb = g.op("Gather", [v, g.const(buckets, "bucket_steps")], axis=1)
        ge = g.op("GreaterOrEqual", [g.op("Unsqueeze", [vb, axes2]), g.const(bounds, "boundaries")])
        count = g.op("ReduceSum", [g.op("Cast", [ge], to=TensorProto.DOUBLE), axes2], keepdims=0)
        at = add(count, buckets.size)
        onehot_at = -1
        if (plan.term[buckets] == TERM_BUCKET_ONEHOT).any():
            onehot_at = add(_onehot(g, count, width + 1, np.float64), buckets.size * (width + 1))
        for j, s in enumerate(buckets):
            if plan.term[s] == TERM_BUCKET_INDEX:
                perm[plan.out_start[s]] = at + j
            else:
                n = plan.term_len[s] + 1
                perm[plan.out_start[s] : plan.out_start[s] + n] = onehot_at + j * (width + 1) + np.arange(n)
    cats = np.flatnonzero(plan.term == TERM_CATEGORY_ONEHOT)
    if cats.size:
        width = int(plan.term_len[cats].max())
        codes = np.full((cats.size, width), np.nan)
        for j, s in enumerate(cats):
            o, n = plan.term_off[s], plan.term_len[s]
            codes[j, plan.term_slots[o : o + n]] = plan.term_values[o : o + n]
        axes2 = g.const(np.array([2], np.int64), "axes")
        vc = g.op("Gather", [v, g.const(cats, "category_steps")], axis=1)
        eq = g.op("Cast", [g.op("Equal", [g.op("Unsqueeze", [vc, axes2]), g.const(codes, "codes")])], to=TensorProto.DOUBLE)
        unknown = g.op("Sub", [g.const(np.float64(1.0), "one"), g.op("ReduceSum", [eq, axes2], keepdims=0)])
        known_at = add(g.op("Flatten", [eq], axis=1), cats.size * width)
        unknown_at = add(unknown, cats.size)
        for j, s in enumerate(cats):
            n = plan.term_len[s]
            perm[plan.out_start[s] : plan.out_start[s] + n] = known_at + j * width + np.arange(n)
            perm[plan.out_start[s] + n] = unknown_at + j
    hashed = np.flatnonzero((plan.term == TERM_HASH_INDEX) | (plan.term == TERM_HASH_ONEHOT))
    if hashed.size:
        vh = g.op("Gather", [v, g.const(hashed, "hash_steps")], axis=1)
        clipped = g.op("Min", [g.op("Max", [vh, g.const(np.float64(-HASH_ID_LIMIT))]), g.const(np.float64(HASH_ID_LIMIT))])
        ids = g.op("Cast", [clipped], to=TensorProto.INT64)
        prime = g.const(np.int64(HASH_PRIME), "prime")
        mixed = g.op("Add", [g.op("Mul", [g.op("Mod", [ids, prime]), g.const(np.int64(HASH_MULTIPLIER))]), g.const(plan.hash_seed[hashed], "seed")])
        h = g.op("Mod", [g.op("Mod", [mixed, prime]), g.const(plan.hash_buckets[hashed], "buckets")], "hashed")
        at = add(g.op("Cast", [h], to=TensorProto.DOUBLE), hashed.size)
        onehot = np.flatnonzero(plan.term[hashed] == TERM_HASH_ONEHOT)
        width = int(plan.hash_buckets[hashed[onehot]].max()) if onehot.size else 0
        onehot_at = add(_onehot(g, h, width, np.int64), hashed.size * width) if onehot.size else -1
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
    spec: PreprocessingSpec, output_name: str, prefix: str = "preprocessing/"
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes and initializers mapping ``spec.input.name`` to ``output_name`` (float32)."""
    plan = build_plan(spec)
    g = _GraphBuilder(prefix)
    x = spec.input.name
    if spec.input.datatype == "FP32":
        x = g.op("Cast", [x], "raw64", to=TensorProto.DOUBLE)
    v = g.op("Gather", [x, g.const(_guarded(plan.feature, 0), "step_features")], "steps", axis=1)
    v = _chain(g, plan, v)
    pieces, perm = _pieces(g, plan, v)
    both = g.op("Concat", pieces, "pieces", axis=1) if len(pieces) > 1 else pieces[0]
    both = g.op("Gather", [both, g.const(perm, "columns")], "ordered", axis=1)
    g.nodes.append(helper.make_node("Cast", [both], [output_name], name=f"{prefix}out", to=TensorProto.FLOAT))
    return g.nodes, g.initializers


def build_preprocessing_model(spec: PreprocessingSpec, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """The spec alone as a model: raw ``[N, F]`` -> ``preprocessed`` float32 ``[N, width]``."""
    if opset < MIN_OPSET:
        raise ValueError(f"the preprocessing graph needs opset >= {MIN_OPSET}, got {opset}")
    nodes, inits = build_graph_nodes(spec, OUTPUT_NAME)
    graph = helper.make_graph(
        nodes,
        "preprocessing",
        [helper.make_tensor_value_info(spec.input.name, _ELEM_TYPE[spec.input.datatype], ["batch", len(spec.input.features)])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", spec.output_width])],
        initializer=inits,
    )
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="driftserve")
    model.ir_version = helper.find_min_ir_version_for(opsets)
    onnx.checker.check_model(model)
    return model
