"""A shard of two Patroni nodes and three etcd members on the failover drill's flat segment
(test_failover_drill.Lab), with the operations the routing drill needs: moving the etcd leader,
waiting for health, bringing the primary home. The failure drills themselves run at the real
distance on the converge lab's servers (lab/failover_drills.py)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.integration.test_failover_drill import Drill, Lab, wait_for
from unde_infra.model import Inventory


class DurabilityDrill(Drill):
    def __init__(self, inventory: Inventory, lab: Lab, patroni_bin: str) -> None:
        super().__init__(inventory, inventory.shards[0], lab, patroni_bin)
        self.python = str(Path(patroni_bin).parent / "python3")  # the venv has psycopg2
        self.primary, self.replica = self.shard.primary.name, self.shard.replica.name
        self.etcd_conf = {m.host.name: str(self.lab.base / m.member / "etcd.yml") for m in inventory.etcd}

    # --- etcd -----------------------------------------------------------------------------------
    def etcdctl(self, *args: str, endpoints: str | None = None) -> subprocess.CompletedProcess[str]:
        endpoints = endpoints or ",".join(f"http://{m.host.ip}:2379" for m in self.inventory.etcd)
        return self.lab.exec(self.inventory.etcd[0].host.name, ["etcdctl", f"--endpoints={endpoints}", *args],
                             check=False, env={"ETCDCTL_API": "3"}, timeout=20)

    def etcd_status(self) -> dict[str, tuple[int, int]]:
        """member name -> (member id, leader id), read from each endpoint."""
        found = {}
        for m in self.inventory.etcd:
            out = self.lab.exec(m.host.name, ["etcdctl", f"--endpoints=http://{m.host.ip}:2379", "endpoint", "status",
                                              "-w", "json"], check=False, env={"ETCDCTL_API": "3"}, timeout=10)
            if out.returncode == 0:
                header = json.loads(out.stdout)[0]["Status"]
                found[m.member] = (header["header"]["member_id"], header["leader"])
        return found

    def move_leader(self, member: str) -> None:
        def moved() -> bool:
            status = self.etcd_status()
            if len(status) < len(self.inventory.etcd) or member not in status:
                return False
            target, leader = status[member][0], status[member][1]
            if leader == target:
                return True
            leader_member = next((m for m, (mid, _) in status.items() if mid == leader), None)
            if leader_member is None:
                return False
            host = next(m.host for m in self.inventory.etcd if m.member == leader_member)
            self.etcdctl("move-leader", format(target, "x"), endpoints=f"http://{host.ip}:2379")
            return False

        wait_for(f"etcd leadership on {member}", moved, 60, interval=1)

    def start_etcd_member(self, server: str) -> None:
        self.lab.start(server, "etcd", ["etcd", "--config-file", self.etcd_conf[server]], as_postgres=False)

    # --- network --------------------------------------------------------------------------------


    # --- load and observation -------------------------------------------------------------------

    def healthy(self) -> None:
        """The shard as it runs day to day: every etcd member up, the local node primary, the
        Helsinki node streaming from it."""
        wait_for("the replica to stream", lambda: self.is_streaming_to(self.primary, self.replica), 120, interval=1)
        if self.shard.synchronous:
            wait_for("the replica to be the synchronous standby", lambda: self.sync_standby(self.primary) == self.replica,
                     60, interval=1)

    def sync_standby(self, via: str) -> str | None:
        status, text = self.patroni_api(via, "GET", "/cluster", {})
        if status != 200:
            return None
        members = json.loads(text.strip() or "{}").get("members", [])
        return next((m["name"] for m in members if m.get("role") == "sync_standby"), None)

    def switch_home(self) -> None:
        if self.writable(self.primary):
            return
        wait_for("the local node to stream from Helsinki", lambda: self.is_streaming_to(self.replica, self.primary),
                 120, interval=1)
        if self.shard.synchronous:  # Patroni switches over only to the synchronous standby
            wait_for("the local node to be the synchronous standby",
                     lambda: self.sync_standby(self.replica) == self.primary, 60, interval=1)
        status, text = self.patroni_api(self.replica, "POST", "/switchover",
                                        {"leader": self.replica, "candidate": self.primary})
        assert status == 200, f"switchover refused: {status} {text}"
        wait_for("the local node to be primary again", lambda: self.writable(self.primary), 60, interval=0.5)




FAILURES: dict[str, tuple[Callable[[DurabilityDrill], None], Callable[[DurabilityDrill], None]]] = {}


















