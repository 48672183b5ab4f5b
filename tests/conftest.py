"""Fixtures shared by the whole suite: the example repository, built once per session.

Servers the tests start never take the REST default port 8000 unless a test asks for a port:
``DRIFTSERVE_HTTP_PORT=-1`` is set here for every server process they start (``run_cli`` sets it
too, since it starts from a clean environment).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from examples.build_repository import build_repository
from tests.install_support import build_wheel, install_like_the_image

os.environ.setdefault("DRIFTSERVE_HTTP_PORT", "-1")


@pytest.fixture(scope="session")
def example_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example model repository (breast_cancer_lr v1+v2, breast_cancer_mlp), built locally."""
    return build_repository(tmp_path_factory.mktemp("examples") / "repository")


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port this test holds (bound and listening on 127.0.0.1)."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


@pytest.fixture(scope="session")
def driftserve_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The driftserve wheel, built once per session from a copy of the sources."""
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def installed_venv(driftserve_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment holding the wheel and its runtime dependencies, installed by the
    container image's own install steps (shared by the packaging and deploy tests: one install)."""
    return install_like_the_image(driftserve_wheel, tmp_path_factory.mktemp("image") / "venv")
