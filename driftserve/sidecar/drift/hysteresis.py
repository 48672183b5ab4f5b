"""Alert levels with hysteresis: when a feature's window enters or leaves ``warn`` and ``alert``.

Levels are ``ok`` (0) < ``warn`` (1) < ``alert`` (2). Each (model, feature, window) has a small
state machine: it rises to a higher level only after ``min_consecutive`` reports at or above it
(entry thresholds), and falls only after ``min_consecutive`` reports below the level under the
*clear* thresholds (entry thresholds times ``clear_ratio``), so a value hovering at a threshold
does not flap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

LEVELS: Mapping[str, int] = {"ok": 0, "warn": 1, "alert": 2}
LEVEL_NAMES = ("ok", "warn", "alert")


@dataclass(frozen=True)
class AlertTransition:
    """A change of level of one (model, feature, window), with the evidence behind it."""

    model: str
    feature: str
    window: str
    previous: str
    current: str
    timestamp: float
    reasons: list[str] = field(default_factory=list)


@dataclass
class _State:
    level: int = 0
    streak: int = 0


class HysteresisTracker:
    """Per-key level state machine; keys are ``(feature, window)`` within one model."""

    def __init__(self, min_consecutive: int) -> None:
        if min_consecutive < 1:
            raise ValueError(f"min_consecutive must be >= 1, got {min_consecutive}")
        self._min_consecutive = min_consecutive
        self._states: dict[tuple[str, str], _State] = {}

    def level(self, key: tuple[str, str]) -> int:
        """Current level of ``key`` (0 when never seen)."""
        state = self._states.get(key)
        return state.level if state else 0

    def step(self, key: tuple[str, str], enter_level: int, hold_level: int) -> tuple[int, int]:
        """Feed one report; returns ``(previous_level, new_level)``.

        ``enter_level`` is the level under the entry thresholds, ``hold_level`` (>= it) under the
        clear thresholds. The level rises to ``enter_level`` after ``min_consecutive`` reports
        above the current level and falls to ``hold_level`` after as many reports below it.
        """
        state = self._states.setdefault(key, _State())
        previous = state.level
        if enter_level > state.level or hold_level < state.level:
            state.streak += 1
            if state.streak >= self._min_consecutive:
                state.level = enter_level if enter_level > state.level else hold_level
                state.streak = 0
        else:
            state.streak = 0
        return previous, state.level

    def clear(self, key: tuple[str, str]) -> int:
        """Drop ``key``'s state (no data to judge); returns the level it had."""
        state = self._states.pop(key, None)
        return state.level if state else 0

    def reset(self) -> None:
        """Forget every key."""
        self._states.clear()
