"""Mergeable window state on the wire: a sidecar's counts per pane, encoded and checked.

A sidecar's drift state is integer counts per fine bin, kept per wall-clock pane, so the state of
many sidecars adds up to exactly what one sidecar seeing every row would hold. ``Monitor/
GetWindowState`` exports it (``WindowStateExporter``); a fleet aggregator decodes it
(``decode_model``) and sums it (``driftserve.sidecar.fleet.merge``).

Counts travel as little-endian bytes in the narrowest unsigned integers that hold them, sparse
(gaps between the flat indices of the non-zero bins, and their counts) when under half the bins are
non-zero, else dense; a quiet pane costs a few bytes, a typical non-zero bin three, and decoding
is one ``np.frombuffer`` per array instead of a Python loop. ``FORMAT_VERSION`` changes whenever the
meaning of these bytes does; a digest of the bin edges and pane layout guards against merging
sidecars that run different reference profiles or windows.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from driftserve.api import driftserve_pb2
from driftserve.sidecar.drift.detector import ModelDriftMonitor
from driftserve.sidecar.drift.kernels import EXTRA_COLUMNS
from driftserve.sidecar.drift.windows import PaneRing
from driftserve.sidecar.shadow import ShadowCounters, ShadowRunner
from driftserve.sidecar.state import SidecarState, UnknownModel

FORMAT_VERSION = 1
_EXTRA = np.dtype("<i8")
_LATENCY = np.dtype("<f8")
_COUNT_WIDTHS = (1, 2, 4, 8)
_INDEX_WIDTHS = (2, 4)


class StateMismatch(ValueError):
    """A replica's window state that cannot be merged: its message says what differs."""


def layout_digest(ring: PaneRing) -> str:
    """Digest of what makes two rings' counts addable: columns, edges, kinds, pane layout."""
    layout = ring.layout
    digest = hashlib.sha256()
    for array in (layout.columns, layout.edges, layout.n_edges, layout.is_categorical):
        digest.update(np.ascontiguousarray(array).tobytes())
        digest.update(str(array.shape).encode())
    digest.update(f"{ring.pane_seconds!r}/{ring.panes}".encode())
    return digest.hexdigest()[:32]


def _narrowest(largest: int, widths: tuple[int, ...]) -> int:
    """The fewest bytes among ``widths`` whose unsigned integers hold ``largest``."""
    return next(w for w in widths if largest < 1 << (8 * w))


def encode_counts(
    pane: int, counts: NDArray[np.int64], extra: NDArray[np.int64], rows: int
) -> driftserve_pb2.PaneCounts:
    """One pane's counts as a message: sparse or dense, whichever is smaller, in the narrowest integers."""
    flat = counts.reshape(-1)
    nonzero = np.flatnonzero(flat)
    values = flat[nonzero] if nonzero.size * 2 < flat.size else flat
    count_bytes = _narrowest(int(values.max()) if values.size else 0, _COUNT_WIDTHS)
    message = driftserve_pb2.PaneCounts(
        pane=pane, rows=rows, extra=extra.astype(_EXTRA).tobytes(), count_bytes=count_bytes
    )
    message.bin_count = values.astype(f"<u{count_bytes}").tobytes()
    if values is not flat:
        gaps = np.diff(nonzero, prepend=0)
        index_bytes = _narrowest(int(gaps.max()) if gaps.size else 0, _INDEX_WIDTHS)
        message.sparse = True
        message.index_bytes = index_bytes
        message.bin_index = gaps.astype(f"<u{index_bytes}").tobytes()
    return message


def encode_shadow(counters: ShadowCounters) -> driftserve_pb2.ShadowCounters:
    """The shadow comparison's sums as a message."""
    return driftserve_pb2.ShadowCounters(
        primary_version=counters.primary_version,
        shadow_version=counters.shadow_version,
        rows=counters.rows,
        decided_rows=counters.decided_rows,
        agreeing_rows=counters.agreeing_rows,
        abs_delta_sum=counters.abs_delta_sum,
        abs_delta_count=counters.abs_delta_count,
        max_abs_delta=counters.max_abs_delta,
        errors=counters.errors,
        primary_latency_s=np.asarray(counters.primary_latency_s, dtype=_LATENCY).tobytes(),
        shadow_latency_s=np.asarray(counters.shadow_latency_s, dtype=_LATENCY).tobytes(),
    )


def encode_model(
    name: str, monitor: ModelDriftMonitor | None, shadow: ShadowRunner | None, batches_seen: int
) -> driftserve_pb2.ModelWindowState:
    """One model's mergeable state: every count group's panes and cumulative counts, and the shadow."""
    message = driftserve_pb2.ModelWindowState(model=name, batches_seen=batches_seen)
    if monitor is not None:
        groups = monitor.group_states()
        message.rows_total = groups[0].cumulative.rows
        message.pane_seconds = groups[0].ring.pane_seconds
        message.panes = groups[0].ring.panes
        for group in groups:
            features, bins = group.cumulative.counts.shape
            message.groups.append(
                driftserve_pb2.CountGroup(
                    source=group.source,
                    features=features,
                    bins=bins,
                    layout_digest=layout_digest(group.ring),
                    panes=[encode_counts(p.pane, p.counts, p.extra, p.rows) for p in group.panes],
                    cumulative=encode_counts(0, group.cumulative.counts, group.cumulative.extra, group.cumulative.rows),
                )
            )
    if shadow is not None:
        message.shadow.CopyFrom(encode_shadow(shadow.counters()))
    return message


class WindowStateExporter:
    """Builds ``GetWindowState`` answers from a sidecar's monitored models."""

    def __init__(self, state: SidecarState) -> None:
        self._state = state
        # A new id per process: the aggregator sees a restarted replica's counts started again.
        self.instance_id = uuid.uuid4().hex

    def export(self, models: list[str]) -> driftserve_pb2.WindowStateResponse:
        """The state of ``models`` (every monitored model when empty); UnknownModel names what exists."""
        known = self._state.models
        unknown = [m for m in models if m not in known]
        if unknown:
            raise UnknownModel(f"models {unknown} are not monitored by this sidecar; monitored: {sorted(known)}")
        response = driftserve_pb2.WindowStateResponse(
            format_version=FORMAT_VERSION, instance_id=self.instance_id, generated_unix_s=time.time()
        )
        for name in models or sorted(known):
            model = known[name]
            response.models.append(encode_model(name, model.monitor, model.shadow, model.batches_seen))
        return response


# ---------------------------------------------------------------------------------------- decoding
@dataclass(frozen=True)
class DecodedCounts:
    """One pane (or the cumulative window) of one replica, checked, as views over the message's bytes.

    The narrow integers stay as they came, so holding a replica's state costs what its message
    does; indices are rebuilt from their gaps only while adding.
    """

    pane: int
    rows: int
    gaps: NDArray[np.unsignedinteger] | None  # None: ``values`` is dense, features x bins
    values: NDArray[np.integer]
    extra: NDArray[np.int64]

    def add_to(self, counts: NDArray[np.int64], extra: NDArray[np.int64]) -> None:
        """Add these counts into ``counts`` (features x bins) and ``extra`` (features x 2)."""
        if self.gaps is None:
            counts.reshape(-1)[:] += self.values
        else:
            # Indices are strictly increasing (checked), so plain fancy-index addition is exact.
            counts.reshape(-1)[np.cumsum(self.gaps, dtype=np.int64)] += self.values
        extra += self.extra


@dataclass(frozen=True)
class GroupLayout:
    """What the aggregator expects of one count group."""

    source: str
    features: int
    bins: int
    digest: str


@dataclass(frozen=True)
class DecodedGroup:
    """One count group of one replica."""

    panes: list[DecodedCounts]
    cumulative: DecodedCounts


@dataclass(frozen=True)
class DecodedModel:
    """One replica's checked, mergeable state of one model."""

    model: str
    rows_total: int
    batches_seen: int
    groups: list[DecodedGroup]
    shadow: ShadowCounters | None


def _frombuffer(data: bytes, dtype: np.dtype[Any], what: str) -> NDArray[Any]:
    if len(data) % dtype.itemsize:
        raise StateMismatch(f"{what}: {len(data)} bytes is not a whole number of {dtype.itemsize}-byte values")
    return np.frombuffer(data, dtype=dtype)


def decode_counts(message: driftserve_pb2.PaneCounts, features: int, bins: int, what: str) -> DecodedCounts:
    """Check and view one ``PaneCounts``; StateMismatch says what is wrong."""
    size = features * bins
    if message.count_bytes not in _COUNT_WIDTHS:
        raise StateMismatch(f"{what}: count_bytes is {message.count_bytes}, expected one of {_COUNT_WIDTHS}")
    values = _frombuffer(message.bin_count, np.dtype(f"<u{message.count_bytes}"), f"{what} bin_count")
    if message.count_bytes == max(_COUNT_WIDTHS):
        # uint64 would turn int64 sums into floats; counts past 2**63 are not counts.
        if int(values.max(initial=0)) > np.iinfo(np.int64).max:
            raise StateMismatch(f"{what}: a count exceeds 2**63 - 1")
        values = values.astype(np.int64)
    extra = _frombuffer(message.extra, _EXTRA, f"{what} extra")
    if extra.size != features * EXTRA_COLUMNS:
        raise StateMismatch(f"{what}: extra holds {extra.size} values, expected {features} features x {EXTRA_COLUMNS}")
    extra = extra.reshape(features, EXTRA_COLUMNS)
    if extra.size and int(extra.min()) < 0:
        raise StateMismatch(f"{what}: missing and unseen counts must not be negative")
    gaps = None
    if message.sparse:
        if message.index_bytes not in _INDEX_WIDTHS:
            raise StateMismatch(f"{what}: index_bytes is {message.index_bytes}, expected one of {_INDEX_WIDTHS}")
        gaps = _frombuffer(message.bin_index, np.dtype(f"<u{message.index_bytes}"), f"{what} bin_index")
        if gaps.size != values.size:
            raise StateMismatch(f"{what}: {gaps.size} bin indices but {values.size} counts")
        if gaps.size and (int(gaps.sum(dtype=np.int64)) >= size or int(gaps[1:].min(initial=1)) == 0):
            raise StateMismatch(f"{what}: bin indices must be strictly increasing and below {size}")
    elif values.size != size:
        raise StateMismatch(f"{what}: {values.size} dense counts, expected {features} features x {bins} bins")
    return DecodedCounts(int(message.pane), int(message.rows), gaps, values, extra)


def decode_shadow(message: driftserve_pb2.ShadowCounters) -> ShadowCounters:
    """The shadow sums of one replica."""
    return ShadowCounters(
        primary_version=message.primary_version,
        shadow_version=message.shadow_version,
        rows=message.rows,
        decided_rows=message.decided_rows,
        agreeing_rows=message.agreeing_rows,
        abs_delta_sum=message.abs_delta_sum,
        abs_delta_count=message.abs_delta_count,
        max_abs_delta=message.max_abs_delta,
        errors=message.errors,
        primary_latency_s=tuple(_frombuffer(message.primary_latency_s, _LATENCY, "primary_latency_s").tolist()),
        shadow_latency_s=tuple(_frombuffer(message.shadow_latency_s, _LATENCY, "shadow_latency_s").tolist()),
    )


def decode_model(message: driftserve_pb2.ModelWindowState, layouts: list[GroupLayout]) -> DecodedModel:
    """Check one model's state against the aggregator's own layouts and view its counts."""
    name = message.model
    found = [(g.source, g.features, g.bins, g.layout_digest) for g in message.groups]
    wanted = [(g.source, g.features, g.bins, g.digest) for g in layouts]
    if found != wanted:
        if [f[:3] for f in found] == [w[:3] for w in wanted]:
            raise StateMismatch(
                f"model {name!r}: bin edges or window panes differ from this aggregator's "
                "(another reference profile or drift.window); deploy the same model configuration everywhere"
            )
        raise StateMismatch(
            f"model {name!r}: count groups {[f[:3] for f in found]} (source, features, bins), "
            f"expected {[w[:3] for w in wanted]}"
        )
    groups = []
    for g, layout in zip(message.groups, layouts):
        what = f"model {name!r} {g.source}"
        panes = [decode_counts(p, layout.features, layout.bins, f"{what} pane {p.pane}") for p in g.panes]
        cumulative = decode_counts(g.cumulative, layout.features, layout.bins, f"{what} cumulative")
        groups.append(DecodedGroup(panes, cumulative))
    shadow = decode_shadow(message.shadow) if message.HasField("shadow") else None
    return DecodedModel(name, int(message.rows_total), int(message.batches_seen), groups, shadow)
