"""Native ``driftserve.v1.Models`` servicer: list, status, load, promote, rollback, unload.

Thin: it translates messages and delegates to the rollout controller; errors map to status codes
through ``abort_on_error`` like every other non-inference RPC.
"""

from __future__ import annotations

import math

import grpc

from driftserve.api import driftserve_pb2 as pb
from driftserve.core.config import parse_version
from driftserve.core.rollout_state import RolloutState
from driftserve.server.grpc_common import abort_on_error
from driftserve.server.registration import add_service
from driftserve.server.repository import ModelRepository
from driftserve.server.rollout.controller import RolloutController


def status_to_proto(name: str, state: RolloutState | None) -> pb.RolloutStatus:
    """A model's rollout state as the wire message (empty stage: never had a rollout)."""
    if state is None:
        return pb.RolloutStatus(model=name, step=-1)
    gate = state.analysis.get("gate", {})
    checks = [
        pb.AnalysisCheck(
            name=key,
            value=_num(value.get("value")),
            limit=_num(value.get("limit")),
            ok=bool(value.get("ok")),
            samples=int(value.get("samples") or 0),
            judged=bool(value.get("judged")),
        )
        for key, value in state.analysis.items()
        if key != "gate"
    ]
    return pb.RolloutStatus(
        model=state.model,
        stage=state.stage,
        step=state.step,
        weight=state.weight,
        candidate=str(state.candidate),
        primary=str(state.primary),
        previous="" if state.previous is None else str(state.previous),
        reason=state.reason,
        started_unix_s=state.started_unix_s,
        updated_unix_s=state.updated_unix_s,
        checks=checks,
        gate_metric=str(gate.get("metric") or ""),
        gate_score=_num(gate.get("score")),
        rejected=state.rejected,
    )


def _num(value: object) -> float:
    return float(value) if isinstance(value, int | float) else math.nan


class ModelsServicer:
    """The ``Models`` service over the repository and the rollout controller."""

    def __init__(self, repository: ModelRepository, controller: RolloutController) -> None:
        self.repository = repository
        self.controller = controller

    async def List(self, request: pb.ModelsListRequest, context: grpc.aio.ServicerContext) -> pb.ModelsListResponse:
        async def body() -> pb.ModelsListResponse:
            rows = []
            for name, version, state, reason in self.repository.index():
                rows.append(pb.ModelVersionRow(model=name, version=version, state=state, reason=reason))
                entry = self.repository.models.get(name)
                if entry is None or not version or not entry.versions:
                    continue
                number = int(version)
                rollout = self.controller.states.get(name)
                primary = entry.default_version().version
                canary = (
                    entry.canary
                    if entry.canary is not None
                    else (entry.config.deployment.canary if entry.config else {})
                )
                row = rows[-1]
                if number == primary:
                    row.role, row.weight = "primary", 1.0 - sum(w for v, w in canary.items() if v in entry.versions)
                elif rollout is not None and rollout.active and number == rollout.candidate:
                    row.role, row.weight = "candidate", canary.get(number, 0.0)
                elif rollout is not None and number == rollout.previous:
                    row.role = "previous"
                elif number in canary:
                    row.role, row.weight = "canary", canary[number]
            rollouts = [status_to_proto(n, s) for n, s in sorted(self.controller.states.items())]
            return pb.ModelsListResponse(versions=rows, rollouts=rollouts)

        return await abort_on_error(context, body)

    async def Status(self, request: pb.ModelRef, context: grpc.aio.ServicerContext) -> pb.RolloutStatus:
        async def body() -> pb.RolloutStatus:
            return status_to_proto(request.model, self.controller.status(request.model))

        return await abort_on_error(context, body)

    async def Load(self, request: pb.ModelRef, context: grpc.aio.ServicerContext) -> pb.ModelActionResponse:
        async def body() -> pb.ModelActionResponse:
            version = parse_version(request.version) if request.version else None
            message = await self.controller.request_load(request.model, version)
            return self._reply(request.model, message)

        return await abort_on_error(context, body)

    async def Promote(self, request: pb.ModelRef, context: grpc.aio.ServicerContext) -> pb.ModelActionResponse:
        async def body() -> pb.ModelActionResponse:
            return self._reply(request.model, await self.controller.promote(request.model))

        return await abort_on_error(context, body)

    async def Rollback(self, request: pb.ModelRef, context: grpc.aio.ServicerContext) -> pb.ModelActionResponse:
        async def body() -> pb.ModelActionResponse:
            return self._reply(request.model, await self.controller.rollback(request.model))

        return await abort_on_error(context, body)

    async def Unload(self, request: pb.ModelRef, context: grpc.aio.ServicerContext) -> pb.ModelActionResponse:
        async def body() -> pb.ModelActionResponse:
            version = parse_version(request.version) if request.version else None
            return self._reply(request.model, await self.controller.unload(request.model, version))

        return await abort_on_error(context, body)

    def _reply(self, name: str, message: str) -> pb.ModelActionResponse:
        return pb.ModelActionResponse(message=message, status=status_to_proto(name, self.controller.states.get(name)))


def add_models_servicer(servicer: ModelsServicer, server: grpc.aio.Server) -> None:
    """Register ``driftserve.v1.Models`` (a generic handler; undecodable messages INVALID_ARGUMENT)."""
    add_service(server, pb.DESCRIPTOR.services_by_name["Models"], pb, servicer, handles_undecodable=())
