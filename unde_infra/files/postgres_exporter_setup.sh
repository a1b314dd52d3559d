#!/bin/sh
# postgres_exporter beside a PostgreSQL this program does not run (production-db, staging-db).
# Delivered by unde-infra and run after its files changed.
#
#   postgres-exporter-setup        install, create the role, (re)start the exporter
#   postgres-exporter-setup role   create the exporter's pg_monitor role (once) and set its password
#
# Its parameters are in "$0.env" beside it: EXPORTER_ENV (root-only: DATA_SOURCE_USER and
# DATA_SOURCE_PASS) and PSQL (psql as the postgres user). The password reaches psql on stdin
# through printf, a shell builtin, so no process list ever shows it.
set -eu
# shellcheck source=/dev/null
. "$0.env"
if [ "${1:-}" != role ]; then
    "$APT_INSTALL" prometheus-postgres-exporter
fi
# shellcheck source=/dev/null
. "$EXPORTER_ENV"
case "$DATA_SOURCE_USER$DATA_SOURCE_PASS" in
    *[!A-Za-z0-9_-]*) echo "the exporter's user and password must be letters, digits, - and _" >&2; exit 1 ;;
esac
# shellcheck disable=SC2086
printf "DO \$\$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '%s') THEN CREATE ROLE %s LOGIN IN ROLE pg_monitor; END IF; END\$\$;\nALTER ROLE %s PASSWORD '%s';\n" \
    "$DATA_SOURCE_USER" "$DATA_SOURCE_USER" "$DATA_SOURCE_USER" "$DATA_SOURCE_PASS" | $PSQL
if [ "${1:-}" != role ]; then
    systemctl daemon-reload
    systemctl enable prometheus-postgres-exporter
    systemctl restart prometheus-postgres-exporter
fi
