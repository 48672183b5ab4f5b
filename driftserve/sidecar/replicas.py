"""Which replicas a fleet-wide report merges: plain data and its JSON and HTML views.

A leaf module (nothing of the sidecar imported), so that reports, views and the dashboard can
carry the fleet's picture without depending on the aggregator that produces it.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any

CONTRIBUTING = "contributing"
STALE = "stale"
UNREACHABLE = "unreachable"
INCOMPATIBLE = "incompatible"
STATUSES = (CONTRIBUTING, STALE, UNREACHABLE, INCOMPATIBLE)


@dataclass(frozen=True)
class ReplicaStatus:
    """One replica's part in a fleet report."""

    address: str
    instance_id: str
    status: str
    age_s: float  # seconds since its merged state was pulled; NaN when none is merged
    rows: int
    error: str


@dataclass(frozen=True)
class FleetView:
    """The replicas behind one fleet-wide report."""

    replicas: tuple[ReplicaStatus, ...]

    def count(self, status: str) -> int:
        """How many replicas have ``status``."""
        return sum(1 for r in self.replicas if r.status == status)

    def to_json(self) -> dict[str, Any]:
        """The ``fleet`` member of ``/api/drift/<model>``."""
        return {
            "replicas": [
                {
                    "address": r.address,
                    "instance_id": r.instance_id,
                    "status": r.status,
                    "age_s": r.age_s if math.isfinite(r.age_s) else None,
                    "rows": r.rows,
                    "error": r.error,
                }
                for r in self.replicas
            ],
            **{status: self.count(status) for status in STATUSES},
        }

    def to_html(self) -> str:
        """A short paragraph and table for the dashboard."""
        counts = ", ".join(f"{self.count(s)} {s}" for s in STATUSES if self.count(s))
        rows = "".join(
            f"<tr><td>{html.escape(r.address)}</td><td>{html.escape(r.status)}</td>"
            f'<td class="n">{r.rows}</td><td class="n">{f"{r.age_s:.1f} s" if math.isfinite(r.age_s) else "–"}</td>'
            f"<td>{html.escape(r.error)}</td></tr>"
            for r in self.replicas
        )
        return (
            f"<p><b>Fleet-wide</b>: merged from {len(self.replicas)} replicas ({counts or 'none'}).</p>"
            "<table><tr><th>replica</th><th>status</th><th>rows</th><th>state age</th><th>error</th></tr>"
            f"{rows}</table>"
        )
