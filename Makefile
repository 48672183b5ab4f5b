# driftserve: `make run` sets up and runs server + sidecar on the example repository;
# `make test` sets up and runs the whole test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
REPO ?= examples/repository
EXTRAS := examples,bench,test,dev

.PHONY: setup repository run serve demo lint test system-packages bench bench-slo bench-peers protos image clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	touch $@

repository: setup $(REPO)/.built

$(REPO)/.built: examples/*.py
	$(PY) -m examples.build_repository --out $(REPO)
	touch $@

run: repository
	$(PY) -m driftserve run --model-repository $(REPO)

serve: repository
	$(PY) -m driftserve serve --model-repository $(REPO)

# Drift -> retrain -> gate -> shadow -> canary -> promote, end to end (a few minutes; see README "Rollouts").
demo: repository
	$(PY) -m examples.rollout_demo --source $(REPO)

# Lint, format, import contracts and types (configured in pyproject.toml); zero findings.
lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports
	$(PY) -m mypy

test: lint system-packages
	$(PY) -m pytest -p no:cacheprovider

# promtool and headless Chromium for the monitoring and dashboard tests: installed as root with
# apt-get, otherwise one line says what is missing and those tests are skipped. Never fails.
system-packages:
	@sh scripts/install-system-packages.sh

# Every benchmark in turn (about 30 minutes), then benchmarks/RESULTS.md.
bench: repository
	benchmarks/perf_analyzer.sh --setup-only
	$(PY) -m benchmarks.make_results --model-repository $(REPO)

# SLO batching alone (about 40 minutes; BENCH_ARGS=--quick for a few): benchmarks/results/slo_batching.*
bench-slo: repository
	benchmarks/perf_analyzer.sh --setup-only
	$(PY) -m benchmarks.slo_bench --model-repository $(REPO) $(BENCH_ARGS)

# driftserve next to Triton (Python backend), PyTriton and MLServer serving the same ONNX models, with
# perf_analyzer (about 30 minutes; BENCH_ARGS="--rounds 1 --window-ms 2000 --models breast_cancer_mlp" for
# a few). The peers install into their own venvs under .peers/ first: benchmarks/results/peers.*
bench-peers: repository
	benchmarks/perf_analyzer.sh --setup-only
	benchmarks/peers/install.sh
	$(PY) -m benchmarks.peers.bench --model-repository $(REPO) $(BENCH_ARGS)

protos: setup
	$(PY) scripts/gen_protos.py

# The container image (Dockerfile; needs a Docker engine with BuildKit). README: "Run in a container".
IMAGE ?= driftserve:0.1.0
image:
	docker build -t $(IMAGE) .

clean:
	rm -rf $(VENV) $(REPO) .pytest_cache .benchmarks
