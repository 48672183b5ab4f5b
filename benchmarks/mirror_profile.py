"""Where the mirror's CPU goes in the real server: py-spy samples under load, mirror frames counted.

End-to-end differences (``mirror_bench``) are a few µs per request under noise of tens of µs on a
shared machine. This samples the server process instead: perf_analyzer drives the mirrored copy of
a model (sample rate 1.0, a real sidecar) while ``py-spy record --native`` samples every thread of
the server; the share of samples whose stack passes through ``driftserve/server/mirror.py`` is the
mirror's share of the server's CPU, split into the tap (request path) and the sender (flush, encode
and the stream write). Times the server's CPU per request, read over an unprofiled window of the
same length just before (py-spy's stops cost the server CPU themselves), it gives the mirror's µs
per request. With ``--baseline-source DIR`` another build's server (and sidecar) runs
beside this one and the recordings alternate between them (ABBA), so both see the same machine.

    python -m benchmarks.mirror_profile --model-repository examples/repository [--baseline-source DIR]

Needs py-spy (the ``bench`` extra) and permission to ptrace the server (root, or
``kernel.yama.ptrace_scope=0``). Writes ``benchmarks/results/mirror_profile.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ServerProcess, markdown_table, start_driftserve, start_sidecar
from benchmarks.mirror_bench import cpu_seconds, make_repository, success_count
from benchmarks.perf_analyzer_runner import SCRIPT, round_order
from driftserve.core.machine import machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MIRROR_FILE = "driftserve/server/mirror.py"
WARM_UP_S = 3.0


def mirror_shares(collapsed: str) -> dict[str, float]:
    """Samples in total, and in the mirror's tap, sender and any mirror frame, from py-spy's raw output.

    Each line is ``frame;frame;... count``; a frame reads ``function (file:line)``.
    """
    counts = {"samples": 0, "mirror": 0, "tap": 0, "sender": 0}
    for line in collapsed.splitlines():
        stack, _, number = line.rpartition(" ")
        if not number.isdigit():
            continue
        samples = int(number)
        counts["samples"] += samples
        if MIRROR_FILE not in stack:
            continue
        counts["mirror"] += samples
        if f"MirrorPublisher.tap ({MIRROR_FILE}" in stack:
            counts["tap"] += samples
        elif f"MirrorPublisher._pump ({MIRROR_FILE}" in stack:
            counts["sender"] += samples
    return {key: float(value) for key, value in counts.items()}


class ProfilerUnavailable(RuntimeError):
    """py-spy cannot sample the server here (not installed, or no permission to ptrace it)."""


def py_spy() -> str:
    """The py-spy next to this interpreter (the virtual environment's), else the one on PATH."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy") or "py-spy"


def record(
    server: ServerProcess, model: str, concurrency: int, seconds: float, rate_hz: int, out: Path
) -> dict[str, float]:
    """py-spy over ``seconds`` of perf_analyzer load on ``model``; shares and CPU per request."""
    # One measurement window longer than the recording: perf_analyzer keeps the load on until stopped.
    load_command = [str(SCRIPT), "-i", "grpc", "-u", server.target, "-m", model, "-p", "3600000"]
    load_command += ["--concurrency-range", str(concurrency)]
    spy_command = [py_spy(), "record", "--native", "--threads", "--format", "raw", "-r", str(rate_hz)]
    spy_command += ["-d", str(int(seconds)), "-o", str(out), "--pid", str(server.proc.pid)]
    load = subprocess.Popen(load_command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(WARM_UP_S)
        # CPU per request first, unprofiled: py-spy stops the process at each sample, which costs it CPU.
        requests_before, cpu_before = success_count(server.target, model), cpu_seconds(server.proc.pid)
        time.sleep(seconds)
        cpu = cpu_seconds(server.proc.pid) - cpu_before
        requests = success_count(server.target, model) - requests_before
        spy = subprocess.run(spy_command, capture_output=True, text=True)
    finally:
        load.terminate()
        load.wait()
    if spy.returncode != 0 or not out.exists():
        raise ProfilerUnavailable(f"py-spy failed ({spy.returncode}): {spy.stderr.strip()[-500:]}")
    result = mirror_shares(out.read_text())
    result["server_cpu_us_per_request"] = cpu / max(requests, 1) * 1e6
    share = result["mirror"] / max(result["samples"], 1.0)
    result["mirror_share"] = share
    result["mirror_us_per_request"] = share * result["server_cpu_us_per_request"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=ROOT / "examples" / "repository")
    parser.add_argument("--model", default="breast_cancer_lr", help="breast_cancer_lr or breast_cancer_mlp")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0, help="per recording (and its unprofiled window)")
    parser.add_argument("--rate-hz", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--rounds", type=int, default=2, help="each build is recorded twice per round (ABBA)")
    parser.add_argument("--baseline-source", type=Path, help="source tree of another build, recorded beside this one")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    builds: list[tuple[str, Path | None]] = [("this", None)]
    if args.baseline_source is not None:
        builds.append(("baseline", args.baseline_source.resolve()))
    runs: dict[str, list[dict[str, float]]] = {build: [] for build, _ in builds}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repository"
        make_repository(args.model_repository, repo)
        stacks: dict[str, tuple[ServerProcess, ServerProcess]] = {}
        try:
            for build, source in builds:
                (Path(tmp) / build).mkdir()
                sidecar, address = start_sidecar(repo, Path(tmp) / build, source=source)
                server = start_driftserve(repo, Path(tmp) / build, ["--mirror-address", address], source=source)
                stacks[build] = (server, sidecar)
            for server, sidecar in stacks.values():
                sidecar.wait_ready()
                server.wait_ready()
            for round_index in range(args.rounds):
                for build, _ in [*round_order(builds, round_index), *round_order(builds, round_index + 1)]:
                    out = Path(tmp) / f"{build}-{round_index}-{len(runs[build])}.txt"
                    try:
                        result = record(
                            stacks[build][0],
                            f"{args.model}_mirrored",
                            args.concurrency,
                            args.seconds,
                            args.rate_hz,
                            out,
                        )
                    except ProfilerUnavailable as exc:  # the other benchmarks of `make bench` still run
                        print(f"{exc}; no profile written (py-spy needs ptrace: root or ptrace_scope=0)", flush=True)
                        return 0
                    runs[build].append(result)
                    print(
                        f"round {round_index + 1} {build} build: mirror {result['mirror_share']:.2%} of "
                        f"{result['samples']:.0f} samples (tap {result['tap']:.0f}, sender {result['sender']:.0f}); "
                        f"server CPU {result['server_cpu_us_per_request']:.0f} µs/request, mirror "
                        f"{result['mirror_us_per_request']:.1f} µs/request",
                        flush=True,
                    )
        finally:
            for server, sidecar in stacks.values():
                server.stop()
                sidecar.stop()
    write_report(args, argv, builds, runs)
    return 0


def write_report(
    args: argparse.Namespace,
    argv: list[str] | None,
    builds: list[tuple[str, Path | None]],
    runs: dict[str, list[dict[str, float]]],
) -> None:
    info = machine()
    command = "python -m benchmarks.mirror_profile " + " ".join(argv if argv is not None else sys.argv[1:])

    def median(build: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[build])

    def share(build: str, key: str) -> str:
        return f"{statistics.median(r[key] / max(r['samples'], 1.0) for r in runs[build]):.2%}"

    rows = [
        (
            build if source is None else f"{build} (`{source}`)",
            len(runs[build]),
            ", ".join(f"{r['mirror_share']:.2%}" for r in runs[build]),
            share(build, "tap"),
            share(build, "sender"),
            f"{median(build, 'server_cpu_us_per_request'):.0f}",
            f"{median(build, 'mirror_us_per_request'):.1f}",
        )
        for build, source in builds
    ]
    lines = [
        f"### Where the mirror's CPU goes: py-spy samples of the server ({args.model}, {args.concurrency} clients)",
        "",
        f"`{command}` — perf_analyzer on the mirrored copy (sample rate 1.0, real sidecar); `py-spy record "
        f"--native` at {args.rate_hz} Hz for {args.seconds:g} s per recording, builds alternating (ABBA); "
        f"medians; {info['nproc']} cores, {info['cpu']}, shared with other work; {info['date_utc']} UTC. "
        "Mirror µs per request: the mirror's share of the samples times the server's CPU per request "
        "over an unprofiled window just before each recording.",
        "",
        *markdown_table(
            (
                "build",
                "recordings",
                "mirror share of server samples",
                "tap",
                "sender (flush, write)",
                "server CPU (µs/req)",
                "mirror (µs/req)",
            ),
            rows,
        ),
        "",
    ]
    report: dict[str, Any] = {
        "command": command,
        "machine": info,
        "model": args.model,
        "concurrency": args.concurrency,
        "builds": {build: str(source) if source else "" for build, source in builds},
        "runs": runs,
        "median_mirror_us_per_request": {build: median(build, "mirror_us_per_request") for build, _ in builds},
    }
    (args.out / "mirror_profile.json").write_text(json.dumps(report, indent=2))
    (args.out / "mirror_profile.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
