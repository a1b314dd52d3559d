#!/bin/sh
# An etcd member: etcd from Debian (etcdctl with it, for the operators), configured by its config file (the unit drop-in). Delivered by
# unde-infra and run after the member's files changed. Its parameters are in "$0.env" beside it:
# LEADER_AFFINITY (the local member's leader-affinity script, where it has one) and
# LEADER_AFFINITY_TIMER.
set -eu
# shellcheck source=/dev/null
. "$0.env"
"$APT_INSTALL" etcd-server etcd-client
systemctl daemon-reload
systemctl enable etcd
# A member re-reads its configuration only on start; members restart one per stack run, so the
# two others keep the quorum meanwhile.
systemctl restart etcd
if test -f "$LEADER_AFFINITY"; then
    systemctl enable --now "$LEADER_AFFINITY_TIMER"
fi
