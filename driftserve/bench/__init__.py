"""The ``driftserve bench`` load generator: closed and open loop over native or V2 gRPC, HDR
percentiles merged across worker processes, SLO verdicts, sweeps and reports.

Needs the ``bench`` extra (``pip install 'driftserve[bench]'``); ``driftserve.bench.cli`` says so
when it is missing instead of failing on an import.
"""
