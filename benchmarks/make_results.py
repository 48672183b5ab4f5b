"""``make bench``: run every benchmark in turn, then write ``benchmarks/RESULTS.md``.

Steps (each writes JSON + a Markdown section under ``benchmarks/results/``):

1. ``run_all`` — driftserve vs the naive baseline: closed- and open-loop sweeps, max rate meeting
   ``p99<100ms`` / ``p99<10ms``, p50 at concurrency 1 (the project's own load generator);
2. ``perf_analyzer_sweep`` — Triton's perf_analyzer at concurrency 1..8 and 32, both models;
   ``batching_bench`` — the large MLP at 32 clients, batching off vs on at several delays;
   ``slo_bench`` — both models: ``slo_p99_ms`` alone vs the example config, a sweep of fixed
   delays, batching off and the naive server, closed loop at 1..64 clients and open loop;
   ``idle_path_bench`` — one client: driftserve vs the naive server and the transport ceiling;
3. ``mirror_bench`` — server throughput and CPU with mirroring at sample rate 1.0 vs off;
   ``mirror_write_cost`` — CPU of one mirror stream write by rows per write; ``mirror_profile`` — the
   mirror's share of the server's CPU samples (py-spy) under load;
4. ``workers_bench`` — ``--workers`` 1 vs 2 on this machine; ``tls_overhead`` — plaintext vs TLS
   vs TLS with bearer tokens (and the token check as an aio interceptor), 1 and 16 clients;
   ``rest_vs_grpc`` — REST (JSON and binary tensors) next to gRPC ModelInfer on one server,
   1 / 8 / 32 clients;
5. micro-benchmarks (pytest-benchmark): codec, batcher, preprocessing kernels, drift update;
6. ``drift_ingest`` — detector update rows/s and memory over 10 M rows;
7. ``benchmarks.sidecar_loadtest`` — sidecar ingest through the real Mirror/Publish path, RSS soak;
8. ``fleet_merge_bench`` — fleet aggregation: merge cost vs replicas, features, bins; alert speed-up.

``--only-assemble`` rebuilds RESULTS.md from what is in ``benchmarks/results/``; sections measured
elsewhere (``workers_16core.md``, from a 16-core machine; ``peers.md``, from ``make bench-peers``,
which installs Triton, PyTriton and MLServer first; ``unary_cost.md``, which needs a second source
tree as its baseline) are included when present.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import markdown_table
from driftserve.core.machine import machine

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
OUTPUT = ROOT / "benchmarks" / "RESULTS.md"


def steps(repo: Path) -> list[tuple[str, list[str]]]:
    r = str(repo)
    out = str(RESULTS)
    return [
        ("slo", ["-m", "benchmarks.run_all", "--model-repository", r, "--out", out, "--no-progress"]),
        ("perf_analyzer", ["-m", "benchmarks.perf_analyzer_sweep", "--model-repository", r, "--out", out]),
        ("batching", ["-m", "benchmarks.batching_bench", "--model-repository", r, "--out", out]),
        ("slo_batching", ["-m", "benchmarks.slo_bench", "--model-repository", r, "--out", out]),
        ("idle_path", ["-m", "benchmarks.idle_path_bench", "--model-repository", r, "--out", out]),
        ("mirror", ["-m", "benchmarks.mirror_bench", "--model-repository", r, "--out", out]),
        ("mirror_write_cost", ["-m", "benchmarks.mirror_write_cost", "--model-repository", r, "--out", out]),
        ("mirror_profile", ["-m", "benchmarks.mirror_profile", "--model-repository", r, "--out", out]),
        ("workers", ["-m", "benchmarks.workers_bench", "--model-repository", r, "--workers", "1,2", "--out", out]),
        ("tls", ["-m", "benchmarks.tls_overhead", "--model-repository", r, "--out", out]),
        ("rest_vs_grpc", ["-m", "benchmarks.rest_vs_grpc", "--model-repository", r, "--out", out]),
        (
            "micro",
            [
                "-m",
                "pytest",
                "benchmarks/micro",
                "--benchmark-only",
                "-p",
                "no:cacheprovider",
                "-q",
                "--benchmark-json",
                str(RESULTS / "micro.json"),
            ],
        ),
        ("drift_ingest", ["-m", "benchmarks.drift_ingest", "--out", str(RESULTS / "drift_ingest.json")]),
        (
            "sidecar",
            [
                "-m",
                "benchmarks.sidecar_loadtest",
                "run",
                "--batch-sizes",
                "64",
                "512",
                "2048",
                "--duration-s",
                "5",
                "--rounds",
                "3",
                "--soak-s",
                "60",
                "--out",
                str(RESULTS / "sidecar.json"),
            ],
        ),
        ("fleet", ["-m", "benchmarks.fleet_merge_bench", "--out", str(RESULTS / "fleet.json")]),
    ]


def micro_markdown(path: Path) -> str:
    """Median per micro-benchmark; also drops the raw samples from the JSON to keep it small."""
    doc = json.loads(path.read_text())
    for bench in doc["benchmarks"]:
        bench["stats"].pop("data", None)
    path.write_text(json.dumps(doc, indent=1))
    lines = [
        "### Micro-benchmarks (pytest-benchmark)",
        "",
        "`python -m pytest benchmarks/micro --benchmark-only` — median per call.",
        "",
        *markdown_table(
            ("benchmark", "median (µs)"),
            (
                (
                    f"`{bench['fullname'].split('::', 1)[-1]}` ({Path(bench['fullname'].split('::')[0]).stem})",
                    f"{bench['stats']['median'] * 1e6:.2f}",
                )
                for bench in sorted(doc["benchmarks"], key=lambda b: b["fullname"])
            ),
        ),
    ]
    return "\n".join(lines) + "\n"


def drift_ingest_markdown(path: Path) -> str:
    d = json.loads(path.read_text())
    mem = d["memory"]
    lines = [
        "### Drift detector update (one core, 30 features, 1000 fine bins, 60 panes)",
        "",
        "`python -m benchmarks.drift_ingest` — rows per CPU-second of `ModelDriftMonitor.update`, "
        f"median of {d['rounds']} interleaved rounds; {d['date']}.",
        "",
        *markdown_table(
            ("batch rows", "rows/s (CPU)", "rows/s (wall)", "NumPy baseline rows/s", "speedup"),
            (
                (
                    batch,
                    f"{value:,.0f}",
                    f"{d['rows_per_s_wall_median'][batch]:,.0f}",
                    f"{d['numpy_baseline_rows_per_s_cpu_median'][batch]:,.0f}",
                    f"{d['speedup_vs_numpy_median'][batch]:.1f}×",
                )
                for batch, value in d["rows_per_s_cpu_median"].items()
            ),
            "rrrrr",
        ),
        "",
        f"Memory over {mem['rows']:,} rows: RSS {mem['rss_before_mib']:.1f} → {mem['rss_after_mib']:.1f} MiB; "
        f"detector state {mem['state_bytes_before']:,} → {mem['state_bytes_after']:,} bytes. "
        f"One `report()` takes {d['report_ms_median']:.1f} ms.",
    ]
    return "\n".join(lines) + "\n"


def sidecar_markdown(path: Path) -> str:
    d = json.loads(path.read_text())
    by_size: dict[int, list[dict[str, Any]]] = {}
    for row in d["throughput"]:
        by_size.setdefault(row["rows_per_batch"], []).append(row)

    def median(values: list[float]) -> float:
        values = sorted(values)
        return values[len(values) // 2]

    lines = [
        "### Sidecar ingest through the real `Mirror/Publish` path (publisher in another process)",
        "",
        "`python -m benchmarks.sidecar_loadtest run --batch-sizes 64 512 2048` — 30 features; medians over rounds.",
        "",
        *markdown_table(
            ("rows per MirrorBatch", "ingested rows/s", "rows per sidecar CPU-second"),
            (
                (
                    size,
                    f"{median([r['ingested_rows_per_s'] for r in rows]):,.0f}",
                    f"{median([r['rows_per_sidecar_cpu_s'] for r in rows]):,.0f}",
                )
                for size, rows in sorted(by_size.items())
            ),
            "rrr",
        ),
    ]
    soak = d.get("soak") or {}
    samples = soak.get("rss_samples") or soak.get("samples") or []
    if samples:
        first, last = samples[0], samples[-1]
        lines += ["", f"RSS soak: {json.dumps(first)} → {json.dumps(last)}"]
    return "\n".join(lines) + "\n"


PEER_NAMES = {"triton": "Triton", "pytriton": "PyTriton", "mlserver": "MLServer", "naive": "naive"}


def _times(value: float) -> str:
    """A ratio as ``1.23×``; NaN (no measurement: the section says why) as a dash."""
    return f"{value:.2f}×" if value == value else "–"


def _load(name: str) -> Any:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def headlines() -> list[str]:
    """The numbers the project's goals name, pulled from this run's JSON (where present)."""
    rows: list[tuple[str, str, str]] = []  # what, measured, goal
    pa = _load("perf_analyzer.json")
    if pa:
        lr1 = pa["results"]["breast_cancer_lr"]["1"]
        mlp32 = pa["results"]["breast_cancer_mlp"]["32"]
        rows.append(("small model, 1 client (perf_analyzer): p50", f"{lr1['p50_ms']:.2f} ms", "≤ 1 ms"))
        rows.append(
            (
                "large MLP, 32 clients (perf_analyzer), example config (latency-first 500 µs delay): throughput, p99",
                f"{mlp32['throughput_rps']:.0f} req/s, {mlp32['p99_ms']:.1f} ms",
                "(the ≥ 3,500 req/s, p99 < 15 ms target is for the best batching config: see the batching rows)",
            )
        )
    if pa and "versus_naive" in pa:
        for model, by_label in pa["versus_naive"].items():
            d, n = by_label["driftserve"], by_label["naive"]
            ratio = (
                pa.get("versus_ratio_median", {}).get(model, {}).get("32")
                or d["32"]["throughput_rps"] / n["32"]["throughput_rps"]
            )
            ceiling = by_label.get("grpc_ceiling", {}).get("32")
            rows.append(
                (
                    f"{model} vs naive (perf_analyzer): throughput at 32 clients; p50 at 1 client",
                    f"{ratio:.2f}×; {d['1']['p50_ms']:.2f} vs {n['1']['p50_ms']:.2f} ms"
                    + (f" (transport ceiling {ceiling['throughput_rps']:.0f} req/s)" if ceiling else ""),
                    "≥ 2× (MLP); lower p50",
                )
            )
    tuned = pa.get("throughput_config") if pa else None
    if tuned:
        model = tuned["model"]
        t = pa["versus_naive"][model]["driftserve_throughput_config"]["32"]
        delay = tuned["batching"]["max_queue_delay_us"]
        rows.append(
            (
                f"{model}, throughput config (max_queue_delay_us={delay}) vs naive (perf_analyzer): "
                "throughput at 32 clients",
                f"{tuned['ratio_median']['32']:.2f}×; {t['throughput_rps']:.0f} req/s, p99 {t['p99_ms']:.1f} ms",
                "≥ 2× (MLP)",
            )
        )
    batching = _load("batching.json")
    if batching:
        med, best = batching["median"], batching["best"]
        config = batching.get("best_configuration", f"max_queue_delay_us={best.removeprefix('mlp_delay')}")
        rows.append(
            (
                f"batching on (best: {config}) vs off, MLP at 32 clients",
                f"{batching.get('speedup_best_vs_off_median_of_rounds', batching['speedup_best_vs_off']):.2f}× "
                f"throughput; p99 {med[best]['p99_ms']:.1f} vs {med['mlp_nobatch']['p99_ms']:.1f} ms; "
                f"{med[best]['avg_batch_rows']:.1f} rows/batch",
                "≥ 2.5×, lower p99",
            )
        )
        if "grpc_ceiling" in med:
            best_run, ceiling = med[best], med["grpc_ceiling"]
            rows.append(
                (
                    "large MLP, 32 clients, best batching (batching run) vs the transport ceiling "
                    "(driftserve's gRPC front end, no model)",
                    f"{best_run['throughput_rps']:.0f} req/s, p99 {best_run['p99_ms']:.1f} ms vs "
                    f"{ceiling['throughput_rps']:.0f} req/s, p99 {ceiling['p99_ms']:.1f} ms",
                    "≥ 3,500 req/s, p99 < 15 ms",
                )
            )
    slo = _load("slo.json")
    if slo:
        for m in slo["models"]:
            closed = {(r["label"], r["level"]): r for r in m["closed"]}
            d1, n1 = closed.get(("driftserve", 1.0)), closed.get(("naive", 1.0))
            d32, n32 = closed.get(("driftserve", 32.0)), closed.get(("naive", 32.0))
            if d1 and n1:
                rows.append(
                    (
                        f"{m['model']}, 1 client (driftserve bench): p50 driftserve vs naive",
                        f"{d1['latency_ms']['p50']:.2f} vs {n1['latency_ms']['p50']:.2f} ms",
                        "lower",
                    )
                )
            if d32 and n32:
                rows.append(
                    (
                        f"{m['model']}, 32 clients (driftserve bench): throughput driftserve / naive",
                        f"{d32['throughput_rps'] / n32['throughput_rps']:.2f}×",
                        "≥ 2× (MLP)",
                    )
                )
    slo_batching = _load("slo_batching.json")
    if slo_batching:
        for model, r in slo_batching["models"].items():
            ratios = ", ".join(f"{c}: {v:.2f}" for c, v in r["slo_vs_best_fixed"].items())
            objective = slo_batching["slo_ms"]
            p99s = ", ".join(f"{100 * float(f):.0f}%: {res['slo']['p99_ms']:.1f}" for f, res in r["open_loop"].items())
            rows.append(
                (
                    f"{model}, only slo_p99_ms={objective:g} set: throughput / best fixed delay by clients; "
                    "open-loop p99 (ms) by share of max",
                    f"{ratios}; {p99s}",
                    f"≥ 0.90 at every level; p99 < {objective:g} ms up to 80%",
                )
            )
    unary = _load("unary_cost.json")
    if unary and "aio c=32" in unary.get("runs", {}) and "driftserve c=32" in unary["runs"]:

        def median_of(key: str, field: str) -> float:
            return statistics.median(run[field] for run in unary["runs"][key])

        cq, aio = "driftserve c=32", "aio c=32"
        rows.append(
            (
                "unary ModelInfer, MLP, 32 clients: server CPU per request and throughput, "
                "completion-queue front end vs grpc.aio",
                f"{median_of(cq, 'server_cpu_us_per_request'):.0f} vs {median_of(aio, 'server_cpu_us_per_request'):.0f}"
                f" µs; {median_of(cq, 'throughput_rps') / median_of(aio, 'throughput_rps'):.2f}× the requests"
                + (
                    f" (over ModelStreamInfer: {median_of('stream c=32', 'server_cpu_us_per_request'):.0f} µs)"
                    if "stream c=32" in unary["runs"]
                    else ""
                ),
                "unary toward the stream's cost",
            )
        )
    idle = _load("idle_path.json")
    if idle:
        for model, r in idle["models"].items():
            m = r["median"]
            rows.append(
                (
                    f"{model}, 1 client: p50 driftserve (example config) vs naive vs transport ceiling"
                    + (" (completion-queue front end / grpc.aio)" if "ceiling-aio" in m else ""),
                    f"{m['example']['p50_ms']:.3f} vs {m['naive']['p50_ms']:.3f} vs {m['ceiling']['p50_ms']:.3f}"
                    + (f" / {m['ceiling-aio']['p50_ms']:.3f}" if "ceiling-aio" in m else "")
                    + " ms",
                    "≤ naive; ≤ 1.3× ceiling",
                )
            )
    mirror = _load("mirror.json")
    if mirror:
        ratios = ", ".join(f"{k} {v:.2f}" for k, v in mirror["throughput_ratio"].items())
        rows.append(("throughput with mirroring at rate 1.0 / without", ratios, "≥ 0.90"))
        if "added_server_cpu_us_per_request" in mirror:
            baseline = mirror.get("baseline", {}).get("added_server_cpu_us_per_request", {})
            added = ", ".join(
                f"{k} {v:+.1f} µs" + (f" (baseline build {baseline[k]:+.1f})" if k in baseline else "")
                for k, v in mirror["added_server_cpu_us_per_request"].items()
            )
            rows.append(
                ("server CPU per request, mirroring at rate 1.0 minus without (per-round median)", added, "≤ 15 µs")
            )
    ingest = _load("drift_ingest.json")
    if ingest:
        best = max(ingest["rows_per_s_cpu_median"].values())
        mem = ingest["memory"]
        rows.append(
            (
                "drift update, one core, 30 features",
                f"{best:,.0f} rows/s; RSS {mem['rss_before_mib']:.0f} → {mem['rss_after_mib']:.0f} MiB "
                f"over {mem['rows'] / 1e6:.1f} M rows",
                "≥ 200,000 rows/s, flat memory",
            )
        )
    fleet = _load("fleet.json")
    if fleet:
        largest = max(fleet["merge"], key=lambda c: (c["group"] == "replicas", c["replicas"]))
        rows.append(
            (
                f"fleet merge, {largest['replicas']:,} replicas × {largest['features']} features × "
                f"{largest['bins']:,} bins",
                f"{largest['round_cpu_s'] * 1e3:,.0f} ms CPU per round, "
                f"{largest['decoded_bytes'] / 2**20:,.0f} MiB held",
                "linear in replicas, exact",
            )
        )
    peers = _load("peers.json")
    if peers:
        low, high = str(min(peers["concurrency"])), str(max(peers["concurrency"]))
        for model, r in peers["models"].items():
            for base, versus in (("driftserve", r["versus"]), ("driftserve with only slo_p99_ms", r.get("versus_slo"))):
                cells = [
                    f"{name}: {_times(by_c[low]['throughput'])} / {_times(by_c[high]['throughput'])}"
                    for name, by_c in ((PEER_NAMES.get(p, p), v) for p, v in (versus or {}).items() if p in PEER_NAMES)
                    if low in by_c and high in by_c
                ]
                if cells:
                    rows.append(
                        (
                            f"{model}, same model and client (perf_analyzer): {base} / peer throughput at "
                            f"{low} / {high} clients",
                            "; ".join(cells),
                            "> 1 vs MLServer; close to 1 vs Triton",
                        )
                    )
            triton = (r.get("versus_slo") or {}).get("triton", {}).get(high)
            if triton:
                rows.append(
                    (
                        f"{model}, only slo_p99_ms set, against Triton at {high} clients: throughput, p99, "
                        "server CPU per inference",
                        ", ".join(_times(triton[key]) for key in ("throughput", "p99", "cpu_per_inference")),
                        "≥ 1×, ≤ 1×, reported",
                    )
                )
    workers = _load("workers.json")
    if workers:
        med = workers["median"]
        for model in ("breast_cancer_lr", "breast_cancer_mlp"):
            if f"{model}|1" in med and f"{model}|2" in med:
                rows.append(
                    (
                        f"{model}: --workers 2 / 1 on this machine",
                        f"{med[f'{model}|2']['throughput_rps'] / med[f'{model}|1']['throughput_rps']:.2f}×",
                        "(2 cores, shared with the client)",
                    )
                )
    rest = _load("rest_vs_grpc.json")
    if rest and "grpc|8" in rest["runs"]:
        runs = rest["runs"]

        def per_round(path: str, key: str) -> float:
            return statistics.median(r[key] / g[key] for r, g in zip(runs[f"{path}|8"], runs["grpc|8"]))

        rows.append(
            (
                "REST / gRPC server CPU per request, 8 clients",
                f"binary tensors {per_round('rest-binary', 'server_cpu_us_per_request'):.2f}×, "
                f"JSON {per_round('rest-json', 'server_cpu_us_per_request'):.2f}× (throughput: see REST vs gRPC)",
                "REST costs the server no more than gRPC",
            )
        )
    return markdown_table(("what", "measured", "goal"), rows, "lll") if rows else []


SECTIONS = (
    ("slo.md", "Latency SLOs: driftserve vs the naive baseline"),
    ("perf_analyzer.md", "Serving core with Triton's perf_analyzer"),
    ("peers.md", "Next to Triton, PyTriton and MLServer"),
    ("batching.md", "Micro-batching"),
    ("slo_batching.md", "SLO batching: a latency objective instead of a delay"),
    ("idle_path.md", "The idle path: one client"),
    ("unary_cost.md", "Unary ModelInfer: server CPU per request, by thread"),
    ("mirror.md", "Mirroring overhead"),
    ("mirror_profile.md", "Where the mirror's CPU goes"),
    ("mirror_write_cost.md", "Mirror stream writes"),
    ("workers.md", "Multi-process serving on this machine"),
    ("rest_vs_grpc.md", "REST vs gRPC"),
    ("workers_16core.md", "Multi-process scaling on a 16-core machine"),
    ("tls.md", "TLS and auth overhead"),
    ("preprocessing.md", "Compiled preprocessing"),
    ("micro.md", "Request-path micro-benchmarks"),
    ("drift_ingest.md", "Drift detector"),
    ("sidecar_ingest.md", "Sidecar"),
    ("fleet.md", "Fleet-wide drift (many replicas)"),
)


def _strip_samples(path: Path) -> None:
    """pytest-benchmark JSON keeps every sample; the statistics are what the report needs."""
    doc = json.loads(path.read_text())
    if any("data" in b.get("stats", {}) for b in doc.get("benchmarks", [])):
        for bench in doc["benchmarks"]:
            bench["stats"].pop("data", None)
        path.write_text(json.dumps(doc, indent=1))


def assemble() -> None:
    for name in ("preprocessing.json", "drift_micro.json"):
        if (RESULTS / name).exists():
            _strip_samples(RESULTS / name)
    if (RESULTS / "micro.json").exists():
        (RESULTS / "micro.md").write_text(micro_markdown(RESULTS / "micro.json"))
    if (RESULTS / "drift_ingest.json").exists():
        (RESULTS / "drift_ingest.md").write_text(drift_ingest_markdown(RESULTS / "drift_ingest.json"))
    if (RESULTS / "sidecar.json").exists():
        (RESULTS / "sidecar_ingest.md").write_text(sidecar_markdown(RESULTS / "sidecar.json"))
    info = machine()
    parts = [
        "# driftserve benchmark results",
        "",
        "Produced by `make bench` (`python -m benchmarks.make_results`); raw JSON next to each section in "
        "`benchmarks/results/`. Unless a section says otherwise: "
        f"{info['nproc']} cores, {info['cpu']}, Python {info['python']}; assembled {info['date_utc']} UTC. "
        "This machine is shared and noisy (±35% run to run): compare numbers within one table, where "
        "configurations ran side by side, interleaved, and read ratios rather than absolutes.",
        "",
    ]
    summary = headlines()
    if summary:
        parts += ["## Headlines", "", *summary, ""]
    for name, title in SECTIONS:
        path = RESULTS / name
        if not path.exists():
            continue
        body = path.read_text().strip()
        body = "\n".join(("##" + line) if line.startswith("#") else line for line in body.splitlines())
        parts += [f"## {title}", "", body, ""]
    OUTPUT.write_text("\n".join(parts))
    print(f"wrote {OUTPUT}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=ROOT / "examples" / "repository")
    parser.add_argument("--only-assemble", action="store_true")
    parser.add_argument("--skip", default="", help="comma-separated step names to skip")
    args = parser.parse_args(argv)
    if not args.only_assemble:
        skip = set(filter(None, args.skip.split(",")))
        for name, step in steps(args.model_repository):
            if name in skip:
                continue
            started = time.monotonic()
            print(f"== {name}: python {' '.join(step)}", flush=True)
            code = subprocess.call([sys.executable, *step], cwd=ROOT)
            print(f"== {name}: exit {code} after {time.monotonic() - started:.0f} s", flush=True)
            if code != 0:
                print(f"benchmark step {name} failed", file=sys.stderr)
                return code
    assemble()
    return 0


if __name__ == "__main__":
    sys.exit(main())
