"""Model configuration: ``<repository>/<model>/config.yaml``, validated strictly.

Unknown keys and bad values are errors whose message names the file, the key and what is
allowed, so a typo never silently falls back to a default. Example::

    platform: onnxruntime_onnx
    max_batch_size: 64            # rows per batch; 0 = the model has no batch dimension
    version_policy:
      latest: {num_versions: 1}   # or  all: {}   or  specific: {versions: [1, 3]}
    instances: 1                  # ONNX Runtime sessions that may run batches at once
    runtime: {intra_op_threads: 1, inter_op_threads: 1, graph_optimization_level: all}
    batching:
      enabled: true
      max_queue_delay_us: 500
      preferred_batch_sizes: [32, 64]
      max_queue_size: 1024
      default_timeout_us: 0       # 0 = no server-side queueing timeout
      priority_levels: 0          # > 0 enables the V2 `priority` parameter (1 = highest)
      slo_p99_ms: 20              # optional: choose delay and batch size online for this p99;
                                  # max_queue_delay_us (when given) and max_batch_size are bounds
    warmup: {enabled: true, batch_sizes: [1, 64]}
    inputs:  [{name: input, datatype: FP32, dims: [30]}]   # optional: read from the graph
    outputs: [{name: probabilities, datatype: FP32, dims: [2]}]
    preprocessing: {...}          # see driftserve.core.preprocessing
    deployment:                   # served_version, canary, shadow_version, and rollouts:
      validation: {data: data/holdout.npz, labels: data/holdout.npz, metric: accuracy, min: 0.9, max_p99_ms: 5}
      rollout: {steps: [5, 25, 50, 100], step_duration_s: 60, thresholds: {max_p99_ratio: 2.0}}
    drift: {...}                  # see driftserve.core.drift_config
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from driftserve.core.drift_config import DriftConfig
from driftserve.core.errors import ConfigError, InvalidArgument, clip
from driftserve.core.preprocessing import PreprocessingSpec

logger = logging.getLogger(__name__)

CONFIG_FILENAME = "config.yaml"
# Triton's model configuration, which driftserve does not read: a model that has only this file is refused.
TRITON_CONFIG_FILENAME = "config.pbtxt"
TRITON_TRANSLATION = (
    "translate it to config.yaml: max_batch_size -> max_batch_size; dynamic_batching "
    "{max_queue_delay_microseconds, preferred_batch_size} -> batching {enabled: true, max_queue_delay_us, "
    "preferred_batch_sizes}; input/output {name, data_type: TYPE_FP32, dims} -> inputs/outputs {name, "
    "datatype: FP32, dims} (optional: read from the graph); instance_group count -> instances"
)
MODEL_FILENAME = "model.onnx"
DEFAULT_MAX_BATCH_SIZE = 64
DEFAULT_MAX_QUEUE_DELAY_US = 500
DEFAULT_MAX_QUEUE_SIZE = 1024
DEFAULT_INLINE_WHEN_IDLE_US = 150
MAX_SLO_P99_MS = 60_000.0
MAX_INSTANCES = 64
# Versions are int64 in Triton's model config: at most 19 decimal digits, at most 2**63 - 1.
MAX_VERSION = 2**63 - 1
_MAX_VERSION_DIGITS = len(str(MAX_VERSION))

V2Datatype = Literal[
    "BOOL",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
]


class StrictModel(BaseModel):
    """Base for config sections: unknown keys are errors, values are not coerced loosely."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class LatestPolicy(StrictModel):
    num_versions: int = Field(1, ge=1, description="How many of the highest versions to serve.")


class AllPolicy(StrictModel):
    """Serve every version on disk (``all: {}`` takes no keys)."""


class SpecificPolicy(StrictModel):
    versions: list[int] = Field(min_length=1, description="Exactly these versions are served.")


class VersionPolicy(StrictModel):
    """Which version directories are loaded (Triton's version_policy)."""

    latest: LatestPolicy | None = None
    all: AllPolicy | None = None
    specific: SpecificPolicy | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> VersionPolicy:
        chosen = [k for k in ("latest", "all", "specific") if getattr(self, k) is not None]
        if len(chosen) != 1:
            raise ValueError(f"give exactly one of latest, all, specific (got {chosen or 'none'})")
        return self

    def select(self, available: list[int]) -> list[int]:
        """The versions to serve out of those present on disk, ascending."""
        ordered = sorted(available)
        if self.latest is not None:
            return ordered[-self.latest.num_versions :]
        if self.specific is not None:
            return [v for v in ordered if v in set(self.specific.versions)]
        return ordered


class RuntimeConfig(StrictModel):
    """ONNX Runtime session options."""

    intra_op_threads: int = Field(1, ge=0, description="Threads inside one operator (0 = ORT default).")
    inter_op_threads: int = Field(1, ge=0, description="Threads across operators (0 = ORT default).")
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"
    execution_mode: Literal["sequential", "parallel"] = "sequential"


class TensorConfig(StrictModel):
    """An input or output as the config declares it; dims exclude the batch dimension."""

    name: str = Field(min_length=1)
    datatype: V2Datatype
    dims: list[int] = Field(description="Shape without the batch dimension; -1 = variable.")


class BatchingConfig(StrictModel):
    """Dynamic batching of concurrent requests (see driftserve.server.batcher)."""

    enabled: bool = True
    max_queue_delay_us: int = Field(
        DEFAULT_MAX_QUEUE_DELAY_US, ge=0, description="Longest wait of the oldest request before its batch closes."
    )
    preferred_batch_sizes: list[int] = Field(
        default_factory=list, description="Batch sizes (rows) that close a batch at once."
    )
    max_queue_size: int = Field(
        DEFAULT_MAX_QUEUE_SIZE, ge=1, description="Queued requests beyond which new ones are refused."
    )
    default_timeout_us: int = Field(0, ge=0, description="Queueing budget when a request gives none (0 = none).")
    priority_levels: int = Field(0, ge=0, le=16, description="Number of priority levels (0 = one FIFO queue).")
    default_priority_level: int = Field(
        0, ge=0, description="Level of requests with priority 0 (0 = the lowest level)."
    )
    adaptive_delay: bool = Field(
        True,
        description="Close a batch once queued plus running requests reach the recent peak in flight, "
        "and stop waiting out the delay after a wait gathered no other request, until requests overlap again.",
    )
    slo_p99_ms: float | None = Field(
        None,
        gt=0,
        le=MAX_SLO_P99_MS,
        description="Latency objective (p99 of queue + compute, ms): the batcher chooses its delay and batch "
        "size online to meet it (driftserve.server.batch_controller); max_queue_delay_us, when given, and "
        "max_batch_size become bounds. None keeps the fixed delay.",
    )
    inline_when_idle_us: int = Field(
        DEFAULT_INLINE_WHEN_IDLE_US,
        ge=0,
        description="Run a batch on the event loop, without the worker-thread hop, when nothing else is "
        "queued or running and recent batches took less than this (0 = always use worker threads).",
    )

    @model_validator(mode="after")
    def _check(self) -> BatchingConfig:
        if any(size < 1 for size in self.preferred_batch_sizes):
            raise ValueError("preferred_batch_sizes must all be >= 1")
        if self.slo_p99_ms is not None and not self.enabled:
            raise ValueError("slo_p99_ms needs batching enabled (enabled: true); remove one of them")
        if self.default_priority_level > self.priority_levels:
            raise ValueError(
                f"default_priority_level {self.default_priority_level} exceeds priority_levels {self.priority_levels}"
            )
        return self

    @property
    def delay_bound_us(self) -> int:
        """The longest queue delay an SLO controller may choose: the configured delay if set, else the SLO."""
        if "max_queue_delay_us" in self.model_fields_set or self.slo_p99_ms is None:
            return self.max_queue_delay_us
        return int(self.slo_p99_ms * 1000)


class WarmupConfig(StrictModel):
    """Inference runs at load time so the first client request never pays for it."""

    enabled: bool = True
    batch_sizes: list[int] | None = Field(None, description="Rows per warmup batch; default [1, max_batch_size].")


class ValidationConfig(StrictModel):
    """The gate a new version must pass before it sees any traffic (see driftserve.server.rollout.gate).

    ``data`` and ``labels`` are paths relative to the model directory: ``.npy`` files, or ``.npz``
    files holding the inputs under their input names (or ``X`` for a one-input model) and the
    labels under ``y``. The same ``.npz`` may hold both.
    """

    data: str = Field(min_length=1, description="Holdout inputs (.npz or .npy), relative to the model directory.")
    labels: str = Field(min_length=1, description="Holdout labels (.npz with 'y', or .npy).")
    metric: Literal["accuracy", "f1", "auc", "rmse"] = "accuracy"
    min: float | None = Field(None, description="Lowest score that passes (accuracy, f1, auc).")
    max: float | None = Field(None, description="Highest score that passes (rmse).")
    max_p99_ms: float | None = Field(None, gt=0, description="Highest p99 of one-row inference on the holdout.")
    output: str | None = Field(None, description="Output to score; default: the label output, else the scores.")
    latency_runs: int = Field(200, ge=10, le=100_000, description="One-row runs timed for max_p99_ms.")

    @model_validator(mode="after")
    def _check(self) -> ValidationConfig:
        if self.metric == "rmse":
            if self.min is not None:
                raise ValueError("metric rmse is an error (lower is better): give 'max', not 'min'")
        elif self.max is not None:
            raise ValueError(f"metric {self.metric} is a score (higher is better): give 'min', not 'max'")
        return self


class RolloutThresholds(StrictModel):
    """Limits the analysis checks at every shadow and canary step; a breach rolls back at once."""

    max_error_rate: float = Field(0.01, ge=0, le=1, description="Share of the candidate's requests that failed.")
    max_p99_ratio: float = Field(2.0, gt=0, description="Candidate p99 latency over the primary's.")
    min_agreement: float = Field(0.95, ge=0, le=1, description="Share of compared rows deciding alike.")
    max_output_psi: float = Field(0.25, gt=0, description="PSI of the candidate's outputs against the primary's.")


class ShadowStageConfig(StrictModel):
    """The shadow stage: the candidate runs on copies of served requests, answering none of them."""

    duration_s: float = Field(0.0, ge=0, description="How long the stage lasts (0 with requests 0 = no stage).")
    requests: int = Field(0, ge=0, description="Compared requests the stage needs before it passes.")


class RolloutConfig(StrictModel):
    """Automated rollout of a new version: gate, shadow, canary steps, promotion (driftserve.server.rollout)."""

    steps: list[float] = Field(
        default_factory=lambda: [5.0, 25.0, 50.0, 100.0], description="Canary weights in percent, ascending."
    )
    step_duration_s: float = Field(60.0, ge=0, description="How long each canary step is held.")
    step_requests: int = Field(0, ge=0, description="Candidate requests each step needs before it passes.")
    analysis_interval_s: float = Field(5.0, gt=0, description="How often the analysis checks run.")
    min_samples: int = Field(50, ge=1, description="Requests (or compared rows) a check needs before it judges.")
    compare_share: float = Field(
        0.25, ge=0, le=1, description="Share of canary requests also run on the primary, off the request path."
    )
    shadow: ShadowStageConfig = Field(default_factory=ShadowStageConfig)
    thresholds: RolloutThresholds = Field(default_factory=RolloutThresholds)
    keep_previous_s: float = Field(300.0, ge=0, description="How long the replaced version stays loaded.")
    keep_failed: bool = Field(False, description="Keep a rolled-back candidate loaded (pinned requests only).")

    @model_validator(mode="after")
    def _check(self) -> RolloutConfig:
        if not self.steps:
            raise ValueError("steps needs at least one weight (use [100] to promote after the gate)")
        if any(not 0 < s <= 100 for s in self.steps):
            raise ValueError(f"steps are percentages in (0, 100], got {self.steps}")
        if any(b <= a for a, b in zip(self.steps, self.steps[1:])):
            raise ValueError(f"steps must increase, got {self.steps}")
        return self


class DeploymentConfig(StrictModel):
    """Which loaded version answers requests that name none, plus canary and shadow versions."""

    served_version: int | None = Field(
        None, description="Version for requests without one; default the highest loaded."
    )
    canary: dict[int, float] = Field(default_factory=dict, description="Version -> share of unpinned traffic (0..1).")
    shadow_version: int | None = Field(None, description="Version the drift sidecar runs on mirrored inputs.")
    validation: ValidationConfig | None = Field(None, description="Gate a new version must pass.")
    rollout: RolloutConfig | None = Field(None, description="Automated shadow, canary and promotion.")

    @property
    def managed(self) -> bool:
        """Whether new versions of this model go through a rollout instead of a plain reload."""
        return self.validation is not None or self.rollout is not None

    @model_validator(mode="after")
    def _check(self) -> DeploymentConfig:
        if any(not 0.0 <= w <= 1.0 for w in self.canary.values()):
            raise ValueError("canary weights must lie in [0, 1]")
        if sum(self.canary.values()) > 1.0 + 1e-9:
            raise ValueError(f"canary weights sum to {sum(self.canary.values()):g}; at most 1")
        return self


class ModelConfig(StrictModel):
    """The whole ``config.yaml`` of one model."""

    name: str | None = Field(None, description="Must equal the directory name when given.")
    platform: Literal["onnxruntime_onnx"] = "onnxruntime_onnx"
    max_batch_size: int | None = Field(
        None,
        ge=0,
        description="Rows per batch; 0 = no batch dimension; default 64 when the graph's first dims are dynamic.",
    )
    version_policy: VersionPolicy = Field(default_factory=lambda: VersionPolicy(latest=LatestPolicy()))
    instances: int = Field(1, ge=1, le=MAX_INSTANCES)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    warmup: WarmupConfig = Field(default_factory=WarmupConfig)
    inputs: list[TensorConfig] | None = None
    outputs: list[TensorConfig] | None = None
    preprocessing: PreprocessingSpec | None = None
    deployment: DeploymentConfig = Field(default_factory=DeploymentConfig)
    drift: DriftConfig | None = None


def version_number(text: str) -> int | None:
    """``text`` as a model version (ASCII decimal digits, at most ``MAX_VERSION``), else None.

    ``str.isdigit`` alone also accepts digits such as "²" or "③" that ``int`` refuses, and ``int``
    refuses 4,300 digits or more; a few string tests keep both out at the cost of a comparison.
    """
    if 0 < len(text) <= _MAX_VERSION_DIGITS and text.isascii() and text.isdigit():
        number = int(text)
        if number <= MAX_VERSION:
            return number
    return None


def parse_version(text: str) -> int:
    """A model version a client named, or INVALID_ARGUMENT saying what a version looks like."""
    number = version_number(text)
    if number is None:
        raise InvalidArgument(
            f"model version must be a decimal integer from 0 to {MAX_VERSION} in ASCII digits 0-9, got '{clip(text)}'"
        )
    return number


def load_model_config(model_dir: Path) -> ModelConfig:
    """Read and validate ``model_dir/config.yaml`` (an absent file means all defaults)."""
    path = model_dir / CONFIG_FILENAME
    triton = model_dir / TRITON_CONFIG_FILENAME
    if triton.exists():
        if not path.exists():
            raise ConfigError(
                f"{triton}: driftserve reads {CONFIG_FILENAME}, not Triton's {TRITON_CONFIG_FILENAME}, and this "
                f"model has no {CONFIG_FILENAME}; {TRITON_TRANSLATION}"
            )
        logger.warning("%s: ignored; driftserve reads %s", triton, path)
    raw: Any = {}
    if path.exists():
        try:
            raw = yaml.safe_load(_read_text(path)) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: top level must be a mapping of keys, got {type(raw).__name__}")
    try:
        config = ModelConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(path, exc, ModelConfig)) from None
    if config.name is not None and config.name != model_dir.name:
        raise ConfigError(f"{path}: key 'name' is '{config.name}' but the directory is '{model_dir.name}'")
    return config


def _read_text(path: Path) -> str:
    """The file's text; a file that cannot be read or is not UTF-8 is a ConfigError naming it."""
    if not path.is_file():
        raise ConfigError(f"{path}: not a regular file; expected a YAML file (or none, for all defaults)")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror or exc}") from None


def format_validation_error(path: Path, exc: ValidationError, root: type[BaseModel]) -> str:
    """One readable line per problem: file, dotted key, what is wrong and what is allowed."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(root, err["loc"][:-1])
            hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
            lines.append(f"{path}: unknown key '{loc}'{hint}")
        else:
            got = err.get("input")
            got_text = f" (got {got!r})" if not isinstance(got, dict) else ""
            lines.append(f"{path}: key '{loc}': {err['msg']}{got_text}")
    return "\n".join(lines)


def _allowed_keys(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    model: Any = root
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        model = _model_type(field.annotation)
    return sorted(model.model_fields) if model is not None else []


def _model_type(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_type(arg)
        if found is not None:
            return found
    return None
