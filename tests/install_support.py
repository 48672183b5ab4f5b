"""Installing driftserve the way its container image does, for the packaging and deploy tests.

One wheel and one fresh virtual environment per test session (``tests/conftest.py`` holds the
fixtures), installed by ``deploy/container/install.sh``, the script the Dockerfile runs: CI pays
for one install, and the image's install steps are the ones tested.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTAINER_DIR = ROOT / "deploy" / "container"
INSTALL_SCRIPT = CONTAINER_DIR / "install.sh"
ENTRYPOINT = CONTAINER_DIR / "entrypoint.sh"
INSTALL_TIMEOUT_S = 900


def build_wheel(work: Path) -> Path:
    """The wheel ``pip`` builds from a copy of the sources (the checkout stays untouched)."""
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "driftserve", src / "driftserve", ignore=shutil.ignore_patterns("__pycache__"))
    out = work / "dist"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip_wheel, "-w", str(out), str(src)], check=True, timeout=INSTALL_TIMEOUT_S)
    (built,) = out.glob("driftserve-*.whl")
    return built


def image_env(venv: Path, **extra: str) -> dict[str, str]:
    """This process's environment as the image sets it up: the venv's bin first on PATH, no
    DRIFTSERVE_* or PYTHONPATH from here (they would configure or shadow the installed package)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTSERVE_") and k != "PYTHONPATH"}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHON"] = sys.executable
    env.update(extra)
    return env


def install(step: str, venv: Path, *args: str | Path, env: dict[str, str] | None = None) -> str:
    """Run ``install.sh STEP VENV ARGS...``; its output, or an AssertionError carrying it."""
    done = subprocess.run(
        ["bash", str(INSTALL_SCRIPT), step, str(venv), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        env=env or image_env(venv),
        cwd=venv.parent,
    )
    assert done.returncode == 0, f"install.sh {step} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def install_like_the_image(wheel: Path, venv: Path) -> Path:
    """A fresh ``venv`` with driftserve's runtime dependencies, then the wheel: the image's two
    install layers (``install.sh requirements`` and ``install.sh wheel``)."""
    install("requirements", venv, ROOT / "pyproject.toml", ROOT / "constraints.txt")
    install("wheel", venv, wheel.parent, ROOT / "constraints.txt")
    return venv
