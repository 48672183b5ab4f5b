"""Starting the servers under test as subprocesses on loopback, and stopping them cleanly."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc

from driftserve_api import grpc_service_pb2, grpc_service_pb2_grpc

logger = logging.getLogger(__name__)

READY_TIMEOUT_S = 90.0


def free_port() -> int:
    """A currently free loopback TCP port (the OS may hand it out again; good enough here)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A server subprocess reachable at `target`; `stop()` sends SIGTERM, then SIGKILL."""

    def __init__(self, label: str, command: list[str], port: int, log_path: Path) -> None:
        self.label, self.port = label, port
        self.target = f"127.0.0.1:{port}"
        self._log = log_path.open("w")
        logger.info("starting %s: %s", label, " ".join(command))
        self.proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Poll V2 ServerReady until true; RuntimeError if the process dies or time runs out."""
        deadline = time.monotonic() + timeout_s
        with grpc.insecure_channel(self.target) as channel:
            stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.label} exited with {self.proc.returncode}; "
                                       f"see {self._log.name}")
                try:
                    if stub.ServerReady(grpc_service_pb2.ServerReadyRequest(), timeout=1.0).ready:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
        raise RuntimeError(f"{self.label} not ready within {timeout_s:g} s; see {self._log.name}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                logger.warning("%s ignored SIGTERM; killing it", self.label)
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


def start_driftserve(repository: Path, log_dir: Path) -> ServerProcess:
    """`python -m server.cli serve` on free loopback gRPC and metrics ports."""
    port, metrics = free_port(), free_port()
    command = [sys.executable, "-m", "server.cli", "serve", "--model-repository", str(repository),
               "--host", "127.0.0.1", "--grpc-port", str(port), "--metrics-port", str(metrics)]
    return ServerProcess("driftserve", command, port, log_dir / "driftserve.log")


def start_naive(repository: Path, log_dir: Path, label: str = "naive") -> ServerProcess:
    """The naive baseline server on a free loopback port."""
    port = free_port()
    command = [sys.executable, "-m", "benchmarks.naive_server", "--model-repository",
               str(repository), "--port", str(port)]
    return ServerProcess(label, command, port, log_dir / f"{label}.log")
