"""What the transports (Monitor gRPC, HTTP API, dashboard) need of a source of reports.

Both a sidecar's own ``SidecarState`` and a fleet aggregator's ``FleetState`` provide it, so one
servicer, one HTTP server and one dashboard serve either.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from driftserve.core.config import ModelConfig
from driftserve.sidecar.state import ModelReport


class Configured(Protocol):
    """A monitored model as the views see it: its configuration."""

    @property
    def config(self) -> ModelConfig:
        """The model's validated ``config.yaml``."""
        ...


class ReportSource(Protocol):
    """Monitored models and their latest reports."""

    @property
    def models(self) -> Mapping[str, Configured]:
        """Monitored models by name."""
        ...

    def report(self, name: str, max_age_s: float | None = None) -> ModelReport:
        """The latest report of ``name``; raises ``UnknownModel`` for a model not monitored."""
        ...

    @property
    def rollout_state_dir(self) -> Path | None:
        """The server's rollout state directory for the dashboard's rollout panel (None: no panel)."""
        ...

    def refresh_all(self, max_age_s: float) -> None:
        """Evaluate every model whose report is older than ``max_age_s``."""
        ...
