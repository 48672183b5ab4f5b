"""Fixtures shared by the whole suite: the example repository, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from examples.build_repository import build_repository


@pytest.fixture(scope="session")
def example_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example model repository (breast_cancer_lr v1+v2, breast_cancer_mlp), built locally."""
    return build_repository(tmp_path_factory.mktemp("examples") / "repository")
