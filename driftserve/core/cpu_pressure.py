"""How much runnable work waits for a CPU: Linux pressure stall information (PSI).

The SLO batch controller plans batches as if the model instance were the only thing that costs
time. On a host whose CPUs are all busy (a small machine, a tight container quota, a client on
the same cores) that is wrong: every batch also costs CPU on the event loop and in the model's
fixed per-call cost, and the cheapest way to serve more is to batch more. PSI measures exactly
that scarcity: the share of wall time in which at least one runnable task waited for a CPU.
The container's own cgroup file is preferred (it reflects its quota); the host's otherwise.
Where neither exists (not Linux, PSI off), the reader says so and the controller ignores it.
"""

from __future__ import annotations

from pathlib import Path

# The cgroup (v2) of this process first, then the whole host.
CANDIDATES = (Path("/sys/fs/cgroup/cpu.pressure"), Path("/proc/pressure/cpu"))


class CpuPressure:
    """Cumulative CPU stall time ("some" line of a PSI file), in nanoseconds."""

    __slots__ = ("path",)

    def __init__(self, candidates: tuple[Path, ...] = CANDIDATES) -> None:
        self.path: Path | None = next((p for p in candidates if _some_total_us(p) is not None), None)

    @property
    def available(self) -> bool:
        return self.path is not None

    def stall_ns(self) -> int:
        """Stall time so far (0 where PSI is unavailable or the file stops being readable)."""
        total_us = _some_total_us(self.path) if self.path is not None else None
        return 0 if total_us is None else total_us * 1000


def _some_total_us(path: Path) -> int | None:
    """``total=`` of the ``some`` line (``some avg10=1.00 avg60=0.50 avg300=0.10 total=12345``), or
    None when the file cannot be read or holds no such line."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    for line in data.splitlines():
        if line.startswith(b"some "):
            for field in line.split():
                if field.startswith(b"total=") and field[6:].isdigit():
                    return int(field[6:])
    return None
