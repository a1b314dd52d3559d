"""Timings of the shard HA stack, chosen for ~120 ms RTT between the sites.

One place for them: the Patroni and etcd renderers, the scenario analysis, the failover drill
and the monitoring rules all read these values."""

from __future__ import annotations

import math

# Patroni (DCS timings, seconds). Rule: loop_wait + 2 * retry_timeout <= ttl.
# ttl 20 is the smallest value current Patroni accepts (4.x raises anything lower to 20); the
# leader key then expires 15-20 s after a primary dies, which is SPEC's "promotion at ~15 s".
PATRONI_TTL = 20
# SPEC: "Patroni notices after 5 s": every node runs its HA loop at least this often.
PATRONI_LOOP_WAIT = 5
# DCS and PostgreSQL hiccups shorter than this never demote a leader. 7 s is ~60 round trips at
# 120 ms and more than four etcd election timeouts, so one etcd leader change is absorbed.
PATRONI_RETRY_TIMEOUT = 7
# A replica further behind than this is not promoted (bytes of WAL). Replication is
# asynchronous (synchronous_commit = local), so this is also the most WAL a failover may drop.
MAXIMUM_LAG_ON_FAILOVER_BYTES = 16 * 1024 * 1024
# Time from winning the leader race to accepting writes (pg_ctl promote, checkpoint request,
# first HA loop as leader); measured as 1-3 s in the failover drill.
PATRONI_PROMOTE_SECONDS = 3
# The replica asks the old primary's REST API before it races (timeout 2 s in Patroni).
PATRONI_MEMBER_CHECK_SECONDS = 2

# etcd (milliseconds): heartbeat about 1-1.5x the RTT, election timeout about 10x heartbeat
# (etcd refuses an election timeout below 5x heartbeat).
ETCD_HEARTBEAT_MS = 150
ETCD_ELECTION_TIMEOUT_MS = 1500


# The longest an etcd election takes once the leader is gone: the randomized election timeout
# (up to 2x) plus pre-vote and vote round trips across the sites.
ETCD_ELECTION_MAX_SECONDS = 2 * ETCD_ELECTION_TIMEOUT_MS / 1000 + 4 * 0.12
# A new etcd leader renews every lease for its full ttl plus one election timeout (etcd's
# lessor.Promote), so Patroni's leader key outlives an etcd leader change by that much.
ETCD_LEASE_EXTEND_SECONDS = ETCD_ELECTION_TIMEOUT_MS / 1000
# PostgreSQL's fast shutdown when Patroni demotes a primary that lost the DCS.
PATRONI_DEMOTE_SECONDS = 2
# Replication lag of a healthy async replica across the sites: one RTT plus the flush.
REPLICATION_LAG_SECONDS = 1


def patroni_rule_holds(ttl: int = PATRONI_TTL, loop_wait: int = PATRONI_LOOP_WAIT,
                       retry_timeout: int = PATRONI_RETRY_TIMEOUT) -> bool:
    """Patroni's documented rule: a leader must be able to retry the DCS twice within one ttl."""
    return loop_wait + 2 * retry_timeout <= ttl


def lease_prolonged_by_election_seconds(etcd_election: bool) -> float:
    """How much longer a key's lease lives when the etcd leader is lost: the election, then the
    new leader renews every lease for its full ttl plus an election timeout."""
    return ETCD_ELECTION_MAX_SECONDS + ETCD_LEASE_EXTEND_SECONDS if etcd_election else 0.0


def failover_rto_seconds(ttl: int = PATRONI_TTL, etcd_election: bool = False) -> int:
    """Worst case from a primary's death to a writable replica: the leader key lives up to ttl
    after its last renewal, then the replica checks the old primary and promotes. When the etcd
    leader goes down with the primary, the election comes first and the new etcd leader renews
    the key's lease for another ttl (plus an election timeout)."""
    return math.ceil(ttl + lease_prolonged_by_election_seconds(etcd_election) + PATRONI_MEMBER_CHECK_SECONDS
                     + PATRONI_PROMOTE_SECONDS)


def sync_standby_drop_seconds(ttl: int = PATRONI_TTL, etcd_election: bool = False) -> int:
    """How long a sync shard's commits wait when its replica vanishes while the primary keeps the
    leader lock (Helsinki down, or the link cut with the etcd leader on the local side): the
    replica's member key in etcd lives up to ttl after its last update, and the primary's next HA
    loop drops it from synchronous_standby_names; commits then go on unreplicated. A replica that
    vanishes keeps its walsender connection open (nothing resets it), so pg_stat_replication
    does not tell sooner. When the etcd leader went down with the replica, the new leader renews
    every lease (the replica's too) after its election. Measured at 120 ms (lab/failover_drills.py):
    24.5 s, and 29.9 s with an election."""
    return math.ceil(ttl + PATRONI_LOOP_WAIT + lease_prolonged_by_election_seconds(etcd_election))


def async_loss_window_seconds() -> int:
    """How long a primary that lost the DCS (and its replica) keeps acknowledging writes: the
    next HA loop starts up to loop_wait later, its DCS calls give up after retry_timeout (twice
    at most: reading the cluster, then renewing the lock), then PostgreSQL stops. Patroni's rule
    loop_wait + 2 * retry_timeout <= ttl keeps this shorter than a replica's promotion."""
    return PATRONI_LOOP_WAIT + 2 * PATRONI_RETRY_TIMEOUT + PATRONI_DEMOTE_SECONDS


# Routing follows the primary (SPEC scenario 1; docs/failures.md, "Routing follows the primary"): a watcher on
# every shard node asks its own Patroni REST API this often whether it is the shard's writable
# primary, and the one that is writes the shard's endpoint into local-redis. Asking the local
# REST API costs nothing, so the poll is short; the write crosses the 120 ms link only when the
# entry changes, or every ROUTING_CONFIRM_SECONDS to put back an entry Redis lost.
ROUTING_POLL_SECONDS = 1
ROUTING_PATRONI_TIMEOUT_SECONDS = 1
# Connect, AUTH and one script call to local-redis, from Helsinki: a few round trips.
ROUTING_REDIS_TIMEOUT_SECONDS = 2
ROUTING_CONFIRM_SECONDS = 30
# A failed write is retried after 0.5 s, then twice as long each time, up to this.
ROUTING_RETRY_FIRST_SECONDS = 0.5
ROUTING_RETRY_MAX_SECONDS = 8


def routing_update_seconds() -> int:
    """Worst case from a promotion to the routing entry naming the new primary, while local-redis
    answers: the next poll, its REST call and the write."""
    return math.ceil(ROUTING_POLL_SECONDS + ROUTING_PATRONI_TIMEOUT_SECONDS + ROUTING_REDIS_TIMEOUT_SECONDS)


# Entry failover (SPEC scenario 2, docs/failures.md, "Scenario 2"): the watcher on the standby entry point
# probes the local entry's /healthz, the witness probes it too, and the entry record moves to
# Helsinki only when both saw it fail this many times in a row. One failed probe is a blip (a
# lost packet, a slow response); three at 10 s apart are half a minute of a dead entry point.
ENTRY_PROBE_INTERVAL_SECONDS = 10
ENTRY_PROBE_TIMEOUT_SECONDS = 5
ENTRY_FAILURES_TO_FAIL_OVER = 3
# Back to the local site only once its entry has answered for five minutes without a single
# failed probe (and at least six probes): a local site that flaps must not pull users back and
# forth (every move costs them a reconnect and up to a TTL of errors).
ENTRY_SUCCESSES_TO_FAIL_BACK = 6
ENTRY_FAIL_BACK_HOLD_SECONDS = 300
# The watcher reads the peer vantage point's verdict over the private network.
ENTRY_PEER_TIMEOUT_SECONDS = 2
ENTRY_PEER_MAX_AGE_SECONDS = 3 * ENTRY_PROBE_INTERVAL_SECONDS
# The entry record's TTL: how long a resolver may keep answering with the old address. Low, so a
# failover reaches clients quickly; not lower, because some resolvers raise shorter TTLs anyway
# and every resolver then asks Hetzner's nameservers once a minute.
ENTRY_RECORD_TTL_SECONDS = 60
# One call to Hetzner's Cloud API (set_records), and the time until the authoritative
# nameservers answer with the new records. Hetzner publishes no figure for the latter; 60 s is
# an assumption the first real drill must confirm (`dig` at one of the zone's nameservers).
DNS_API_TIMEOUT_SECONDS = 10
DNS_PUBLISH_SECONDS = 60


def entry_failover_detection_seconds() -> int:
    """Worst case from the local entry's death to the watcher's decision. Each vantage point
    needs its N-th failed probe (the first failing one starts up to one interval after the
    failure, each takes up to the probe timeout); the two run unsynchronised, so the watcher
    may read the peer's verdict just before it turns and decide one interval later. A tick
    probes the local entry and the standby itself, then reads the peer."""
    return (
        (ENTRY_FAILURES_TO_FAIL_OVER + 1) * ENTRY_PROBE_INTERVAL_SECONDS
        + 2 * ENTRY_PROBE_TIMEOUT_SECONDS
        + ENTRY_PEER_TIMEOUT_SECONDS
    )


def entry_failover_seconds() -> int:
    """Worst case until every client resolves the entry to Helsinki: detection, the API call,
    publication to the authoritative nameservers, then a resolver's cached answer expires."""
    return (
        entry_failover_detection_seconds() + DNS_API_TIMEOUT_SECONDS + DNS_PUBLISH_SECONDS + ENTRY_RECORD_TTL_SECONDS
    )
