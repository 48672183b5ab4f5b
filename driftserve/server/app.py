"""Assembling and running one server process: gRPC services, health, reflection, REST, metrics.

``create_server`` is the public factory tests use (port 0 allowed); ``serve`` adds signal
handling: SIGTERM/SIGINT flips health to NOT_SERVING, refuses new requests, lets in-flight ones
finish within the grace period, then returns 0. SIGHUP re-reads ``--auth-tokens-file``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from driftserve.api import driftserve_pb2, grpc_service_pb2
from driftserve.api._pool import reflection_pool
from driftserve.core import cq_server, gil_cpu
from driftserve.core.auth import TokenAuthority, reload_on_sighup
from driftserve.core.cpus import affinity, format_cpu_set, usable_cpus
from driftserve.core.grpc_auth import GenericHandlersOnly
from driftserve.core.heap import freeze_startup_heap
from driftserve.core.processes import SERVING_LINE
from driftserve.core.security import Security
from driftserve.core.startup import EXIT_FAILURE, StartupError, bind_problem, probe_tcp_port
from driftserve.server import grpc_core_shedding
from driftserve.server.dataplane import DataPlane
from driftserve.server.grpc_common import InferenceBoundary
from driftserve.server.grpc_models import ModelsServicer, add_models_servicer
from driftserve.server.grpc_native import PredictorServicer, add_predictor_servicer
from driftserve.server.grpc_v2 import InferenceServicer, add_inference_servicer
from driftserve.server.metrics import ServerMetrics, start_metrics_server
from driftserve.server.repository import ModelRepository
from driftserve.server.rest import RestServer, create_rest_app, rest_authorizer, start_rest
from driftserve.server.rollout.wiring import Rollouts, create_rollouts
from driftserve.server.security import SERVER_SCOPES, load_security
from driftserve.server.settings import ServerSettings, check_repository, gil_cpu_choice, sends_beside_loop

logger = logging.getLogger(__name__)

FLEET_CONTROL_REFUSAL = (
    "model control is not available with --workers > 1: each worker process has its own models, and this call "
    "would change only the worker that this connection reached; choose the models at start (--load-model) and "
    "restart the server to change them, or run with --workers 1 to load, unload and roll out while serving"
)

PENDING_HARD_LIMIT_FACTOR = 4

SERVICE_NAMES = (
    grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
    driftserve_pb2.DESCRIPTOR.services_by_name["Predictor"].full_name,
    driftserve_pb2.DESCRIPTOR.services_by_name["Models"].full_name,
)


@dataclass
class RunningServer:
    """A started server and the handles needed to stop it."""

    server: grpc.aio.Server
    port: int
    metrics_port: int
    dataplane: DataPlane
    repository: ModelRepository
    health: health_aio.HealthServicer
    metrics: ServerMetrics
    boundary: InferenceBoundary
    drain_s: float = 0.0
    http_port: int = -1  # the REST port (-1: REST off)
    _rest: RestServer | None = None
    _http: Any = None
    _mirror: Any = None
    rollouts: Rollouts | None = None
    # Set once the server is ready (see ``is_ready``): health SERVING and ServerReady true.
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    # The bearer tokens in force (None: no --auth-tokens-file); SIGHUP reloads them.
    authority: TokenAuthority | None = None
    # A worker of --workers waits for its siblings before it reports ready (see ``_when_file_exists``).
    _fleet_watch: asyncio.Task[None] | None = None

    async def stop(self, grace_s: float) -> None:
        """Graceful stop that finishes what it received, within ``grace_s``; then release all.

        Health turns NOT_SERVING at once (REST's /v2/health/ready answers 503). gRPC hands calls
        to Python one at a time, so calls it had already received may still wait in its queue:
        for ``drain_s`` every call is served as usual. Then new calls are refused with
        UNAVAILABLE, the requests being served (decoded, queued or computing, gRPC and REST
        alike) finish, and only then do the transports stop; gRPC cancels what is left when the
        grace period runs out, and the REST site stops listening and closes its connections
        once their answers are written.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        self.dataplane.stopping = True
        if self._fleet_watch is not None:
            self._fleet_watch.cancel()
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await asyncio.sleep(min(self.drain_s, grace_s))
        self.dataplane.accepting = False
        if not await self.boundary.wait_idle(deadline - loop.time()):
            logger.warning("grace period of %.1f s ran out with %d requests unanswered", grace_s, self.boundary.active)
        await self.server.stop(max(deadline - loop.time(), 0.0))
        if self._rest is not None:
            await self._rest.stop()
        if self.rollouts is not None:
            await self.rollouts.close()
        await self.repository.close()
        if self._mirror is not None:
            await self._mirror.close()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        logger.info("server stopped")

    async def _set_health(self, status: int) -> None:
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, status)


async def create_server(settings: ServerSettings, registry: CollectorRegistry | None = None) -> RunningServer:
    """Bind the ports, load the repository, and mark the process SERVING once it is ready.

    Ready means at least one model ready, or every ``load_models`` model ready when that list is
    set. A server that is not ready after the start stays NOT_SERVING (ServerReady false) and turns
    SERVING the first time a later load makes it ready; with ``exit_on_error`` a model that fails
    to load at start stops the server instead. What keeps the server from starting (a missing
    repository or model, a port in use) raises ``StartupError`` before anything is served.
    """
    check_repository(settings)
    security, mirror_credentials = load_security(settings)
    registry = registry if registry is not None else CollectorRegistry()
    metrics = ServerMetrics(registry)
    repository = ModelRepository(settings.model_repository, metrics, default_slo_p99_ms=settings.slo_p99_ms)
    repository.scan()
    mirror = None
    if settings.mirror_address:
        from driftserve.server.mirror import MirrorPublisher

        mirror = MirrorPublisher(
            settings.mirror_address,
            repository,
            registry,
            credentials=mirror_credentials.tls,
            token=mirror_credentials.token,
        )
    dataplane = DataPlane(repository, mirror)
    boundary = InferenceBoundary(dataplane, metrics)
    options = [
        ("grpc.max_receive_message_length", settings.max_receive_message_bytes),
        ("grpc.max_send_message_length", settings.max_send_message_bytes),
        ("grpc.so_reuseport", 1 if settings.workers > 1 or settings.reuse_port else 0),
    ]
    server: Any
    frontend = settings.grpc_frontend
    if frontend == "cq" and not cq_server.available():
        logger.warning("this grpcio lacks what the completion-queue front end needs; serving gRPC with grpc.aio")
        frontend = "aio"
    if frontend == "aio":
        # Calls gRPC received but grpc.aio's serving loop has not taken yet: past the soft limit
        # gRPC refuses new calls at once (random early drop up to the hard limit), so an
        # overloaded server answers in a millisecond instead of queueing calls until clients give
        # up. The cq front end takes calls from gRPC as they come and bounds its own backlog
        # instead (gRPC's default limits stay as a last resort there).
        options += [
            ("grpc.server.max_pending_requests", settings.max_pending_calls),
            ("grpc.server.max_pending_requests_hard_limit", PENDING_HARD_LIMIT_FACTOR * settings.max_pending_calls),
        ]
    if frontend == "cq":
        # Calls waiting for the loop beyond max_pending_calls are refused with RESOURCE_EXHAUSTED
        # and a retry hint by the front end itself, and counted.
        refused = metrics.backlog_refusals
        cpus = usable_cpus()
        beside = sends_beside_loop(settings, cpus)
        server = cq_server.CompletionQueueServer(
            options,
            max_pending_calls=settings.max_pending_calls,
            on_refused=lambda: refused.inc(),
            send_beside_loop=beside,
        )
        # Said once serving (a failed start keeps its single error line).
        writers = f"{cq_server.SENDER_THREADS} sender threads while calls overlap" if beside else "the event loop"
        replies = f"replies from {writers} (--reply-sender {settings.reply_sender}, {cpus:.3g} usable CPUs)"
    else:
        server = grpc.aio.server(options=options)
        replies = "replies from grpc.aio"
    if grpc_core_shedding.enabled(os.environ):
        logger.info(
            "gRPC refuses calls beyond %d pending with RESOURCE_EXHAUSTED (%s=%s)",
            settings.max_pending_calls,
            grpc_core_shedding.ENV,
            os.environ[grpc_core_shedding.ENV],
        )
    # Every service but health behind the bearer-token check when tokens are configured.
    rejected = metrics.auth_rejections
    services = GenericHandlersOnly(
        server, security.authority, SERVER_SCOPES, lambda reason: rejected.labels(reason).inc()
    )
    rollouts = create_rollouts(settings, repository, dataplane, registry, mirror)
    if settings.fleet_ready_file is not None:  # a worker of --workers
        rollouts.controller.control_refusal = FLEET_CONTROL_REFUSAL
    v2 = InferenceServicer(boundary, repository, rollouts.controller.request_load, rollouts.controller.unload)
    add_inference_servicer(v2, services)
    add_models_servicer(ModelsServicer(repository, rollouts.controller), services)
    add_predictor_servicer(PredictorServicer(boundary), services)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, GenericHandlersOnly(server))
    # enable_server_reflection would register its method; the aio servicer is what it would add.
    reflection_names = (
        *SERVICE_NAMES,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    )
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        reflection.aio.ReflectionServicer(reflection_names, pool=reflection_pool()), services
    )
    port = _bind_grpc(server, settings, security)
    running = RunningServer(
        server,
        port,
        -1,
        dataplane,
        repository,
        health,
        metrics,
        boundary,
        settings.drain_period_s,
        _mirror=mirror,
        authority=security.authority,
        rollouts=rollouts,
    )
    if settings.metrics_port >= 0:
        try:
            httpd = start_metrics_server(settings.metrics_port, settings.host, registry)
        except OSError as exc:
            await server.stop(None)
            raise StartupError(
                f"metrics port {settings.metrics_port} on {settings.host} {bind_problem(exc)}; pick another with "
                "--metrics-port or DRIFTSERVE_METRICS_PORT (-1 turns metrics off)"
            ) from None
        running._http = httpd
        running.metrics_port = httpd.server_port
    if settings.http_port >= 0:
        app = create_rest_app(
            boundary,
            repository,
            lambda: v2.started and dataplane.ready,
            settings.max_receive_message_bytes,
            authorize=rest_authorizer(security.authority, rejected),
            load=rollouts.controller.request_load,
            unload=rollouts.controller.unload,
        )
        try:
            running._rest = await start_rest(
                app,
                settings.host,
                settings.http_port,
                settings.workers > 1 or settings.reuse_port,
                settings.grace_period_s,
                ssl_context=security.tls.ssl_context() if security.tls is not None else None,
            )
        except StartupError:
            await server.stop(None)
            if running._http is not None:
                running._http.shutdown()
                running._http.server_close()
            raise
        running.http_port = running._rest.port
    await running._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
    await server.start()
    await repository.load_all(settings.load_models or None)
    await rollouts.start()
    if mirror is not None:
        mirror.start()
    failed = _failed_models(repository, settings.load_models)
    if failed and settings.exit_on_error:
        await running.stop(0.0)
        raise StartupError(
            f"--exit-on-error: {len(failed)} model(s) failed to load: "
            + "; ".join(f"{name}: {_one_line(reason)}" for name, reason in failed.items()),
            EXIT_FAILURE,
        )

    async def report_ready() -> None:
        """Tell clients and probes: ServerReady true, health SERVING (unless already stopping)."""
        if dataplane.stopping:
            return
        v2.started = True
        await running._set_health(health_pb2.HealthCheckResponse.SERVING)
        if settings.fleet_ready_file is not None:
            print(SERVING_LINE, flush=True)  # the parent of --workers waits for every worker's

    async def became_ready() -> None:
        if running.ready.is_set() or dataplane.stopping or not is_ready(repository, settings.load_models):
            return
        if settings.fleet_ready_file is None:
            await report_ready()
        else:  # a worker of --workers: ready to the outside only once all its siblings are
            running._fleet_watch = asyncio.get_running_loop().create_task(
                _when_file_exists(settings.fleet_ready_file, report_ready), name="fleet-ready"
            )
        running.ready.set()
        ready_models = [n for n, e in repository.models.items() if e.ready]
        logger.info(
            "serving %s on %s: gRPC :%d, REST :%d, metrics :%d, %s; %s",
            ready_models,
            settings.host,
            port,
            running.http_port,
            running.metrics_port,
            security.describe(),
            replies,
        )

    await became_ready()
    if not running.ready.is_set():
        wanted = settings.load_models or sorted(repository.models)
        logger.warning(
            "not ready: %s of %d model(s) %s loaded; health stays NOT_SERVING and ServerReady false until %s "
            "(RepositoryModelLoad after a fix); --exit-on-error exits instead",
            "none" if len(failed) == len(wanted) else f"{len(wanted) - len(failed)}",
            len(wanted),
            "listed with --load-model" if settings.load_models else "in the repository",
            "every listed model is ready" if settings.load_models else "a model is ready",
        )
        repository.on_loaded.append(became_ready)
    return running


async def _when_file_exists(path: Path, then: Callable[[], Awaitable[None]], poll_s: float = 0.05) -> None:
    """Await ``then()`` once ``path`` exists. The parent of ``--workers`` creates it when every worker
    has loaded its models; a poll every 50 ms costs nothing and needs no channel to the parent."""
    while not path.exists():
        await asyncio.sleep(poll_s)
    await then()


def is_ready(repository: ModelRepository, load_models: list[str]) -> bool:
    """Every model of ``load_models`` ready, or, when it is empty, at least one model ready."""
    if load_models:
        return all(name in repository.models and repository.models[name].ready for name in load_models)
    return any(entry.ready for entry in repository.models.values())


def _failed_models(repository: ModelRepository, load_models: list[str]) -> dict[str, str]:
    """The models that should have loaded and did not, with why."""
    names = load_models or sorted(repository.models)
    failed = {}
    for name in names:
        entry = repository.models.get(name)
        if entry is None or not entry.ready:
            failed[name] = entry.reason if entry is not None and entry.reason else "not loaded"
    return failed


def _one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line, clipped to ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _bind_grpc(server: grpc.aio.Server, settings: ServerSettings, security: Security) -> int:
    """Bind the gRPC port (TLS with ``--tls-cert``); StartupError naming the port and the flag when it cannot be."""
    fix = "pick another with --grpc-port or DRIFTSERVE_GRPC_PORT"
    where = f"gRPC port {settings.grpc_port} on {settings.host}"
    try:
        probe_tcp_port(settings.host, settings.grpc_port, settings.workers > 1 or settings.reuse_port)
    except socket.gaierror as exc:
        raise StartupError(
            f"host {settings.host!r} cannot be resolved ({exc.strerror}); pass an address of this machine with "
            "--host or DRIFTSERVE_HOST"
        ) from None
    except OSError as exc:
        raise StartupError(f"{where} {bind_problem(exc)}; {fix}") from None
    try:
        address = f"{settings.host}:{settings.grpc_port}"
        if security.tls is None:
            port = int(server.add_insecure_port(address))
        else:
            port = int(server.add_secure_port(address, security.tls.grpc_credentials()))
    except RuntimeError:
        port = 0
    if port == 0:
        raise StartupError(f"{where} cannot be bound; {fix}, or check --host / DRIFTSERVE_HOST")
    return port


def place_gil_threads(settings: ServerSettings) -> None:
    """``--gil-cpu``: once the server runs (gRPC core's threads exist, and keep every CPU), the loop,
    the poller and the senders move onto one CPU; a kernel refusal leaves them where they are."""
    choice = gil_cpu_choice(settings)
    why = settings.gil_cpu if choice.reason == settings.gil_cpu else f"{settings.gil_cpu}: {choice.reason}"
    mask = format_cpu_set(affinity())
    if choice.cpu is None:
        # Asked for and not done (one CPU, or siblings sharing the mask): say so louder.
        log = logger.warning if settings.gil_cpu == "on" else logger.info
        log("GIL threads on every CPU of %s (--gil-cpu %s)", mask, why)
        return
    try:
        gil_cpu.place(choice.cpu)
    except OSError as exc:
        logger.warning("GIL threads stay on every CPU of %s: cannot confine them to CPU %d: %s", mask, choice.cpu, exc)
        return
    logger.info(
        "GIL threads (event loop, gRPC poller, reply senders) on CPU %d of %s (--gil-cpu %s)",
        choice.cpu,
        mask,
        why,
    )


async def serve(settings: ServerSettings) -> int:
    """Run until SIGTERM or SIGINT, then shut down gracefully; returns the exit code."""
    # A process of its own: its CPU, memory, file descriptors and collector activity
    # (process_*, python_gc_*, python_info), as operators expect from any Prometheus target.
    registry = CollectorRegistry()
    for collector in (ProcessCollector, GCCollector, PlatformCollector):
        collector(registry=registry)
    loop = asyncio.get_running_loop()
    # Executor threads start with the mask of the loop that creates them; they run native work.
    loop.set_default_executor(ThreadPoolExecutor(thread_name_prefix="asyncio", initializer=gil_cpu.release))
    running = await create_server(settings, registry)
    place_gil_threads(settings)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reload_on_sighup(running.authority)
    if not running.ready.is_set():  # not ready yet: the ready line waits for a model to load
        waiters = [loop.create_task(running.ready.wait()), loop.create_task(stop.wait())]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    if running.ready.is_set() and not stop.is_set():
        frozen = freeze_startup_heap()
        logger.debug("froze %d start-up objects out of the collector's reach", frozen)
        print(
            f"DRIFTSERVE_READY grpc_port={running.port} http_port={running.http_port} "
            f"metrics_port={running.metrics_port}",
            flush=True,
        )
        await stop.wait()
    logger.info("signal received: draining for up to %.1f s", settings.grace_period_s)
    await running.stop(settings.grace_period_s)
    return 0
