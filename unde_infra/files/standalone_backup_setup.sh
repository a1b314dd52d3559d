#!/bin/sh
# pgBackRest for a PostgreSQL this program does not run (production-db, staging-db): installed,
# the data directory found, WAL archiving switched on with a reload. archive_mode itself takes
# effect only at PostgreSQL's next restart, which this never does: until then the backups fail
# and the BackupFullTooOld alert says so (docs/backups.md: one restart in a maintenance window).
# Delivered by unde-infra. Its parameters are in "$0.env" beside it: CONFIG, SECRETS_CONF,
# PG_PATH_CONF, STANZA, LOG_DIR, SPOOL_DIR, LOCK_DIR and BACKUP_TIMERS.
set -eu
# shellcheck source=/dev/null
. "$0.env"
psql() {
    runuser -u postgres -- psql -X -A -t -q -v ON_ERROR_STOP=1 "$@"
}
"$APT_INSTALL" pgbackrest
install -d -o postgres -g postgres -m 0750 "$LOG_DIR" "$SPOOL_DIR" "$LOCK_DIR"
chown postgres:postgres "$SECRETS_CONF"
chmod 0600 "$SECRETS_CONF"
data_dir=$(psql -c "SHOW data_directory")
printf '[%s]\npg1-path=%s\n' "$STANZA" "$data_dir" > "$PG_PATH_CONF"
archive="pgbackrest --config=$CONFIG --stanza=$STANZA archive-push %p"
psql -c "ALTER SYSTEM SET archive_command = '$archive'"
psql -c "ALTER SYSTEM SET archive_mode = 'on'" -c 'SELECT pg_reload_conf()'
if [ "$(psql -c "SHOW archive_mode")" != on ]; then
    echo 'archive_mode takes effect at the next restart of PostgreSQL: backups wait for it' >&2
fi
systemctl daemon-reload
# shellcheck disable=SC2086
systemctl enable --now $BACKUP_TIMERS
