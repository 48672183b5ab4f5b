"""Decoding and checking of MirrorBatch messages, and the bounded in-order batch worker."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from pydantic import ValidationError

from driftserve.sidecar.ingest import MALFORMED, WIDTH_MISMATCH, BatchWorker, MirroredBatch, RejectedBatch, decode_batch
from driftserve.sidecar.settings import SidecarSettings
from tests.sidecar.support import mirror_batch, tensor


def _rows(n: int, width: int = 30) -> np.ndarray:
    return np.arange(n * width, dtype=np.float32).reshape(n, width)


def test_decode_is_zero_copy_and_keeps_request_boundaries() -> None:
    x = _rows(20)
    labels = np.arange(20, dtype=np.int64)
    batch = decode_batch(mirror_batch(x, {"label": labels}, request_rows=8), 30)
    assert batch.features is not None
    np.testing.assert_array_equal(batch.features, x)
    assert not batch.features.flags.writeable and not batch.features.flags.owndata  # a view of the message bytes
    np.testing.assert_array_equal(batch.outputs["label"], labels)
    assert batch.request_rows == [8, 8, 4] and len(batch.latency_s) == 3


def test_several_inputs_are_concatenated_in_message_order() -> None:
    message = mirror_batch(_rows(4, 2))
    message.inputs.append(tensor("extra", np.array([1, 2, 3, 4], dtype=np.int64)))
    batch = decode_batch(message, 3)
    assert batch.features is not None and batch.features.shape == (4, 3)
    np.testing.assert_array_equal(batch.features[:, 2], [1, 2, 3, 4])


def test_shadow_only_models_skip_the_feature_matrix() -> None:
    assert decode_batch(mirror_batch(_rows(2, 7)), None).features is None


@pytest.mark.parametrize(
    ("mutate", "reason", "fragment"),
    [
        (lambda m: setattr(m.inputs[0], "data", m.inputs[0].data[:-1]), MALFORMED, "bytes of raw data"),
        (lambda m: setattr(m.inputs[0], "datatype", "FP8"), MALFORMED, "unsupported datatype"),
        (lambda m: setattr(m, "rows", 5), MALFORMED, "rows=5"),
        (lambda m: setattr(m, "rows", 0), MALFORMED, "expected >= 1"),
        (lambda m: m.ClearField("inputs"), MALFORMED, "no input tensors"),
        (lambda m: m.inputs.append(m.inputs[0]), MALFORMED, "unique"),
        (lambda m: m.request_rows.append(1), MALFORMED, "request_rows sum"),
    ],
)
def test_malformed_batches_are_rejected_with_a_reason(mutate, reason: str, fragment: str) -> None:
    message = mirror_batch(_rows(4))
    mutate(message)
    with pytest.raises(RejectedBatch) as err:
        decode_batch(message, 30)
    assert err.value.reason == reason and fragment in err.value.message


def test_width_mismatch_names_both_widths() -> None:
    with pytest.raises(RejectedBatch) as err:
        decode_batch(mirror_batch(_rows(4, 29)), 30)
    assert err.value.reason == WIDTH_MISMATCH
    assert "29 feature columns" in err.value.message and "30 features" in err.value.message


def _batch(i: int) -> MirroredBatch:
    return MirroredBatch("m", "1", 1, None, {}, {}, [i], [])


def test_worker_keeps_order_drops_when_full_and_survives_errors() -> None:
    seen: list[int] = []
    errors: list[int] = []
    gate = threading.Event()

    def handle(batch: MirroredBatch) -> None:
        gate.wait(10)
        if batch.request_rows[0] == 2:
            raise RuntimeError("boom")
        seen.append(batch.request_rows[0])

    worker = BatchWorker("test-worker", handle, 3, lambda b: errors.append(b.request_rows[0]))
    worker.start()
    try:
        offered = [worker.offer(_batch(i)) for i in range(8)]
        # The worker may already hold batch 0, so 3 or 4 fit; the rest are dropped at once.
        assert offered[:3] == [True] * 3 and offered[5:] == [False] * 3
        gate.set()
        assert worker.wait_idle(10)
        accepted = [i for i, ok in enumerate(offered) if ok]
        assert seen == [i for i in accepted if i != 2] and errors == [2]
        assert worker.offer(_batch(9)) and worker.wait_idle(10) and seen[-1] == 9
    finally:
        gate.set()
        worker.stop(5)
    assert not worker.offer(_batch(10))


@pytest.mark.parametrize("listen", ["localhost", "host:port", "unix:", ":8003", "h:70000"])
def test_settings_reject_bad_listen_addresses(listen: str, tmp_path) -> None:
    with pytest.raises(ValidationError, match="listen"):
        SidecarSettings(model_repository=tmp_path, listen=listen)


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("DRIFTSERVE_SIDECAR_MODEL_REPOSITORY", str(tmp_path))
    monkeypatch.setenv("DRIFTSERVE_SIDECAR_HTTP_PORT", "9100")
    settings = SidecarSettings()
    assert settings.model_repository == tmp_path and settings.http_port == 9100 and settings.listen == "127.0.0.1:8003"
