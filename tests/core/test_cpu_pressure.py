"""Reading Linux pressure stall information for the SLO batch controller."""

from __future__ import annotations

from pathlib import Path

from driftserve.core.cpu_pressure import CpuPressure

PSI = "some avg10=1.50 avg60=0.80 avg300=0.20 total={}\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"


def test_reads_the_some_total_in_nanoseconds_from_the_first_readable_file(tmp_path: Path) -> None:
    missing, cgroup, host = tmp_path / "missing", tmp_path / "cpu.pressure", tmp_path / "cpu"
    cgroup.write_text(PSI.format(1234))
    host.write_text(PSI.format(999_999))
    pressure = CpuPressure((missing, cgroup, host))
    assert pressure.available and pressure.path == cgroup
    assert pressure.stall_ns() == 1_234_000
    cgroup.write_text(PSI.format(5000))
    assert pressure.stall_ns() == 5_000_000


def test_unavailable_or_malformed_files_read_as_no_pressure(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage"
    garbage.write_text("not psi\n")
    pressure = CpuPressure((tmp_path / "missing", garbage))
    assert not pressure.available
    assert pressure.stall_ns() == 0
    good = tmp_path / "good"
    good.write_text(PSI.format(7))
    vanishing = CpuPressure((good,))
    good.unlink()
    assert vanishing.stall_ns() == 0
