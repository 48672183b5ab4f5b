"""``driftserve serve --workers N``: N server processes on one port, one aggregated /metrics.

One process is bound by the GIL around gRPC and protobuf, so past one core the way to scale is
more processes. Each worker binds the same gRPC and REST ports with SO_REUSEPORT (the kernel
spreads new connections across them) and runs its own batchers. Metrics use prometheus_client's
multiprocess mode: workers write to files in a shared directory, and this parent serves their
aggregate on the metrics port.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path

from prometheus_client import CollectorRegistry, multiprocess

from driftserve.core.cpus import affinity, format_cpu_set, partition_cpus
from driftserve.core.ports import free_port
from driftserve.core.processes import (
    Child,
    forward_sighup,
    start_child,
    stop_children,
    stop_signals,
    supervise,
    wait_ready,
)
from driftserve.core.startup import StartupError, bind_problem, probe_tcp_port
from driftserve.server.metrics import start_metrics_server
from driftserve.server.settings import ServerSettings, sends_beside_loop, serve_argv

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Created by the parent once every worker is ready; until then each worker reports not ready. The
# kernel spreads connections over every worker that listens, loading or not, so a probe answered
# by the first worker to finish loading must not send traffic to the others.
FLEET_READY_NAME = "fleet-ready"


def run_workers(settings: ServerSettings) -> int:
    """Start the workers, serve aggregated metrics, supervise until a signal; exit code."""
    _check_metrics_port(settings)
    _check_http_port(settings)
    shares = _cpu_shares(settings)
    port = settings.grpc_port or free_port(settings.host)
    # Port 0 would give each worker a port of its own: the parent picks the one they share.
    http_port = settings.http_port or free_port(settings.host)
    metrics_dir = tempfile.mkdtemp(prefix="driftserve-metrics-")
    fleet_ready = Path(metrics_dir, FLEET_READY_NAME)
    env = {MULTIPROC_ENV: metrics_dir, "DRIFTSERVE_FLEET_READY_FILE": str(fleet_ready)}
    # Each child runs with --workers 1: the parent decides the sender from the CPUs they share.
    sender = "on" if sends_beside_loop(settings) else "off"
    argv = serve_argv(settings, grpc_port=port, http_port=http_port, metrics_port=-1, workers=1, reply_sender=sender)
    children = [
        start_child(f"worker-{i}", argv, {**env, "DRIFTSERVE_REUSE_PORT": "true", **shares[i]})
        for i in range(settings.workers)
    ]
    with stop_signals() as stop, forward_sighup(children, settings.auth_tokens_file is not None):
        try:
            return _serve_workers(settings, children, (port, http_port), metrics_dir, fleet_ready, stop)
        finally:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _cpu_shares(settings: ServerSettings) -> list[dict[str, str]]:
    """Per worker, the environment that confines it to its share of the CPUs (``--pin-workers``);
    StartupError when there are fewer CPUs than workers."""
    if not settings.pin_workers:
        return [{} for _ in range(settings.workers)]
    cpus = affinity()
    try:
        shares = partition_cpus(cpus, settings.workers)
    except ValueError:
        raise StartupError(
            f"--pin-workers needs a CPU of its own for each worker: {settings.workers} workers, but this process "
            f"may run on {len(cpus)} CPU(s) ({format_cpu_set(cpus)}); lower --workers or drop --pin-workers"
        ) from None
    logger.info("workers pinned to CPUs %s", " | ".join(format_cpu_set(share) for share in shares))
    return [{"DRIFTSERVE_CPU_SET": format_cpu_set(share)} for share in shares]


def _check_metrics_port(settings: ServerSettings) -> None:
    """The parent serves the workers' aggregated metrics: StartupError before any worker starts."""
    if settings.metrics_port <= 0:
        return
    try:
        probe_tcp_port(settings.host, settings.metrics_port)
    except OSError as exc:
        raise StartupError(
            f"metrics port {settings.metrics_port} on {settings.host} {bind_problem(exc)}; pick another with "
            "--metrics-port or DRIFTSERVE_METRICS_PORT (-1 turns metrics off)"
        ) from None


def _check_http_port(settings: ServerSettings) -> None:
    """A REST port another program holds: StartupError before any worker starts (they would each fail)."""
    if settings.http_port <= 0:
        return
    try:
        probe_tcp_port(settings.host, settings.http_port, reuse_port=True)
    except OSError as exc:
        raise StartupError(
            f"HTTP port {settings.http_port} on {settings.host} {bind_problem(exc)}; pick another with "
            "--http-port or DRIFTSERVE_HTTP_PORT (-1 turns REST off)"
        ) from None


def _stop_early(children: list[Child], settings: ServerSettings, stop: threading.Event) -> int:
    """Stop the workers before they all served (a signal, or one exited); the exit code: 0 only for
    a signal that every worker obeyed cleanly."""
    codes = stop_children(children, settings.grace_period_s)
    return 0 if stop.is_set() and all(code == 0 for code in codes) else 1


def _serve_workers(
    settings: ServerSettings,
    children: list[Child],
    ports: tuple[int, int],
    metrics_dir: str,
    fleet_ready: Path,
    stop: threading.Event,
) -> int:
    """Wait for every worker to load (as long as they run), let them report ready, serve the aggregated
    metrics, supervise."""
    if wait_ready(children, stop) is not None or stop.is_set():
        return _stop_early(children, settings, stop)
    httpd = None
    try:
        fleet_ready.touch(exist_ok=False)  # every worker has loaded: they may report ready now, each says when
        if wait_ready(children, stop, line=lambda child: child.serving) is not None or stop.is_set():
            return _stop_early(children, settings, stop)
        metrics_port = -1
        if settings.metrics_port >= 0:
            os.environ[MULTIPROC_ENV] = metrics_dir
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=metrics_dir)
            httpd = start_metrics_server(settings.metrics_port, settings.host, registry)
            metrics_port = httpd.server_port
        port, http_port = ports
        pids = ",".join(str(c.process.pid) for c in children)
        print(
            f"DRIFTSERVE_READY grpc_port={port} http_port={http_port} metrics_port={metrics_port} pids={pids}",
            flush=True,
        )
        logger.info("%d workers serving on %s:%d", len(children), settings.host, port)
        return supervise(children, settings.grace_period_s, stop)
    finally:
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
