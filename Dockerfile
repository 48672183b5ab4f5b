# syntax=docker/dockerfile:1
# driftserve: the inference server and the drift sidecar in one image. Run them as two containers
# of one pod (deploy/kubernetes), or both in one container with `run` (the default). The example
# repository is built in the build stage and copied in; mount your own repository at /models.
#
#   docker build -t driftserve:0.1.0 .
#   docker run --rm -p 8001:8001 -p 8002:8002 -p 8004:8004 driftserve:0.1.0            # server + sidecar
#   docker run --rm -p 8001:8001 -v "$PWD/models:/models:ro" driftserve:0.1.0 server   # your repository
#
# Every install step is a subcommand of deploy/container/install.sh; tests/deploy runs the same
# steps into a fresh virtual environment, so this file holds no install logic of its own.
ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: the wheel, and the example repository (scikit-learn and skl2onnx stay in this stage)
FROM ${PYTHON_IMAGE} AS build
ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Dependencies first: this layer is rebuilt only when pyproject.toml or constraints.txt change.
COPY pyproject.toml constraints.txt ./
COPY deploy/container/install.sh deploy/container/install.sh
RUN deploy/container/install.sh requirements /opt/build pyproject.toml constraints.txt examples build-system
COPY README.md LICENSE ./
COPY driftserve/ driftserve/
RUN /opt/build/bin/python -m pip wheel --no-deps --no-build-isolation --wheel-dir /dist . \
 && deploy/container/install.sh wheel /opt/build /dist constraints.txt
COPY examples/ examples/
RUN /opt/build/bin/python -m examples.build_repository --out /models

# ---- runtime: the wheel's dependencies, the wheel, the repository and the warmed Numba cache
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    NUMBA_CACHE_DIR=/opt/driftserve/numba-cache \
    DRIFTSERVE_MODEL_REPOSITORY=/models \
    DRIFTSERVE_SIDECAR_MODEL_REPOSITORY=/models \
    DRIFTSERVE_SIDECAR_HTTP_HOST=0.0.0.0
WORKDIR /opt/driftserve
COPY deploy/container/install.sh ./
RUN --mount=type=bind,source=pyproject.toml,target=/tmp/context/pyproject.toml \
    --mount=type=bind,source=constraints.txt,target=/tmp/context/constraints.txt \
    ./install.sh requirements /opt/venv /tmp/context/pyproject.toml /tmp/context/constraints.txt
RUN --mount=type=bind,from=build,source=/dist,target=/tmp/dist \
    --mount=type=bind,source=constraints.txt,target=/tmp/context/constraints.txt \
    ./install.sh wheel /opt/venv /tmp/dist /tmp/context/constraints.txt
COPY --from=build /models /models
# Compile the kernels once, here, so a container starts without compiling them (~10 s). Numba
# only uses a cache directory it can write to, so the runtime user owns it (group 0 too, for
# platforms that run images under an arbitrary UID in group 0).
RUN ./install.sh warm /opt/venv /models \
 && chown -R 10001:0 "$NUMBA_CACHE_DIR" \
 && chmod -R g=u "$NUMBA_CACHE_DIR"
COPY deploy/container/entrypoint.sh deploy/container/healthcheck.py ./

# A numeric UID: Kubernetes' runAsNonRoot can only verify a numeric user.
USER 10001:0
# 8000 REST (V2 over HTTP), 8001 gRPC (native + Open Inference Protocol), 8002 server metrics,
# 8003 sidecar mirror/monitor gRPC, 8004 sidecar metrics, JSON API and dashboard.
EXPOSE 8000 8001 8002 8003 8004
HEALTHCHECK --start-period=60s --interval=10s --timeout=5s --retries=3 \
    CMD ["/opt/driftserve/entrypoint.sh", "healthcheck"]
ENTRYPOINT ["/opt/driftserve/entrypoint.sh"]
CMD ["run"]
