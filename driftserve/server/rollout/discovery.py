"""Repository polling: a new complete version of a managed model starts its rollout by itself.

A version is complete once ``<model>/<version>/model.onnx`` exists: write the file elsewhere (or
under another name in the directory) and rename it into place, which is atomic on one file
system. A version directory without ``model.onnx`` is not picked up yet; a ``model.onnx`` that is
truncated or corrupt is picked up and fails its gate with the reason. Versions that failed or were
rolled back are not tried again by polling (``driftserve models load`` retries one explicitly).
"""

from __future__ import annotations

import asyncio
import logging

from driftserve.core.errors import DriftserveError
from driftserve.server.repository import ModelRepository
from driftserve.server.rollout.controller import RolloutController

logger = logging.getLogger(__name__)


def new_version(repository: ModelRepository, controller: RolloutController, name: str) -> int | None:
    """The version of ``name`` to roll out now, if any: the newest complete one above every
    loaded version that was not rejected, for a loaded managed model with no rollout running."""
    entry = repository.models.get(name)
    if entry is None or not entry.ready or entry.config is None or not entry.config.deployment.managed:
        return None
    if controller.active(name):
        return None
    rejected = controller.rejected(name)
    newest_loaded = max(entry.versions)
    fresh = [v for v in repository.versions_on_disk(name) if v > newest_loaded and str(v) not in rejected]
    return max(fresh) if fresh else None


class RepositoryPoller:
    """Looks for new versions every ``interval_s`` seconds on the event loop (directory listings only)."""

    def __init__(self, repository: ModelRepository, controller: RolloutController, interval_s: float) -> None:
        self.repository = repository
        self.controller = controller
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="repository-poller")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def poll_once(self) -> list[tuple[str, int]]:
        """Start a rollout for every model with a new version; returns (model, version) started."""
        started = []
        for name in list(self.repository.models):
            try:
                version = new_version(self.repository, self.controller, name)
            except (DriftserveError, OSError) as exc:
                logger.warning("polling model %s: %s", name, getattr(exc, "message", exc))
                continue
            if version is not None:
                logger.info("model %s: new version %d found in the repository", name, version)
                self.controller.begin(name, version)
                started.append((name, version))
        return started

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.poll_once()
            except Exception:  # the poller must outlive one bad listing
                logger.exception("repository polling failed")
