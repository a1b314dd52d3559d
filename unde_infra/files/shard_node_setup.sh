#!/bin/sh
# A shard node (primary or replica): PostgreSQL with pgvector, Patroni, PgBouncer, pgBackRest and
# postgres_exporter, then the services. On Debian 13 (trixie: the servers unde-infra creates)
# every package comes from Debian's own archive. On Debian 12 (bookworm: adopted hosts)
# PostgreSQL 17 and pgvector come from the PGDG repository (Debian 12 ships 15, no pgvector) and
# Patroni from PyPI, pinned (patroni-install; Debian 12's 3.0.2 has the double-demote race), with
# its patronictl linked onto PATH. Debian's own `main` cluster is never created: Patroni owns the
# data directory. Delivered by unde-infra and run after any of the node's files changed. Its
# parameters are in "$0.env" beside it: CODENAME (the system it was rendered for), PG_VERSION,
# PGDG_KEY, PGDG_KEY_URL, PGDG_SOURCE (empty: no PGDG), PACKAGES, PATRONI_INSTALL and
# PATRONI_VENV (empty: Debian's Patroni), RELOADED (services reloaded or restarted),
# BACKUP_TIMERS and WATCHERS (path units: PgBouncer follows the node's role).
set -eu
# shellcheck source=/dev/null
. "$0.env"
# The rendered units and packages fit one system: refuse another rather than half-install it.
# shellcheck source=/dev/null
running=$(. /etc/os-release && echo "${VERSION_CODENAME:-unknown}")
if [ "$running" != "$CODENAME" ]; then
    echo "this node runs Debian $running, its files were rendered for $CODENAME: set its os in the topology" \
        "(servers.<name>.os) or the stack (hosts.<name>.os)" >&2
    exit 1
fi
install -d -m 0755 /etc/postgresql-common/createcluster.d
echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/unde-no-main.conf
if [ -n "$PGDG_SOURCE" ] && ! test -x "/usr/lib/postgresql/$PG_VERSION/bin/postgres"; then
    "$APT_INSTALL" curl ca-certificates
    install -d -m 0755 "$(dirname "$PGDG_KEY")"
    curl -fsSL -o "$PGDG_KEY" "$PGDG_KEY_URL"
    echo "$PGDG_SOURCE" > /etc/apt/sources.list.d/pgdg.list
    "$APT_INSTALL" "postgresql-$PG_VERSION" "postgresql-$PG_VERSION-pgvector"
fi
# shellcheck disable=SC2086
"$APT_INSTALL" $PACKAGES
if [ -n "$PATRONI_INSTALL" ]; then
    "$PATRONI_INSTALL"
    # One name for operators on both systems (Debian's package has /usr/bin/patronictl).
    ln -sfn "$PATRONI_VENV/bin/patronictl" /usr/local/bin/patronictl
fi
systemctl daemon-reload
# shellcheck disable=SC2086
systemctl enable patroni $RELOADED $BACKUP_TIMERS $WATCHERS
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
systemctl start $BACKUP_TIMERS $WATCHERS
