"""The ``drift:`` section of a model's config.yaml, validated strictly.

The server's config loader embeds :class:`DriftConfig`, so this module imports nothing heavier
than pydantic (no NumPy kernels, no Numba compilation). Unknown keys are errors so that a typo in
a threshold fails at load time instead of silently disabling an alert.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

logger = logging.getLogger(__name__)

DEFAULT_COARSE_BINS = 10
DEFAULT_PANE_SECONDS = 10.0
DEFAULT_PANES = 60
DEFAULT_MIN_WINDOW_ROWS = 500
DEFAULT_PSI_WARN = 0.1
DEFAULT_PSI_ALERT = 0.25
DEFAULT_KS_ALPHA = 0.01
DEFAULT_KS_CORRECTION: Literal["bh", "bonferroni"] = "bh"
DEFAULT_KS_MIN_STATISTIC = 0.05
DEFAULT_MISSING_WARN = 0.05
DEFAULT_MISSING_ALERT = 0.2
DEFAULT_UNSEEN_WARN = 0.01
DEFAULT_UNSEEN_ALERT = 0.05
DEFAULT_CLEAR_RATIO = 0.8
DEFAULT_MIN_CONSECUTIVE = 2
DEFAULT_COOLDOWN_S = 300.0
DEFAULT_ACTION_TIMEOUT_S = 5.0
DEFAULT_SAMPLE_RATE = 1.0
MAX_COARSE_BINS = 1000
MAX_PANES = 10_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _WarnAlert(_Strict):
    """A pair of thresholds where ``warn`` must not exceed ``alert``."""

    if TYPE_CHECKING:
        # Each subclass declares both as pydantic fields, with its own bounds and defaults.
        warn: float
        alert: float

    @model_validator(mode="after")
    def _warn_not_above_alert(self) -> _WarnAlert:
        warn, alert = self.warn, self.alert
        if warn > alert:
            raise ValueError(f"warn ({warn}) must be <= alert ({alert})")
        return self


class WindowConfig(_Strict):
    """Sliding window as a ring of panes: it covers ``pane_seconds * panes`` seconds."""

    pane_seconds: float = Field(DEFAULT_PANE_SECONDS, gt=0, description="Length of one pane in seconds.")
    panes: int = Field(DEFAULT_PANES, ge=1, le=MAX_PANES, description="Number of panes in the ring.")


class PsiThresholds(_WarnAlert):
    """PSI levels over the coarse bins, applied to the PSI in excess of its no-drift expectation
    ``(B - 1)(1/n + 1/m)``, so that small windows do not alert on sampling noise alone."""

    warn: float = Field(DEFAULT_PSI_WARN, gt=0, description="PSI at or above this is a warning.")
    alert: float = Field(DEFAULT_PSI_ALERT, gt=0, description="PSI at or above this is an alert.")


class KsConfig(_Strict):
    """KS alerting: corrected p-value below ``alpha`` and statistic at least ``min_statistic``."""

    alpha: float = Field(DEFAULT_KS_ALPHA, gt=0, lt=1, description="Family-wise level after correction.")
    correction: Literal["bh", "bonferroni"] = Field(
        DEFAULT_KS_CORRECTION, description="Multiple-test correction across features: bh or bonferroni."
    )
    min_statistic: float = Field(
        DEFAULT_KS_MIN_STATISTIC, ge=0, le=1, description="Smallest KS statistic worth an alert (effect size)."
    )


class ShareThresholds(_WarnAlert):
    """Levels for a share of rows (absolute increase over the reference share for missing values)."""

    warn: float = Field(ge=0, le=1, description="Share at or above this is a warning.")
    alert: float = Field(ge=0, le=1, description="Share at or above this is an alert.")


class HysteresisConfig(_Strict):
    """Alerts rise and clear only after ``min_consecutive`` agreeing reports; clearing needs the
    value back below ``clear_ratio`` times the threshold, so a value hovering at it does not flap."""

    clear_ratio: float = Field(DEFAULT_CLEAR_RATIO, gt=0, le=1, description="Clear below threshold * ratio.")
    min_consecutive: int = Field(DEFAULT_MIN_CONSECUTIVE, ge=1, description="Reports needed to change level.")


class ActionsConfig(_Strict):
    """What happens when a feature enters or leaves an alert (log lines always happen)."""

    webhook_url: HttpUrl | None = Field(None, description="POST a JSON payload here on status changes.")
    command: list[str] | None = Field(None, min_length=1, description="argv run with the JSON payload on stdin.")
    cooldown_s: float = Field(DEFAULT_COOLDOWN_S, ge=0, description="Minimum seconds between actions per model.")
    timeout_s: float = Field(DEFAULT_ACTION_TIMEOUT_S, gt=0, description="Timeout of one webhook or command.")


class MirrorConfig(_Strict):
    """How much traffic the server mirrors to the drift sidecar."""

    sample_rate: float = Field(DEFAULT_SAMPLE_RATE, ge=0, le=1, description="Fraction of requests mirrored.")


class DriftConfig(_Strict):
    """The ``drift:`` section of a model's config.yaml."""

    reference: str = Field(min_length=1, description="Reference profile path, relative to the model directory.")
    features: list[str] | None = Field(None, min_length=1, description="Features to monitor; default all.")
    categorical: list[str] = Field(default_factory=list, description="Features profiled as categorical.")
    coarse_bins: int = Field(
        DEFAULT_COARSE_BINS, ge=2, le=MAX_COARSE_BINS, description="PSI bins, merged from fine quantile bins."
    )
    window: WindowConfig = Field(default_factory=WindowConfig, description="Sliding window shape.")
    min_window_rows: int = Field(DEFAULT_MIN_WINDOW_ROWS, ge=1, description="No status below this many rows.")
    psi: PsiThresholds = Field(default_factory=PsiThresholds, description="PSI warn/alert levels.")
    ks: KsConfig = Field(default_factory=KsConfig, description="KS significance and effect size.")
    missing: ShareThresholds = Field(
        default_factory=lambda: ShareThresholds(warn=DEFAULT_MISSING_WARN, alert=DEFAULT_MISSING_ALERT),
        description="Increase of the missing share over the reference.",
    )
    unseen: ShareThresholds = Field(
        default_factory=lambda: ShareThresholds(warn=DEFAULT_UNSEEN_WARN, alert=DEFAULT_UNSEEN_ALERT),
        description="Share of rows with categorical levels absent from the reference.",
    )
    hysteresis: HysteresisConfig = Field(default_factory=HysteresisConfig, description="Anti-flapping rules.")
    actions: ActionsConfig = Field(default_factory=ActionsConfig, description="Webhook, command hook, cooldown.")
    mirror: MirrorConfig = Field(default_factory=MirrorConfig, description="Server-side mirroring of traffic.")
    monitor_outputs: bool = Field(True, description="Also monitor model outputs (prediction drift).")

    @model_validator(mode="after")
    def _names_unique(self) -> DriftConfig:
        for key, names in (("features", self.features or []), ("categorical", self.categorical)):
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{key} lists {dupes} more than once; each feature may appear once")
        return self
