#!/bin/sh
# A shard node (primary or replica): PostgreSQL from the PGDG repository (Debian 12 ships 15; the
# plan wants 17 with pgvector), Patroni from PyPI (pinned, patroni-install), PgBouncer, pgBackRest
# and postgres_exporter from Debian, then the services. Debian's own `main` cluster is never
# created: Patroni owns the data directory. Delivered by unde-infra and run after any of the
# node's files changed. Its parameters are in "$0.env" beside it: PG_VERSION, PGDG_KEY,
# PGDG_KEY_URL, PGDG_SOURCE, PACKAGES, PATRONI_INSTALL, RELOADED (services reloaded or restarted)
# and BACKUP_TIMERS.
set -eu
# shellcheck source=/dev/null
. "$0.env"
export DEBIAN_FRONTEND=noninteractive
install -d -m 0755 /etc/postgresql-common/createcluster.d
echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/unde-no-main.conf
if ! test -x "/usr/lib/postgresql/$PG_VERSION/bin/postgres"; then
    apt-get install -y -q curl ca-certificates
    install -d -m 0755 "$(dirname "$PGDG_KEY")"
    curl -fsSL -o "$PGDG_KEY" "$PGDG_KEY_URL"
    echo "$PGDG_SOURCE" > /etc/apt/sources.list.d/pgdg.list
    apt-get update -q
    apt-get install -y -q "postgresql-$PG_VERSION" "postgresql-$PG_VERSION-pgvector"
fi
# shellcheck disable=SC2086
apt-get install -y -q $PACKAGES
"$PATRONI_INSTALL"
systemctl daemon-reload
# shellcheck disable=SC2086
systemctl enable patroni $RELOADED $BACKUP_TIMERS
# shellcheck disable=SC2086
systemctl reload-or-restart $RELOADED
# Started once; afterwards a changed patroni.yml is re-read on reload (SIGHUP): a restart of
# Patroni would cost the shard its leader.
if systemctl is-active --quiet patroni; then
    systemctl reload patroni
else
    systemctl start patroni
fi
# shellcheck disable=SC2086
systemctl start $BACKUP_TIMERS
