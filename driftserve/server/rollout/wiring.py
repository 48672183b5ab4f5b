"""The rollout machinery of one server process, built from its settings (the seam ``app`` uses)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from driftserve.core.rollout_state import StateStore
from driftserve.server.dataplane import DataPlane
from driftserve.server.repository import ModelRepository
from driftserve.server.rollout.controller import RolloutController
from driftserve.server.rollout.discovery import RepositoryPoller
from driftserve.server.rollout.metrics import RolloutMetrics
from driftserve.server.rollout.sidecar_shadow import ShadowTagging, SidecarShadow
from driftserve.server.settings import ServerSettings

# Under the repository, hidden (the repository's scan skips dot-directories).
DEFAULT_STATE_SUBDIR = (".driftserve", "rollouts")


@dataclass
class Rollouts:
    """The controller, and the poller when ``--poll-interval-s`` is set."""

    controller: RolloutController
    poller: RepositoryPoller | None

    async def start(self) -> None:
        """After the repository's first load: resume persisted rollouts, then start polling."""
        await self.controller.resume()
        if self.poller is not None:
            self.poller.start()

    async def close(self) -> None:
        if self.poller is not None:
            await self.poller.close()
        await self.controller.close()


def create_rollouts(
    settings: ServerSettings,
    repository: ModelRepository,
    dataplane: DataPlane,
    registry: CollectorRegistry,
    mirror: ShadowTagging | None = None,
) -> Rollouts:
    """Build the controller (it pins persisted primaries before the first load) and hook it in."""
    state_dir = settings.state_dir or settings.model_repository.joinpath(*DEFAULT_STATE_SUBDIR)
    sidecar = None
    if settings.mirror_address and mirror is not None:
        sidecar = SidecarShadow(settings.mirror_address, mirror)
    controller = RolloutController(repository, StateStore(state_dir), RolloutMetrics(registry), sidecar)
    dataplane.observer = controller
    poller = (
        RepositoryPoller(repository, controller, settings.poll_interval_s) if settings.poll_interval_s > 0 else None
    )
    return Rollouts(controller, poller)
