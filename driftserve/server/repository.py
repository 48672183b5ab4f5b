"""The model repository: what is on disk, what is loaded, and which version answers a request.

Layout (like Triton's): ``<root>/<model>/config.yaml`` and ``<root>/<model>/<version>/model.onnx``.
Loading happens on a background thread and swaps the routing table of a model atomically
(blue-green): requests keep flowing to the old versions until the new ones are loaded and warm;
a load that fails, whatever the exception, leaves the previous versions serving and records why.

Model names are plain directory names (``MODEL_NAME``), never paths, and a model's directory and
the files read from it must resolve inside the repository: no name a client sends, and no symlink
in the repository, makes the server read a file outside it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import zlib
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from driftserve.core import gil_cpu
from driftserve.core.config import (
    CONFIG_FILENAME,
    MODEL_FILENAME,
    BatchingConfig,
    ModelConfig,
    load_model_config,
    parse_version,
    version_number,
)
from driftserve.core.errors import ConfigError, DriftserveError, InvalidArgument, NotFound, Unavailable, clip, clip_list
from driftserve.core.model import ModelVersion, load_model_version
from driftserve.server.batcher import Batcher
from driftserve.server.metrics import ServerMetrics
from driftserve.server.statistics import ModelStatistics

logger = logging.getLogger(__name__)

READY, LOADING, UNAVAILABLE, UNLOADING = "READY", "LOADING", "UNAVAILABLE", "UNLOADING"
# A model name: a plain directory name, so never "..", a separator or anything a shell would quote.
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def check_model_name(name: str) -> None:
    """Refuse a model name that is not a plain directory name (INVALID_ARGUMENT).

    Names reach the file system on load, so ``../elsewhere`` must never be joined to the root.
    """
    if MODEL_NAME.fullmatch(name) is None:
        raise InvalidArgument(
            f"model name '{clip(name)}' is not valid: expected 1 to 128 of the characters A-Z a-z 0-9 _ . -, "
            "starting with a letter or a digit"
        )


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
    # Set by a rollout (driftserve.server.rollout): the default version and the canary weights,
    # overriding deployment.served_version and deployment.canary while set.
    primary: int | None = None
    canary: dict[int, float] | None = None

    @property
    def ready(self) -> bool:
        return bool(self.versions)

    def default_version(self) -> ServedVersion:
        """The rollout's primary, else ``served_version`` if loaded, else the highest loaded version
        that is not the shadow."""
        if self.primary is not None and self.primary in self.versions:
            return self.versions[self.primary]
        deployment = self.config.deployment if self.config else None
        if deployment is not None and deployment.served_version in self.versions:
            return self.versions[deployment.served_version]
        shadow = deployment.shadow_version if deployment is not None else None
        highest = max(self.versions)  # per request: no list built unless the shadow is the highest
        if highest == shadow and len(self.versions) > 1:
            highest = max(v for v in self.versions if v != shadow)
        return self.versions[highest]


class ModelRepository:
    """Loads, unloads and routes the models of one repository directory."""

    def __init__(self, root: Path, metrics: ServerMetrics, default_slo_p99_ms: float | None = None) -> None:
        self.root = root
        self.metrics = metrics
        # The server's --slo-p99-ms, for models with batching on whose config sets no objective.
        self.default_slo_p99_ms = default_slo_p99_ms
        self.models: dict[str, ModelEntry] = {}
        self._load_executor = ThreadPoolExecutor(
            max_workers=2, thread_name_prefix="model-load", initializer=gil_cpu.release
        )
        # Retired versions draining in the background; held so the loop does not drop the tasks.
        self._retiring: set[asyncio.Task[None]] = set()
        # Awaited after every successful load (the server uses it to turn ready after its start).
        self.on_loaded: list[Callable[[], Awaitable[None]]] = []
        # Model -> the one version a (re)load serves, set by rollouts so that a restart serves the
        # rollout's primary rather than the newest version on disk.
        self.pinned: dict[str, int] = {}

    def _batching(self, config: ModelConfig) -> BatchingConfig:
        """The model's batching config, with the server's default objective when it sets none."""
        batching = config.batching
        if self.default_slo_p99_ms is None or batching.slo_p99_ms is not None or not batching.enabled:
            return batching
        return batching.model_copy(update={"slo_p99_ms": self.default_slo_p99_ms})

    # ------------------------------------------------------------------ discovery
    def scan(self) -> list[str]:
        """Names of the model directories under the root (hidden and ``_`` folders skipped).

        Directories the server refuses to serve (see ``refused``) are left out.
        """
        return self._scan()[0]

    def refused(self) -> dict[str, str]:
        """Directories of the root that are not served, and why: a bad name, or outside the root."""
        return self._scan()[1]

    def _scan(self) -> tuple[list[str], dict[str, str]]:
        if not self.root.is_dir():
            raise ConfigError(f"model repository {self.root} is not a directory")
        root = self.root.resolve()
        names: list[str] = []
        refused: dict[str, str] = {}
        for path in self.root.iterdir():
            name = path.name
            if name.startswith((".", "_")) or not _is_dir(path):
                continue
            if MODEL_NAME.fullmatch(name) is None:
                refused[name] = (
                    f"{path}: not served: a model name is 1 to 128 of the characters A-Z a-z 0-9 _ . -, "
                    "starting with a letter or a digit"
                )
            elif not _inside(path, root):
                refused[name] = f"{path}: not served: it resolves outside the model repository {root}"
            else:
                names.append(name)
        return sorted(names), refused

    def _versions_on_disk(self, model_dir: Path) -> list[int]:
        """Version directories holding a model file, named as the version reads ("7", not "07");
        other names ("²", "v1", 20 digits) are skipped."""
        versions = []
        for path in model_dir.iterdir():
            number = version_number(path.name)
            if number is not None and path.name == str(number) and _is_dir(path) and (path / MODEL_FILENAME).is_file():
                versions.append(number)
        return sorted(versions)

    def _model_dir(self, name: str) -> Path:
        """The directory of model ``name``: INVALID_ARGUMENT for a bad name or a directory that
        resolves outside the repository (nothing is recorded for it), NOT_FOUND for none."""
        check_model_name(name)
        model_dir = self.root / name
        if not _is_dir(model_dir):
            raise NotFound(f"model '{name}' is not in the repository {self.root}")
        root = self.root.resolve()
        if not _inside(model_dir, root):
            raise InvalidArgument(f"{model_dir}: resolves outside the model repository {root}; refusing to read it")
        return model_dir

    def _check_inside(self, *paths: Path) -> None:
        """Refuse to read a file that resolves outside the repository (a symlink out of it)."""
        root = self.root.resolve()
        for path in paths:
            if not _inside(path, root):
                raise ConfigError(f"{path}: resolves outside the model repository {root}; refusing to read it")

    # ------------------------------------------------------------------ load / unload
    async def load_all(self, only: list[str] | None = None) -> None:
        """Load every model found (or only the models ``only`` names); failures are recorded per
        model and do not stop the others."""
        names, refused = self._scan()
        if only is not None:
            names = list(only)
            refused = {name: reason for name, reason in refused.items() if name in only}
        for reason in refused.values():
            logger.warning("%s", reason)
        results = await asyncio.gather(*(self.load(name) for name in names), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, DriftserveError):
                raise result

    async def load(self, name: str) -> None:
        """(Re)load a model from disk; on failure the previously served versions stay.

        Any exception of a load (an unreadable file, a bad config, ONNX Runtime refusing a graph)
        becomes a ConfigError naming the file, recorded as the model's reason: one bad model never
        stops the others, nor the server's start.
        """
        model_dir = self._model_dir(name)
        entry = self.models.setdefault(name, ModelEntry(name))
        async with entry.loading:
            loop = asyncio.get_running_loop()
            try:
                self._check_inside(model_dir / CONFIG_FILENAME)
                config = await loop.run_in_executor(self._load_executor, load_model_config, model_dir)
                on_disk = self._versions_on_disk(model_dir)
                pinned = self.pinned.get(name)
                chosen = [pinned] if pinned in on_disk else config.version_policy.select(on_disk)
                if not chosen:
                    raise ConfigError(
                        f"{model_dir}: no version to serve (on disk: {on_disk or 'none'}; "
                        f"version_policy: {config.version_policy.model_dump(exclude_none=True)})"
                    )
                paths = {v: model_dir / str(v) / MODEL_FILENAME for v in chosen}
                self._check_inside(*paths.values())
                for version in chosen:
                    entry.states[version] = (LOADING, "")
                    self.metrics.set_model_state(name, str(version), LOADING)
                loaded = await asyncio.gather(
                    *(
                        loop.run_in_executor(self._load_executor, load_model_version, name, v, paths[v], config)
                        for v in chosen
                    ),
                    return_exceptions=True,
                )
                for version, result in zip(chosen, loaded):
                    if isinstance(result, BaseException):
                        raise _as_load_error(result, paths[version])
            except Exception as caught:
                exc = _as_load_error(caught, model_dir)
                entry.reason = exc.message
                for version, (state, _) in list(entry.states.items()):
                    if state == LOADING:
                        keep = version in entry.versions
                        entry.states[version] = (READY if keep else UNAVAILABLE, "" if keep else exc.message)
                        self.metrics.set_model_state(name, str(version), READY if keep else UNAVAILABLE)
                logger.error("loading model %s failed (previous versions keep serving): %s", name, exc.message)
                if exc is caught:
                    raise
                raise exc from caught
            new_versions = {
                m.version: ServedVersion(m, Batcher(m, self._batching(config), stats, self.metrics), stats)
                for m in loaded
                if isinstance(m, ModelVersion)
                for stats in [ModelStatistics()]
            }
            retired = list(entry.versions.values())
            entry.config, entry.versions, entry.reason = config, new_versions, ""
            entry.primary = pinned if pinned in new_versions else None
            entry.canary = None
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
        for callback in list(self.on_loaded):
            await callback()

    async def unload(self, name: str) -> None:
        """Stop serving a model; in-flight and queued requests finish first."""
        check_model_name(name)
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

    # ------------------------------------------------------------------ single versions (rollouts)
    def versions_on_disk(self, name: str) -> list[int]:
        """The complete version directories of model ``name`` (those holding a ``model.onnx``)."""
        return self._versions_on_disk(self._model_dir(name))

    async def load_candidate(self, name: str, version: int) -> ServedVersion:
        """Load and warm one version with the model's current config, without routing to it.

        The load runs on the loader threads while the served versions keep answering. Errors are
        ConfigError naming the file (a missing, half-written or corrupt ``model.onnx``).
        """
        model_dir = self._model_dir(name)
        entry = self.entry(name)
        path = model_dir / str(version) / MODEL_FILENAME
        self._check_inside(path)
        if not path.is_file():
            raise ConfigError(
                f"{path}: no such file; a version is picked up once its model.onnx is complete "
                "(write it elsewhere, then rename it into place)"
            )
        loop = asyncio.get_running_loop()
        config = await loop.run_in_executor(self._load_executor, load_model_config, model_dir)
        entry.states[version] = (LOADING, "")
        self.metrics.set_model_state(name, str(version), LOADING)
        try:
            model = await loop.run_in_executor(self._load_executor, load_model_version, name, version, path, config)
        except Exception as caught:
            exc = _as_load_error(caught, path)
            entry.states[version] = (UNAVAILABLE, exc.message)
            self.metrics.set_model_state(name, str(version), UNAVAILABLE)
            raise exc from caught
        stats = ModelStatistics()
        return ServedVersion(model, Batcher(model, config.batching, stats, self.metrics), stats)

    def add_version(self, name: str, served: ServedVersion) -> None:
        """Make a loaded version routable (pinned requests, canary weights); the default is unchanged."""
        entry = self.entry(name)
        entry.versions = {**entry.versions, served.version: served}
        entry.states[served.version] = (READY, "")
        self.metrics.set_model_state(name, str(served.version), READY)

    async def retire_version(
        self, name: str, version: int, served: ServedVersion | None = None, reason: str = ""
    ) -> None:
        """Stop routing to one version and drain it: requests it took finish on it first."""
        entry = self.entry(name)
        served = entry.versions.get(version, served)
        if version in entry.versions:
            entry.versions = {v: s for v, s in entry.versions.items() if v != version}
        if entry.canary:
            entry.canary = {v: w for v, w in entry.canary.items() if v != version}
        entry.states[version] = (UNAVAILABLE, reason or "unloaded")
        self.metrics.set_model_state(name, str(version), UNAVAILABLE)
        if served is not None:
            await served.batcher.close()

    async def close(self) -> None:
        """Drain every batcher (used at shutdown, after the gRPC server stopped)."""
        await asyncio.gather(*(s.batcher.close() for e in self.models.values() for s in e.versions.values()))
        self._load_executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ lookup and routing
    def entry(self, name: str) -> ModelEntry:
        entry = self.models.get(name)
        if entry is None:
            raise NotFound(f"unknown model '{clip(name)}'; available: {clip_list(sorted(self.models))}")
        return entry

    def route(self, name: str, version: str = "", request_id: str = "") -> ServedVersion:
        """The version that answers a request: pinned, canary-split, or the default."""
        entry = self.entry(name)
        if not entry.versions:
            raise Unavailable(f"model '{name}' is not ready: {entry.reason or 'still loading'}")
        if version:
            number = parse_version(version)
            served = entry.versions.get(number)
            if served is None:
                state, reason = entry.states.get(number, ("", ""))
                if state:
                    raise Unavailable(f"model '{name}' version {number} is {state}: {reason}")
                raise NotFound(
                    f"model '{name}' has no version {number}; served versions: {clip_list(sorted(entry.versions))}"
                )
            return served
        canary = entry.canary if entry.canary is not None else entry.config.deployment.canary if entry.config else {}
        if canary:
            draw = (zlib.crc32(request_id.encode()) / 2**32) if request_id else random.random()
            for canary_version, weight in sorted(canary.items()):
                if draw < weight and canary_version in entry.versions:
                    return entry.versions[canary_version]
                draw -= weight
        return entry.default_version()

    def index(self) -> list[tuple[str, str, str, str]]:
        """(model, version, state, reason) for every model directory and known version.

        Directories that are refused (bad name, outside the root) are listed UNAVAILABLE with why.
        """
        rows: list[tuple[str, str, str, str]] = []
        names, refused = self._scan()
        for name in names:
            entry = self.models.get(name)
            if entry is None or not entry.states:
                rows.append((name, "", UNAVAILABLE if entry else "", entry.reason if entry else "not loaded"))
                continue
            for version, (state, reason) in sorted(entry.states.items()):
                rows.append((name, str(version), state, reason or entry.reason if state != READY else ""))
        rows.extend((name, "", UNAVAILABLE, reason) for name, reason in sorted(refused.items()))
        return rows


def _is_dir(path: Path) -> bool:
    """``path.is_dir()``, False where even that cannot be told (permissions, a broken link)."""
    try:
        return path.is_dir()
    except OSError:
        return False


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path``, symlinks resolved, lies inside the (resolved) repository ``root``."""
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        return False


def _as_load_error(exc: BaseException, path: Path) -> DriftserveError:
    """A load failure as the domain error recorded for the model: domain errors as they are,
    anything else (OSError, UnicodeDecodeError, ONNX Runtime's own types) naming the file."""
    if isinstance(exc, DriftserveError):
        return exc
    return ConfigError(f"{path}: cannot be loaded: {type(exc).__name__}: {exc}")
