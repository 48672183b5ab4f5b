"""The model repository: what is on disk, what is loaded, and which version answers a request.

Layout (like Triton's): ``<root>/<model>/config.yaml`` and ``<root>/<model>/<version>/model.onnx``.
Loading happens on a background thread and swaps the routing table of a model atomically
(blue-green): requests keep flowing to the old versions until the new ones are loaded and warm;
a load that fails leaves the previous versions serving and records why.
"""

from __future__ import annotations

import asyncio
import logging
import random
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from driftserve.core.config import MODEL_FILENAME, ModelConfig, load_model_config
from driftserve.core.errors import ConfigError, DriftserveError, InvalidArgument, NotFound, Unavailable
from driftserve.core.model import ModelVersion, load_model_version
from driftserve.server.batcher import Batcher
from driftserve.server.metrics import ServerMetrics
from driftserve.server.statistics import ModelStatistics

logger = logging.getLogger(__name__)

READY, LOADING, UNAVAILABLE, UNLOADING = "READY", "LOADING", "UNAVAILABLE", "UNLOADING"


@dataclass
class ServedVersion:
    """A loaded version with its batcher and statistics: what a request is routed to."""

    model: ModelVersion
    batcher: Batcher
    statistics: ModelStatistics

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def version(self) -> int:
        return self.model.version


@dataclass
class ModelEntry:
    """One model of the repository and the state of its versions."""

    name: str
    config: ModelConfig | None = None
    versions: dict[int, ServedVersion] = field(default_factory=dict)
    states: dict[int, tuple[str, str]] = field(default_factory=dict)
    reason: str = ""
    loading: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def ready(self) -> bool:
        return bool(self.versions)

    def default_version(self) -> ServedVersion:
        """``served_version`` if loaded, else the highest loaded version that is not the shadow."""
        deployment = self.config.deployment if self.config else None
        if deployment is not None and deployment.served_version in self.versions:
            return self.versions[deployment.served_version]
        shadow = deployment.shadow_version if deployment is not None else None
        candidates = [v for v in self.versions if v != shadow] or list(self.versions)
        return self.versions[max(candidates)]


class ModelRepository:
    """Loads, unloads and routes the models of one repository directory."""

    def __init__(self, root: Path, metrics: ServerMetrics) -> None:
        self.root = root
        self.metrics = metrics
        self.models: dict[str, ModelEntry] = {}
        self._load_executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="model-load")
        # Retired versions draining in the background; held so the loop does not drop the tasks.
        self._retiring: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ discovery
    def scan(self) -> list[str]:
        """Names of the model directories under the root (hidden and ``_`` folders skipped)."""
        if not self.root.is_dir():
            raise ConfigError(f"model repository {self.root} is not a directory")
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))

    def _versions_on_disk(self, model_dir: Path) -> list[int]:
        return sorted(
            int(p.name)
            for p in model_dir.iterdir()
            if p.is_dir() and p.name.isdigit() and (p / MODEL_FILENAME).is_file()
        )

    # ------------------------------------------------------------------ load / unload
    async def load_all(self) -> None:
        """Load every model found; failures are recorded per model and do not stop the others."""
        results = await asyncio.gather(*(self.load(name) for name in self.scan()), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, DriftserveError):
                raise result

    async def load(self, name: str) -> None:
        """(Re)load a model from disk; on failure the previously served versions stay."""
        model_dir = self.root / name
        if not model_dir.is_dir():
            raise NotFound(f"model '{name}' is not in the repository {self.root}")
        entry = self.models.setdefault(name, ModelEntry(name))
        async with entry.loading:
            loop = asyncio.get_running_loop()
            try:
                config = await loop.run_in_executor(self._load_executor, load_model_config, model_dir)
                on_disk = self._versions_on_disk(model_dir)
                chosen = config.version_policy.select(on_disk)
                if not chosen:
                    raise ConfigError(
                        f"{model_dir}: no version to serve (on disk: {on_disk or 'none'}; "
                        f"version_policy: {config.version_policy.model_dump(exclude_none=True)})"
                    )
                for version in chosen:
                    entry.states[version] = (LOADING, "")
                    self.metrics.set_model_state(name, str(version), LOADING)
                loaded = await asyncio.gather(
                    *(
                        loop.run_in_executor(
                            self._load_executor,
                            load_model_version,
                            name,
                            v,
                            model_dir / str(v) / MODEL_FILENAME,
                            config,
                        )
                        for v in chosen
                    ),
                    return_exceptions=True,
                )
                failed = [r for r in loaded if isinstance(r, BaseException)]
                if failed:
                    raise failed[0] if isinstance(failed[0], DriftserveError) else ConfigError(str(failed[0]))
            except DriftserveError as exc:
                entry.reason = exc.message
                for version, (state, _) in list(entry.states.items()):
                    if state == LOADING:
                        keep = version in entry.versions
                        entry.states[version] = (READY if keep else UNAVAILABLE, "" if keep else exc.message)
                        self.metrics.set_model_state(name, str(version), READY if keep else UNAVAILABLE)
                logger.error("loading model %s failed (previous versions keep serving): %s", name, exc.message)
                raise
            new_versions = {
                m.version: ServedVersion(m, Batcher(m, config.batching, stats, self.metrics), stats)
                for m in loaded
                if isinstance(m, ModelVersion)
                for stats in [ModelStatistics()]
            }
            retired = list(entry.versions.values())
            entry.config, entry.versions, entry.reason = config, new_versions, ""
            for version in list(entry.states):
                if version not in new_versions:
                    entry.states.pop(version)
                    self.metrics.set_model_state(name, str(version), UNAVAILABLE)
            for version in new_versions:
                entry.states[version] = (READY, "")
                self.metrics.set_model_state(name, str(version), READY)
            logger.info("model %s serving versions %s", name, sorted(new_versions))
        for served in retired:
            task = loop.create_task(served.batcher.close())
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def unload(self, name: str) -> None:
        """Stop serving a model; in-flight and queued requests finish first."""
        entry = self.models.get(name)
        if entry is None:
            raise NotFound(f"model '{name}' is not loaded")
        async with entry.loading:
            retired = list(entry.versions.values())
            entry.versions = {}
            for version in list(entry.states):
                entry.states[version] = (UNLOADING, "")
                self.metrics.set_model_state(name, str(version), UNLOADING)
            await asyncio.gather(*(s.batcher.close() for s in retired))
            for version in list(entry.states):
                entry.states[version] = (UNAVAILABLE, "unloaded")
                self.metrics.set_model_state(name, str(version), UNAVAILABLE)
            entry.reason = "unloaded"
        logger.info("model %s unloaded", name)

    async def close(self) -> None:
        """Drain every batcher (used at shutdown, after the gRPC server stopped)."""
        await asyncio.gather(*(s.batcher.close() for e in self.models.values() for s in e.versions.values()))
        self._load_executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ lookup and routing
    def entry(self, name: str) -> ModelEntry:
        entry = self.models.get(name)
        if entry is None:
            raise NotFound(f"unknown model '{name}'; available: {sorted(self.models)}")
        return entry

    def route(self, name: str, version: str = "", request_id: str = "") -> ServedVersion:
        """The version that answers a request: pinned, canary-split, or the default."""
        entry = self.entry(name)
        if not entry.versions:
            raise Unavailable(f"model '{name}' is not ready: {entry.reason or 'still loading'}")
        if version:
            if not version.isdigit():
                raise InvalidArgument(f"model version must be a positive integer, got '{version}'")
            served = entry.versions.get(int(version))
            if served is None:
                state, reason = entry.states.get(int(version), ("", ""))
                if state:
                    raise Unavailable(f"model '{name}' version {version} is {state}: {reason}")
                raise NotFound(f"model '{name}' has no version {version}; served versions: {sorted(entry.versions)}")
            return served
        canary = entry.config.deployment.canary if entry.config else {}
        if canary:
            draw = (zlib.crc32(request_id.encode()) / 2**32) if request_id else random.random()
            for canary_version, weight in sorted(canary.items()):
                if draw < weight and canary_version in entry.versions:
                    return entry.versions[canary_version]
                draw -= weight
        return entry.default_version()

    def index(self) -> list[tuple[str, str, str, str]]:
        """(model, version, state, reason) for every model directory and known version."""
        rows: list[tuple[str, str, str, str]] = []
        for name in self.scan():
            entry = self.models.get(name)
            if entry is None or not entry.states:
                rows.append((name, "", UNAVAILABLE if entry else "", entry.reason if entry else "not loaded"))
                continue
            for version, (state, reason) in sorted(entry.states.items()):
                rows.append((name, str(version), state, reason or entry.reason if state != READY else ""))
        return rows
