"""etcd member configuration: the Patroni quorum of all shards, from the topology's placement.

Members talk across ~120 ms RTT (local <-> Helsinki <-> witness), so heartbeat and election
timeout come from `timings` instead of etcd's LAN defaults (100 ms / 1000 ms), which would
start needless elections on every latency spike. Peer traffic crosses only the WireGuard
tunnels and Hetzner's private network, hence plain http inside those.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import timings
from ..files import python_script
from ..model import LOCAL, EtcdMember, Inventory
from .cloud_init import dump_yaml
from .escape import etcd_initial_cluster
from .systemd import timer_unit

CLUSTER_TOKEN_PREFIX = "unde-etcd"


@dataclass(frozen=True)
class EtcdLayout:
    config_file: str = "/etc/etcd/unde-etcd.yml"
    data_dir: str = "/var/lib/etcd/unde"
    systemd_dir: str = "/etc/systemd/system"
    client_port: int = 2379
    peer_port: int = 2380
    heartbeat_ms: int = timings.ETCD_HEARTBEAT_MS
    election_timeout_ms: int = timings.ETCD_ELECTION_TIMEOUT_MS
    tools_dir: str = "/usr/local/lib/unde"

    @property
    def leader_affinity(self) -> str:
        return f"{self.tools_dir}/etcd-leader-affinity"


DEFAULT_ETCD_LAYOUT = EtcdLayout()


def peer_url(member: EtcdMember, layout: EtcdLayout = DEFAULT_ETCD_LAYOUT) -> str:
    return f"http://{member.host.ip}:{layout.peer_port}"


def client_url(member: EtcdMember, layout: EtcdLayout = DEFAULT_ETCD_LAYOUT) -> str:
    return f"http://{member.host.ip}:{layout.client_port}"


def initial_cluster(inventory: Inventory, layout: EtcdLayout = DEFAULT_ETCD_LAYOUT) -> str:
    return etcd_initial_cluster([(m.member, peer_url(m, layout)) for m in inventory.etcd])


def patroni_hosts(inventory: Inventory, layout: EtcdLayout = DEFAULT_ETCD_LAYOUT) -> list[str]:
    """host:port of every member, as Patroni's etcd3 section lists them."""
    return [f"{m.host.ip}:{layout.client_port}" for m in inventory.etcd]


def etcd_config(member: EtcdMember, inventory: Inventory, layout: EtcdLayout = DEFAULT_ETCD_LAYOUT) -> dict[str, object]:
    if member not in inventory.etcd:
        raise ValueError(f"{member.member} is not a member of placement {inventory.etcd_placement}")
    if layout.election_timeout_ms < 5 * layout.heartbeat_ms:
        raise ValueError("etcd needs election timeout >= 5 x heartbeat interval")
    return {
        "name": member.member,
        "data-dir": layout.data_dir,
        "listen-peer-urls": peer_url(member, layout),
        "listen-client-urls": f"{client_url(member, layout)},http://127.0.0.1:{layout.client_port}",
        "initial-advertise-peer-urls": peer_url(member, layout),
        "advertise-client-urls": client_url(member, layout),
        "initial-cluster": initial_cluster(inventory, layout),
        # A token per placement: members of a different placement can never join by mistake.
        "initial-cluster-token": f"{CLUSTER_TOKEN_PREFIX}-{inventory.etcd_placement}",
        "initial-cluster-state": "new",
        "heartbeat-interval": layout.heartbeat_ms,
        "election-timeout": layout.election_timeout_ms,
        # When only one pair of members is cut apart (the local <-> Helsinki link while both
        # still reach the witness), pre-vote stops the isolated member from forcing elections
        # with ever higher terms that would unseat a healthy leader again and again.
        "pre-vote": True,
        # Patroni writes a few keys per shard every loop_wait; keep history short and the db small.
        "auto-compaction-mode": "periodic",
        "auto-compaction-retention": "1h",
        "snapshot-count": 10000,
        "quota-backend-bytes": 2 * 1024**3,
        "enable-v2": False,
        # etcd 3.4 falls back to the deprecated capnslog logger under --config-file.
        "logger": "zap",
        "log-outputs": ["stderr"],
        # Patroni's etcd3 client speaks the JSON gateway (/v3/...). etcd enables it by default
        # only for flags: with --config-file an absent key means false.
        "enable-grpc-gateway": True,
    }


LEADER_AFFINITY_UNIT = "unde-etcd-leader-affinity"
LEADER_AFFINITY_INTERVAL_SECONDS = 5

LEADER_AFFINITY_SOURCE = "etcd_leader_affinity.py"


def leader_affinity_files(member: EtcdMember, inventory: Inventory,
                          layout: EtcdLayout = DEFAULT_ETCD_LAYOUT) -> dict[str, str]:
    """The leader-affinity script (files/etcd_leader_affinity.py) with its parameters, and its
    timer, for the local site's member only."""
    if member.site != LOCAL:
        return {}
    settings = {"me": client_url(member, layout), "endpoints": [client_url(m, layout) for m in inventory.etcd]}
    service = "\n".join(["[Unit]", "Description=Keep the etcd leader on the local member (unde-infra)",
                          "After=etcd.service", "", "[Service]", "Type=oneshot",
                          f"ExecStart=/usr/bin/python3 {layout.leader_affinity}", ""])
    timer = timer_unit("Keep the etcd leader on the local member (unde-infra)",
                       ["OnBootSec=60s", f"OnUnitActiveSec={LEADER_AFFINITY_INTERVAL_SECONDS}s", "AccuracySec=1s"])
    return {
        **python_script(layout.leader_affinity, LEADER_AFFINITY_SOURCE, settings),
        f"{layout.systemd_dir}/{LEADER_AFFINITY_UNIT}.service": service,
        f"{layout.systemd_dir}/{LEADER_AFFINITY_UNIT}.timer": timer,
    }


def etcd_member_files(member: EtcdMember, inventory: Inventory, layout: EtcdLayout = DEFAULT_ETCD_LAYOUT) -> dict[str, str]:
    """Absolute path -> content for one etcd member. None of these files carries a secret."""
    dropin = "\n".join(
        [
            "[Service]",
            # Debian's unit runs `etcd $DAEMON_ARGS`; the config file replaces every flag.
            "ExecStart=",
            f"ExecStart=/usr/bin/etcd --config-file {layout.config_file}",
            # Started, not "ready": Debian's unit waits (Type=notify) until the member has joined
            # a quorum, which a new cluster's first member cannot have before the others run.
            # The members come up in different stacks' runs (the local one in the local stack),
            # so a waiting start failed after 90 s: the package's postinst and the setup's
            # restart both ran into it (found by the converge lab). Patroni waits for its DCS.
            "Type=exec",
            "",
        ]
    )
    return {
        layout.config_file: dump_yaml(etcd_config(member, inventory, layout)),
        f"{layout.systemd_dir}/etcd.service.d/unde.conf": dropin,
        **leader_affinity_files(member, inventory, layout),
    }
