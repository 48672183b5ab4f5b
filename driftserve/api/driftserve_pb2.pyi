from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tensor(_message.Message):
    __slots__ = ("name", "datatype", "shape", "data")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATATYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    name: str
    datatype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    def __init__(self, name: _Optional[str] = ..., datatype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ...) -> None: ...

class PredictRequest(_message.Message):
    __slots__ = ("model", "version", "request_id", "inputs", "outputs", "timeout_us", "priority")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_US_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    request_id: str
    inputs: _containers.RepeatedCompositeFieldContainer[Tensor]
    outputs: _containers.RepeatedScalarFieldContainer[str]
    timeout_us: int
    priority: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., request_id: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., outputs: _Optional[_Iterable[str]] = ..., timeout_us: _Optional[int] = ..., priority: _Optional[int] = ...) -> None: ...

class PredictResponse(_message.Message):
    __slots__ = ("model", "version", "request_id", "outputs")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    request_id: str
    outputs: _containers.RepeatedCompositeFieldContainer[Tensor]
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., request_id: _Optional[str] = ..., outputs: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ...) -> None: ...

class PredictStreamResponse(_message.Message):
    __slots__ = ("response", "error_code", "error_message", "request_id")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    response: PredictResponse
    error_code: int
    error_message: str
    request_id: str
    def __init__(self, response: _Optional[_Union[PredictResponse, _Mapping]] = ..., error_code: _Optional[int] = ..., error_message: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class MirrorBatch(_message.Message):
    __slots__ = ("model", "version", "rows", "inputs", "outputs", "request_ids", "request_rows", "arrival_unix_s", "latency_s", "sender", "shadow_version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_IDS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ROWS_FIELD_NUMBER: _ClassVar[int]
    ARRIVAL_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    SHADOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    rows: int
    inputs: _containers.RepeatedCompositeFieldContainer[Tensor]
    outputs: _containers.RepeatedCompositeFieldContainer[Tensor]
    request_ids: _containers.RepeatedScalarFieldContainer[str]
    request_rows: _containers.RepeatedScalarFieldContainer[int]
    arrival_unix_s: _containers.RepeatedScalarFieldContainer[float]
    latency_s: _containers.RepeatedScalarFieldContainer[float]
    sender: str
    shadow_version: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., rows: _Optional[int] = ..., inputs: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[Tensor, _Mapping]]] = ..., request_ids: _Optional[_Iterable[str]] = ..., request_rows: _Optional[_Iterable[int]] = ..., arrival_unix_s: _Optional[_Iterable[float]] = ..., latency_s: _Optional[_Iterable[float]] = ..., sender: _Optional[str] = ..., shadow_version: _Optional[str] = ...) -> None: ...

class PublishSummary(_message.Message):
    __slots__ = ("batches", "rows")
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    batches: int
    rows: int
    def __init__(self, batches: _Optional[int] = ..., rows: _Optional[int] = ...) -> None: ...

class DriftReportRequest(_message.Message):
    __slots__ = ("model", "window")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    model: str
    window: str
    def __init__(self, model: _Optional[str] = ..., window: _Optional[str] = ...) -> None: ...

class FeatureDrift(_message.Message):
    __slots__ = ("feature", "kind", "window", "window_rows", "psi", "psi_expected", "ks_statistic", "ks_bound", "ks_pvalue", "ks_pvalue_corrected", "missing_share", "reference_missing_share", "unseen_categories", "status", "reasons")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    WINDOW_ROWS_FIELD_NUMBER: _ClassVar[int]
    PSI_FIELD_NUMBER: _ClassVar[int]
    PSI_EXPECTED_FIELD_NUMBER: _ClassVar[int]
    KS_STATISTIC_FIELD_NUMBER: _ClassVar[int]
    KS_BOUND_FIELD_NUMBER: _ClassVar[int]
    KS_PVALUE_FIELD_NUMBER: _ClassVar[int]
    KS_PVALUE_CORRECTED_FIELD_NUMBER: _ClassVar[int]
    MISSING_SHARE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_MISSING_SHARE_FIELD_NUMBER: _ClassVar[int]
    UNSEEN_CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    feature: str
    kind: str
    window: str
    window_rows: int
    psi: float
    psi_expected: float
    ks_statistic: float
    ks_bound: float
    ks_pvalue: float
    ks_pvalue_corrected: float
    missing_share: float
    reference_missing_share: float
    unseen_categories: int
    status: str
    reasons: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, feature: _Optional[str] = ..., kind: _Optional[str] = ..., window: _Optional[str] = ..., window_rows: _Optional[int] = ..., psi: _Optional[float] = ..., psi_expected: _Optional[float] = ..., ks_statistic: _Optional[float] = ..., ks_bound: _Optional[float] = ..., ks_pvalue: _Optional[float] = ..., ks_pvalue_corrected: _Optional[float] = ..., missing_share: _Optional[float] = ..., reference_missing_share: _Optional[float] = ..., unseen_categories: _Optional[int] = ..., status: _Optional[str] = ..., reasons: _Optional[_Iterable[str]] = ...) -> None: ...

class ShadowReport(_message.Message):
    __slots__ = ("primary_version", "shadow_version", "rows", "agreement", "mean_abs_delta", "max_abs_delta", "primary_latency_p50_s", "shadow_latency_p50_s", "errors", "primary_inference_p50_s", "primary_inference_p99_s", "shadow_latency_p99_s")
    PRIMARY_VERSION_FIELD_NUMBER: _ClassVar[int]
    SHADOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    MEAN_ABS_DELTA_FIELD_NUMBER: _ClassVar[int]
    MAX_ABS_DELTA_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_LATENCY_P50_S_FIELD_NUMBER: _ClassVar[int]
    SHADOW_LATENCY_P50_S_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_INFERENCE_P50_S_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_INFERENCE_P99_S_FIELD_NUMBER: _ClassVar[int]
    SHADOW_LATENCY_P99_S_FIELD_NUMBER: _ClassVar[int]
    primary_version: str
    shadow_version: str
    rows: int
    agreement: float
    mean_abs_delta: float
    max_abs_delta: float
    primary_latency_p50_s: float
    shadow_latency_p50_s: float
    errors: int
    primary_inference_p50_s: float
    primary_inference_p99_s: float
    shadow_latency_p99_s: float
    def __init__(self, primary_version: _Optional[str] = ..., shadow_version: _Optional[str] = ..., rows: _Optional[int] = ..., agreement: _Optional[float] = ..., mean_abs_delta: _Optional[float] = ..., max_abs_delta: _Optional[float] = ..., primary_latency_p50_s: _Optional[float] = ..., shadow_latency_p50_s: _Optional[float] = ..., errors: _Optional[int] = ..., primary_inference_p50_s: _Optional[float] = ..., primary_inference_p99_s: _Optional[float] = ..., shadow_latency_p99_s: _Optional[float] = ...) -> None: ...

class DriftReport(_message.Message):
    __slots__ = ("model", "generated_unix_s", "rows_seen", "features", "shadow", "batches_seen", "fleet")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    GENERATED_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    ROWS_SEEN_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    BATCHES_SEEN_FIELD_NUMBER: _ClassVar[int]
    FLEET_FIELD_NUMBER: _ClassVar[int]
    model: str
    generated_unix_s: float
    rows_seen: int
    features: _containers.RepeatedCompositeFieldContainer[FeatureDrift]
    shadow: ShadowReport
    batches_seen: int
    fleet: FleetInfo
    def __init__(self, model: _Optional[str] = ..., generated_unix_s: _Optional[float] = ..., rows_seen: _Optional[int] = ..., features: _Optional[_Iterable[_Union[FeatureDrift, _Mapping]]] = ..., shadow: _Optional[_Union[ShadowReport, _Mapping]] = ..., batches_seen: _Optional[int] = ..., fleet: _Optional[_Union[FleetInfo, _Mapping]] = ...) -> None: ...

class ReplicaInfo(_message.Message):
    __slots__ = ("address", "instance_id", "status", "age_s", "rows", "error")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    AGE_S_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    address: str
    instance_id: str
    status: str
    age_s: float
    rows: int
    error: str
    def __init__(self, address: _Optional[str] = ..., instance_id: _Optional[str] = ..., status: _Optional[str] = ..., age_s: _Optional[float] = ..., rows: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class FleetInfo(_message.Message):
    __slots__ = ("replicas",)
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaInfo]
    def __init__(self, replicas: _Optional[_Iterable[_Union[ReplicaInfo, _Mapping]]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, models: _Optional[_Iterable[str]] = ...) -> None: ...

class WindowStateRequest(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, models: _Optional[_Iterable[str]] = ...) -> None: ...

class PaneCounts(_message.Message):
    __slots__ = ("pane", "rows", "bin_count", "bin_index", "extra", "sparse", "count_bytes", "index_bytes")
    PANE_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    BIN_COUNT_FIELD_NUMBER: _ClassVar[int]
    BIN_INDEX_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    SPARSE_FIELD_NUMBER: _ClassVar[int]
    COUNT_BYTES_FIELD_NUMBER: _ClassVar[int]
    INDEX_BYTES_FIELD_NUMBER: _ClassVar[int]
    pane: int
    rows: int
    bin_count: bytes
    bin_index: bytes
    extra: bytes
    sparse: bool
    count_bytes: int
    index_bytes: int
    def __init__(self, pane: _Optional[int] = ..., rows: _Optional[int] = ..., bin_count: _Optional[bytes] = ..., bin_index: _Optional[bytes] = ..., extra: _Optional[bytes] = ..., sparse: _Optional[bool] = ..., count_bytes: _Optional[int] = ..., index_bytes: _Optional[int] = ...) -> None: ...

class CountGroup(_message.Message):
    __slots__ = ("source", "features", "bins", "layout_digest", "panes", "cumulative")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    BINS_FIELD_NUMBER: _ClassVar[int]
    LAYOUT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    PANES_FIELD_NUMBER: _ClassVar[int]
    CUMULATIVE_FIELD_NUMBER: _ClassVar[int]
    source: str
    features: int
    bins: int
    layout_digest: str
    panes: _containers.RepeatedCompositeFieldContainer[PaneCounts]
    cumulative: PaneCounts
    def __init__(self, source: _Optional[str] = ..., features: _Optional[int] = ..., bins: _Optional[int] = ..., layout_digest: _Optional[str] = ..., panes: _Optional[_Iterable[_Union[PaneCounts, _Mapping]]] = ..., cumulative: _Optional[_Union[PaneCounts, _Mapping]] = ...) -> None: ...

class ShadowCounters(_message.Message):
    __slots__ = ("primary_version", "shadow_version", "rows", "decided_rows", "agreeing_rows", "abs_delta_sum", "abs_delta_count", "max_abs_delta", "errors", "primary_latency_s", "shadow_latency_s")
    PRIMARY_VERSION_FIELD_NUMBER: _ClassVar[int]
    SHADOW_VERSION_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    DECIDED_ROWS_FIELD_NUMBER: _ClassVar[int]
    AGREEING_ROWS_FIELD_NUMBER: _ClassVar[int]
    ABS_DELTA_SUM_FIELD_NUMBER: _ClassVar[int]
    ABS_DELTA_COUNT_FIELD_NUMBER: _ClassVar[int]
    MAX_ABS_DELTA_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    SHADOW_LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    primary_version: str
    shadow_version: str
    rows: int
    decided_rows: int
    agreeing_rows: int
    abs_delta_sum: float
    abs_delta_count: int
    max_abs_delta: float
    errors: int
    primary_latency_s: bytes
    shadow_latency_s: bytes
    def __init__(self, primary_version: _Optional[str] = ..., shadow_version: _Optional[str] = ..., rows: _Optional[int] = ..., decided_rows: _Optional[int] = ..., agreeing_rows: _Optional[int] = ..., abs_delta_sum: _Optional[float] = ..., abs_delta_count: _Optional[int] = ..., max_abs_delta: _Optional[float] = ..., errors: _Optional[int] = ..., primary_latency_s: _Optional[bytes] = ..., shadow_latency_s: _Optional[bytes] = ...) -> None: ...

class ModelWindowState(_message.Message):
    __slots__ = ("model", "rows_total", "batches_seen", "pane_seconds", "panes", "groups", "shadow")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ROWS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    BATCHES_SEEN_FIELD_NUMBER: _ClassVar[int]
    PANE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PANES_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    model: str
    rows_total: int
    batches_seen: int
    pane_seconds: float
    panes: int
    groups: _containers.RepeatedCompositeFieldContainer[CountGroup]
    shadow: ShadowCounters
    def __init__(self, model: _Optional[str] = ..., rows_total: _Optional[int] = ..., batches_seen: _Optional[int] = ..., pane_seconds: _Optional[float] = ..., panes: _Optional[int] = ..., groups: _Optional[_Iterable[_Union[CountGroup, _Mapping]]] = ..., shadow: _Optional[_Union[ShadowCounters, _Mapping]] = ...) -> None: ...

class WindowStateResponse(_message.Message):
    __slots__ = ("format_version", "instance_id", "generated_unix_s", "models")
    FORMAT_VERSION_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    GENERATED_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    format_version: int
    instance_id: str
    generated_unix_s: float
    models: _containers.RepeatedCompositeFieldContainer[ModelWindowState]
    def __init__(self, format_version: _Optional[int] = ..., instance_id: _Optional[str] = ..., generated_unix_s: _Optional[float] = ..., models: _Optional[_Iterable[_Union[ModelWindowState, _Mapping]]] = ...) -> None: ...

class ModelRef(_message.Message):
    __slots__ = ("model", "version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class ModelVersionRow(_message.Message):
    __slots__ = ("model", "version", "state", "role", "weight", "reason")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: str
    state: str
    role: str
    weight: float
    reason: str
    def __init__(self, model: _Optional[str] = ..., version: _Optional[str] = ..., state: _Optional[str] = ..., role: _Optional[str] = ..., weight: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class AnalysisCheck(_message.Message):
    __slots__ = ("name", "value", "limit", "ok", "samples", "judged")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    JUDGED_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: float
    limit: float
    ok: bool
    samples: int
    judged: bool
    def __init__(self, name: _Optional[str] = ..., value: _Optional[float] = ..., limit: _Optional[float] = ..., ok: _Optional[bool] = ..., samples: _Optional[int] = ..., judged: _Optional[bool] = ...) -> None: ...

class RolloutStatus(_message.Message):
    __slots__ = ("model", "stage", "step", "weight", "candidate", "primary", "previous", "reason", "started_unix_s", "updated_unix_s", "checks", "gate_metric", "gate_score", "rejected")
    class RejectedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    UPDATED_UNIX_S_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    GATE_METRIC_FIELD_NUMBER: _ClassVar[int]
    GATE_SCORE_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    model: str
    stage: str
    step: int
    weight: float
    candidate: str
    primary: str
    previous: str
    reason: str
    started_unix_s: float
    updated_unix_s: float
    checks: _containers.RepeatedCompositeFieldContainer[AnalysisCheck]
    gate_metric: str
    gate_score: float
    rejected: _containers.ScalarMap[str, str]
    def __init__(self, model: _Optional[str] = ..., stage: _Optional[str] = ..., step: _Optional[int] = ..., weight: _Optional[float] = ..., candidate: _Optional[str] = ..., primary: _Optional[str] = ..., previous: _Optional[str] = ..., reason: _Optional[str] = ..., started_unix_s: _Optional[float] = ..., updated_unix_s: _Optional[float] = ..., checks: _Optional[_Iterable[_Union[AnalysisCheck, _Mapping]]] = ..., gate_metric: _Optional[str] = ..., gate_score: _Optional[float] = ..., rejected: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ModelsListRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelsListResponse(_message.Message):
    __slots__ = ("versions", "rollouts")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    ROLLOUTS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[ModelVersionRow]
    rollouts: _containers.RepeatedCompositeFieldContainer[RolloutStatus]
    def __init__(self, versions: _Optional[_Iterable[_Union[ModelVersionRow, _Mapping]]] = ..., rollouts: _Optional[_Iterable[_Union[RolloutStatus, _Mapping]]] = ...) -> None: ...

class ModelActionResponse(_message.Message):
    __slots__ = ("message", "status")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    message: str
    status: RolloutStatus
    def __init__(self, message: _Optional[str] = ..., status: _Optional[_Union[RolloutStatus, _Mapping]] = ...) -> None: ...
