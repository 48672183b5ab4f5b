"""The sidecar's /dashboard in headless Chromium, against a real server and sidecar after a shift.

A client streams reference-like rows to ``cancer`` (served by a ``driftserve serve`` process that
mirrors to a ``driftserve sidecar`` process), then rows with one feature shifted, until the
sidecar alerts on that feature. Chromium then renders the page: its DOM must show the alert on
the shifted input and ok on every other input, and its screenshot must be a PNG of the window's
size. ``scripts/render_dashboard.py`` runs this test with ``DASHBOARD_SCREENSHOT`` set, which
keeps the screenshot (``docs/dashboard.png``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from driftserve.api import driftserve_pb2
from driftserve.core.ports import free_port
from tests import system_tools
from tests.server.support import ServerProcess
from tests.sidecar.support import (
    MODEL,
    SidecarProcess,
    build_repository,
    reference_rows,
    tensor,
    training_data,
    wait_for,
)

pytestmark = pytest.mark.slow

SHIFTED = "mean_concavity"
REQUEST_ROWS = 32
PAUSE_S = 0.01  # between requests: a few thousand rows/s, gentle on a shared machine
WINDOW = (1400, 2000)
SCREENSHOT_ENV = "DASHBOARD_SCREENSHOT"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class TrafficLoop:
    """A client thread sending ``REQUEST_ROWS``-row Predict calls; ``shift`` switches the rows."""

    def __init__(self, server: ServerProcess) -> None:
        x, _, names = training_data()
        self.reference = reference_rows(np.random.default_rng(41), 8192)
        self.shifted = self.reference.copy()
        self.shifted[:, names.index(SHIFTED)] += 0.5 * x[:, names.index(SHIFTED)].std()
        self.rows = self.reference
        self.sent = self.failed = 0
        self._server = server
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-traffic", daemon=True)

    def _run(self) -> None:
        with self._server.channel() as channel:
            stub = self._server.native(channel)
            i = 0
            while not self._stop.is_set():
                start = (i * REQUEST_ROWS) % (self.rows.shape[0] - REQUEST_ROWS)
                x = np.ascontiguousarray(self.rows[start : start + REQUEST_ROWS])
                request = driftserve_pb2.PredictRequest(model=MODEL, inputs=[tensor("input", x)])
                try:
                    stub.Predict(request, timeout=30)
                    self.sent += 1
                except Exception:
                    self.failed += 1
                i += 1
                time.sleep(PAUSE_S)

    def shift(self) -> None:
        self.rows = self.shifted

    def __enter__(self) -> TrafficLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A 10 s sliding window, so the shifted rows soon dominate it.
    drift = {"window": {"pane_seconds": 1.0, "panes": 10}}
    return build_repository(tmp_path_factory.mktemp("browser") / "models", drift=drift)


@pytest.fixture(scope="module")
def drifted(repository: Path) -> Iterator[tuple[int, TrafficLoop]]:
    """Server + sidecar processes with traffic running, after the sidecar alerted on ``SHIFTED``."""
    system_tools.chromium()  # skip, saying why, before starting anything
    address = f"127.0.0.1:{free_port()}"
    sidecar = SidecarProcess(repository, "--report-interval-s", "0.5", listen=address)
    try:
        with ServerProcess(repository, "--mirror-address", address) as server, TrafficLoop(server) as traffic:
            port = sidecar.http_port
            # Reference rows first, long enough for a flat start of every sparkline.
            wait_for(lambda: _api(port)["rows_seen"] >= 4000, 60.0, "4000 reference rows in the sidecar")
            time.sleep(5.0)
            assert _input_status(_api(port)) == {"ok"}, _api(port)["alerts"]
            traffic.shift()
            wait_for(lambda: _status_of(_api(port), SHIFTED) == "alert", 90.0, f"an alert on {SHIFTED}")
            time.sleep(3.0)  # a few more evaluations after the alert, for the sparkline
            yield port, traffic
            assert traffic.failed == 0
    finally:
        sidecar.kill()


def _api(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/drift/{MODEL}?window=sliding", timeout=30) as reply:
        return json.loads(reply.read())


def _inputs(doc: dict) -> dict[str, str]:
    return {f["feature"]: f["status"] for f in doc["features"] if f["kind"] == "input"}


def _input_status(doc: dict) -> set[str]:
    return set(_inputs(doc).values()) - {"insufficient"}


def _status_of(doc: dict, feature: str) -> str:
    return _inputs(doc).get(feature, "")


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    argv = [
        system_tools.chromium(),
        "--headless",
        "--no-sandbox",  # required as root, harmless otherwise
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        *args,
    ]
    return subprocess.run(argv, capture_output=True, text=True, timeout=90)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _rows_by_status(dom: str) -> dict[str, str]:
    """feature -> status of the feature table rows of inputs in the rendered DOM."""
    pattern = r'<tr data-feature="([^"]+)" data-kind="input" data-status="([^"]+)"'
    return dict(re.findall(pattern, dom))


@pytest.mark.timeout(600)  # two process starts, two phases of traffic, two browser runs; ~1 min normally
def test_browser_shows_the_alert_on_the_shifted_feature_only(drifted, tmp_path: Path) -> None:
    port, traffic = drifted
    url = f"http://127.0.0.1:{port}/dashboard"
    dom = _chromium("--dump-dom", url, profile=tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    statuses = _rows_by_status(dom.stdout)
    assert statuses[SHIFTED] == "alert", statuses
    others = {name: status for name, status in statuses.items() if name != SHIFTED}
    assert len(others) == 29 and set(others.values()) == {"ok"}, others
    assert f'data-alert="{SHIFTED}"' in dom.stdout  # listed under the model's alerts with its reasons
    assert "Server traffic seen by the sidecar" in dom.stdout and "Shadow comparison" in dom.stdout
    assert "<script" not in dom.stdout and traffic.sent > 0

    shot = tmp_path / "dashboard.png"
    result = _chromium(f"--screenshot={shot}", url, profile=tmp_path / "profile-shot")
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    assert _png_size(shot) == WINDOW
    keep = os.environ.get(SCREENSHOT_ENV)
    if keep:
        shutil.copyfile(shot, keep)
