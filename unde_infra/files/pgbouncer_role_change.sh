#!/bin/sh
# Patroni's on_role_change callback (arguments: action, role, scope), run as postgres. PgBouncer
# hands every client the server parameters of its pool's first server connection, in_hot_standby
# among them, and libpq's target_session_attrs=read-write decides on that value without a query.
# After a promotion the new primary's PgBouncer would go on saying in_hot_standby=on, and refuse
# every application for as long as it runs (after a demotion, the reverse). So the role change
# is written where a root path unit (unde-pgbouncer-role-change.path) sees it and restarts
# PgBouncer, which makes new server connections with the new role's parameters.
set -eu
printf '%s %s %s %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${1:-}" "${2:-}" "${3:-}" > "$UNDE_ROLE_CHANGE_FILE.tmp"
mv -f "$UNDE_ROLE_CHANGE_FILE.tmp" "$UNDE_ROLE_CHANGE_FILE"
