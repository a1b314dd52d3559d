#!/bin/sh
# Install Redis on the hot-path Redis server and apply its delivered files. Delivered by
# unde-infra and run after any of them changed. Its parameters are in "$0.env" beside it:
# REDIS_CONF, REDIS_ACL, REDIS_PORT, ADMIN_ENV (root-only: REDISCLI_AUTH of the admin user),
# DATA_DIR, STAMP (the checksum of the configuration Redis runs with).
#
# A changed redis.conf needs a restart (it writes a snapshot on the way down and loads it on the
# way up, a few seconds); changed users only need ACL LOAD, which drops no connection.
set -eu
# shellcheck source=/dev/null
. "$0.env"
"$APT_INSTALL" redis-server redis-tools prometheus-redis-exporter
install -d -o redis -g redis -m 0750 "$DATA_DIR"
systemctl daemon-reload
systemctl enable redis-server prometheus-redis-exporter
wanted=$(sha256sum "$REDIS_CONF" | cut -d' ' -f1)
running=$(cat "$STAMP" 2>/dev/null || true)
if [ "$wanted" != "$running" ] || ! systemctl is-active --quiet redis-server; then
    systemctl restart redis-server
else
    # The admin password reaches redis-cli through its environment, never its arguments.
    # shellcheck source=/dev/null
    REDISCLI_AUTH=$(. "$ADMIN_ENV" && printf '%s' "$REDISCLI_AUTH")
    export REDISCLI_AUTH
    reply=$(redis-cli --no-auth-warning --user admin -h 127.0.0.1 -p "$REDIS_PORT" ACL LOAD 2>&1) || true
    unset REDISCLI_AUTH
    [ "$reply" = OK ] || { echo "ACL LOAD failed: $reply" >&2; exit 1; }
fi
install -d -m 0755 "$(dirname "$STAMP")"
printf '%s\n' "$wanted" > "$STAMP"
systemctl restart prometheus-redis-exporter
