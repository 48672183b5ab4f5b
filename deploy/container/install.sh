#!/usr/bin/env bash
# The container image's install steps, one subcommand per Dockerfile layer, in the order the
# Dockerfile runs them. tests/deploy runs the same steps into a fresh virtual environment, so what
# the image does is tested without a Docker engine.
#
#   install.sh requirements VENV PYPROJECT CONSTRAINTS [GROUP...]
#       Create VENV (unless it exists) and install driftserve's runtime dependencies, read from
#       PYPROJECT, pinned by CONSTRAINTS. GROUP adds an optional-dependency group of PYPROJECT
#       (e.g. examples) or `build-system` (what building the wheel needs). Depends on those two
#       files only, so a code change does not reinstall the dependencies.
#   install.sh wheel VENV WHEEL_DIR CONSTRAINTS
#       Install the one driftserve-*.whl found in WHEEL_DIR.
#   install.sh warm VENV REPOSITORY
#       Start `driftserve run` (server and sidecar) once on REPOSITORY, loading every model, and
#       stop it: the Numba kernels (preprocessing, drift binning) compile into $NUMBA_CACHE_DIR,
#       so later starts load them instead of compiling them again (~10 s of a cold start).
set -euo pipefail

die() {
    echo "install.sh: $*" >&2
    exit 2
}

usage="usage: install.sh requirements VENV PYPROJECT CONSTRAINTS [GROUP...] | wheel VENV WHEEL_DIR CONSTRAINTS | warm VENV REPOSITORY"
[ "$#" -ge 3 ] || die "$usage"
step=$1
venv=$2
shift 2

ensure_venv() {
    if [ ! -x "$venv/bin/python" ]; then
        "${PYTHON:-python3}" -m venv "$venv"
    fi
}

pip_install() {
    "$venv/bin/python" -m pip install --no-cache-dir --disable-pip-version-check --quiet "$@"
}

requirements() {
    local pyproject=$1 constraints=$2
    shift 2
    [ -f "$pyproject" ] || die "requirements: $pyproject is not a file"
    [ -f "$constraints" ] || die "requirements: $constraints is not a file"
    ensure_venv
    local listed
    listed=$(mktemp)
    # tomllib is in the standard library from Python 3.11, the oldest one driftserve supports.
    "$venv/bin/python" - "$pyproject" "$@" >"$listed" <<'PY'
import sys
import tomllib

with open(sys.argv[1], "rb") as fh:
    pyproject = tomllib.load(fh)
requirements = list(pyproject["project"]["dependencies"])
optional = pyproject["project"].get("optional-dependencies", {})
for group in sys.argv[2:]:
    if group == "build-system":
        requirements += pyproject["build-system"]["requires"]
    elif group in optional:
        requirements += optional[group]
    else:
        sys.exit(f"install.sh: requirements: no optional-dependency group {group!r} in {sys.argv[1]}; "
                 f"groups there: {', '.join(sorted(optional))}, build-system")
print("\n".join(requirements))
PY
    pip_install --constraint "$constraints" --requirement "$listed"
    rm -f "$listed"
}

wheel() {
    local wheel_dir=$1 constraints=$2
    local wheels=("$wheel_dir"/driftserve-*.whl)
    [ "${#wheels[@]}" -eq 1 ] && [ -f "${wheels[0]}" ] || die "wheel: expected one driftserve-*.whl in $wheel_dir"
    ensure_venv
    pip_install --constraint "$constraints" "${wheels[0]}"
}

warm() {
    local repository=$1
    [ -n "${NUMBA_CACHE_DIR:-}" ] || die "warm: set NUMBA_CACHE_DIR (where the compiled kernels go)"
    [ -d "$repository" ] || die "warm: $repository is not a directory"
    [ -x "$venv/bin/driftserve" ] || die "warm: no $venv/bin/driftserve; run the wheel step first"
    mkdir -p "$NUMBA_CACHE_DIR"
    NUMBA_CACHE_DIR=$(cd "$NUMBA_CACHE_DIR" && pwd)
    export NUMBA_CACHE_DIR
    local models=() dir count=0
    for dir in "$repository"/*/; do
        if [ -f "$dir/config.yaml" ]; then
            models+=(--load-model "$(basename "$dir")")
            count=$((count + 1))
        fi
    done
    [ "$count" -gt 0 ] || die "warm: no model (<name>/config.yaml) in $repository"
    local work log pid code
    work=$(mktemp -d)
    # Started from an empty directory: `driftserve run` starts its children with `python -m
    # driftserve`, which puts the working directory first on sys.path, so a driftserve source tree
    # there would be imported instead of the installed package, and the cache keyed to its path.
    repository=$(cd "$repository" && pwd)
    venv=$(cd "$venv" && pwd)
    cd "$work"
    log="$work/run.log"
    # Every model must load (--exit-on-error), on ports nobody else uses: a free gRPC port, no
    # metrics or HTTP port, the sidecar on a unix socket.
    "$venv/bin/driftserve" run --model-repository "$repository" "${models[@]}" --exit-on-error \
        --host 127.0.0.1 --grpc-port 0 --metrics-port -1 \
        --sidecar-listen "unix:$work/sidecar.sock" --sidecar-http-port -1 >"$log" 2>&1 &
    pid=$!
    local deadline=$((SECONDS + ${DRIFTSERVE_WARM_TIMEOUT_S:-600}))
    until grep -q '^driftserve is up' "$log"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            cat "$log" >&2
            die "warm: driftserve run exited before it was ready (its output is above)"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            kill -KILL "$pid" 2>/dev/null || true
            cat "$log" >&2
            die "warm: driftserve run was not ready within ${DRIFTSERVE_WARM_TIMEOUT_S:-600} s"
        fi
        sleep 0.5
    done
    kill -TERM "$pid"
    code=0
    wait "$pid" || code=$?
    if [ "$code" -ne 0 ]; then
        cat "$log" >&2
        die "warm: driftserve run exited with $code after SIGTERM (its output is above)"
    fi
    local indexes
    indexes=$(find "$NUMBA_CACHE_DIR" -name '*.nbi' | wc -l)
    [ "$indexes" -gt 0 ] || die "warm: no Numba cache index (*.nbi) was written under $NUMBA_CACHE_DIR"
    rm -rf "$work"
    echo "install.sh: warm: $count models loaded; $indexes Numba cache indexes in $NUMBA_CACHE_DIR"
}

case "$step" in
    requirements) [ "$#" -ge 2 ] || die "$usage"; requirements "$@" ;;
    wheel) [ "$#" -eq 2 ] || die "$usage"; wheel "$@" ;;
    warm) [ "$#" -eq 1 ] || die "$usage"; warm "$@" ;;
    *) die "unknown step '$step'; $usage" ;;
esac
