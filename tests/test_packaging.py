"""What ``pip install driftserve`` puts on a machine: one top-level package, one entry point."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.install_support import INSTALL_TIMEOUT_S

SUBCOMMANDS = ("serve", "run", "sidecar", "drift", "bench")


@pytest.mark.timeout(INSTALL_TIMEOUT_S)
def test_wheel_holds_one_top_level_package(driftserve_wheel: Path) -> None:
    names = zipfile.ZipFile(driftserve_wheel).namelist()
    top = {n.split("/", 1)[0] for n in names}
    dist_info = {t for t in top if t.endswith(".dist-info")}
    assert top - dist_info == {"driftserve"}
    assert "driftserve/api/grpc_service_pb2.py" in names and "driftserve/__main__.py" in names
    assert not [n for n in names if n.startswith(("driftserve/tests", "benchmarks/", "examples/"))]


# Builds the environment tests/deploy shares when it runs first (tests/conftest.py installed_venv).
@pytest.mark.timeout(INSTALL_TIMEOUT_S)
def test_installed_into_a_fresh_environment_driftserve_adds_only_its_package(installed_venv: Path) -> None:
    """The environment the image's install steps made (tests/conftest.py): the driftserve
    distribution put one package and one command there, and that command runs."""
    (site,) = (installed_venv / "lib").glob("python3*/site-packages")
    (dist_info,) = site.glob("driftserve-*.dist-info")
    record = (dist_info / "RECORD").read_text().splitlines()
    tops = {line.split(",", 1)[0].split("/", 1)[0] for line in record if line}
    assert tops == {"driftserve", dist_info.name, ".."}
    outside = {line.split(",", 1)[0] for line in record if line.startswith("../")}
    assert {Path(p).name for p in outside} == {"driftserve"}
    assert (installed_venv / "bin" / "driftserve").exists()
    version = subprocess.run(
        [str(installed_venv / "bin" / "driftserve"), "--version"], capture_output=True, text=True, timeout=60
    )
    assert version.returncode == 0 and version.stdout.startswith("driftserve "), version.stderr


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
