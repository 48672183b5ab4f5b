"""The persisted state of one model's rollout: one small JSON file per model, written atomically.

The server's rollout controller writes it at every stage change (temporary file, fsync, then
``os.replace``: a crash leaves the old file or the new one, never half of one) and reads it back
at start, so a restarted server resumes the rollout where it was. The sidecar's dashboard reads
the same files, which is why this lives below both processes.

Stages: ``validating`` (the gate) → ``shadow`` → ``canary`` (step k) → ``primary``; or
``rolled_back`` / ``failed`` with the reason. Only one rollout per model exists at a time.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

VALIDATING, SHADOW, CANARY, PRIMARY = "validating", "shadow", "canary", "primary"
ROLLED_BACK, FAILED = "rolled_back", "failed"
STAGES = (VALIDATING, SHADOW, CANARY, PRIMARY, ROLLED_BACK, FAILED)
ACTIVE_STAGES = (VALIDATING, SHADOW, CANARY)
STATE_SUFFIX = ".json"
# Rejected versions remembered per model (a failed or rolled-back version is not tried again).
MAX_REJECTED = 64


@dataclass
class RolloutState:
    """Where one model's latest rollout stands; ``rejected`` outlives the rollouts."""

    model: str
    candidate: int
    primary: int
    stage: str = VALIDATING
    step: int = -1
    weight: float = 0.0
    reason: str = ""
    previous: int | None = None
    started_unix_s: float = field(default_factory=time.time)
    updated_unix_s: float = field(default_factory=time.time)
    # The last analysis: check name -> {value, limit, ok, samples}.
    analysis: dict[str, dict[str, Any]] = field(default_factory=dict)
    rejected: dict[str, str] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.stage in ACTIVE_STAGES

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True, allow_nan=False, default=str)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RolloutState:
        known = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        state = cls(**known)
        if state.stage not in STAGES:
            raise ValueError(f"unknown stage {state.stage!r}; expected one of {', '.join(STAGES)}")
        state.candidate, state.primary = int(state.candidate), int(state.primary)
        return state


class StateStore:
    """The directory of rollout state files, one ``<model>.json`` each."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, model: str) -> Path:
        return self.directory / f"{model}{STATE_SUFFIX}"

    def save(self, state: RolloutState, durable: bool = True) -> None:
        """Write atomically: a temporary sibling, fsync, then ``os.replace``.

        ``durable=False`` skips the fsync (still atomic): for the periodic analysis updates, which
        the event loop writes often and a crash may lose; stage changes are always durable."""
        state.updated_unix_s = time.time()
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(state.model)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(state.to_json())
                f.flush()
                if durable:
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def load(self, model: str) -> RolloutState | None:
        """The saved state of ``model``; None when there is none or it cannot be read (logged)."""
        path = self.path(model)
        if not path.is_file():
            return None
        try:
            return RolloutState.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            logger.error("rollout state %s cannot be read (ignored): %s", path, exc)
            return None

    def load_all(self) -> dict[str, RolloutState]:
        """Every readable state file of the directory, by model."""
        if not self.directory.is_dir():
            return {}
        states = {}
        for path in sorted(self.directory.glob(f"*{STATE_SUFFIX}")):
            state = self.load(path.name.removesuffix(STATE_SUFFIX))
            if state is not None:
                states[state.model] = state
        return states
