"""Fixtures of the sidecar tests: one small repository per session, a fresh sidecar per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import onnxruntime as ort
import pytest

from tests.sidecar.support import MODEL, InProcessSidecar, build_repository


@pytest.fixture(scope="session")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``cancer`` v1 (primary) and v2 (shadow) with a drift section and a reference profile."""
    return build_repository(tmp_path_factory.mktemp("sidecar") / "models")


@pytest.fixture(scope="session")
def primary(repository: Path) -> ort.InferenceSession:
    """ONNX Runtime on the primary version, computing the outputs a server would mirror."""
    return ort.InferenceSession(str(repository / MODEL / "1" / "model.onnx"), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="session")
def shadow_session(repository: Path) -> ort.InferenceSession:
    """ONNX Runtime on the shadow version, the oracle of the shadow comparison."""
    return ort.InferenceSession(str(repository / MODEL / "2" / "model.onnx"), providers=["CPUExecutionProvider"])


@pytest.fixture
def sidecar(repository: Path) -> Iterator[InProcessSidecar]:
    """A sidecar started in-process through ``create_sidecar`` on free ports."""
    with InProcessSidecar(repository) as running:
        yield running
