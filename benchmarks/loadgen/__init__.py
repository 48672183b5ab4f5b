"""The `driftserve bench` load generator: closed and open loop over native or V2 gRPC, HDR
percentiles merged across worker processes, SLO verdicts, sweeps and reports."""

from benchmarks.loadgen.runner import LoadError, LoadSpec, RunResult, run_load
from benchmarks.loadgen.slo import SLO, SLOError, Verdict, evaluate, load_slo_file, parse_slo

__all__ = ["LoadError", "LoadSpec", "RunResult", "SLO", "SLOError", "Verdict", "evaluate",
           "load_slo_file", "parse_slo", "run_load"]
