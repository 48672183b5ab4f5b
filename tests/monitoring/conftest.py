"""A live server mirroring to a live sidecar (in-process, free ports) and one scrape of each.

The shipped dashboards and rules are checked against what these two really export, so a renamed
metric or label fails a test instead of leaving an empty panel.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from driftserve.api import driftserve_pb2
from tests.server.support import InProcessServer, v2_request
from tests.sidecar.support import MODEL, InProcessSidecar, build_repository, reference_rows, tensor, wait_for

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
REQUESTS = 40
ROWS_PER_REQUEST = 16


@dataclass(frozen=True)
class Scrapes:
    """The /metrics text of the server and of the sidecar after some traffic."""

    server: str
    sidecar: str

    def labels_by_sample(self) -> dict[str, set[str]]:
        """Every exported sample name (``_bucket``, ``_total``, ...) and the label names it carries."""
        found: dict[str, set[str]] = {}
        for text in (self.server, self.sidecar):
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    found.setdefault(sample.name, set()).update(sample.labels)
        return found


def _traffic(server: InProcessServer) -> None:
    """OK requests on both protocols; a client error, an unknown model, an expired deadline (error codes)."""
    rows = reference_rows(np.random.default_rng(5), REQUESTS * ROWS_PER_REQUEST)
    with server.channel() as channel:
        v2, native = server.v2(channel), server.native(channel)
        for i in range(REQUESTS):
            x = np.ascontiguousarray(rows[i * ROWS_PER_REQUEST : (i + 1) * ROWS_PER_REQUEST])
            if i % 2:
                v2.ModelInfer(v2_request(MODEL, x), timeout=30)
            else:
                native.Predict(driftserve_pb2.PredictRequest(model=MODEL, inputs=[tensor("input", x)]), timeout=30)
        expired = v2_request(MODEL, rows[:2])
        expired.parameters["timeout"].int64_param = 1  # 1 µs: the batcher rejects it (reason "deadline")
        for bad in (v2_request(MODEL, rows[:2, :5].copy()), v2_request("no_such_model", rows[:2]), expired):
            with pytest.raises(grpc.RpcError):
                v2.ModelInfer(bad, timeout=30)


@pytest.fixture(scope="package")
def scrapes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scrapes]:
    repository = build_repository(tmp_path_factory.mktemp("monitoring") / "models")
    with (
        InProcessSidecar(repository) as sidecar,
        InProcessServer(repository, mirror_address=sidecar.running.address) as server,
    ):
        _traffic(server)
        wanted = REQUESTS * ROWS_PER_REQUEST
        wait_for(lambda: sidecar.report().rows_seen >= wanted, 60.0, f"{wanted} mirrored rows in the sidecar")
        assert sidecar.running.state.wait_idle(30.0)
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as response:
            server_text = response.read().decode()
        status, sidecar_text = sidecar.http("/metrics")
        assert status == 200
        yield Scrapes(server_text, sidecar_text)
