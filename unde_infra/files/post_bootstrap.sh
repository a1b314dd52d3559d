#!/bin/sh
# Run once by Patroni after initdb on the first primary; $1 is its connection string.
# Delivered by unde-infra. Its parameters are in "$0.env" beside it:
# PGBACKREST_RUNNER, PSQL and POST_BOOTSTRAP_SQL.
set -eu
# shellcheck source=/dev/null
. "$0.env"
# The stanza now, so archive_command works from the first WAL segment. Not fatal: a failed
# post_bootstrap makes Patroni wipe the new cluster, and a repository that is unreachable now
# gets its stanza from the next backup run (pgbackrest-run).
timeout 300 /usr/bin/python3 "$PGBACKREST_RUNNER" stanza \
    || echo 'pgBackRest stanza-create failed; the backup timer retries' >&2
# Passwords reach psql through the environment (\getenv in the SQL), never through argv, where
# any local user could read them in the process list.
exec "$PSQL" "$1" -X -q -v ON_ERROR_STOP=1 -f "$POST_BOOTSTRAP_SQL"
