"""Start-up errors of ``driftserve serve`` and ``run``, readiness, and Triton's config.pbtxt.

A start that fails prints exactly one line on stderr (no traceback) naming what is wrong and the
flag / environment variable that changes it; exit code 2 when a setting must change, 1 when the
start failed at run time. A server is ready (health SERVING, ServerReady, the ready line) only
once a model is ready, or every ``--load-model`` model.
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from onnx import TensorProto

from driftserve.api import grpc_service_pb2 as pb
from driftserve.api import grpc_service_pb2_grpc
from driftserve.core.config import load_model_config
from driftserve.core.cpus import affinity
from driftserve.core.errors import ConfigError
from driftserve.core.ports import free_port
from driftserve.core.processes import start_child
from driftserve.server.settings import ServerSettings, gil_cpu_choice, sends_beside_loop, serve_argv
from tests.cli_support import one_line, run_cli
from tests.server.support import ROOT, InProcessServer, wait_until, write_identity_model

IDENTITY_CONFIG = "max_batch_size: 8\n"


def write_broken_model(model_dir: Path) -> None:
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "1" / "model.onnx").write_bytes(b"this is not an ONNX model")
    (model_dir / "config.yaml").write_text(IDENTITY_CONFIG)


@pytest.fixture
def good_repository(tmp_path: Path) -> Path:
    repo = tmp_path / "models"
    write_identity_model(repo / "good", TensorProto.FLOAT, IDENTITY_CONFIG)
    return repo


# ---------------------------------------------------------------------------------------------- serve


def test_missing_model_repository_flag_is_one_line_naming_flag_and_env() -> None:
    line = one_line(run_cli("serve"), 2)
    assert line == "driftserve serve: --model-repository (or DRIFTSERVE_MODEL_REPOSITORY) is required"


def test_missing_repository_directory_names_path_and_flag(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    line = one_line(run_cli("serve", "--model-repository", str(missing)), 2)
    assert line == (
        f"driftserve serve: model repository {missing} is not a directory; "
        "pass an existing one with --model-repository or DRIFTSERVE_MODEL_REPOSITORY"
    )


def test_invalid_flag_value_names_flag_env_and_what_is_allowed(good_repository: Path) -> None:
    line = one_line(run_cli("serve", "--model-repository", str(good_repository), "--grpc-port", "70000"), 2)
    assert line.startswith("driftserve serve: --grpc-port (or DRIFTSERVE_GRPC_PORT) is 70000")
    assert "less than or equal to 65535" in line


def test_invalid_env_value_names_flag_and_env(good_repository: Path) -> None:
    done = run_cli("serve", env={"DRIFTSERVE_MODEL_REPOSITORY": str(good_repository), "DRIFTSERVE_WORKERS": "0"})
    line = one_line(done, 2)
    assert line.startswith("driftserve serve: --workers (or DRIFTSERVE_WORKERS) is '0'")
    assert "greater than or equal to 1" in line


def test_unparsable_flag_is_one_line(good_repository: Path) -> None:
    line = one_line(run_cli("serve", "--model-repository", str(good_repository), "--grpc-port", "abc"), 2)
    assert "--grpc-port" in line and "abc" in line and "--help" in line


def test_grpc_port_in_use_names_port_and_flag(good_repository: Path, busy_port: int) -> None:
    done = run_cli(
        "serve", "--model-repository", str(good_repository), "--grpc-port", str(busy_port), "--metrics-port", "-1"
    )
    line = one_line(done, 2)
    assert line == (
        f"driftserve serve: gRPC port {busy_port} on 0.0.0.0 is in use; "
        "pick another with --grpc-port or DRIFTSERVE_GRPC_PORT"
    )


@pytest.mark.parametrize("workers", ["1", "2"])
def test_metrics_port_in_use_names_port_and_flag(good_repository: Path, busy_port: int, workers: str) -> None:
    # With --workers the parent serves the aggregated metrics: it checks the port before starting them.
    done = run_cli(
        "serve",
        "--model-repository",
        str(good_repository),
        "--host",
        "127.0.0.1",
        "--grpc-port",
        "0",
        "--metrics-port",
        str(busy_port),
        "--workers",
        workers,
    )
    line = one_line(done, 2)
    assert line == (
        f"driftserve serve: metrics port {busy_port} on 127.0.0.1 is in use; "
        "pick another with --metrics-port or DRIFTSERVE_METRICS_PORT (-1 turns metrics off)"
    )


@pytest.mark.parametrize("workers", ["1", "2"])
def test_http_port_in_use_names_port_and_flag(good_repository: Path, busy_port: int, workers: str) -> None:
    # With --workers the parent checks the shared REST port before starting any worker.
    done = run_cli(
        "serve",
        "--model-repository",
        str(good_repository),
        "--host",
        "127.0.0.1",
        "--grpc-port",
        "0",
        "--metrics-port",
        "-1",
        "--http-port",
        str(busy_port),
        "--workers",
        workers,
    )
    line = one_line(done, 2)
    assert line == (
        f"driftserve serve: HTTP port {busy_port} on 127.0.0.1 is in use; "
        "pick another with --http-port or DRIFTSERVE_HTTP_PORT (-1 turns REST off)"
    )


def test_unknown_load_model_is_one_line(good_repository: Path) -> None:
    done = run_cli("serve", "--model-repository", str(good_repository), "--load-model", "good", "--load-model", "nope")
    line = one_line(done, 2)
    assert line == (
        "driftserve serve: --load-model (or DRIFTSERVE_LOAD_MODELS) names 'nope', "
        f"not a model directory of {good_repository}; models there: good"
    )


def test_unknown_model_in_load_models_env_is_one_line(good_repository: Path) -> None:
    done = run_cli("serve", "--model-repository", str(good_repository), env={"DRIFTSERVE_LOAD_MODELS": "good,nope"})
    assert "names 'nope'" in one_line(done, 2)


def test_exit_on_error_exits_1_naming_the_model(good_repository: Path) -> None:
    write_broken_model(good_repository / "broken")
    done = run_cli(
        "serve",
        "--model-repository",
        str(good_repository),
        "--host",
        "127.0.0.1",
        "--grpc-port",
        "0",
        "--metrics-port",
        "-1",
        "--exit-on-error",
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "DRIFTSERVE_READY" not in done.stdout
    last = done.stderr.splitlines()[-1]
    assert last.startswith("driftserve serve: --exit-on-error: 1 model(s) failed to load: broken: ")
    assert "model.onnx" in last


def test_help_documents_exit_codes_and_readiness() -> None:
    done = run_cli("serve", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "Exit code 2: the command line or the environment must change" in text
    assert "--load-model" in text and "--exit-on-error" in text and "NOT_SERVING" in text


# ---------------------------------------------------------------------------------------------- readiness


def _health(address: str) -> int:
    with grpc.insecure_channel(address) as channel:
        return int(health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status)


def _server_ready(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        stub = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel)
        return bool(stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready)


def test_server_whose_only_model_is_broken_stays_up_not_ready(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    write_broken_model(repo / "only")
    port = free_port("127.0.0.1")
    argv = ["serve", "--model-repository", str(repo), "--host", "127.0.0.1", "--grpc-port", str(port)]
    child = start_child("server", [*argv, "--metrics-port", "-1"], cwd=ROOT, output="keep")
    address = f"127.0.0.1:{port}"
    try:
        wait_until(lambda: "not ready: none of 1 model(s)" in "".join(child.lines), timeout_s=60)
        assert child.process.poll() is None, child.output()
        assert _health(address) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert not _server_ready(address)
        assert not child.ready.is_set()  # no DRIFTSERVE_READY line
        # One line per failed model and one summary.
        assert sum("loading model only failed" in line for line in child.lines) == 1
        # Fixed on disk and loaded through the repository API: ready, and the ready line comes.
        write_identity_model(tmp_path / "fixed", TensorProto.FLOAT, IDENTITY_CONFIG)
        (repo / "only" / "1" / "model.onnx").write_bytes((tmp_path / "fixed" / "1" / "model.onnx").read_bytes())
        with grpc.insecure_channel(address) as channel:
            grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel).RepositoryModelLoad(
                pb.RepositoryModelLoadRequest(model_name="only"), timeout=60
            )
        assert child.wait_ready(30), child.output()
        assert child.announced["grpc_port"] == str(port)
        assert _health(address) == health_pb2.HealthCheckResponse.SERVING
        assert _server_ready(address)
        assert child.terminate(30) == 0
    finally:
        child.kill()


def test_load_model_loads_only_the_listed_models_and_waits_for_all(good_repository: Path) -> None:
    write_broken_model(good_repository / "broken")
    write_identity_model(good_repository / "other", TensorProto.FLOAT, IDENTITY_CONFIG)
    with InProcessServer(good_repository, load_models=["good", "broken"]) as server:
        assert not server.running.ready.is_set()
        assert _health(server.address) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert not _server_ready(server.address)
        assert sorted(server.running.repository.models) == ["broken", "good"]  # "other" is not loaded
    with InProcessServer(good_repository, load_models=["good", "other"]) as server:
        assert server.running.ready.is_set()
        assert _health(server.address) == health_pb2.HealthCheckResponse.SERVING
        assert _server_ready(server.address)
        assert sorted(server.running.repository.models) == ["good", "other"]


def test_a_broken_model_next_to_a_good_one_keeps_the_server_ready(good_repository: Path) -> None:
    write_broken_model(good_repository / "broken")
    with InProcessServer(good_repository) as server:
        assert _health(server.address) == health_pb2.HealthCheckResponse.SERVING
        assert _server_ready(server.address)


def test_load_models_setting_from_env_and_back_to_flags(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DRIFTSERVE_LOAD_MODELS", " a, b,,a ")
    monkeypatch.setenv("DRIFTSERVE_EXIT_ON_ERROR", "true")
    settings = ServerSettings(model_repository=tmp_path)
    assert settings.load_models == ["a", "b"] and settings.exit_on_error
    argv = serve_argv(settings)
    assert argv[-5:] == ["--load-model", "a", "--load-model", "b", "--exit-on-error"]


@pytest.mark.parametrize(
    ("reply_sender", "cpus", "workers", "beside"),
    [
        ("auto", 2, 1, True),  # few CPUs: the loop competes for them, the sender frees it from writes
        ("auto", 4, 1, True),
        ("auto", 16, 1, False),  # one GIL-bound process on many cores: hand-offs cost more than they save
        ("auto", 16, 8, True),  # eight workers share them: two CPUs each
        ("on", 64, 1, True),
        ("off", 2, 1, False),
    ],
)
def test_reply_sender_auto_follows_the_cpus_per_server_process(
    tmp_path: Path, reply_sender: str, cpus: float, workers: int, beside: bool
) -> None:
    settings = ServerSettings(model_repository=tmp_path, reply_sender=reply_sender, workers=workers)
    assert sends_beside_loop(settings, cpus) is beside


def test_workers_get_the_parents_reply_sender_decision_as_a_flag(tmp_path: Path) -> None:
    settings = ServerSettings(model_repository=tmp_path, reply_sender="auto", workers=8)
    argv = serve_argv(settings, workers=1, reply_sender="off")
    assert argv[argv.index("--reply-sender") + 1] == "off" and argv[argv.index("--workers") + 1] == "1"


def test_a_worker_places_its_gil_threads_only_on_cpus_of_its_own(tmp_path: Path) -> None:
    alone = gil_cpu_choice(ServerSettings(model_repository=tmp_path, gil_cpu="on"))
    assert alone.reason == "on" or alone.reason.startswith("one CPU")
    sibling = gil_cpu_choice(ServerSettings(model_repository=tmp_path, reuse_port=True))
    assert sibling.cpu is None
    if len(affinity()) >= 2:
        assert sibling.reason == "workers share the CPUs without --pin-workers"
    pinned = gil_cpu_choice(ServerSettings(model_repository=tmp_path, reuse_port=True, cpu_set="0"))
    assert "--pin-workers" not in pinned.reason, "a worker of --pin-workers owns its share"
    settings = ServerSettings(model_repository=tmp_path, gil_cpu="off", workers=4)
    argv = serve_argv(settings, workers=1)
    assert argv[argv.index("--gil-cpu") + 1] == "off", "workers get the flag and decide on their own mask"


# ---------------------------------------------------------------------------------------------- config.pbtxt


def test_pbtxt_without_yaml_is_unavailable_with_a_reason(good_repository: Path) -> None:
    triton = good_repository / "triton"
    write_identity_model(triton, TensorProto.FLOAT, IDENTITY_CONFIG)
    (triton / "config.yaml").unlink()
    (triton / "config.pbtxt").write_text('name: "triton"\nmax_batch_size: 8\n')
    with InProcessServer(good_repository) as server:
        assert server.running.ready.is_set()  # "good" is ready
        with server.channel() as channel:
            index = server.v2(channel).RepositoryIndex(pb.RepositoryIndexRequest(), timeout=10)
            ready = server.v2(channel).ModelReady(pb.ModelReadyRequest(name="triton"), timeout=10)
    row = next(m for m in index.models if m.name == "triton")
    assert row.state == "UNAVAILABLE"
    assert "driftserve reads config.yaml, not Triton's config.pbtxt" in row.reason
    assert "dynamic_batching" in row.reason and "max_batch_size" in row.reason
    assert not ready.ready


def test_pbtxt_and_yaml_yaml_wins_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    (model_dir / "config.yaml").write_text("max_batch_size: 4\n")
    (model_dir / "config.pbtxt").write_text("max_batch_size: 128\n")
    with caplog.at_level(logging.WARNING, logger="driftserve.core.config"):
        config = load_model_config(model_dir)
    assert config.max_batch_size == 4
    assert any("config.pbtxt: ignored; driftserve reads" in r.getMessage() for r in caplog.records)


def test_pbtxt_alone_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "config.pbtxt").write_text("max_batch_size: 8\n")
    with pytest.raises(ConfigError, match=r"has no config\.yaml; translate it to config\.yaml"):
        load_model_config(tmp_path)


# ---------------------------------------------------------------------------------------------- run


def test_run_on_a_missing_repository_is_one_line(tmp_path: Path) -> None:
    line = one_line(run_cli("run", "--model-repository", str(tmp_path / "nowhere")), 2)
    assert line.startswith(f"driftserve run: model repository {tmp_path / 'nowhere'} is not a directory")
    assert "--model-repository or DRIFTSERVE_MODEL_REPOSITORY" in line


def test_run_with_a_bad_sidecar_listen_is_one_line(good_repository: Path) -> None:
    line = one_line(run_cli("run", "--model-repository", str(good_repository), "--sidecar-listen", "nowhere"), 2)
    assert line.startswith("driftserve run: --sidecar-listen is 'nowhere'")


def test_run_reports_the_server_child_that_failed(good_repository: Path, busy_port: int) -> None:
    done = run_cli(
        "run",
        "--model-repository",
        str(good_repository),
        "--host",
        "127.0.0.1",
        "--grpc-port",
        str(busy_port),
        "--metrics-port",
        "-1",
        "--sidecar-listen",
        "127.0.0.1:0",
        "--sidecar-http-port",
        "-1",
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert (
        f"driftserve serve: gRPC port {busy_port} on 127.0.0.1 is in use; "
        "pick another with --grpc-port or DRIFTSERVE_GRPC_PORT"
    ) in lines
    assert lines[-1] == "driftserve run: the server failed to start (exit code 2; its reason is above); stopped both"


def test_run_reports_the_sidecar_child_that_failed(good_repository: Path, busy_port: int) -> None:
    done = run_cli(
        "run",
        "--model-repository",
        str(good_repository),
        "--host",
        "127.0.0.1",
        "--grpc-port",
        "0",
        "--metrics-port",
        "-1",
        "--sidecar-listen",
        "127.0.0.1:0",
        "--sidecar-http-port",
        str(busy_port),
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert any(line.startswith(f"driftserve sidecar: HTTP port {busy_port} on 127.0.0.1 is in use") for line in lines)
    assert lines[-1].startswith("driftserve run: the sidecar failed to start (exit code 2")
    assert "--sidecar-http-port" in lines[-1]


def test_unknown_log_level_is_one_line(good_repository: Path) -> None:
    line = one_line(run_cli("serve", "--model-repository", str(good_repository), "--log-level", "LOUD"), 2)
    assert line == (
        "driftserve serve: --log-level (or DRIFTSERVE_LOG_LEVEL) is 'LOUD': "
        "not a logging level; use one of CRITICAL, ERROR, WARNING, INFO, DEBUG"
    )
