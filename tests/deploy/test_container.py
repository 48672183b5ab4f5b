"""The container image without a Docker engine: its install and start steps, run for real.

The Dockerfile holds no install logic of its own: it calls ``deploy/container/install.sh`` (one
step per layer) and starts ``deploy/container/entrypoint.sh``. Here the same steps run into a fresh
virtual environment (shared with tests/test_packaging.py), the Numba cache is warmed as the image
warms it, and the server starts through the entrypoint, answers health and an inference, and
stops on SIGTERM with exit code 0, without compiling a kernel the warm-up already compiled.
"""

from __future__ import annotations

import importlib.util
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from driftserve.api import grpc_service_pb2_grpc
from driftserve.core.processes import start_process
from examples.build_repository import load_split
from tests.deploy.manifests import documents, pod_specs
from tests.install_support import ENTRYPOINT, INSTALL_TIMEOUT_S, image_env, install
from tests.server.support import v2_request

START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 60.0
# The example model whose preprocessing runs on the Numba kernels.
NUMBA_MODEL = "breast_cancer_prep"

# The first test to run builds the shared environment (tests/conftest.py installed_venv).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(INSTALL_TIMEOUT_S)]


def cache_files(cache: Path) -> dict[str, tuple[int, int]]:
    """Every Numba cache file under ``cache``: relative path -> (size, mtime in ns)."""
    return {
        str(p.relative_to(cache)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in cache.rglob("*")
        if p.suffix in (".nbi", ".nbc")
    }


@pytest.fixture(scope="module")
def warm_cache(installed_venv: Path, example_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """NUMBA_CACHE_DIR after ``install.sh warm`` (the image's last install layer)."""
    cache = tmp_path_factory.mktemp("numba-cache")
    home = tmp_path_factory.mktemp("home")
    install(
        "warm",
        installed_venv,
        example_repository,
        env=image_env(installed_venv, NUMBA_CACHE_DIR=str(cache), HOME=str(home)),
    )
    return cache


def test_warm_up_compiles_the_kernels_of_server_and_sidecar(warm_cache: Path) -> None:
    indexes = {Path(name).parts[0].split("_")[0] for name in cache_files(warm_cache) if name.endswith(".nbi")}
    # driftserve/core/preprocessing (the server's request path) and driftserve/sidecar/drift (binning).
    assert indexes == {"preprocessing", "drift"}
    assert any(name.endswith(".nbc") for name in cache_files(warm_cache))


def seed_cache_command(source: Path, target: Path) -> list[str]:
    """The Deployment's seed-numba-cache init container command, copying ``source`` to ``target``."""
    (deployment,) = [
        d.body for d in documents() if d.body["kind"] == "Deployment" and d.body["metadata"]["name"] == "driftserve"
    ]
    (spec,) = pod_specs(deployment)
    (seed,) = [c for c in spec["initContainers"] if c["name"] == "seed-numba-cache"]
    *program, image_cache, _volume = seed["command"]
    return [*program, image_cache.replace(image_cache.removesuffix("/."), str(source)), f"{target}/"]


class ImageServer:
    """``entrypoint.sh server`` with the installed environment and a copy of the warmed cache."""

    def __init__(self, venv: Path, repository: Path, cache: Path, home: Path) -> None:
        models = [
            arg
            for d in sorted(repository.iterdir())
            if (d / "config.yaml").is_file()
            for arg in ("--load-model", d.name)
        ]
        argv = [
            str(ENTRYPOINT),
            "server",
            "--model-repository",
            str(repository),
            *models,
            "--host",
            "127.0.0.1",
            "--grpc-port",
            "0",
            "--metrics-port",
            "0",
        ]
        self.env = image_env(venv, NUMBA_CACHE_DIR=str(cache), HOME=str(home))
        self.child = start_process("image-server", argv, env=self.env, cwd=home, output="keep")
        if not self.child.wait_ready(START_TIMEOUT_S):
            self.child.kill()
            raise AssertionError("entrypoint.sh server did not become ready:\n" + self.child.output())
        self.address = f"127.0.0.1:{self.child.announced['grpc_port']}"


@pytest.fixture
def image_server(
    installed_venv: Path, example_repository: Path, warm_cache: Path, tmp_path: Path
) -> Iterator[ImageServer]:
    # Kubernetes seeds the pod's writable cache volume with a copy of the image's cache: start
    # from a copy made by that init container's own command (deploy/kubernetes/deployment.yaml).
    cache = tmp_path / "numba-cache"
    cache.mkdir()
    subprocess.run(seed_cache_command(warm_cache, cache), check=True, timeout=60)
    home = tmp_path / "home"
    home.mkdir()
    server = ImageServer(installed_venv, example_repository, cache, home)
    try:
        yield server
    finally:
        server.child.kill()


def test_server_starts_from_the_entrypoint_serves_and_stops_on_sigterm_reusing_the_cache(
    image_server: ImageServer, installed_venv: Path, example_repository: Path, tmp_path: Path
) -> None:
    cache = Path(image_server.env["NUMBA_CACHE_DIR"])
    before = cache_files(cache)
    with grpc.insecure_channel(image_server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        raw, _, _ = load_split(example_repository / NUMBA_MODEL / "data" / "holdout.npz")
        reply = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            v2_request(NUMBA_MODEL, raw[:4].astype(np.float32)), timeout=30
        )
    probabilities = np.frombuffer(reply.raw_output_contents[1], np.float32).reshape(4, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)

    # The image's HEALTHCHECK command, pointed at this server.
    healthcheck = subprocess.run(
        [str(ENTRYPOINT), "healthcheck", image_server.address],
        env=image_server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert healthcheck.returncode == 0 and "SERVING" in healthcheck.stdout, healthcheck.stdout + healthcheck.stderr

    assert image_server.child.terminate(STOP_TIMEOUT_S) == 0, image_server.child.output()
    # A cache hit reads the index and the object file; a miss compiles and writes both. Nothing
    # written means every kernel the server needed came from the copied cache, and no file in the
    # installed package's own tree (numba's fallback when the cache directory is unusable) either.
    assert cache_files(cache) == before
    (site,) = (installed_venv / "lib").glob("python3*/site-packages")
    assert not list((site / "driftserve").rglob("*.nbi"))

    after_stop = subprocess.run(
        [str(ENTRYPOINT), "healthcheck", image_server.address],
        env=image_server.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert after_stop.returncode == 1 and "UNAVAILABLE" in after_stop.stdout, after_stop.stdout


def test_entrypoint_refuses_an_unknown_role() -> None:
    done = subprocess.run([str(ENTRYPOINT), "serverr"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "unknown role 'serverr'" in done.stderr and "server, sidecar, run" in done.stderr


def test_install_script_refuses_an_unknown_step(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(ENTRYPOINT.parent / "install.sh"), "wheels", str(tmp_path / "venv"), "dist", "c.txt"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and "unknown step 'wheels'" in done.stderr
    assert not (tmp_path / "venv").exists()


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["python", "driftserve", "serve"], {}, "127.0.0.1:8001"),
        (
            ["python", "driftserve", "run", "--sidecar-listen", "127.0.0.1:9003"],
            {"DRIFTSERVE_GRPC_PORT": "9001"},
            "127.0.0.1:9001",
        ),
        (["python", "driftserve", "sidecar"], {}, "127.0.0.1:8003"),
        (["python", "driftserve", "sidecar"], {"DRIFTSERVE_SIDECAR_LISTEN": "0.0.0.0:9003"}, "127.0.0.1:9003"),
        (
            ["python", "driftserve", "sidecar"],
            {"DRIFTSERVE_HEALTHCHECK_ADDRESS": "unix:/run/s.sock"},
            "unix:/run/s.sock",
        ),
    ],
)
def test_health_check_asks_the_process_the_container_runs(
    argv: list[str], env: dict[str, str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = importlib.util.spec_from_file_location("healthcheck", ENTRYPOINT.parent / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    healthcheck = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(healthcheck)
    for name in ("DRIFTSERVE_HEALTHCHECK_ADDRESS", "DRIFTSERVE_SIDECAR_LISTEN", "DRIFTSERVE_GRPC_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(healthcheck, "main_process_argv", lambda: argv)
    assert healthcheck.default_address() == expected
