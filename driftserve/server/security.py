"""What the server's security flags load into: its own TLS and tokens, and the mirror's credentials.

Loaded once in ``create_server`` (and checked before ``--workers`` starts any worker), so a
missing or unreadable file is one start-up line naming the flag, exit code 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from driftserve.api import driftserve_pb2, grpc_service_pb2
from driftserve.core.auth import ANY_SCOPE, SCOPE_ADMIN, SCOPE_INFER, read_token_file
from driftserve.core.grpc_auth import MethodScopes
from driftserve.core.security import Security
from driftserve.core.startup import StartupError
from driftserve.core.tls import channel_credentials
from driftserve.server.settings import ServerSettings

MIRROR_TLS_FLAGS = ("--mirror-tls-ca", "--mirror-tls-cert", "--mirror-tls-key")

# The scope of each call on the server's gRPC port; grpc.health.v1 needs none. V2 ServerLive and
# ServerReady are health checks too (Kubernetes probes and Triton's clients use them).
SERVER_SCOPES = {
    grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name: MethodScopes(
        SCOPE_INFER,
        {
            "ServerLive": None,
            "ServerReady": None,
            "RepositoryModelLoad": SCOPE_ADMIN,
            "RepositoryModelUnload": SCOPE_ADMIN,
        },
    ),
    driftserve_pb2.DESCRIPTOR.services_by_name["Predictor"].full_name: MethodScopes(SCOPE_INFER),
    # Rollout control: reading the state needs infer, changing it admin (as repository load/unload).
    driftserve_pb2.DESCRIPTOR.services_by_name["Models"].full_name: MethodScopes(
        SCOPE_ADMIN, {"List": SCOPE_INFER, "Status": SCOPE_INFER}
    ),
    # Reflection describes the public protocol: any valid token may read it.
    "grpc.reflection.v1alpha.ServerReflection": MethodScopes(ANY_SCOPE),
}


@dataclass(frozen=True)
class MirrorCredentials:
    """How the mirror channel authenticates: TLS credentials (None = plaintext) and a bearer token."""

    tls: grpc.ChannelCredentials | None = None
    token: str | None = None


def load_security(settings: ServerSettings) -> tuple[Security, MirrorCredentials]:
    """The server's ``Security`` and the mirror's credentials; ``StartupError`` naming a bad flag."""
    security = Security.load(settings.tls_cert, settings.tls_key, settings.tls_client_ca, settings.auth_tokens_file)
    mirror_tls = settings.mirror_tls_ca, settings.mirror_tls_cert, settings.mirror_tls_key
    if settings.mirror_address is None and (any(p is not None for p in mirror_tls) or settings.mirror_token_file):
        raise StartupError("--mirror-tls-* and --mirror-token-file need --mirror-address: there is no mirror to secure")
    if settings.mirror_tls_ca is None and (settings.mirror_tls_cert is not None or settings.mirror_tls_key is not None):
        raise StartupError("--mirror-tls-cert and --mirror-tls-key need --mirror-tls-ca: mutual TLS is TLS first")
    credentials = channel_credentials(*mirror_tls, flags=MIRROR_TLS_FLAGS) if settings.mirror_tls_ca else None
    token = (
        read_token_file(settings.mirror_token_file, "--mirror-token-file")
        if settings.mirror_token_file is not None
        else None
    )
    return security, MirrorCredentials(credentials, token)
