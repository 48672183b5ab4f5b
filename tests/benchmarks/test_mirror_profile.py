"""The py-spy stack counting of ``benchmarks.mirror_profile``."""

from __future__ import annotations

from benchmarks.mirror_profile import mirror_shares

MIRROR = "driftserve/server/mirror.py"


def test_samples_are_split_into_tap_sender_and_the_rest() -> None:
    collapsed = "\n".join(
        [
            f"thread (1): MainThread;run (uvloop/__init__.py:92);MirrorPublisher.tap ({MIRROR}:270);now 3",
            f"thread (1): MainThread;MirrorPublisher._run ({MIRROR}:352);MirrorPublisher._pump ({MIRROR}:415);"
            "_StreamRequestMixin._write (grpc/aio/_call.py:500);sendmsg (libc.so.6) 5",
            f"thread (1): MainThread;MirrorPublisher._lane ({MIRROR}:300) 1",
            "thread (2): batch-m;run (driftserve/server/batcher.py:10) 11",
            "not a sample line",
        ]
    )
    assert mirror_shares(collapsed) == {"samples": 20.0, "mirror": 9.0, "tap": 3.0, "sender": 5.0}


def test_no_samples_counts_nothing() -> None:
    assert mirror_shares("") == {"samples": 0.0, "mirror": 0.0, "tap": 0.0, "sender": 0.0}
