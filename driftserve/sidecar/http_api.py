"""The sidecar's HTTP side: ``/metrics``, ``/api/drift[/<model>]``, ``/dashboard``, ``/healthz``.

A stdlib ``ThreadingHTTPServer`` in a daemon thread, like prometheus_client's own exporter: the
endpoints are read-only, low-rate and cheap, so no web framework is needed. A scrape first asks
the state for reports no older than the evaluation cadence, so gauges are fresh on scrape without
stepping the alert hysteresis faster than the cadence.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import grpc
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from driftserve.core.startup import StartupError, bind_problem
from driftserve.sidecar.dashboard import render_dashboard
from driftserve.sidecar.drift.detector import SLIDING
from driftserve.sidecar.monitor_service import window_filter
from driftserve.sidecar.report_source import ReportSource
from driftserve.sidecar.rollout_panel import render_rollouts, with_panel
from driftserve.sidecar.state import UnknownModel
from driftserve.sidecar.views import report_to_json

logger = logging.getLogger(__name__)

_JSON = "application/json"
_HTML = "text/html; charset=utf-8"


class SidecarHttpServer:
    """Owns the HTTP server thread; ``host`` and ``port`` are the bound address (port 0 picks one).

    It binds 127.0.0.1 unless ``--http-host`` says otherwise: the dashboard and API have no
    authentication, so they are for this machine (or a port-forward) by default.
    """

    def __init__(
        self, state: ReportSource, registry: CollectorRegistry, host: str, port: int, refresh_s: float
    ) -> None:
        handler = type("Handler", (_Handler,), {"state": state, "registry": registry, "refresh_s": refresh_s})
        self._httpd = ThreadingHTTPServer((host, port), handler)
        self._httpd.daemon_threads = True
        self.host = str(self._httpd.server_address[0])
        self.port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="sidecar-http", daemon=True)

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread.start()

    def close(self) -> None:
        """Stop serving and release the port."""
        self._httpd.shutdown()
        self._httpd.server_close()


class _Handler(BaseHTTPRequestHandler):
    state: ReportSource
    registry: CollectorRegistry
    refresh_s: float
    server_version = "driftserve-sidecar"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        path = url.path.rstrip("/") or "/"
        try:
            if path == "/metrics":
                self.state.refresh_all(self.refresh_s)
                self._send(HTTPStatus.OK, CONTENT_TYPE_LATEST, generate_latest(self.registry))
            elif path == "/api/drift":
                self._json(HTTPStatus.OK, {"models": sorted(self.state.models)})
            elif path.startswith("/api/drift/"):
                self._report(unquote(path[len("/api/drift/") :]), query.get("window", ""))
            elif path in ("/", "/dashboard"):
                self._dashboard(query.get("window", SLIDING))
            elif path == "/healthz":
                self._send(HTTPStatus.OK, "text/plain", b"ok\n")
            else:
                self._json(
                    HTTPStatus.NOT_FOUND,
                    {"error": f"no such path {url.path!r}; try /dashboard, /metrics, /api/drift or /api/drift/<model>"},
                )
        except (BrokenPipeError, ConnectionResetError):
            logger.debug("HTTP client %s went away", self.client_address)

    def _report(self, model: str, window: str) -> None:
        try:
            windows = window_filter(window)
            report = self.state.report(model)
        except ValueError as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        except UnknownModel as exc:
            self._json(HTTPStatus.NOT_FOUND, {"error": str(exc.args[0])})
            return
        self._json(HTTPStatus.OK, report_to_json(report, windows))

    def _dashboard(self, window: str) -> None:
        try:
            (window,) = window_filter(window or SLIDING)
        except ValueError as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        models = []
        for name in sorted(self.state.models):
            config = self.state.models[name].config.drift
            models.append((self.state.report(name), config))
        rollouts = self.state.rollout_state_dir
        page = render_dashboard(models, window)
        if rollouts is not None:
            page = with_panel(page, render_rollouts(rollouts))
        self._send(HTTPStatus.OK, _HTML, page.encode())

    def _json(self, status: HTTPStatus, doc: Any) -> None:
        self._send(status, _JSON, json.dumps(doc, allow_nan=False).encode())

    def _send(self, status: HTTPStatus, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("http %s " + format, self.client_address[0], *args)


async def open_http_and_load(
    server: grpc.aio.Server,
    source: ReportSource,
    registry: CollectorRegistry,
    host: str,
    port: int,
    report_interval_s: float,
    env_var: str,
    load: Callable[[], None],
) -> SidecarHttpServer | None:
    """Bind the HTTP side (None when ``port`` is -1), then run ``load`` in a thread; on any failure
    release the bound gRPC ``server`` and HTTP port and re-raise. A port that cannot be bound is a
    ``StartupError`` naming it and how to change it (``env_var``). Shared by the sidecar and the
    fleet aggregator, whose settings prefixes differ."""
    http: SidecarHttpServer | None = None
    try:
        if port >= 0:
            try:
                http = SidecarHttpServer(source, registry, host, port, report_interval_s)
            except OSError as exc:
                raise StartupError(
                    f"HTTP port {port} on {host} {bind_problem(exc)}; pick another with "
                    f"--http-port or {env_var} (-1 turns HTTP off)"
                ) from None
        await asyncio.to_thread(load)
    except BaseException:
        await server.stop(None)
        if http is not None:
            http.start()  # close() waits for the serving thread, so it needs one
            await asyncio.to_thread(http.close)
        raise
    return http
