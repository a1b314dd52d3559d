"""Routing follows the primary, for real (SPEC scenario 1; docs/failures.md, "Routing follows the primary").

The failover drill's lab (3 etcd members, a shard's 2 Patroni + PostgreSQL 15 nodes, local-app,
each in its network namespace at its topology address; test_failover_drill.Lab and Drill) plus a
real redis-server at local-redis's address, started from the rendered redis.conf and ACL file,
and on each shard node the rendered routing watcher (files/shard_routing.py with its rendered
parameters, the `router` user's password) and PgBouncer (the rendered pgbouncer.ini).

The drill kills the primary's whole namespace (Patroni, PostgreSQL, PgBouncer and its watcher,
like pulling its power) and measures, from that moment, when the replica takes writes and when
local-redis's entry names it, against `scenarios --json` (rto_seconds and scenario_rto_seconds of
shard-down). The orchestrator's credentials (a libpq multi-host list with
target_session_attrs=read-write, through PgBouncer) must land on the new primary. Then the old
primary comes back as a replica and must not touch the entry; a switchover brings the primary
home and the entry follows, on a newer timeline.

Systemd is simulated as in the other drills: the watcher reads its password file directly
instead of a credential. Only redis.conf's dir, pidfile, aclfile and supervised lines move into
the lab's temporary directory.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.integration.shard_drill import DurabilityDrill
from tests.integration.test_failover_drill import CLIENT, PG_BIN, Lab, _report, wait_for
from tests.integration.test_failover_drill import lab_factory as lab_factory  # the fixture
from unde_infra import scenarios
from unde_infra.model import load_topology
from unde_infra.render import redis as r
from unde_infra.render import shard_routing
from unde_infra.render.app_secrets import shard_credentials, shard_hosts
from unde_infra.render.patroni import Node

pytestmark = pytest.mark.integration
REDIS = "local-redis"
PASSWORDS = {user.name: f"drill-{user.name}-Pw7x" for user in r.USERS}
BOUND_S = 120  # sanity bound for every wait; the assertions compare with scenarios' figures


class RoutingDrill(DurabilityDrill):
    def start_redis(self) -> None:
        server = self.inventory.servers[REDIS]
        self.lab.add_server(REDIS, str(server.ip))
        base = self.lab.base / "redis"
        base.mkdir()
        files = r.redis_server_files(server, PASSWORDS)
        acl = base / "users.acl"
        acl.write_text(files[r.ACL_PATH].content)
        moved = {"dir": f"dir {base}", "pidfile": f"pidfile {base}/redis.pid", "aclfile": f"aclfile {acl}",
                 "supervised": "supervised no"}
        lines = [moved.pop(line.split(" ", 1)[0], line) for line in files[r.CONF_PATH].content.splitlines()]
        assert not moved, moved
        conf = base / "redis.conf"
        conf.write_text("\n".join(lines) + "\n")
        self.lab.start(REDIS, "redis", [require_tool("redis-server"), str(conf)], as_postgres=False)
        wait_for("redis-server", lambda: "NOAUTH" in self.redis_cli("PING", user=None), 30)

    def redis_cli(self, *command: str, user: str | None = "app") -> str:
        env = {} if user is None else {"REDISCLI_AUTH": PASSWORDS[user]}  # never in argv
        args = [require_tool("redis-cli"), "--no-auth-warning", "-h", str(self.inventory.servers[REDIS].ip)]
        out = self.lab.exec(CLIENT, [*args, *(["--user", user] if user else []), *command], check=False, env=env,
                            timeout=10)
        return (out.stdout + out.stderr).strip()

    def entry(self) -> dict[str, str]:
        values = self.redis_cli("HGETALL", r.endpoint_key(self.shard.scope)).splitlines()
        return dict(zip(values[::2], values[1::2], strict=False))

    def start_node_services(self, server: str) -> None:
        """What systemd starts beside Patroni: PgBouncer (as postgres) and the routing watcher."""
        layout = self.layouts[server]
        # A killed PgBouncer leaves its pidfile; on a server /run is a tmpfs that a reboot empties.
        Path(layout.pgbouncer_run_dir, "pgbouncer.pid").unlink(missing_ok=True)
        self.lab.start(server, "pgbouncer", [require_tool("pgbouncer"), f"{layout.pgbouncer_dir}/pgbouncer.ini"])
        script = shard_routing.script_path(layout)
        self.lab.start(server, "routing", ["python3", script, "--config", f"{script}.json"], as_postgres=False)

    def install_routing(self, server: str) -> None:
        node: Node = "primary" if server == self.primary else "replica"
        layout = self.layouts[server]
        Path(layout.textfile_dir).mkdir(parents=True, exist_ok=True)
        files = shard_routing.routing_files(self.shard, node, self.inventory.servers[REDIS],
                                            PASSWORDS[r.ROUTER_USER], layout)
        for path, rendered in files.items():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(rendered.content)
            os.chmod(path, int(rendered.mode, 8))

    def orchestrator_lands_on(self) -> str:
        """The local orchestrator's credentials as a libpq connection string: which host takes it."""
        orchestrator = self.inventory.servers["local-orchestrator"]
        ((_, hosts),) = shard_hosts(self.inventory, orchestrator)
        text = shard_credentials({(0, "orchestrator"): self.secrets.orchestrator_password}, user="orchestrator",
                                 shards=[(0, hosts)])
        env = {line.split("=", 1)[0]: line.split("=", 1)[1].strip("'") for line in text.splitlines()}
        dsn = (f"host={env['SHARD0_HOST']} port={env['SHARD0_PORT']} dbname={env['SHARD0_DATABASE']} "
               f"user={env['SHARD0_USER']} target_session_attrs={env['SHARD0_TARGET_SESSION_ATTRS']} "
               f"connect_timeout={env['SHARD0_CONNECT_TIMEOUT']}")
        out = self.lab.exec(CLIENT, [f"{PG_BIN}/psql", dsn, "-XAtq", "-c", "\\echo :HOST", "-c",
                                     "SELECT pg_is_in_recovery()"], check=False, timeout=20,
                            env={"PGPASSWORD": env["SHARD0_PASSWORD"]})
        assert out.returncode == 0, out.stdout + out.stderr
        host, in_recovery = out.stdout.split()
        assert in_recovery == "f", f"{host} is read-only"
        return host


def test_the_routing_entry_follows_the_primary_and_back(lab_factory: Callable[[str], Lab],
                                                        request: pytest.FixtureRequest, deployed_patroni: str) -> None:
    require_tool("redis-server")
    require_tool("pgbouncer")
    inventory = load_topology()
    drill = RoutingDrill(inventory, lab_factory("r"), deployed_patroni)
    drill.start_redis()
    drill.bootstrap()
    primary_ip, replica_ip = str(drill.shard.primary.ip), str(drill.shard.replica.ip)
    for server in (drill.primary, drill.replica):
        drill.install_routing(server)
        drill.start_node_services(server)
    predicted = next(o for o in scenarios.analyse(inventory, ["shard-down"]) if o.shard == drill.shard.index)
    assert predicted.scenario_rto_seconds is not None and predicted.routing_seconds is not None

    wait_for("the entry to name the primary", lambda: drill.entry().get("host") == primary_ip, 30, interval=0.2)
    first = drill.entry()
    assert first["member"] == drill.primary and first["port"] == "6432"
    assert drill.orchestrator_lands_on() == primary_ip

    # Scenario 1: the local primary dies. Time the replica's promotion and the entry's move.
    failed_at = time.monotonic()
    drill.lab.kill_server(drill.primary)
    writable_after = routed_after = None
    while time.monotonic() - failed_at < BOUND_S and (writable_after is None or routed_after is None):
        if routed_after is None and drill.entry().get("host") == replica_ip:
            routed_after = time.monotonic() - failed_at
        if writable_after is None and drill.writable(drill.replica):
            writable_after = time.monotonic() - failed_at
        time.sleep(0.2)
    assert writable_after is not None and routed_after is not None, (writable_after, routed_after)
    _report(request, "routing:shard-down",
            f"replica writable after {writable_after:.1f} s (bound {predicted.rto_seconds}), entry moved after "
            f"{routed_after:.1f} s (bound {predicted.scenario_rto_seconds}), "
            f"{routed_after - writable_after:+.1f} s after the promotion")
    assert routed_after <= predicted.scenario_rto_seconds
    moved = drill.entry()
    assert moved["member"] == drill.replica and int(moved["timeline"]) > int(first["timeline"])
    assert drill.orchestrator_lands_on() == replica_ip  # the dead first host is skipped

    # The old primary comes back as a replica: it must leave the entry alone.
    drill.start_patroni(drill.primary)
    drill.start_node_services(drill.primary)
    wait_for("the old primary to stream from the replica", lambda: drill.is_streaming_to(drill.replica, drill.primary),
             BOUND_S, interval=1)
    time.sleep(3)  # several polls of its watcher
    assert drill.entry() == moved

    # Home again by a switchover: the entry follows on a newer timeline.
    switched_at = time.monotonic()
    drill.switch_home()
    wait_for("the entry to name the local primary again", lambda: drill.entry().get("host") == primary_ip,
             BOUND_S, interval=0.2)
    home_after = time.monotonic() - switched_at
    home = drill.entry()
    assert home["member"] == drill.primary and int(home["timeline"]) > int(moved["timeline"])
    assert drill.orchestrator_lands_on() == primary_ip
    _report(request, "routing:switchover-home", f"entry home {home_after:.1f} s after the switchover request "
                                                f"(timeline {first['timeline']} -> {moved['timeline']} -> {home['timeline']})")
    # Neither watcher ever logged the password.
    logs = [p.read_text(errors="replace") for p in drill.lab.base.glob("*-routing.log")]
    assert len(logs) == 2 and not any(PASSWORDS[r.ROUTER_USER] in log for log in logs)
    assert any("timeline" in log for log in logs), logs
    # The primary's metrics say the entry names it.
    metrics = Path(drill.layouts[drill.primary].textfile_dir, shard_routing.TEXTFILE_NAME).read_text()
    assert "unde_shard_routing_leader 1\n" in metrics and "unde_shard_routing_entry_ok 1\n" in metrics
