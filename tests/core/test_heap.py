"""freeze_startup_heap: start-up objects leave the collector's generations; later ones do not."""

from __future__ import annotations

import gc
import weakref

from driftserve.core.heap import freeze_startup_heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_freezes_live_objects_and_collects_garbage_first() -> None:
    gc.unfreeze()
    try:
        kept = [_Node() for _ in range(10)]
        garbage = [weakref.ref(_Node()) for _ in range(10)]  # unreachable cycles before the freeze
        frozen = freeze_startup_heap()
        assert frozen == gc.get_freeze_count() > 0
        tracked = {id(o) for o in gc.get_objects()}
        assert not any(id(node) in tracked for node in kept), "start-up objects must be frozen"
        assert all(ref() is None for ref in garbage), "garbage is collected, not frozen"
        later = _Node()
        assert id(later) in {id(o) for o in gc.get_objects()}, "objects made after the freeze stay collectable"
    finally:
        gc.unfreeze()
