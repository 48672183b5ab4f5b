"""The command line: ``sidecar`` as a real process, ``drift report`` against it, ``drift profile``."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from driftserve.api import driftserve_pb2, driftserve_pb2_grpc
from driftserve.cli import main
from driftserve.sidecar.drift.profile import ReferenceProfile
from tests.sidecar.support import ROOT, SidecarProcess, batches_from, reference_rows, training_data, wait_for

SHIFTED = "mean_smoothness"


def test_sidecar_process_serves_reports_and_stops_on_sigterm(repository: Path, primary: ort.InferenceSession) -> None:
    sidecar = SidecarProcess(repository, "--report-interval-s", "0.2")
    try:
        x, _, names = training_data()
        rows = reference_rows(np.random.default_rng(11), 2048)
        rows[:, names.index(SHIFTED)] += x[:, names.index(SHIFTED)].std()
        with grpc.insecure_channel(sidecar.address) as channel:
            summary = driftserve_pb2_grpc.MirrorStub(channel).Publish(iter(batches_from(rows, primary)), timeout=60)
        assert summary.rows == 2048
        deadline = time.monotonic() + 30
        while True:  # ingest is asynchronous: poll the CLI until the alert shows
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "driftserve",
                    "drift",
                    "report",
                    "--address",
                    sidecar.address,
                    "--model",
                    "cancer",
                    "--window",
                    "sliding",
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, done.stderr
            if f"ALERT {SHIFTED}" in done.stdout or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        lines = done.stdout.splitlines()
        assert lines[0].startswith("model cancer: 2048 rows")
        assert lines[1].split() == [
            "feature",
            "kind",
            "window",
            "rows",
            "psi",
            "psi_exp",
            "ks",
            "p_corr",
            "missing",
            "status",
        ]
        row = next(line.split() for line in lines if line.startswith(SHIFTED + " "))
        assert row[1:4] == ["input", "sliding", "2048"] and row[-1] == "alert"
        assert f"ALERT {SHIFTED} (sliding)" in done.stdout
        assert any(line.startswith("shadow v2 vs primary v1: 2048 rows") for line in lines)
        # A reader that goes away (`drift report | head`): no traceback, exit 0.
        closed = subprocess.Popen(
            [sys.executable, "-m", "driftserve", "drift", "report", "--address", sidecar.address],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert closed.stdout is not None
        closed.stdout.close()
        _, stderr = closed.communicate(timeout=60)
        assert closed.returncode == 0 and b"Traceback" not in stderr, stderr.decode()
        started = time.monotonic()
        assert sidecar.terminate() == 0
        assert time.monotonic() - started < 5
    finally:
        sidecar.kill()


def test_report_against_no_sidecar_fails_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["drift", "report", "--address", "127.0.0.1:1", "--timeout-s", "2"]) == 1
    assert "127.0.0.1:1: UNAVAILABLE" in capsys.readouterr().err


def test_profile_from_npz_and_csv_gives_the_same_loadable_profile(tmp_path: Path) -> None:
    x, _, names = training_data()
    np.savez(tmp_path / "train.npz", X=x, feature_names=np.array(names))
    with (tmp_path / "train.csv").open("w") as fh:
        fh.write(",".join(names) + "\n")
        for row in x:
            fh.write(",".join(repr(float(v)) for v in row) + "\n")
    for source in ("train.npz", "train.csv"):
        assert (
            main(
                [
                    "drift",
                    "profile",
                    "--data",
                    str(tmp_path / source),
                    "--out",
                    str(tmp_path / f"{source}.json"),
                    "--bins",
                    "100",
                ]
            )
            == 0
        )
    from_npz = ReferenceProfile.load(tmp_path / "train.npz.json")
    from_csv = ReferenceProfile.load(tmp_path / "train.csv.json")
    assert from_npz.feature_names == names == from_csv.feature_names
    for a, b in zip(from_npz.features, from_csv.features):
        np.testing.assert_array_equal(a.counts, b.counts)
        assert a.n_rows == x.shape[0] and a.edges.size <= 99


def test_profile_with_model_outputs(tmp_path: Path, repository: Path) -> None:
    x, _, names = training_data()
    np.savez(tmp_path / "train.npz", X=x, feature_names=np.array(names))
    out = tmp_path / "profile.json"
    assert (
        main(
            [
                "drift",
                "profile",
                "--data",
                str(tmp_path / "train.npz"),
                "--out",
                str(out),
                "--outputs-from-model",
                str(repository / "cancer" / "1" / "model.onnx"),
            ]
        )
        == 0
    )
    assert [o.name for o in ReferenceProfile.load(out).outputs] == ["label", "probabilities[0]", "probabilities[1]"]


def test_profile_of_a_bad_file_fails_with_a_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "rows.txt").write_text("1,2\n")
    assert main(["drift", "profile", "--data", str(tmp_path / "rows.txt"), "--out", str(tmp_path / "p.json")]) == 2
    assert "unsupported data file '.txt'" in capsys.readouterr().err


def test_sigterm_with_an_open_mirror_stream_exits_cleanly(repository: Path, primary: ort.InferenceSession) -> None:
    sidecar = SidecarProcess(repository)
    release = threading.Event()
    first = batches_from(reference_rows(np.random.default_rng(12), 256), primary)

    def stream() -> Iterator[driftserve_pb2.MirrorBatch]:
        yield from first
        release.wait(30)  # keep the stream open, as a server's mirror does

    outcome: dict[str, object] = {}

    def publish() -> None:
        with grpc.insecure_channel(sidecar.address) as channel:
            try:
                outcome["summary"] = driftserve_pb2_grpc.MirrorStub(channel).Publish(stream(), timeout=60)
            except grpc.RpcError as exc:
                outcome["code"] = exc.code()

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    try:
        wait_for(lambda: "mirror stream opened" in "".join(sidecar.lines), 20.0, "the stream to open")
        started = time.monotonic()
        assert sidecar.terminate() == 0
        assert time.monotonic() - started < 5
    finally:
        release.set()
        thread.join(30)
        sidecar.kill()
    assert outcome, "the publisher got neither a summary nor an error"


def test_sidecar_on_a_missing_repository_exits_2_with_a_message(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "driftserve",
            "sidecar",
            "--model-repository",
            str(tmp_path / "none"),
            "--listen",
            "127.0.0.1:0",
            "--http-port",
            "-1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert f"model repository {tmp_path / 'none'} is not a directory" in done.stderr
