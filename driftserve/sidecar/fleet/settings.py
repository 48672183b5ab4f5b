"""Settings of the fleet aggregator (``driftserve drift fleet``): flags over ``DRIFTSERVE_FLEET_*``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from driftserve.core.startup import check_log_level
from driftserve.sidecar.fleet.discovery import parse_targets
from driftserve.sidecar.settings import (
    DEFAULT_GRACE_PERIOD_S,
    DEFAULT_HTTP_HOST,
    DEFAULT_HTTP_PORT,
    DEFAULT_LISTEN,
    DEFAULT_REPORT_INTERVAL_S,
    SidecarSettings,
)

DEFAULT_PULL_INTERVAL_S = 2.0
DEFAULT_PULL_TIMEOUT_S = 2.0
DEFAULT_FORGET_AFTER_S = 600.0


class FleetSettings(BaseSettings):
    """Everything the aggregator needs to start; one field per flag."""

    model_config = SettingsConfigDict(env_prefix="DRIFTSERVE_FLEET_", extra="forbid", protected_namespaces=())

    model_repository: Path = Field(description="The replicas' model repository (config.yaml and reference profiles).")
    replicas: str = Field(description="Comma-separated host:port of the sidecars; names are resolved every pull.")
    listen: str = Field(DEFAULT_LISTEN, description="gRPC address of the aggregator's Monitor service.")
    http_host: str = Field(DEFAULT_HTTP_HOST, description="Address of the HTTP server (/metrics, /api, /dashboard).")
    http_port: int = Field(DEFAULT_HTTP_PORT, ge=-1, le=65535, description="HTTP port (0 = free one, -1 = off).")
    log_level: str = Field("INFO", description="Python logging level name.")
    report_interval_s: float = Field(
        DEFAULT_REPORT_INTERVAL_S, gt=0, le=3600, description="Seconds between fleet evaluations (hysteresis steps)."
    )
    pull_interval_s: float = Field(
        DEFAULT_PULL_INTERVAL_S, gt=0, le=3600, description="Seconds between pulls of every replica's window state."
    )
    pull_timeout_s: float = Field(DEFAULT_PULL_TIMEOUT_S, gt=0, description="Deadline of one replica's pull.")
    forget_after_s: float = Field(
        DEFAULT_FORGET_AFTER_S,
        gt=0,
        description="A replica that stopped answering is merged from its last state (stale) for this long.",
    )
    grace_period_s: float = Field(DEFAULT_GRACE_PERIOD_S, ge=0, description="Time open RPCs get at shutdown.")
    # Serving: the same four flags as the sidecar (``core.security.Security``).
    tls_cert: Path | None = Field(None, description="Certificate chain (PEM) of the gRPC port; set with tls_key.")
    tls_key: Path | None = Field(None, description="Private key (PEM) of tls_cert.")
    tls_client_ca: Path | None = Field(None, description="CA (PEM) client certificates must chain to: mutual TLS.")
    auth_tokens_file: Path | None = Field(
        None, description="Bearer tokens with scopes (monitor); unset = no token needed."
    )
    # Pulling: how the aggregator reaches secured replicas' sidecars (``fleet.replica_client``).
    replica_tls_ca: Path | None = Field(None, description="CA (PEM) that verifies the replicas: pull over TLS.")
    replica_tls_cert: Path | None = Field(None, description="Client certificate (PEM) for replicas with mutual TLS.")
    replica_tls_key: Path | None = Field(None, description="Private key (PEM) of replica_tls_cert.")
    replica_token_file: Path | None = Field(
        None, description="File whose first line is the bearer token (scope monitor) sent on every pull."
    )

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        return check_log_level(value)

    @field_validator("replicas")
    @classmethod
    def _check_replicas(cls, value: str) -> str:
        parse_targets(value)
        return value

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        return SidecarSettings._check_listen(value)
