"""The REST app's authorization hook (scopes, 401/403) and REST turned off with ``http_port=-1``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from aiohttp import web

from driftserve.core.errors import DriftserveError
from driftserve.server.rest import SCOPE_ADMIN, SCOPE_INFER, create_rest_app, start_rest
from tests.server.support import InProcessServer, copy_model


class Unauthenticated(DriftserveError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(DriftserveError):
    code = grpc.StatusCode.PERMISSION_DENIED


@pytest.fixture(scope="module")
def server(example_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    root = tmp_path_factory.mktemp("rest-hooks")
    copy_model(example_repository, root, "breast_cancer_lr")
    with InProcessServer(root, http_port=-1) as running:
        yield running


def test_rest_off(server: InProcessServer) -> None:
    assert server.running.http_port == -1


def test_authorize_sees_each_route_scope_and_its_errors_map_to_401_and_403(server: InProcessServer) -> None:
    seen: list[tuple[str, str]] = []

    async def authorize(request: web.Request, scope: str) -> None:
        seen.append((request.path, scope))
        if request.headers.get("Authorization") != "Bearer good":
            raise Unauthenticated("missing or unknown bearer token")
        if scope == SCOPE_ADMIN:
            raise PermissionDenied("this token lacks the admin scope")

    async def scenario() -> dict[str, int | str]:
        # Metadata only: these handlers never touch the server's own event loop.
        app = create_rest_app(server.running.boundary, server.running.repository, lambda: True, 1 << 20, authorize)
        rest = await start_rest(app, "127.0.0.1", 0, False, 1.0)
        base = f"http://127.0.0.1:{rest.port}"
        good = {"Authorization": "Bearer good"}
        out: dict[str, int | str] = {}
        try:
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{base}/v2/health/ready") as r:
                    out["ready"] = r.status
                async with session.get(f"{base}/v2/models/breast_cancer_lr") as r:
                    out["anonymous"] = r.status
                    out["anonymous_error"] = (await r.json())["error"]
                async with session.get(f"{base}/v2/models/breast_cancer_lr", headers=good) as r:
                    out["metadata"] = r.status
                async with session.post(f"{base}/v2/repository/models/breast_cancer_lr/unload", headers=good) as r:
                    out["unload"] = r.status
                    out["unload_error"] = (await r.json())["error"]
        finally:
            await rest.stop()
        return out

    out = asyncio.run(scenario())
    assert out == {
        "ready": 200,
        "anonymous": 401,
        "anonymous_error": "missing or unknown bearer token",
        "metadata": 200,
        "unload": 403,
        "unload_error": "this token lacks the admin scope",
    }
    # Health is open: the hook never saw it; the model is still loaded (unload was refused first).
    assert seen == [
        ("/v2/models/breast_cancer_lr", SCOPE_INFER),
        ("/v2/models/breast_cancer_lr", SCOPE_INFER),
        ("/v2/repository/models/breast_cancer_lr/unload", SCOPE_ADMIN),
    ]
    assert server.running.repository.models["breast_cancer_lr"].ready
