"""Timings of the shard HA stack, chosen for ~120 ms RTT between the sites.

One place for them: the Patroni and etcd renderers, the scenario analysis, the failover drill
and the monitoring rules all read these values."""

from __future__ import annotations

# Patroni (DCS timings, seconds). Rule: loop_wait + 2 * retry_timeout <= ttl.
PATRONI_TTL = 30
PATRONI_LOOP_WAIT = 10
PATRONI_RETRY_TIMEOUT = 10
# A replica further behind than this is not promoted (bytes of WAL).
MAXIMUM_LAG_ON_FAILOVER_BYTES = 16 * 1024 * 1024

# etcd (milliseconds): heartbeat about 1-1.5x the RTT, election timeout about 10x heartbeat.
ETCD_HEARTBEAT_MS = 150
ETCD_ELECTION_TIMEOUT_MS = 1500
