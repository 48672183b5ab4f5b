"""What TLS and bearer tokens cost: one closed-loop client against four servers side by side.

Four ``driftserve serve`` processes on one repository: plaintext; TLS; TLS with
``--auth-tokens-file`` (the token check where gRPC looks up the handler,
``driftserve.core.grpc_auth``); and TLS with the same check done by a ``grpc.aio.ServerInterceptor``
instead (the design not taken, started through this script's ``serve-interceptor`` entry, which
adds the interceptor to the server driftserve builds). The load is ``driftserve bench``'s closed
loop (its worker, ``run_worker``, run in this process so no run pays a process start) at 1 and 16
clients, unary V2 ModelInfer on breast_cancer_lr (the cheapest model, so the transport's share is
largest); rounds interleave the variants in ABBA order, each run after a short unmeasured warm-up
on the same channel settings. The server's CPU per request is ``utime + stime`` of its process
over the run divided by the requests it completed. Certificates come from ``trustme`` (the test
extra). Writes ``benchmarks/results/tls.{json,md}``.

    python -m benchmarks.tls_overhead --model-repository examples/repository [--rounds 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import uvloop
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.common import markdown_table
from benchmarks.perf_analyzer_runner import round_order
from driftserve.bench.payload import TensorSpec, build_arrays, serialize_requests
from driftserve.bench.tally import merge_reports
from driftserve.bench.worker import WorkerConfig, run_worker
from driftserve.core.client import ClientSecurity
from driftserve.core.commandline import driftserve_command
from driftserve.core.machine import machine
from driftserve.core.ports import free_port
from driftserve.core.processes import Child, start_process

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MODEL = "breast_cancer_lr"
TOKEN = "bench-token-0123456789abcdef"
VARIANTS = ("plaintext", "tls", "tls+token", "tls+token (aio interceptor)")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SPEC = [TensorSpec("input", "FP32", (-1, 30))]
WARMUP_S = 0.2


def serve_with_interceptor(argv: list[str]) -> int:
    """``driftserve serve ARGV`` with the token check as a grpc.aio.ServerInterceptor: the server
    is built as usual (tokens file unset), and every grpc.aio.server it creates gets the interceptor."""
    from driftserve.cli import main as cli_main
    from driftserve.core.auth import SCOPE_INFER, TokenAuthority
    from driftserve.core.errors import PermissionDenied, Unauthenticated
    from driftserve.core.grpc_auth import authorization_of

    tokens_at = argv.index("--interceptor-tokens-file")
    authority = TokenAuthority.from_file(Path(argv[tokens_at + 1]))
    argv = argv[:tokens_at] + argv[tokens_at + 2 :]

    class TokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
        async def intercept_service(self, continuation: Any, details: Any) -> Any:
            if details.method.startswith("/grpc.health."):
                return await continuation(details)
            try:
                authority.authorize(authorization_of(details.invocation_metadata), SCOPE_INFER)
            except (Unauthenticated, PermissionDenied) as exc:
                message, code = exc.message, exc.code

                async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
                    await context.abort(code, message)

                return grpc.unary_unary_rpc_method_handler(deny)
            return await continuation(details)

    original = grpc.aio.server

    def server_with_interceptor(*args: Any, **kwargs: Any) -> Any:
        return original(*args, interceptors=[TokenInterceptor()], **kwargs)

    grpc.aio.server = server_with_interceptor
    return cli_main(["serve", *argv])


def start(variant: str, repository: Path, tmp: Path, pki: dict[str, Path], tokens: Path) -> tuple[Child, str]:
    port = free_port()
    args = ["--model-repository", str(repository), "--host", "127.0.0.1", "--grpc-port", str(port)]
    args += ["--metrics-port", "-1", "--http-port", "-1", "--log-level", "WARNING"]
    if variant != "plaintext":
        args += ["--tls-cert", str(pki["cert"]), "--tls-key", str(pki["key"])]
    if variant == "tls+token":
        args += ["--auth-tokens-file", str(tokens)]
    if variant.endswith("interceptor)"):
        command = [sys.executable, "-m", "benchmarks.tls_overhead", "serve-interceptor", *args]
        command += ["--interceptor-tokens-file", str(tokens)]
    else:
        command = driftserve_command("serve", *args)
    log = tmp / f"{variant.replace(' ', '_')}.log"
    return start_process(variant, command, output=log, cwd=ROOT), f"127.0.0.1:{port}"


def security(variant: str, pki: dict[str, Path]) -> ClientSecurity:
    if variant == "plaintext":
        return ClientSecurity()
    return ClientSecurity(tls_ca=pki["ca"], token=TOKEN if "token" in variant else None)


def wait_ready(child: Child, target: str, client: ClientSecurity, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    with client.channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if child.process.poll() is not None:
                raise RuntimeError(f"{child.name} exited with {child.process.returncode}")
            try:
                if health.Check(health_pb2.HealthCheckRequest(), timeout=1.0).status == 1:
                    return
            except grpc.RpcError:
                pass  # not listening yet: poll again
            time.sleep(0.2)
    raise RuntimeError(f"{child.name} not ready within {timeout_s:g} s")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def closed_loop(
    target: str, clients: int, duration_s: float, client: ClientSecurity, requests: tuple[bytes, ...]
) -> Any:
    """One closed-loop run of ``clients`` on one channel, no warm-up; the merged tally."""
    config = WorkerConfig(
        index=0,
        target=target,
        protocol="v2",
        streaming=False,
        requests=requests,
        mode="closed",
        concurrency=clients,
        rate_rps=0.0,
        arrival="constant",
        seed=0,
        phase=0.0,
        warmup_s=0.0,
        duration_s=duration_s,
        timeout_s=10.0,
        max_outstanding=10_000,
        lag_threshold_s=0.002,
        security=client,
    )
    return merge_reports([uvloop.run(run_worker(config, time.monotonic()))])


def paired_delta_us(runs: dict[str, list[dict[str, float]]], variant: str, base: str, n: int, key: str) -> float:
    """Median over rounds of ``variant`` minus ``base`` measured in the same round (µs for p50 keys)."""
    scale = 1e3 if key.endswith("_ms") else 1.0
    pairs = zip(runs[f"{variant}|{n}"], runs[f"{base}|{n}"])
    return statistics.median((a[key] - b[key]) * scale for a, b in pairs)


def reading(runs: dict[str, list[dict[str, float]]], clients: list[int]) -> list[str]:
    """What the table says, as differences paired within each round (the machine drifts between rounds)."""
    one = clients[0]
    cpu = "server_cpu_us_per_request"
    return [
        f"Paired within each round, median over rounds: at {one} client TLS adds "
        f"{paired_delta_us(runs, 'tls', 'plaintext', one, 'p50_ms'):+.0f} µs to p50 and "
        f"{paired_delta_us(runs, 'tls', 'plaintext', one, cpu):+.0f} µs of server CPU per request; the token "
        f"check adds {paired_delta_us(runs, 'tls+token', 'tls', one, 'p50_ms'):+.0f} µs p50 and "
        f"{paired_delta_us(runs, 'tls+token', 'tls', one, cpu):+.0f} µs CPU to TLS (as an aio interceptor: "
        f"{paired_delta_us(runs, 'tls+token (aio interceptor)', 'tls', one, 'p50_ms'):+.0f} µs p50, "
        f"{paired_delta_us(runs, 'tls+token (aio interceptor)', 'tls', one, cpu):+.0f} µs CPU). On this shared "
        "machine single runs move by tens of percent, more than these differences: read them as "
        "'within the noise' unless they repeat across runs."
    ]


def make_pki(directory: Path) -> dict[str, Path]:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = {"ca": directory / "ca.pem", "cert": directory / "server.pem", "key": directory / "server.key"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    cert.private_key_pem.write_to_path(str(paths["key"]))
    paths["cert"].write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    return paths


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve-interceptor"]:
        return serve_with_interceptor(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=ROOT / "examples" / "repository")
    parser.add_argument("--clients", default="1,16", help="comma-separated closed-loop client counts")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration-s", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    clients = [int(c) for c in args.clients.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    requests = tuple(serialize_requests(build_arrays(SPEC, 1, pool_size=64), SPEC, "v2", MODEL))
    runs: dict[str, list[dict[str, float]]] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        pki = make_pki(tmp)
        tokens = tmp / "tokens"
        tokens.write_text(f"{TOKEN} infer\n")
        tokens.chmod(0o600)
        servers = {variant: start(variant, args.model_repository, tmp, pki, tokens) for variant in VARIANTS}
        try:
            for variant, (child, target) in servers.items():
                wait_ready(child, target, security(variant, pki))
            for round_index in range(args.rounds):
                for n in clients:
                    for variant in round_order(VARIANTS, round_index):
                        child, target = servers[variant]
                        client = security(variant, pki)
                        closed_loop(target, n, WARMUP_S, client, requests)
                        cpu0 = cpu_seconds(child.process.pid)
                        result = closed_loop(target, n, args.duration_s, client, requests)
                        cpu = cpu_seconds(child.process.pid) - cpu0
                        if result.errors:
                            raise RuntimeError(f"{variant}: errors {result.errors}")
                        percentiles = result.percentiles_us()
                        row = {
                            "throughput_rps": result.ok / args.duration_s,
                            "p50_ms": percentiles[50.0] / 1e3,
                            "p99_ms": percentiles[99.0] / 1e3,
                            "server_cpu_us_per_request": cpu / max(result.ok, 1) * 1e6,
                        }
                        runs.setdefault(f"{variant}|{n}", []).append(row)
                        print(
                            f"round {round_index + 1} {variant} c={n}: {row['throughput_rps']:.0f} rps, "
                            f"p50 {row['p50_ms']:.3f} ms, p99 {row['p99_ms']:.3f} ms, "
                            f"server CPU {row['server_cpu_us_per_request']:.0f} µs/req",
                            flush=True,
                        )
        finally:
            for child, _ in servers.values():
                child.terminate(15.0)
    median = {key: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for key, rs in runs.items()}
    ratios = {
        key: statistics.median(
            r["throughput_rps"] / base["throughput_rps"] for r, base in zip(rs, runs[f"plaintext|{key.split('|')[1]}"])
        )
        for key, rs in runs.items()
    }
    info = machine()
    command = "python -m benchmarks.tls_overhead " + " ".join(argv)
    rows = []
    for n in clients:
        base = median[f"plaintext|{n}"]
        for variant in VARIANTS:
            m = median[f"{variant}|{n}"]
            rows.append(
                (
                    n,
                    variant,
                    f"{m['throughput_rps']:.0f}",
                    f"{ratios[f'{variant}|{n}']:.3f}",
                    f"{m['p50_ms']:.3f}",
                    f"{m['p50_ms'] / base['p50_ms']:.2f}×",
                    f"{m['p99_ms']:.3f}",
                    f"{m['server_cpu_us_per_request']:.0f}",
                )
            )
    lines = [
        "### TLS and bearer-token overhead (unary V2 ModelInfer, breast_cancer_lr, closed loop)",
        "",
        f"`{command}` — `driftserve bench`'s closed-loop worker, one channel, "
        f"{args.rounds} rounds of {args.duration_s:g} s per variant in ABBA order; throughput ratio: median "
        f"of the per-round ratios to plaintext, other columns: medians; server CPU: the server process's "
        f"time per completed request; four servers and the client on "
        f"{info['nproc']} shared cores, {info['cpu']}; {info['date_utc']} UTC; "
        f"{time.monotonic() - started:.0f} s in all. 'tls+token' is driftserve's check in the handler "
        "lookup; '(aio interceptor)' is the same check as a grpc.aio.ServerInterceptor.",
        "",
        *reading(runs, clients),
        "",
        *markdown_table(
            (
                "clients",
                "variant",
                "req/s",
                "vs plaintext",
                "p50 (ms)",
                "p50 vs plaintext",
                "p99 (ms)",
                "server CPU (µs/req)",
            ),
            rows,
        ),
        "",
    ]
    (args.out / "tls.json").write_text(
        json.dumps(
            {
                "command": command,
                "machine": info,
                "rounds": args.rounds,
                "order": "ABBA",
                "runs": runs,
                "median": median,
                "throughput_ratio_to_plaintext": ratios,
                "date": dt.date.today().isoformat(),
            },
            indent=2,
        )
    )
    (args.out / "tls.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
