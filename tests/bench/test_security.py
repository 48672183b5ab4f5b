"""The load generator against a server with TLS and tokens: it measures with --tls-ca and a token,
and a token-less run fails with the server's reason."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftserve.bench.payload import TensorSpec, build_arrays, serialize_requests
from driftserve.bench.runner import LoadSpec, run_load
from driftserve.core.client import ClientSecurity
from tests.cli_support import run_cli
from tests.server.support import InProcessServer
from tests.tls_support import INFER_TOKEN, Pki, make_pki, write_token, write_tokens

SPEC = [TensorSpec("input", "FP32", (-1, 30))]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secured(example_repository: Path, pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessServer]:
    tokens = write_tokens(tmp_path_factory.mktemp("auth") / "tokens")
    with InProcessServer(example_repository, tls_cert=pki.cert, tls_key=pki.key, auth_tokens_file=tokens) as server:
        yield server


def test_the_bench_command_measures_a_secured_server(secured: InProcessServer, pki: Pki, tmp_path: Path) -> None:
    token = write_token(tmp_path / "token", INFER_TOKEN)
    out = tmp_path / "result.json"
    base = ["bench", "--target", secured.address, "--model", "breast_cancer_lr", "--no-progress"]
    load = ["--concurrency", "2", "--warmup-s", "0.2", "--duration-s", "1", "--workers", "1", "--json", str(out)]
    done = run_cli(*base, *load, "--tls-ca", str(pki.ca), "--token-file", str(token))
    assert done.returncode == 0, done.stderr
    run = json.loads(out.read_text())["results"][0]
    assert run["errors"] == {} and run["ok"] > 0
    refused = run_cli(*base, *load, "--tls-ca", str(pki.ca))
    assert refused.returncode == 2
    assert "UNAUTHENTICATED: missing bearer token" in refused.stderr


def test_load_specs_carry_the_token_to_every_worker(secured: InProcessServer, pki: Pki) -> None:
    requests = tuple(serialize_requests(build_arrays(SPEC, 1, pool_size=4), SPEC, "v2", "breast_cancer_lr"))
    spec = LoadSpec(
        target=secured.address,
        model="breast_cancer_lr",
        requests=requests,
        concurrency=2,
        warmup_s=0.2,
        duration_s=1.0,
        workers=1,
        security=ClientSecurity(tls_ca=pki.ca, token=INFER_TOKEN),
    )
    result = run_load(spec)
    assert result.errors == {} and result.ok > 0
    wrong = run_load(LoadSpec(**{**spec.__dict__, "security": ClientSecurity(tls_ca=pki.ca)}), server_stats=False)
    assert wrong.ok == 0 and set(wrong.errors) == {"UNAUTHENTICATED"}
