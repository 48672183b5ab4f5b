"""What the benchmark scripts share: starting the servers under test on loopback and stopping them,
and the Markdown tables of their reports.

Ports come from :func:`driftserve.core.ports.free_port`, the machine description from
:mod:`driftserve.core.machine`, processes from :mod:`driftserve.core.processes`.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import grpc

from driftserve.api import grpc_service_pb2, grpc_service_pb2_grpc
from driftserve.core.commandline import driftserve_command
from driftserve.core.cpus import format_cpu_set
from driftserve.core.ports import free_port
from driftserve.core.processes import start_process

logger = logging.getLogger(__name__)

READY_TIMEOUT_S = 90.0
_ALIGN_RULE = {"l": "---", "r": "---:"}


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> list[str]:
    """Lines of a Markdown table, so all reports lay tables out alike; align: 'l'/'r' per column, default 'lrr…'."""
    align = align or "l" + "r" * (len(header) - 1)
    if len(align) != len(header) or set(align) - set(_ALIGN_RULE):
        raise ValueError(f"align {align!r} does not give 'l' or 'r' for each of {len(header)} columns")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(_ALIGN_RULE[a] for a in align) + "|"]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"row has {len(row)} cells, header {len(header)}: {row!r}")
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return lines


class ServerProcess:
    """A server subprocess reachable at `target`; `stop()` sends SIGTERM, then SIGKILL."""

    def __init__(
        self,
        label: str,
        command: list[str],
        port: int,
        log_path: Path,
        ready_check: str = "v2",
        env: dict[str, str] | None = None,
    ) -> None:
        self.label, self.port, self.ready_check = label, port, ready_check
        self.target = f"127.0.0.1:{port}"
        self.log_path = log_path
        log_path.write_text("")
        logger.info("starting %s: %s", label, " ".join(command))
        self.child = start_process(label, command, env=env, output=log_path)
        self.proc = self.child.process

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Poll V2 ServerReady (or grpc.health for the sidecar) until true; RuntimeError if the
        process dies or time runs out. ``ready_check="line"`` waits for the process's own
        ``DRIFTSERVE_READY`` line instead: with several processes on one port, a probe of the port
        may be answered by another one."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout_s
        if self.ready_check == "line":  # the child's reader parses the ready line as it comes
            if self.child.wait_ready(timeout_s):
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode}; see {self.log_path}")
            raise RuntimeError(f"{self.label} not ready within {timeout_s:g} s; see {self.log_path}")
        with grpc.insecure_channel(self.target) as channel:
            stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.label} exited with {self.proc.returncode}; see {self.log_path}")
                try:
                    if self.ready_check == "health":
                        status = health.Check(health_pb2.HealthCheckRequest(), timeout=1.0).status
                        if status == health_pb2.HealthCheckResponse.SERVING:
                            return
                    elif stub.ServerReady(grpc_service_pb2.ServerReadyRequest(), timeout=1.0).ready:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
        raise RuntimeError(f"{self.label} not ready within {timeout_s:g} s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                logger.warning("%s ignored SIGTERM; killing it", self.label)
                self.child.kill()


def start_driftserve(
    repository: Path,
    log_dir: Path,
    extra_args: list[str] | None = None,
    label: str = "driftserve",
    cpus: str | None = None,
    source: Path | None = None,
) -> ServerProcess:
    """`driftserve serve` on free loopback gRPC and metrics ports, REST off unless ``extra_args`` sets
    ``--http-port``; ``cpus`` pins it (taskset list); ``source``: run that source tree's build."""
    port, metrics = free_port(), free_port()
    command = driftserve_command(
        "serve",
        "--model-repository",
        str(repository),
        "--host",
        "127.0.0.1",
        "--grpc-port",
        str(port),
        "--metrics-port",
        str(metrics),
        "--http-port",
        "-1",
        "--log-level",
        "WARNING",
        *(extra_args or []),  # a later --http-port wins
    )
    if cpus:
        command = ["taskset", "-c", cpus, *command]
    return ServerProcess(label, from_source(command, source), port, log_dir / f"{label}.log")


def from_source(command: list[str], source: Path | None) -> list[str]:
    """``command`` run with the driftserve of the source tree ``source`` (another build), if given:
    from that directory and with it first on ``PYTHONPATH`` (children start with ``python -P``, so
    the working directory alone would not do)."""
    return command if source is None else ["env", "-C", str(source), f"PYTHONPATH={source}", *command]


def start_sidecar(
    repository: Path, log_dir: Path, http_port: int = -1, listen: str | None = None, source: Path | None = None
) -> tuple[ServerProcess, str]:
    """The drift sidecar on a free loopback port (or ``listen``, to restart one on the same address);
    returns it and its mirror address. ``http_port`` serves its /metrics (-1: off); ``source``: run
    that source tree's build."""
    listen = listen or f"127.0.0.1:{free_port()}"
    port = int(listen.rpartition(":")[2])
    command = driftserve_command(
        "sidecar",
        "--model-repository",
        str(repository),
        "--listen",
        listen,
        "--http-port",
        str(http_port),
        "--log-level",
        "WARNING",
    )
    return ServerProcess("sidecar", from_source(command, source), port, log_dir / "sidecar.log", "health"), listen


def start_naive(repository: Path, log_dir: Path, label: str = "naive") -> ServerProcess:
    """The naive baseline server on a free loopback port."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "benchmarks.naive_server",
        "--model-repository",
        str(repository),
        "--port",
        str(port),
    ]
    return ServerProcess(label, command, port, log_dir / f"{label}.log")


def start_grpc_ceiling(
    repository: Path,
    log_dir: Path,
    yield_once: bool = False,
    frontend: str = "cq",
    label: str | None = None,
    shared_port: int | None = None,
    reply_sender: bool = True,
    gil_cpu: str = "auto",
    cpu_set: list[int] | None = None,
) -> ServerProcess:
    """The transport-ceiling server (bare gRPC front end, canned replies) on a free loopback port,
    or with SO_REUSEPORT on ``shared_port`` beside other ceiling processes (``--workers``' ceiling);
    ``reply_sender`` and ``gil_cpu`` as driftserve's ``--reply-sender`` and ``--gil-cpu``; ``cpu_set``
    confines it to those CPUs, as ``--pin-workers`` does a worker."""
    port = free_port() if shared_port is None else shared_port
    label = label or ("grpc_ceiling_yield" if yield_once else "grpc_ceiling")
    command = [
        sys.executable,
        "-m",
        "benchmarks.grpc_ceiling",
        "--model-repository",
        str(repository),
        "--port",
        str(port),
        *(["--yield-once"] if yield_once else []),
        *(["--reuse-port"] if shared_port is not None else []),
        *([] if reply_sender else ["--reply-sender", "off"]),
        "--gil-cpu",
        gil_cpu,
        *(["--cpu-set", format_cpu_set(cpu_set)] if cpu_set else []),
        "--frontend",
        frontend,
    ]
    ready_check = "v2" if shared_port is None else "line"
    return ServerProcess(label, command, port, log_dir / f"{label}.log", ready_check=ready_check)
