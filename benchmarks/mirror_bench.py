"""Mirroring overhead: server throughput with the mirror tap at sample rate 1.0 vs no mirroring.

One server process, mirroring to a real sidecar process, serves two copies of each model: one
with a ``drift`` section (every request mirrored) and one without (never mirrored). perf_analyzer
measures them interleaved, round by round, so both see the same machine state. Shadow versions
are left out so the sidecar's own compute stays what drift needs. Writes
``benchmarks/results/mirror.{json,md}``.

    python -m benchmarks.mirror_bench --model-repository examples/repository [--rounds 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

from benchmarks.loadgen.launch import start_driftserve, start_sidecar
from benchmarks.loadgen.report import machine
from benchmarks.perf_analyzer_runner import run_perf_analyzer

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CASES = (("breast_cancer_lr", 8), ("breast_cancer_mlp", 32))


def make_repository(source: Path, dest: Path) -> list[tuple[str, str, int]]:
    """(model, variant, concurrency) for each served copy."""
    plan = []
    for model, concurrency in CASES:
        config = yaml.safe_load((source / model / "config.yaml").read_text())
        config.pop("deployment", None)
        version = max(int(p.name) for p in (source / model).iterdir() if p.name.isdigit())
        config["version_policy"] = {"specific": {"versions": [version]}}
        mirrored = dict(config, drift={**config["drift"], "mirror": {"sample_rate": 1.0}})
        plain = {k: v for k, v in config.items() if k != "drift"}
        for name, cfg in ((f"{model}_mirrored", mirrored), (f"{model}_plain", plain)):
            shutil.copytree(source / model / str(version), dest / name / str(version))
            shutil.copytree(source / model / "data", dest / name / "data")
            (dest / name / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        plan += [(model, "mirrored", concurrency), (model, "plain", concurrency)]
    return plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=ROOT / "examples" / "repository")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window-ms", type=int, default=4000)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repository"
        plan = make_repository(args.model_repository, repo)
        sidecar, address = start_sidecar(repo, Path(tmp))
        server = start_driftserve(repo, Path(tmp), ["--mirror-address", address])
        try:
            sidecar.wait_ready()
            server.wait_ready()
            for round_index in range(args.rounds):
                for model, variant, concurrency in plan:
                    name = f"{model}_{variant}"
                    result = run_perf_analyzer(server.target, name, concurrency, args.window_ms)
                    runs.setdefault(name, []).append(result)
                    print(f"round {round_index + 1} {name} c={concurrency}: {result['throughput_rps']:.0f} rps, "
                          f"p99 {result['p99_ms']:.2f} ms", flush=True)
        finally:
            server.stop()
            sidecar.stop()
    median = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    info = machine()
    command = "python -m benchmarks.mirror_bench " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "### Mirroring overhead: sample rate 1.0 vs no mirroring (server and sidecar on the same machine)",
        "",
        f"`{command}` — perf_analyzer, {args.rounds} interleaved rounds of {args.window_ms / 1000:g} s, medians; "
        f"{info['nproc']} cores, {info['cpu']}; {info['date_utc']} UTC.",
        "",
        "| model | clients | no mirror (req/s) | mirror 1.0 (req/s) | ratio | p99 no mirror (ms) | p99 mirror (ms) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    ratios = {}
    for model, concurrency in CASES:
        plain, mirrored = median[f"{model}_plain"], median[f"{model}_mirrored"]
        ratios[model] = mirrored["throughput_rps"] / plain["throughput_rps"]
        lines.append(f"| {model} | {concurrency} | {plain['throughput_rps']:.0f} | {mirrored['throughput_rps']:.0f} | "
                     f"{ratios[model]:.3f} | {plain['p99_ms']:.2f} | {mirrored['p99_ms']:.2f} |")
    lines.append("")
    (args.out / "mirror.json").write_text(json.dumps(
        {"command": command, "machine": info, "rounds": args.rounds, "runs": runs, "median": median,
         "throughput_ratio": ratios, "date": dt.date.today().isoformat()}, indent=2))
    (args.out / "mirror.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
