"""Exact merging of replicas' window counts, panes aligned by wall-clock time.

Every replica numbers its panes ``floor(arrival unix seconds / pane_seconds)``, so pane ``p`` of
one replica and pane ``p`` of another hold rows of the same seconds. The fleet's sliding window at
``now`` is the sum, over replicas, of their panes ``last - panes + 1 .. last`` with
``last = floor(now / pane_seconds)``, which is what one sidecar's ring holds after advancing to
``now``; the cumulative window is the sum of their cumulative counts. Integer sums are exact, so
the merged statistics equal those of one sidecar that saw every row.

Cost: one vectorised addition per replica pane, O(non-zero bins); memory: one features x bins
array per window, whatever the number of replicas.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from driftserve.sidecar.drift.kernels import EXTRA_COLUMNS
from driftserve.sidecar.drift.windows import WindowSnapshot
from driftserve.sidecar.shadow import ShadowCounters
from driftserve.sidecar.window_state import DecodedGroup, GroupLayout


def window_panes(now: float, pane_seconds: float, panes: int) -> tuple[int, int]:
    """First and last pane number of the sliding window at ``now`` (both included)."""
    last = math.floor(now / pane_seconds)
    return last - panes + 1, last


def merge_group(
    parts: Sequence[DecodedGroup], layout: GroupLayout, first_pane: int, last_pane: int
) -> tuple[WindowSnapshot, WindowSnapshot]:
    """(sliding, cumulative) counts of one count group summed over ``parts`` (one per replica)."""
    shape = (layout.features, layout.bins)
    extra_shape = (layout.features, EXTRA_COLUMNS)
    sliding, sliding_extra = np.zeros(shape, np.int64), np.zeros(extra_shape, np.int64)
    total, total_extra = np.zeros(shape, np.int64), np.zeros(extra_shape, np.int64)
    sliding_rows = total_rows = 0
    for part in parts:
        for pane in part.panes:
            if first_pane <= pane.pane <= last_pane:
                pane.add_to(sliding, sliding_extra)
                sliding_rows += pane.rows
        part.cumulative.add_to(total, total_extra)
        total_rows += part.cumulative.rows
    return WindowSnapshot(sliding, sliding_extra, sliding_rows), WindowSnapshot(total, total_extra, total_rows)


def merge_shadow(parts: Sequence[ShadowCounters]) -> ShadowCounters | None:
    """The shadow comparison summed over replicas; latencies pooled for the median."""
    if not parts:
        return None
    versions = [p.primary_version for p in parts if p.primary_version]
    return ShadowCounters(
        primary_version=max(set(versions), key=versions.count) if versions else "",
        shadow_version=parts[0].shadow_version,
        rows=sum(p.rows for p in parts),
        decided_rows=sum(p.decided_rows for p in parts),
        agreeing_rows=sum(p.agreeing_rows for p in parts),
        abs_delta_sum=math.fsum(p.abs_delta_sum for p in parts),
        abs_delta_count=sum(p.abs_delta_count for p in parts),
        max_abs_delta=max(p.max_abs_delta for p in parts),
        errors=sum(p.errors for p in parts),
        primary_latency_s=tuple(v for p in parts for v in p.primary_latency_s),
        shadow_latency_s=tuple(v for p in parts for v in p.shadow_latency_s),
    )
