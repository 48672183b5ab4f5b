"""Settings of the server process: command-line flags over ``DRIFTSERVE_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from driftserve.core import gil_cpu
from driftserve.core.commandline import settings_argv
from driftserve.core.cpus import affinity, cgroup_quota_cpus, usable_cpus
from driftserve.core.gil_cpu import AUTO_MAX_CPUS
from driftserve.core.startup import StartupError, check_log_level

DEFAULT_HTTP_PORT = 8000
DEFAULT_GRPC_PORT = 8001
DEFAULT_METRICS_PORT = 8002
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_GRACE_PERIOD_S = 10.0
DEFAULT_DRAIN_PERIOD_S = 0.5
DEFAULT_MAX_PENDING_CALLS = 256
# --reply-sender auto: measured +20% on 2 CPUs per process, -16 to -28% on 16 (docs/ARCHITECTURE.md).
SENDER_MAX_CPUS_PER_PROCESS = 4
# The settings that a child `serve` process (a worker, the server of `run`) inherits as flags.
SERVE_FLAG_FIELDS = (
    "model_repository",
    "host",
    "grpc_port",
    "http_port",
    "metrics_port",
    "log_level",
    "max_receive_message_bytes",
    "grace_period_s",
    "drain_period_s",
    "max_pending_calls",
    "grpc_frontend",
    "reply_sender",
    "gil_cpu",
    "mirror_address",
    "workers",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "auth_tokens_file",
    "mirror_tls_ca",
    "mirror_tls_cert",
    "mirror_tls_key",
    "mirror_token_file",
    "state_dir",
    "poll_interval_s",
)


class ServerSettings(BaseSettings):
    """Everything the server process needs to start; one field per flag."""

    model_config = SettingsConfigDict(env_prefix="DRIFTSERVE_", extra="forbid", protected_namespaces=())

    model_repository: Path = Field(description="Directory with <model>/config.yaml and <model>/<version>/model.onnx.")
    host: str = Field("0.0.0.0", description="Address the gRPC, REST and metrics servers bind to.")
    grpc_port: int = Field(DEFAULT_GRPC_PORT, ge=0, le=65535, description="gRPC port (0 = pick a free one).")
    http_port: int = Field(
        DEFAULT_HTTP_PORT, ge=-1, le=65535, description="KServe V2 REST port (0 = free one, -1 = off)."
    )
    metrics_port: int = Field(
        DEFAULT_METRICS_PORT, ge=-1, le=65535, description="Prometheus port (0 = free one, -1 = off)."
    )
    log_level: str = Field("INFO", description="Python logging level name.")
    max_receive_message_bytes: int = Field(DEFAULT_MAX_MESSAGE_BYTES, ge=1024, description="Largest request accepted.")
    max_send_message_bytes: int = Field(DEFAULT_MAX_MESSAGE_BYTES, ge=1024, description="Largest response sent.")
    grace_period_s: float = Field(
        DEFAULT_GRACE_PERIOD_S, ge=0, description="How long in-flight requests may finish at shutdown."
    )
    drain_period_s: float = Field(
        DEFAULT_DRAIN_PERIOD_S,
        ge=0,
        description="After SIGTERM (health NOT_SERVING), keep serving this long so calls gRPC already received "
        "are answered; then refuse new ones with UNAVAILABLE. Part of the grace period.",
    )
    max_pending_calls: int = Field(
        DEFAULT_MAX_PENDING_CALLS,
        ge=1,
        description="Calls received but not yet taken by the event loop; beyond it new calls are refused at once "
        "instead of queued (load shedding under overload): by the cq front end with RESOURCE_EXHAUSTED and a retry "
        "hint, counted; with --grpc-frontend aio by gRPC's core (up to 4x, randomly), which resets them (CANCELLED).",
    )
    grpc_frontend: Literal["cq", "aio"] = Field(
        "cq",
        description="How gRPC calls reach the handlers: 'cq' (driftserve's completion-queue front end, "
        "core/cq_server.py: about a third of grpc.aio's CPU per unary call) or 'aio' (grpcio's grpc.aio server).",
    )
    reply_sender: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Whether the cq front end writes replies from two sender threads while other calls are in flight "
        "('on'), or from the event loop ('off'). 'auto': on when each server process has at most "
        f"{SENDER_MAX_CPUS_PER_PROCESS} CPUs (cgroup quota and affinity, divided by --workers): there it frees the "
        "loop from gRPC's writes; with more CPUs one process is bound by its GIL and each hand-off costs more "
        "than it saves.",
    )
    gil_cpu: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Keep the threads that take turns on the GIL (event loop, gRPC poller, reply senders) on one CPU, "
        "the last of this process's affinity mask ('on'), so handing the GIL on wakes a thread on a core that is "
        "already awake; batch workers, model loading and gRPC core's threads keep the whole mask. 'auto': on "
        f"with 2 to {AUTO_MAX_CPUS} CPUs in the mask that are this process's own (one server process, or a worker "
        "of --pin-workers, and no CPU quota below the mask).",
    )
    shed_in_grpc_core: bool = Field(
        False,
        description="Have gRPC's core refuse calls beyond max_pending_calls with RESOURCE_EXHAUSTED instead of "
        "resetting them (CANCELLED): gRPC's promise-based HTTP/2 server transport, ~13% less throughput under load.",
    )
    mirror_address: str | None = Field(
        None, description="Drift sidecar address (host:port or unix:path); unset = no mirroring."
    )
    workers: int = Field(1, ge=1, le=64, description="Server processes sharing the gRPC and REST ports (SO_REUSEPORT).")
    reuse_port: bool = Field(False, description="Bind with SO_REUSEPORT; set for the processes that --workers starts.")
    pin_workers: bool = Field(
        False,
        description="With --workers N: confine each worker to its own share of the CPUs this process may use "
        "(its affinity mask cut into N disjoint parts), so a worker's threads wake each other on its own cores. "
        "Needs at least N CPUs in the mask. Use it where the CPUs are this server's (a dedicated host, a "
        "Kubernetes pod with exclusive CPUs); under a CFS quota alone the mask lists CPUs others also run on.",
    )
    cpu_set: str = Field(
        "",
        description="Set by --pin-workers for each worker: the CPUs (e.g. 0,1) it confines itself to at start.",
    )
    fleet_ready_file: Path | None = Field(
        None,
        description="Set by --workers for its workers: report ready (health SERVING, ServerReady, REST ready) only "
        "once this file exists, which the parent creates when every worker is ready.",
    )
    load_models: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Load only these models (--load-model, repeatable; DRIFTSERVE_LOAD_MODELS=a,b); the server is "
        "ready when every one of them is. Empty = load every model; ready when at least one is.",
    )
    slo_p99_ms: float | None = Field(
        None, gt=0, description="Default batching.slo_p99_ms for models with batching on that set none (None = off)."
    )
    exit_on_error: bool = Field(False, description="Exit with code 1 when a model fails to load at start.")
    tls_cert: Path | None = Field(None, description="Server certificate chain (PEM); set with tls_key to serve TLS.")
    tls_key: Path | None = Field(None, description="Private key (PEM) of tls_cert.")
    tls_client_ca: Path | None = Field(None, description="CA (PEM) client certificates must chain to: mutual TLS.")
    auth_tokens_file: Path | None = Field(
        None, description="Bearer tokens with scopes (core/auth.py); unset = no token needed."
    )
    mirror_tls_ca: Path | None = Field(None, description="CA (PEM) that verifies the sidecar: the mirror uses TLS.")
    mirror_tls_cert: Path | None = Field(None, description="Client certificate (PEM) for a mutual-TLS sidecar.")
    mirror_tls_key: Path | None = Field(None, description="Private key (PEM) of mirror_tls_cert.")
    mirror_token_file: Path | None = Field(
        None, description="File whose first line is the token the mirror presents (scope mirror)."
    )
    state_dir: Path | None = Field(
        None, description="Where rollout state is persisted; default <model-repository>/.driftserve/rollouts."
    )
    poll_interval_s: float = Field(
        0.0, ge=0, description="Look for new model versions this often (seconds); 0 = off (load them explicitly)."
    )

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        return check_log_level(value)

    @field_validator("load_models", mode="before")
    @classmethod
    def _split_load_models(cls, value: object) -> object:
        """``a,b`` (the environment variable) or a list (flags); blanks dropped, order kept, no duplicates."""
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            return value
        names = [str(item).strip() for item in items]
        return list(dict.fromkeys(name for name in names if name))


def serve_argv(settings: ServerSettings, **overrides: object) -> list[str]:
    """``serve`` and the flags that start a server process with ``settings`` (``overrides`` win)."""
    argv = ["serve", *settings_argv(settings, SERVE_FLAG_FIELDS, **overrides)]
    for name in settings.load_models:
        argv += ["--load-model", name]
    if settings.exit_on_error:
        argv.append("--exit-on-error")
    if settings.shed_in_grpc_core:
        argv.append("--shed-in-grpc-core")
    return argv


def check_repository(settings: ServerSettings) -> None:
    """Raise StartupError unless the repository is a directory holding every ``--load-model``."""
    root = settings.model_repository
    if not root.is_dir():
        raise StartupError(
            f"model repository {root} is not a directory; "
            "pass an existing one with --model-repository or DRIFTSERVE_MODEL_REPOSITORY"
        )
    missing = [name for name in settings.load_models if not _is_model_dir(root, name)]
    if missing:
        try:
            present = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))
        except OSError:
            present = []
        raise StartupError(
            f"--load-model (or DRIFTSERVE_LOAD_MODELS) names {', '.join(repr(m) for m in missing)}, "
            f"not a model directory of {root}; models there: {', '.join(present) or 'none'}"
        )


def _is_model_dir(root: Path, name: str) -> bool:
    """Whether ``name`` is a plain directory name of ``root`` (never a path out of it)."""
    if not name or name.startswith((".", "_")) or "/" in name or "\\" in name or name in (".", ".."):
        return False
    try:
        return (root / name).is_dir()
    except OSError:
        return False


def sends_beside_loop(settings: ServerSettings, cpus: float | None = None) -> bool:
    """Whether the cq front end writes replies from its sender thread (``--reply-sender``, 'auto'
    resolved from the CPUs each server process gets: ``cpus`` or this process's, over ``--workers``)."""
    if settings.reply_sender != "auto":
        return settings.reply_sender == "on"
    return sender_pays_off((usable_cpus() if cpus is None else cpus) / settings.workers)


def gil_cpu_choice(settings: ServerSettings) -> gil_cpu.Choice:
    """``--gil-cpu`` resolved for this process: its affinity mask and CPU quota, and whether a sibling
    process shares the mask (a worker of ``--workers`` without ``--pin-workers``)."""
    own = bool(settings.cpu_set) or not settings.reuse_port
    return gil_cpu.choose(settings.gil_cpu, affinity(), cgroup_quota_cpus(), own)


def sender_pays_off(cpus_per_process: float) -> bool:
    """``--reply-sender auto``'s rule: with few CPUs per process the loop competes for them, and
    writing replies beside it frees it; with many, one process is bound by its GIL and each
    hand-off costs more than the write it moves."""
    return cpus_per_process <= SENDER_MAX_CPUS_PER_PROCESS
