"""benchmarks.peers without the peers installed: what each peer is told (Triton's model repository and
Python model, MLServer's settings and the ModelConfig reply), the process-tree CPU accounting, and
the report."""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml
from google.protobuf import text_format
from onnx import TensorProto, helper, numpy_helper

from benchmarks.peers import configs
from benchmarks.peers.bench import SLO_BATCHING, bench_model, main, perf_analyzer_args, served_onnx, slo_repository
from benchmarks.peers.cpu import (
    CLOCK_TICKS,
    CpuSampler,
    ProcessTree,
    cpu_at,
    cpu_per_inference_us,
    descendants,
    measured_span,
    parse_stat,
)
from benchmarks.peers.report import markdown, ratios
from benchmarks.peers.servers import PeerUnavailable, peer_env
from driftserve.api import grpc_service_pb2, model_config_pb2

FEATURES = 30


def write_classifier(path: Path, batch: int | None = None) -> Path:
    """input FP32 [batch, 30] -> label INT64 [batch] (argmax) and probabilities FP32 [batch, 2]: the
    example models' signature, small."""
    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array(rng.standard_normal((FEATURES, 2)).astype(np.float32), "W")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "W"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
            helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0),
        ],
        "classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, FEATURES])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [batch]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [batch, 2]),
        ],
        initializer=[weights],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def classifier(tmp_path: Path) -> Path:
    return write_classifier(tmp_path / "src" / "model.onnx")


# --- signature and Triton ------------------------------------------------------------------------


def test_signature_has_the_dims_past_the_batch_and_v2_types(classifier: Path) -> None:
    signature = configs.read_signature(classifier)
    (inp,) = signature.inputs
    label, probabilities = signature.outputs
    assert (inp.name, inp.datatype, inp.dims, inp.triton_type) == ("input", "FP32", (30,), "TYPE_FP32")
    assert (label.name, label.datatype, label.dims, label.served_dims) == ("label", "INT64", (), (1,))
    assert (probabilities.dims, probabilities.served_dims) == ((2,), (2,))


def test_a_model_without_a_dynamic_batch_dimension_is_refused(tmp_path: Path) -> None:
    fixed = write_classifier(tmp_path / "fixed.onnx", batch=1)
    with pytest.raises(ValueError, match="expected a dynamic batch dimension first"):
        configs.read_signature(fixed)


def test_triton_repository_is_a_python_backend_model_with_dynamic_batching(classifier: Path, tmp_path: Path) -> None:
    repo = configs.write_triton_repository(tmp_path / "triton", "clf", classifier)
    assert (repo / "clf" / "1" / "model.onnx").read_bytes() == classifier.read_bytes()
    assert (repo / "clf" / "1" / "model.py").read_text() == configs.TRITON_MODEL_PY.read_text()
    # Triton reads config.pbtxt as a ModelConfig in protobuf text format.
    config = text_format.Parse((repo / "clf" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert (config.name, config.backend, config.max_batch_size) == ("clf", "python", 64)
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(g.count, g.kind) for g in config.instance_group] == [(1, model_config_pb2.ModelInstanceGroup.KIND_CPU)]
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [("input", model_config_pb2.TYPE_FP32, [30])]
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [
        ("label", model_config_pb2.TYPE_INT64, [1]),
        ("probabilities", model_config_pb2.TYPE_FP32, [2]),
    ]


class _FakeTensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self.name, self.array = name, array

    def as_numpy(self) -> np.ndarray:
        return self.array


def _fake_pb_utils() -> types.ModuleType:
    """What the Python stub provides to model.py, reduced to the calls it makes."""
    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor = _FakeTensor  # type: ignore[attr-defined]
    module.InferenceResponse = lambda output_tensors: {t.name: t.array for t in output_tensors}  # type: ignore[attr-defined]
    module.get_input_tensor_by_name = lambda request, name: _FakeTensor(name, request[name])  # type: ignore[attr-defined]
    return module


def test_triton_model_runs_a_dynamic_batch_in_one_call_and_splits_it_back(
    classifier: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = configs.write_triton_repository(tmp_path / "triton", "clf", classifier)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _fake_pb_utils())
    spec = importlib.util.spec_from_file_location("triton_model_under_test", repo / "clf" / "1" / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.TritonPythonModel()
    model.initialize({"model_repository": str(repo / "clf"), "model_version": "1"})
    rng = np.random.default_rng(1)
    requests = [{"input": rng.standard_normal((n, FEATURES)).astype(np.float32)} for n in (1, 3, 2)]
    runs: list[int] = []
    real_run = model.session.run
    model.session = types.SimpleNamespace(
        run=lambda names, feeds: runs.append(len(feeds["input"])) or real_run(names, feeds)
    )
    responses = model.execute(requests)
    assert runs == [6]  # one session.run for the whole batch
    reference = ort.InferenceSession(str(classifier), providers=["CPUExecutionProvider"])
    for request, response in zip(requests, responses):
        label, probabilities = reference.run(None, request)
        np.testing.assert_array_equal(response["label"], label.reshape(-1, 1))
        np.testing.assert_allclose(response["probabilities"], probabilities, rtol=1e-6)


# --- MLServer ------------------------------------------------------------------------------------


def test_mlserver_folder_names_the_runtime_batching_ports_and_tensors(classifier: Path, tmp_path: Path) -> None:
    folder = configs.write_mlserver_folder(tmp_path / "mls", "clf", classifier, (7001, 7002, 7003))
    settings = json.loads((folder / "settings.json").read_text())
    assert (settings["host"], settings["http_port"], settings["grpc_port"], settings["metrics_port"]) == (
        "127.0.0.1",
        7001,
        7002,
        7003,
    )
    assert settings["metrics_dir"] == str(folder / ".metrics")  # not the working directory
    model = json.loads((folder / "clf" / "model-settings.json").read_text())
    assert model["implementation"] == "mlserver_runtime.OnnxRuntimeModel"
    assert (model["max_batch_size"], model["max_batch_time"]) == (64, 0.0005)
    assert model["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 30]}]
    assert [(o["name"], o["datatype"], o["shape"]) for o in model["outputs"]] == [
        ("label", "INT64", [-1, 1]),
        ("probabilities", "FP32", [-1, 2]),
    ]
    # The runtime module and the model file sit where model-settings.json points.
    assert (folder / "clf" / "mlserver_runtime.py").read_text() == configs.MLSERVER_RUNTIME_PY.read_text()
    assert (folder / "clf" / model["parameters"]["uri"]).read_bytes() == classifier.read_bytes()


def test_the_model_config_reply_for_perf_analyzer_is_a_v2_model_config_response(classifier: Path) -> None:
    raw = configs.model_config_response("clf", configs.read_signature(classifier))
    config = grpc_service_pb2.ModelConfigResponse.FromString(raw).config
    assert (config.name, config.max_batch_size) == ("clf", 64)
    assert [(i.name, list(i.dims)) for i in config.input] == [("input", [30])]
    assert [(o.name, o.data_type) for o in config.output] == [
        ("label", model_config_pb2.TYPE_INT64),
        ("probabilities", model_config_pb2.TYPE_FP32),
    ]


# --- peer environments ---------------------------------------------------------------------------


def test_a_peer_that_is_not_installed_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(PeerUnavailable, match=r"is not installed: run benchmarks/peers/install.sh mlserver"):
        peer_env(tmp_path, "mlserver")


def test_a_peer_whose_install_failed_says_so(tmp_path: Path) -> None:
    (tmp_path / "triton").mkdir()
    (tmp_path / "triton" / ".failed").write_text("install of nvidia-pytriton==0.7.0 failed\n")
    with pytest.raises(PeerUnavailable, match=r"install of nvidia-pytriton==0\.7\.0 failed"):
        peer_env(tmp_path, "triton")


# --- CPU accounting ------------------------------------------------------------------------------


def _stat(pid: int, comm: str, ppid: int, utime: int, stime: int, cutime: int = 0, cstime: int = 0) -> str:
    # Fields 1-22 of /proc/<pid>/stat; starttime (22) = 1000 + pid.
    rest = ["S", ppid, 1, 1, 0, -1, 0, 0, 0, 0, 0, utime, stime, cutime, cstime, 20, 0, 1, 0, 1000 + pid]
    return f"{pid} ({comm}) " + " ".join(map(str, rest)) + " 0 0\n"


def test_parse_stat_counts_fields_after_a_command_name_with_spaces_and_parentheses() -> None:
    ticks = CLOCK_TICKS
    stat = parse_stat(_stat(7, "tri ton) (x", 3, utime=ticks, stime=ticks, cutime=2 * ticks, cstime=0))
    assert (stat.ppid, stat.cpu_s, stat.start_ticks) == (3, 4.0, 1007)


def test_descendants_follow_every_generation_and_nothing_else() -> None:
    parents = {1: 0, 10: 1, 11: 10, 12: 10, 13: 12, 20: 1, 21: 20}
    assert descendants(10, parents) == {10, 11, 12, 13}
    assert descendants(13, parents) == {13}


def test_process_tree_sums_the_tree_and_skips_other_and_reused_processes(tmp_path: Path) -> None:
    t = CLOCK_TICKS
    for pid, comm, ppid, utime in (
        (1, "init", 0, 50),
        (10, "server", 1, t),
        (11, "stub", 10, 2 * t),
        (20, "other", 1, 9 * t),
    ):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(_stat(pid, comm, ppid, utime, 0))
    (tmp_path / "self").mkdir()  # not a pid
    tree = ProcessTree(10, proc=tmp_path)
    assert set(tree.members) == {10, 11}
    assert tree.cpu_seconds() == pytest.approx(3.0)
    # pid 11 exits and the number is reused by another process: it no longer counts.
    (tmp_path / "11" / "stat").write_text(_stat(11, "stub", 10, 5 * t, 0).replace(" 1011 ", " 99999 "))
    assert tree.cpu_seconds() == pytest.approx(1.0)


def test_process_tree_counts_a_real_grandchild_busy_on_the_cpu() -> None:
    # The child starts a grandchild that burns 0.3 s of its own CPU time, then both wait to be stopped.
    burn = "import time\nwhile time.process_time() < 0.3: pass\nprint('burnt', flush=True)\ntime.sleep(60)"
    parent = f"import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', {burn!r}])\ntime.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", parent])
    try:
        tree = ProcessTree(child.pid)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            tree.refresh()
            if len(tree.members) == 2 and tree.cpu_seconds() >= 0.3:
                break
            time.sleep(0.1)
        assert len(tree.members) == 2
        assert tree.cpu_seconds() >= 0.3
    finally:
        tree.refresh()
        tree.kill(9)
        child.wait(10)


def test_cpu_sampler_samples_from_enter_to_exit() -> None:
    readings = iter(range(1000))
    with CpuSampler(lambda: float(next(readings)), interval_s=0.01) as sampler:
        time.sleep(0.1)
    values = [cpu for _, cpu in sampler.samples]
    assert len(values) >= 3 and values == sorted(values) and values[0] == 0.0
    times = [t for t, _ in sampler.samples]
    assert times == sorted(times)


def _samples(warmup_s: float, rate: float, end_s: float, step_s: float = 0.1) -> list[tuple[float, float]]:
    """CPU samples of a server idle during ``warmup_s``, then busy at ``rate`` cores."""
    out, t = [], 0.0
    while t <= end_s + 1e-9:
        out.append((t, max(0.0, t - warmup_s) * rate))
        t += step_s
    return out


def test_cpu_at_interpolates_and_clamps() -> None:
    samples = [(0.0, 0.0), (1.0, 2.0), (3.0, 3.0)]
    assert cpu_at(samples, 0.5) == 1.0
    assert cpu_at(samples, 2.0) == 2.5
    assert cpu_at(samples, -1.0) == 0.0 and cpu_at(samples, 9.0) == 3.0


def test_measured_span_is_the_last_three_windows_before_exit() -> None:
    assert measured_span(_samples(0, 1, 10.0), window_s=2.0) == pytest.approx((3.9, 9.9))
    # A short run: never the first window.
    assert measured_span(_samples(0, 1, 4.0), window_s=2.0) == pytest.approx((2.0, 3.9))


def test_cpu_per_inference_is_the_cpu_rate_over_the_measured_windows_per_request() -> None:
    # Idle for 2 s (connection set-up), then half a core at 1000 req/s: 500 µs per inference.
    samples = _samples(warmup_s=2.0, rate=0.5, end_s=10.0)
    assert cpu_per_inference_us(samples, 1000.0, window_s=2.0) == pytest.approx(500.0)
    assert np.isnan(cpu_per_inference_us(samples, 0.0, window_s=2.0))
    assert np.isnan(cpu_per_inference_us(samples[:1], 1000.0, window_s=2.0))


# --- bench helpers and report ---------------------------------------------------------------------


def test_served_onnx_follows_served_version_then_the_highest(tmp_path: Path) -> None:
    for version in (1, 2, 10):
        (tmp_path / "m" / str(version)).mkdir(parents=True)
    (tmp_path / "m" / "config.yaml").write_text("deployment: {served_version: 2}\n")
    assert served_onnx(tmp_path, "m") == tmp_path / "m" / "2" / "model.onnx"
    (tmp_path / "m" / "config.yaml").write_text("max_batch_size: 64\n")
    assert served_onnx(tmp_path, "m") == tmp_path / "m" / "10" / "model.onnx"


def test_only_the_naive_server_gets_an_explicit_input_shape(tmp_path: Path) -> None:
    write_classifier(tmp_path / "m" / "1" / "model.onnx")
    (tmp_path / "m" / "config.yaml").write_text("{}\n")
    assert perf_analyzer_args("naive", tmp_path, "m") == ["--shape", "input:1,30"]
    assert perf_analyzer_args("triton", tmp_path, "m") == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--servers", "triton,mlserver"], "must include driftserve"),
        (["--servers", "driftserve,tensorflow"], "unknown server"),
        (["--concurrency", "0,8"], "client counts >= 1"),
    ],
)
def test_bad_arguments_are_refused_before_anything_starts(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def _result(rps: float, p99: float, cpu: float) -> dict[str, float]:
    return {"throughput_rps": rps, "p50_ms": p99 / 2, "p99_ms": p99, "server_cpu_us_per_inference": cpu}


def test_ratios_are_medians_of_within_round_ratios() -> None:
    runs = {
        "driftserve": {"32": [_result(2000, 10, 300), _result(1000, 20, 400), _result(3000, 10, 300)]},
        "mlserver": {"32": [_result(500, 40, 1200), _result(1000, 40, 800), _result(600, float("nan"), 600)]},
    }
    versus = ratios(runs, "driftserve")
    assert list(versus) == ["mlserver"]
    assert versus["mlserver"]["32"]["throughput"] == pytest.approx(4.0)  # median of 4, 1, 5
    assert versus["mlserver"]["32"]["p99"] == pytest.approx(0.375)  # median of 0.25, 0.5 (the NaN round is left out)
    assert versus["mlserver"]["32"]["cpu_per_inference"] == pytest.approx(0.5)  # median of 0.25, 0.5, 0.5


def _report() -> dict[str, Any]:
    runs: dict[str, Any] = {
        "driftserve": {"1": [_result(1500, 1.3, 465)], "32": [_result(2300, 39, 383)]},
        "triton": {"1": [_result(530, 9.5, 678)], "32": [_result(3200, 84, float("nan"))]},
    }
    report = {
        "command": "python -m benchmarks.peers.bench --rounds 1",
        "rounds": 1,
        "window_ms": 2000,
        "machine": "2 cores, CPU",
        "date": "2026-11-29 14:00 UTC",
        "concurrency": [1, 32],
        "models": {
            "breast_cancer_mlp": {
                "servers": {"driftserve": "driftserve 0.1.0", "triton": "tritonserver"},
                "skipped": {"mlserver": ".peers/mlserver is not installed: run benchmarks/peers/install.sh mlserver"},
                "runs": runs,
                "median": {label: {c: rs[0] for c, rs in by_c.items()} for label, by_c in runs.items()},
                "versus": ratios(runs, "driftserve"),
            }
        },
    }
    return report


def test_report_has_every_server_the_ratios_and_the_skipped_with_their_reason() -> None:
    text = "\n".join(markdown(_report()))
    assert "python -m benchmarks.peers.bench --rounds 1" in text and "shared" in text
    assert "| 1 | driftserve | 1,500 | 0.65 | 1.30 | 465 |" in text
    assert "| 32 | Triton (Python backend) | 3,200 | 42.00 | 84.00 | – |" in text  # NaN CPU shows as a dash
    assert "| Triton (Python backend) | 1 | 2.83× | 0.14× | 0.69× |" in text
    assert "| Triton (Python backend) | 32 | 0.72× | 0.46× | – |" in text
    assert "MLServer: **skipped** — .peers/mlserver is not installed" in text


def test_only_report_rewrites_the_markdown_from_the_json(tmp_path: Path) -> None:
    raw = json.dumps(_report())
    (tmp_path / "peers.json").write_text(raw)
    assert main(["--only-report", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "peers.json").read_text() == raw
    assert (tmp_path / "peers.md").read_text() == "\n".join(markdown(_report())) + "\n"


def _bench_args(repository: Path, peers_dir: Path, servers: list[str]) -> argparse.Namespace:
    return argparse.Namespace(
        servers=servers, model_repository=repository, peers_dir=peers_dir, concurrency=[1], rounds=1, window_ms=1000
    )


def test_peers_that_are_missing_or_do_not_start_are_skipped_with_the_reason(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    write_classifier(repository / "clf" / "1" / "model.onnx")
    (repository / "clf" / "config.yaml").write_text("max_batch_size: 64\n")
    peers = tmp_path / "peers"
    # An "installed" MLServer environment whose interpreter has no mlserver: the server exits at start.
    bin_dir = peers / "mlserver" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bin_dir / "python").chmod(0o755)
    (peers / "mlserver" / ".installed").write_text("mlserver==1.7.1")
    lines: list[str] = []
    result = bench_model(_bench_args(repository, peers, ["triton", "mlserver"]), "clf", tmp_path, lines.append)
    assert set(result["skipped"]) == {"triton", "mlserver"}
    assert "is not installed: run benchmarks/peers/install.sh triton" in result["skipped"]["triton"]
    assert "did not start" in result["skipped"]["mlserver"]
    assert "No module named 'mlserver'" in result["skipped"]["mlserver"]  # the log's last lines say why
    assert result["servers"] == {} and result["median"] == {}
    assert any("mlserver skipped" in line for line in lines)


def test_results_headline_gives_driftserve_over_each_peer_at_the_lowest_and_highest_level(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from benchmarks import make_results

    (tmp_path / "peers.json").write_text(json.dumps(_report()))
    monkeypatch.setattr(make_results, "RESULTS", tmp_path)
    text = "\n".join(make_results.headlines())
    assert "breast_cancer_mlp, same model and client (perf_analyzer): driftserve / peer throughput at 1 / 32" in text
    assert "Triton: 2.83× / 0.72×" in text


def test_the_slo_variant_keeps_the_example_config_but_for_its_batching(tmp_path: Path) -> None:
    source = tmp_path / "repository"
    write_classifier(source / "clf" / "2" / "model.onnx")
    (source / "clf" / "config.yaml").write_text(
        "max_batch_size: 64\nbatching: {max_queue_delay_us: 500, preferred_batch_sizes: [32]}\n"
        "deployment: {served_version: 2}\n"
    )
    dest = slo_repository(source, "clf", tmp_path / "slo")
    config = yaml.safe_load((dest / "clf" / "config.yaml").read_text())
    assert config == {"max_batch_size": 64, "batching": SLO_BATCHING, "deployment": {"served_version": 2}}
    assert (dest / "clf" / "2" / "model.onnx").read_bytes() == (source / "clf" / "2" / "model.onnx").read_bytes()


def test_the_slo_variant_gets_its_own_ratios_and_headline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks import make_results

    report = _report()
    model = report["models"]["breast_cancer_mlp"]
    model["runs"]["driftserve-slo"] = {"1": [_result(1590, 1.3, 465)], "32": [_result(2880, 30, 350)]}
    model["versus"] = ratios(model["runs"], "driftserve")
    model["versus_slo"] = ratios({k: v for k, v in model["runs"].items() if k != "driftserve"}, "driftserve-slo")
    text = "\n".join(markdown(report))
    assert "driftserve, only slo_p99_ms: 20 / peer, median of the per-round ratios" in text
    assert "| Triton (Python backend) | 32 | 0.90× | 0.36× | – |" in text
    (tmp_path / "peers.json").write_text(json.dumps(report))
    monkeypatch.setattr(make_results, "RESULTS", tmp_path)
    headline = "\n".join(make_results.headlines())
    assert "driftserve with only slo_p99_ms / peer throughput at 1 / 32 clients | Triton: 3.00× / 0.90×" in headline
    assert "driftserve-slo:" not in headline  # the variant is not a peer of driftserve in the headline
