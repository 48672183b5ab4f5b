"""Running the ``driftserve`` command as a user would, for the start-up tests of both processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m driftserve ARGV`` with no DRIFTSERVE_* variable from this environment but
    ``DRIFTSERVE_HTTP_PORT=-1`` (REST off unless ``--http-port`` or ``env`` says otherwise)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTSERVE_")}
    clean["DRIFTSERVE_HTTP_PORT"] = "-1"
    return subprocess.run(
        [sys.executable, "-m", "driftserve", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **(env or {})},
    )


def one_line(done: subprocess.CompletedProcess[str], code: int = 2) -> str:
    """The single stderr line of a failed start with exit code ``code``."""
    lines = done.stderr.splitlines()
    assert done.returncode == code, done.stderr
    assert len(lines) == 1 and lines[0].strip(), done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]
