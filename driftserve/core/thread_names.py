"""Native names for driftserve's own threads, so ``top -H``, ``ps -L``, ``/proc/<pid>/task/*/comm``
and profilers tell the event loop, the gRPC poller and sender and the batch workers apart.

Python before 3.14 gives a ``threading.Thread``'s name to Python code only: the kernel sees every
thread under the process's name. Linux keeps 15 bytes of a thread's name, so callers choose short
ones. Elsewhere (or if ``prctl`` is refused) this does nothing: the names only help observation.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Any

_PR_SET_NAME = 15
_MAX_BYTES = 15
_libc: Any = None


def _prctl() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc.prctl


def name_native_thread(name: str) -> None:
    """Give the calling thread the native name ``name`` (cut to 15 bytes); Linux only."""
    if not sys.platform.startswith("linux"):
        return
    try:
        _prctl()(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:_MAX_BYTES]), 0, 0, 0)
    except (OSError, AttributeError):  # no libc prctl: names are an aid, never a failure
        return
