"""The shard's servers as the drills reach them: SQL, patronictl and etcdctl on a lab server,
where each shard and etcd lead, and a server that dies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import Any

from unde_infra.model import Shard
from unde_infra.render.postgres import layout_for

from .containers import Container

PSQL = "runuser -u postgres -- psql -X -At -p 5432 -h /var/run/postgresql"
# The application's database on a shard (shard-credentials.env's SHARD<n>_DATABASE).
APP_DATABASE = "unde"


def sh(container: Container, script: str, timeout: float = 120) -> str:
    result = container.exec("sh", "-c", script, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{container.host.name}: exit {result.returncode}: {(result.stdout + result.stderr).strip()[-400:]}")
    return result.stdout.strip()


def sql(container: Container, statement: str, timeout: float = 60, database: str = "postgres") -> str:
    return sh(container, f"{PSQL} -d {database} -c \"{statement}\"", timeout=timeout)


def patronictl(shard: Shard, *args: str) -> str:
    layout = layout_for(shard.primary.os)
    return " ".join([layout.patronictl, "-c", layout.patroni_config, *args])


# --------------------------------------------------------------------------------------------
# Where etcd and the shards lead


ETCDCTL = "ETCDCTL_API=3 etcdctl --endpoints=$(grep -o 'http://[0-9.]*:2379' /etc/etcd/unde-etcd.yml | head -1)"


def etcd_status(container: Container) -> list[dict[str, Any]]:
    return json.loads(sh(container, f"{ETCDCTL} endpoint status --cluster -w json", timeout=30))  # type: ignore[no-any-return]


def etcd_leader(container: Container, timeout: float = 30) -> tuple[int, dict[int, str]]:
    """The leader's member id, once every member names the same one, and each member's id -> its
    client endpoint."""
    deadline = time.monotonic() + timeout
    while True:
        status = etcd_status(container)
        members = {s["Status"]["header"]["member_id"]: s["Endpoint"] for s in status}
        # A member in an election names no leader (the key is absent).
        leaders = {s["Status"].get("leader") for s in status}
        if len(leaders) == 1 and None not in leaders and len(members) == len(status):
            return leaders.pop(), members
        if time.monotonic() > deadline:
            raise RuntimeError(f"etcd members disagree on the leader for {timeout:.0f} s: {leaders}")
        time.sleep(1)


# When each shard's leader last switched WAL for a rewound member (time.monotonic()).
_nudged: dict[str, float] = {}
NUDGE_INTERVAL_SECONDS = 30


def nudge_rewound(containers: dict[str, Any], shard: Shard, members: dict[str, dict[str, Any]]) -> None:
    """A rewound member recovers until it has replayed WAL past its minimum recovery point,
    which pg_rewind sets just past the new primary's last record: on a shard the drills left
    idle that record may never come (archive_timeout switches no idle segment, and
    pg_switch_wal on one is a no-op). A checkpoint on the leader writes one, as any write of a
    live shard would; once every NUDGE_INTERVAL_SECONDS, and only while a member is starting."""
    leader = next((name for name, m in members.items() if m.get("Role") == "Leader"), None)
    starting = any(m.get("State") == "starting" for m in members.values())
    if leader and starting and time.monotonic() - _nudged.get(shard.scope, 0.0) > NUDGE_INTERVAL_SECONDS:
        _nudged[shard.scope] = time.monotonic()
        containers[leader].exec("sh", "-c", f"{PSQL} -c 'CHECKPOINT'", timeout=60)


def lead_at_home(containers: dict[str, Any], shard: Shard, timeout: float = 300) -> None:
    """The drills start as production runs: the shard led from the local site, its replica
    streaming (a sync shard's as its synchronous standby) (after the lab's reboots, or a drill, either node may lead; a rewound old primary
    streams only once the new one has written past the rewind)."""
    replica = containers[shard.replica.name]

    def ready(member: dict[str, Any]) -> bool:
        # A sync shard's replica may be promoted only once the primary names it its synchronous
        # standby, some seconds after it streams (Patroni's /sync key).
        return member.get("State") == "streaming" and (not shard.synchronous or member.get("Role") == "Sync Standby")

    deadline = time.monotonic() + timeout
    while True:
        members = {m["Member"]: m for m in json.loads(sh(replica, patronictl(shard, "list", "-f", "json", shard.scope)))}
        leader = next((name for name, m in members.items() if m.get("Role") == "Leader"), None)
        home = members.get(shard.primary.name, {})
        if leader == shard.primary.name and ready(members.get(shard.replica.name, {})):
            return
        if leader == shard.replica.name and home.get("State") == "streaming":
            replica.exec("sh", "-c", patronictl(shard, "switchover", "--leader", shard.replica.name, "--candidate",
                                                 shard.primary.name, "--force", shard.scope), timeout=120)
        elif leader is not None:
            nudge_rewound(containers, shard, members)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{shard.scope}: not led from {shard.primary.name} with its replica streaming "
                               f"after {timeout:.0f} s: {members}")
        time.sleep(5)


# --------------------------------------------------------------------------------------------
# A server that dies


def _pids_of(leader: int) -> list[int]:
    """Every process of the container whose init is `leader` (its pid namespace)."""
    own = os.readlink(f"/proc/{leader}/ns/pid")
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/ns/pid") == own:
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


# Everything in and out of a server dropped: its addresses and routes stay (a link set down
# would take them), packets to it vanish as they do when a machine dies.
VANISHED = ("table inet unde_drill_down {\n"
            "  chain input { type filter hook input priority -400; policy drop; }\n"
            "  chain output { type filter hook output priority -400; policy drop; }\n}\n")


def server_down(server: Any, down: bool) -> None:
    """The server stops as a dead one does: every process frozen, every packet to and from it
    dropped; and back (thawed, its packets flowing), as after a power cycle that kept its disk."""
    leader = server.pid if hasattr(server, "pid") else server.leader()
    namespace = server.host.namespace
    if down:
        subprocess.run(["ip", "netns", "exec", namespace, "nft", "-f", "-"], input=VANISHED, text=True,
                       capture_output=True, check=True)
    for pid in _pids_of(leader):
        try:
            os.kill(pid, signal.SIGSTOP if down else signal.SIGCONT)
        except ProcessLookupError:
            pass
    if not down:
        subprocess.run(["ip", "netns", "exec", namespace, "nft", "delete", "table", "inet", "unde_drill_down"],
                       capture_output=True, check=True)
