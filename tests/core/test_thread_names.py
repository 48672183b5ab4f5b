"""Native thread names: what ``top -H`` and ``/proc/<pid>/task/*/comm`` show for driftserve's threads."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from driftserve.core.thread_names import name_native_thread

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="native thread names are Linux's")


def _named_in_thread(name: str) -> str:
    seen: list[str] = []

    def run() -> None:
        name_native_thread(name)
        seen.append(Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip())

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return seen[0]


def test_the_calling_thread_gets_the_name_and_no_other() -> None:
    before = Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text()
    assert _named_in_thread("grpc-cq-sender") == "grpc-cq-sender"
    assert Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text() == before


def test_a_long_name_is_cut_to_the_kernels_15_bytes() -> None:
    assert _named_in_thread("batch-breast_cancer_mlp") == "batch-breast_ca"
