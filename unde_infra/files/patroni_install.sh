#!/bin/sh
# The pinned Patroni in its own virtualenv, installed only when that exact version is not there yet
# (a reinstall would not restart Patroni, but there is no need for one). Delivered by unde-infra;
# the failover drill installs Patroni with this same script. Its parameters are in "$0.env"
# beside it: PATRONI_VENV, PATRONI_VERSION, PATRONI_REQUIREMENTS (pip requirements, one a word)
# and PYTHON.
set -eu
# shellcheck source=/dev/null
. "$0.env"
patroni="$PATRONI_VENV/bin/patroni"
if [ "$("$patroni" --version 2>/dev/null || true)" != "patroni $PATRONI_VERSION" ]; then
    "$PYTHON" -m venv "$PATRONI_VENV"
    # One requirement a word; no globbing of their [extras].
    set -f
    # shellcheck disable=SC2086
    "$PATRONI_VENV/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir $PATRONI_REQUIREMENTS
    set +f
fi
test "$("$patroni" --version)" = "patroni $PATRONI_VERSION"
