"""Settings of the drift sidecar process: command-line flags over ``DRIFTSERVE_SIDECAR_*`` variables.

The prefix differs from the server's ``DRIFTSERVE_`` fields so that both processes can share one
environment (a pod) without one's ``DRIFTSERVE_GRPC_PORT`` reconfiguring the other.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from driftserve.core.startup import check_log_level

DEFAULT_LISTEN = "127.0.0.1:8003"
DEFAULT_HTTP_HOST = "127.0.0.1"
DEFAULT_HTTP_PORT = 8004
DEFAULT_REPORT_INTERVAL_S = 1.0
DEFAULT_QUEUE_BATCHES = 256
DEFAULT_SHADOW_QUEUE_BATCHES = 64
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_GRACE_PERIOD_S = 1.0


class SidecarSettings(BaseSettings):
    """Everything the sidecar process needs to start; one field per flag."""

    model_config = SettingsConfigDict(env_prefix="DRIFTSERVE_SIDECAR_", extra="forbid", protected_namespaces=())

    model_repository: Path = Field(description="Model repository: <model>/config.yaml with a drift: section.")
    listen: str = Field(DEFAULT_LISTEN, description="gRPC address: host:port (port 0 = free one) or unix:/path.")
    http_host: str = Field(DEFAULT_HTTP_HOST, description="Address of the HTTP server (/metrics, /api, /dashboard).")
    http_port: int = Field(DEFAULT_HTTP_PORT, ge=-1, le=65535, description="HTTP port (0 = free one, -1 = off).")
    log_level: str = Field("INFO", description="Python logging level name.")
    report_interval_s: float = Field(
        DEFAULT_REPORT_INTERVAL_S,
        gt=0,
        le=3600,
        description="Seconds between drift evaluations (one hysteresis step each).",
    )
    queue_batches: int = Field(
        DEFAULT_QUEUE_BATCHES, ge=1, description="Mirrored batches queued per model before new ones are dropped."
    )
    shadow_queue_batches: int = Field(
        DEFAULT_SHADOW_QUEUE_BATCHES, ge=1, description="Batches queued for a shadow model before new ones are dropped."
    )
    shadow: bool = Field(True, description="Run deployment.shadow_version models on mirrored inputs.")
    state_dir: Path | None = Field(
        None,
        description="The server's rollout state directory, for the dashboard's rollout panel; "
        "default <model-repository>/.driftserve/rollouts (the server's default).",
    )
    max_receive_message_bytes: int = Field(
        DEFAULT_MAX_MESSAGE_BYTES, ge=1024, description="Largest MirrorBatch accepted."
    )
    grace_period_s: float = Field(
        DEFAULT_GRACE_PERIOD_S, ge=0, description="Time open streams get to finish at shutdown."
    )
    tls_cert: Path | None = Field(None, description="Certificate chain (PEM) of the gRPC port; set with tls_key.")
    tls_key: Path | None = Field(None, description="Private key (PEM) of tls_cert.")
    tls_client_ca: Path | None = Field(None, description="CA (PEM) client certificates must chain to: mutual TLS.")
    auth_tokens_file: Path | None = Field(
        None, description="Bearer tokens with scopes (mirror, monitor); unset = no token needed."
    )

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        return check_log_level(value)

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        if value.startswith("unix:"):
            if len(value) <= len("unix:"):
                raise ValueError("listen 'unix:' needs a socket path, e.g. unix:/tmp/driftserve-sidecar.sock")
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ValueError(f"listen must be host:port (port 0..65535) or unix:/path, got {value!r}")
        return value
