"""The dashboard's rollout panel: each model's rollout stage and its latest analysis.

The server persists every rollout's state (``driftserve.core.rollout_state``) in its state
directory at each stage change and analysis interval; the sidecar reads the same files, so the
panel needs no call to the server. Plain HTML, like the rest of the page.
"""

from __future__ import annotations

import html
import math
import time
from pathlib import Path
from typing import Any

from driftserve.core.rollout_state import CANARY, FAILED, PRIMARY, ROLLED_BACK, RolloutState, StateStore

# Under the repository, where the server keeps it unless told otherwise (--state-dir).
DEFAULT_STATE_SUBDIR = (".driftserve", "rollouts")
STAGE_COLOURS = {PRIMARY: "#2e7d32", ROLLED_BACK: "#c62828", FAILED: "#c62828", CANARY: "#f9a825"}


def state_directory(repository: Path, state_dir: Path | None) -> Path:
    return state_dir if state_dir is not None else repository.joinpath(*DEFAULT_STATE_SUBDIR)


def render_rollouts(directory: Path) -> str:
    """The panel's HTML for the rollout states in ``directory`` ("" when there are none)."""
    states = StateStore(directory).load_all()
    if not states:
        return ""
    rows = "".join(_row(state) for state in sorted(states.values(), key=lambda s: s.model))
    head = (
        "<tr><th>model</th><th>stage</th><th>candidate</th><th>primary</th><th>weight</th>"
        "<th>analysis</th><th>reason</th><th>updated</th></tr>"
    )
    return f'<section id="rollouts"><h2>Rollouts</h2><table>{head}{rows}</table></section>'


def _row(state: RolloutState) -> str:
    colour = STAGE_COLOURS.get(state.stage, "#1565c0")
    stage = state.stage + (f" step {state.step + 1}" if state.stage == CANARY else "")
    updated = time.strftime("%H:%M:%S", time.gmtime(state.updated_unix_s))
    return (
        f"<tr><td>{_esc(state.model)}</td>"
        f'<td><span class="badge" style="background:{colour}">{_esc(stage)}</span></td>'
        f"<td>{state.candidate}</td><td>{state.primary}</td><td>{state.weight * 100:g}%</td>"
        f"<td>{_analysis(state.analysis)}</td><td>{_esc(state.reason)}</td><td>{updated} UTC</td></tr>"
    )


def _analysis(analysis: dict[str, dict[str, Any]]) -> str:
    parts = []
    gate = analysis.get("gate")
    if gate and gate.get("metric"):
        parts.append(f"gate {_esc(gate['metric'])} {_num(gate.get('score'))}")
    for name, check in analysis.items():
        if name == "gate":
            continue
        verdict = ("ok" if check.get("ok") else "BREACH") if check.get("judged") else "waiting"
        parts.append(f"{_esc(name)} {_num(check.get('value'))} / {_num(check.get('limit'))} ({verdict})")
    return "<br>".join(parts) or "–"


def _num(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) and math.isfinite(value) else "–"


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def with_panel(page: str, panel: str) -> str:
    """``page`` with ``panel`` placed just before its end (the hook the dashboard route uses)."""
    if not panel:
        return page
    at = page.rfind("</body>")
    return page[:at] + panel + page[at:] if at >= 0 else page + panel
