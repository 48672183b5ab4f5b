#!/bin/sh
# System tools some tests need: promtool (Debian's `prometheus` package) checks the shipped
# Prometheus config and rules, and headless `chromium` renders the sidecar's dashboard page.
#
# As root with apt-get, installs whichever is missing (non-interactive, one `apt-get update`).
# Otherwise prints one line naming what is missing; the tests that need it are then skipped with
# that reason. Never fails: a build without these tools still runs every other test.
set -u

missing=""
command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    missing="$missing chromium"
fi
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "system packages missing:$missing (needs root and apt-get to install); promtool/chromium tests will be skipped"
    exit 0
fi

echo "installing system packages:$missing"
export DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes
# Wait for a dpkg lock held by another install instead of failing at once.
lock="-o DPkg::Lock::Timeout=600"
# shellcheck disable=SC2086
if apt-get $lock update -qq >/dev/null \
    && apt-get $lock install -y -qq --no-install-recommends $missing >/dev/null; then
    exit 0
fi
echo "system packages missing:$missing (apt-get install failed); promtool/chromium tests will be skipped"
exit 0
