"""Starting the peer servers from their own virtual environments (``benchmarks/peers/install.sh``).

Each ``start_*`` returns a :class:`benchmarks.common.ServerProcess` on free loopback ports, or
raises :class:`PeerUnavailable` with the reason (not installed, failed install); the benchmark
reports such a peer as skipped. driftserve and the naive floor start through
:mod:`benchmarks.common` as in the other benchmarks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from benchmarks.common import READY_TIMEOUT_S, ServerProcess
from benchmarks.peers.configs import write_mlserver_folder, write_triton_repository
from driftserve.api import grpc_service_pb2, grpc_service_pb2_grpc
from driftserve.core.ports import free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DEFAULT_PEERS_DIR = ROOT / ".peers"
INSTALL = "benchmarks/peers/install.sh"
# Which peer environment each server runs from.
ENVIRONMENTS = {"triton": "triton", "pytriton": "triton", "mlserver": "mlserver"}


class PeerUnavailable(RuntimeError):
    """A peer that cannot run here, and why."""


@dataclass(frozen=True)
class PeerEnv:
    """One installed peer environment and what its interpreter says about itself."""

    python: Path
    packages: str  # what install.sh installed (its .installed file)
    site_packages: Path
    lib_dir: Path  # the interpreter's own libpython directory
    version: str  # "3.11"

    @property
    def bin_dir(self) -> Path:
        return self.python.parent


_PROBE = (
    "import json, site, sys, sysconfig; print(json.dumps({'site': site.getsitepackages()[0], "
    "'lib': sysconfig.get_config_var('LIBDIR'), 'version': '%d.%d' % sys.version_info[:2]}))"
)


def peer_env(peers_dir: Path, name: str) -> PeerEnv:
    """The environment ``name`` (``triton`` or ``mlserver``) under ``peers_dir``, or PeerUnavailable."""
    venv = peers_dir / name
    if (venv / ".failed").exists():
        log = peers_dir / f"{name}-install.log"
        raise PeerUnavailable(f"{venv}: {(venv / '.failed').read_text().strip()} (log: {log})")
    if not (venv / ".installed").exists():
        raise PeerUnavailable(f"{venv} is not installed: run {INSTALL} {name}")
    python = venv / "bin" / "python"
    probe = subprocess.run([str(python), "-c", _PROBE], capture_output=True, text=True, timeout=60)
    if probe.returncode != 0:
        raise PeerUnavailable(f"{python} does not run: {probe.stderr.strip()[-500:]}")
    info = json.loads(probe.stdout)
    return PeerEnv(
        python, (venv / ".installed").read_text().strip(), Path(info["site"]), Path(info["lib"]), info["version"]
    )


def _library_path(*dirs: Path) -> str:
    return ":".join(str(d) for d in dirs)


def triton_environment(env: PeerEnv) -> dict[str, str]:
    """What tritonserver and its Python stub need: the stub embeds libpython and, unless told, loads the
    system's (whose build differs from the peer interpreter's standard library: it fails at start),
    so the interpreter's own lib directory comes first; the wheel's bundled libraries (libtritonserver,
    ...) next; the peer environment's bin on PATH and site-packages on PYTHONPATH so the stub imports
    numpy and onnxruntime from there."""
    return {
        "LD_LIBRARY_PATH": _library_path(env.lib_dir, env.site_packages / "nvidia_pytriton.libs"),
        "PATH": f"{env.bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "PYTHONPATH": str(env.site_packages),
    }


def prepare_backends(env: PeerEnv, dest: Path) -> Path:
    """A backend directory for tritonserver: the wheel's backends plus the Python stub built for the
    peer interpreter's version, where the Python backend looks for it (PyTriton does the same)."""
    dist = env.site_packages / "pytriton" / "tritonserver"
    stub = dist / "python_backend_stubs" / env.version / "triton_python_backend_stub"
    if not stub.exists():
        raise PeerUnavailable(f"the Triton wheel has no Python backend stub for Python {env.version} ({stub})")
    backends = dest / "backends"
    shutil.copytree(dist / "backends", backends)
    shutil.copy(stub, backends / "python" / "triton_python_backend_stub")
    return backends


def start_triton(env: PeerEnv, model: str, onnx: Path, workdir: Path, logs: Path) -> ServerProcess:
    """tritonserver with the Python-backend model repository, gRPC only, no GPU and no metrics."""
    repository = write_triton_repository(workdir / "triton_repository", model, onnx)
    backends = prepare_backends(env, workdir / "triton")
    port = free_port()
    command = [
        str(env.site_packages / "pytriton" / "tritonserver" / "bin" / "tritonserver"),
        f"--model-repository={repository}",
        f"--backend-directory={backends}",
        f"--cache-directory={env.site_packages / 'pytriton' / 'tritonserver' / 'caches'}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={port}",
        "--allow-http=false",
        "--allow-metrics=false",
        "--allow-gpu-metrics=false",
        "--log-verbose=0",
        "--log-info=false",
    ]
    return ServerProcess("triton", command, port, logs / "triton.log", env=triton_environment(env))


def start_pytriton(env: PeerEnv, model: str, onnx: Path, logs: Path) -> ServerProcess:
    """PyTriton binding a ``@batch`` function; it starts its own tritonserver (whose ports it owns)."""
    port = free_port()
    command = [
        str(env.python),
        str(HERE / "pytriton_server.py"),
        f"--onnx={onnx}",
        f"--name={model}",
        f"--grpc-port={port}",
        f"--http-port={free_port()}",
        f"--metrics-port={free_port()}",
    ]
    # PyTriton appends its bundled libraries itself; the stub still needs the interpreter's libpython.
    return ServerProcess("pytriton", command, port, logs / "pytriton.log", env={"LD_LIBRARY_PATH": str(env.lib_dir)})


def start_mlserver(env: PeerEnv, model: str, onnx: Path, workdir: Path, logs: Path) -> ServerProcess:
    """MLServer on a generated folder, through ``mlserver_launch.py`` (which adds ModelConfig)."""
    port = free_port()
    folder = write_mlserver_folder(workdir / "mlserver", model, onnx, (free_port(), port, free_port()))
    command = [str(env.python), str(HERE / "mlserver_launch.py"), str(folder)]
    return ServerProcess("mlserver", command, port, logs / "mlserver.log")


def wait_model_ready(server: ServerProcess, model: str, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Wait for the server, then for ``model`` (PyTriton's Triton is ready before the model is bound)."""
    deadline = time.monotonic() + timeout_s
    server.wait_ready(timeout_s)
    with grpc.insecure_channel(server.target) as channel:
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                break
            try:
                if stub.ModelReady(grpc_service_pb2.ModelReadyRequest(name=model), timeout=1.0).ready:
                    return
            except grpc.RpcError:
                pass  # not serving yet: ask again until the deadline
            time.sleep(0.2)
    raise RuntimeError(f"{server.label}: model {model} not ready within {timeout_s:g} s; see {server.log_path}")


def log_tail(path: Path, lines: int = 5) -> str:
    """The last lines of a server's log, for a skip reason."""
    try:
        return " | ".join(line.strip() for line in path.read_text().splitlines()[-lines:] if line.strip())
    except OSError:
        return ""
