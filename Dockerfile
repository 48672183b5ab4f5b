# driftserve: the inference server and the drift sidecar in one image (run them as two containers
# of one pod, or both at once with `driftserve run`). The example repository is built at image
# build time from a dataset scikit-learn ships; mount your own repository at /models instead.
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    NUMBA_CACHE_DIR=/tmp/numba-cache

WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY driftserve ./driftserve
COPY examples ./examples

RUN pip install -c constraints.txt '.[examples]' \
 && python -m examples.build_repository --out /models \
 && useradd --create-home --uid 10001 driftserve
USER driftserve

# 8000 REST (Open Inference Protocol over HTTP/JSON), 8001 gRPC (native + Open Inference Protocol),
# 8002 server metrics, 8003 sidecar mirror/monitor gRPC, 8004 sidecar metrics, JSON API and dashboard.
EXPOSE 8000 8001 8002 8003 8004
ENV DRIFTSERVE_MODEL_REPOSITORY=/models
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import grpc,sys; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; sys.exit(g.HealthStub(grpc.insecure_channel('127.0.0.1:8001')).Check(h.HealthCheckRequest(), timeout=2).status != 1)"
ENTRYPOINT ["driftserve"]
CMD ["run", "--sidecar-listen", "127.0.0.1:8003"]
