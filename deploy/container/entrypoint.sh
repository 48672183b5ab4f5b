#!/bin/sh
# The container image's start step (its ENTRYPOINT): entrypoint.sh ROLE [FLAG...]
#
#   server       the inference server            (driftserve serve FLAG...)
#   sidecar      the drift sidecar               (driftserve sidecar FLAG...)
#   run          both in one container [default] (driftserve run FLAG...)
#   drift        the drift tools, e.g. `drift report --address HOST:PORT`
#   healthcheck  exit 0 when this container's process answers SERVING on grpc.health.v1
#
# A first word that starts with "-" is a flag of `run`. `exec` makes driftserve the container's
# main process, so `docker stop` and Kubernetes' SIGTERM reach it directly (graceful drain).
set -eu
role=${1:-run}
if [ "$#" -gt 0 ]; then
    shift
fi
case "$role" in
    server | serve) exec driftserve serve "$@" ;;
    sidecar) exec driftserve sidecar "$@" ;;
    run) exec driftserve run "$@" ;;
    drift) exec driftserve drift "$@" ;;
    healthcheck) exec python "$(dirname "$0")/healthcheck.py" "$@" ;;
    -*) exec driftserve run "$role" "$@" ;;
    *)
        echo "entrypoint.sh: unknown role '$role'; expected server, sidecar, run, drift or healthcheck" >&2
        exit 2
        ;;
esac
