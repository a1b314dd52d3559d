#!/bin/sh
# The exporter's ACL user on a running Redis this program does not configure (push: Celery's
# broker), created at run time with ACL SETUSER: no restart, no configuration file changed,
# every other user (Celery's) untouched. Delivered by unde-infra. A user created at run time is
# gone after Redis restarts, so a timer runs this again every few minutes.
#
#   redis-exporter-user            create or refresh the user
#   redis-exporter-user install    install the exporter, then create the user and start both
#
# Its parameters are in "$0.env" beside it: REDIS_PORT, EXPORTER_USER, HASH_FILE
# (root-only: the SHA-256 of the exporter's password, so that no password is ever in argv) and
# RULES (the user's ACL rules) and TIMER (the unit that runs this again).
set -eu
# shellcheck source=/dev/null
. "$0.env"
if [ "${1:-}" = install ]; then
    "$APT_INSTALL" prometheus-redis-exporter
    systemctl daemon-reload
fi
hash=$(cat "$HASH_FILE")
# Word splitting of RULES is intended (one ACL rule per word); no rule contains a glob.
set -f
# shellcheck disable=SC2086
reply=$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ACL SETUSER "$EXPORTER_USER" reset on "#$hash" $RULES 2>&1) || true
set +f
if [ "$reply" != OK ]; then
    # Left as it is, the exporter reports redis_up 0 and the RedisDown alert says so; the
    # broker itself is never touched.
    echo "could not create the ACL user $EXPORTER_USER: $reply" >&2
fi
if [ "${1:-}" = install ]; then
    systemctl enable --now "$TIMER" prometheus-redis-exporter
    systemctl restart prometheus-redis-exporter
fi
