"""The package's import contract (pyproject.toml, ``[tool.importlinter]``) holds, and catches breaks.

Layers: ``cli`` > ``launcher`` > ``server | sidecar | bench`` (siblings, independent) > ``core`` >
``api``; and no import circle among the modules of any package. The second test breaks a copy of
the package on purpose, so the contract is known to fail when it should.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(cwd / "pyproject.toml"), "--no-cache"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_package_keeps_its_import_contracts() -> None:
    done = _lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 kept, 0 broken" in done.stdout


def test_a_circle_or_an_upward_import_breaks_the_contracts(tmp_path: Path) -> None:
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(ROOT / "driftserve", tmp_path / "driftserve", ignore=shutil.ignore_patterns("__pycache__"))
    # A circle: hysteresis <-> detector (the detector already imports hysteresis).
    hysteresis = tmp_path / "driftserve" / "sidecar" / "drift" / "hysteresis.py"
    hysteresis.write_text(hysteresis.read_text() + "\nfrom driftserve.sidecar.drift import detector  # noqa\n")
    # An upward import: core reaching into the server.
    errors = tmp_path / "driftserve" / "core" / "errors.py"
    errors.write_text(errors.read_text() + "\nimport driftserve.server.batcher  # noqa\n")
    done = _lint_imports(tmp_path)
    assert done.returncode != 0
    assert "0 kept, 2 broken" in done.stdout
    assert "driftserve.core.errors -> driftserve.server.batcher" in done.stdout
    assert "No cycles are allowed in driftserve.sidecar.drift" in done.stdout
