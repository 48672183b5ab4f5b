"""What ``pip install driftserve`` puts on a machine: one top-level package, one entry point."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBCOMMANDS = ("serve", "run", "sidecar", "drift", "bench")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel ``pip`` builds from a copy of the sources (the checkout stays untouched)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "driftserve", src / "driftserve", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip_wheel, "-w", str(out), str(src)], check=True)
    (built,) = out.glob("driftserve-*.whl")
    return built


def test_wheel_holds_one_top_level_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names}
    dist_info = {t for t in top if t.endswith(".dist-info")}
    assert top - dist_info == {"driftserve"}
    assert "driftserve/api/grpc_service_pb2.py" in names and "driftserve/__main__.py" in names
    assert not [n for n in names if n.startswith(("driftserve/tests", "benchmarks/", "examples/"))]


def test_installed_into_a_fresh_environment_site_packages_gets_only_driftserve(wheel: Path, tmp_path: Path) -> None:
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env)
    python = env / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", str(wheel)],
        check=True,
    )
    (site,) = (env / "lib").glob("python3*/site-packages")
    installed = {p.name for p in site.iterdir() if not p.name.endswith((".dist-info", ".pth", "__pycache__"))}
    assert installed == {"driftserve"}
    assert (env / "bin" / "driftserve").exists()


def test_help_lists_every_subcommand() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "driftserve", "--help"], capture_output=True, text=True, check=True, timeout=60
    )
    for command in SUBCOMMANDS:
        assert command in done.stdout
    version = subprocess.run(
        [sys.executable, "-m", "driftserve", "--version"], capture_output=True, text=True, check=True, timeout=60
    )
    assert version.stdout.startswith("driftserve ")
