"""The drill lab: 3 etcd members and a shard's 2 Patroni nodes running PostgreSQL 15, each server
in its own network namespace with the topology's address, started from the rendered configs.
Here: the plan placement's Helsinki cut. The failures with the etcd leader placed first, under
continuous writes, run at the real distance on the converge lab (lab/failover_drills.py).

What the test changes against production, all through the renderers' parameters (NodeLayout,
EtcdLayout, PosixRepo), never by patching them:
  * paths: data, sockets, configs, logs and the pgBackRest repository live in a temporary
    directory (a posix repository instead of the S3 bucket, which the drill must not reach);
  * binaries: the CI machine's PostgreSQL 15 instead of the plan's 17;
  * extensions: pgvector is not packaged here, so the bootstrap creates pg_stat_statements only.
Ports and every timing are production's: each server has its own namespace, and the measured
RTO is the one production would see on a fast network (the 120 ms RTT would add a few round trips).

The network is one flat segment (a bridge in its own namespace); "cutting Helsinki off" takes
the switch ports of the Helsinki servers down, so they live on but reach nobody, not even each
other. Production routes local <-> witness through helsinki-gw except for local-etcd-1's direct
tunnel; the flat segment lets local-shard-0 reach the witness directly as well, which changes
nothing here because local-shard-0 reaches etcd-1 on its own site.

The systemd side is simulated: the root-only environment files (patroni.env, pgbackrest.env) are
read by the test and handed to Patroni's environment, as the rendered unit makes systemd do.
Patroni is the pinned version the servers install, in a virtualenv made by the same shell
(tests/conftest.py: deployed_patroni).
"""

from __future__ import annotations

import json
import os
import secrets as pysecrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

import pytest

from tests.conftest import require_tool
from unde_infra import scenarios, timings
from unde_infra.model import Inventory, Shard, load_topology
from unde_infra.render.etcd import EtcdLayout, etcd_member_files
from unde_infra.render.patroni import Node, shard_node_bundle
from unde_infra.render.pgbackrest import PosixRepo
from unde_infra.render.postgres import SUPERUSER, NodeLayout, ShardSecrets

# One flat segment holding 10.1.x.x and 10.2.x.x (10.0.0.0/14 is the topology's network range).
PREFIX_LEN = 14
PG_USER = "postgres"


def run(cmd: Sequence[str], *, timeout: float = 30, check: bool = True, env: Mapping[str, str] | None = None,
        input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=check,
                          env=dict(env) if env is not None else None, input=input_text)


def wait_for(what: str, probe: Callable[[], bool], timeout: float, interval: float = 0.25) -> float:
    """Poll `probe` until it is true; returns the seconds it took, fails after `timeout`."""
    start = time.monotonic()
    while True:
        if probe():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class Lab:
    def __init__(self, tag: str, base: Path) -> None:
        self.tag = f"ud{os.getpid() % 100000}{tag}"
        self.base = base
        self.switch = f"{self.tag}-sw"
        self.namespaces: list[str] = []
        self.node_ns: dict[str, str] = {}  # server name -> namespace
        self.switch_port: dict[str, str] = {}  # server name -> its veth in the switch namespace
        self.processes: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []
        self._add_ns(self.switch)
        run(["ip", "-n", self.switch, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", self.switch, "link", "set", "br0", "up"])

    def _add_ns(self, name: str) -> None:
        run(["ip", "netns", "add", name])
        self.namespaces.append(name)
        run(["ip", "-n", name, "link", "set", "lo", "up"])

    def add_server(self, server: str, ip: str) -> str:
        index = len(self.node_ns)
        ns = f"{self.tag}-n{index}"
        port = f"p{index}"
        self._add_ns(ns)
        # Both ends are created directly inside their namespaces: nothing appears in the host's.
        run(["ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns", self.switch])
        run(["ip", "-n", self.switch, "link", "set", port, "master", "br0", "up"])
        run(["ip", "-n", ns, "addr", "add", f"{ip}/{PREFIX_LEN}", "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        self.node_ns[server] = ns
        self.switch_port[server] = port
        return ns

    def cut(self, *servers: str) -> None:
        """Take servers off the network (their switch port down): they live on, isolated."""
        for server in servers:
            run(["ip", "-n", self.switch, "link", "set", self.switch_port[server], "down"])

    def start(self, server: str, name: str, cmd: Sequence[str], *, env: Mapping[str, str] | None = None,
              as_postgres: bool = True) -> subprocess.Popen[bytes]:
        ns = self.node_ns[server]
        prefix = ["ip", "netns", "exec", ns]
        if as_postgres:
            # setpriv keeps the environment (the secrets systemd would pass) and drops root.
            prefix += ["setpriv", f"--reuid={PG_USER}", f"--regid={PG_USER}", "--init-groups", "--"]
        log = open(self.base / f"{server}-{name}.log", "ab")  # closed in close()
        self._logs.append(log)
        full_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", **(env or {})}
        proc = subprocess.Popen([*prefix, *cmd], stdout=log, stderr=subprocess.STDOUT, env=full_env,
                                start_new_session=True, cwd="/")
        self.processes.append(proc)
        return proc

    def exec(self, server: str, cmd: Sequence[str], *, timeout: float = 20, check: bool = True,
             env: Mapping[str, str] | None = None, as_postgres: bool = False,
             input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        prefix = ["ip", "netns", "exec", self.node_ns[server]]
        if as_postgres:
            prefix += ["setpriv", f"--reuid={PG_USER}", f"--regid={PG_USER}", "--init-groups", "--"]
        full_env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", **(env or {})}
        return run([*prefix, *cmd], timeout=timeout, check=check, env=full_env, input_text=input_text)

    def exec_ns(self, ns: str, cmd: Sequence[str], *, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command as root in one of the lab's namespaces (the switch's, for instance)."""
        assert ns in self.namespaces, ns
        return run(["ip", "netns", "exec", ns, *cmd], input_text=input_text)

    def pids(self, ns: str) -> list[int]:
        out = run(["ip", "netns", "pids", ns], check=False)
        return [int(p) for p in out.stdout.split()]

    def kill_server(self, server: str) -> None:
        """SIGKILL every process of a server (its namespace), like pulling its power."""
        ns = self.node_ns[server]
        for _ in range(20):
            pids = self.pids(ns)
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        raise AssertionError(f"processes of {server} survive SIGKILL: {self.pids(ns)}")

    def close(self) -> None:
        for ns in reversed(self.namespaces):
            try:
                for _ in range(50):
                    pids = self.pids(ns)
                    if not pids:
                        break
                    for pid in pids:
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                    time.sleep(0.1)
            finally:
                run(["ip", "netns", "del", ns], check=False)
        for proc in self.processes:
            try:
                proc.kill()
                proc.wait(timeout=5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        for log in self._logs:
            log.close()
        self.namespaces.clear()
        self.processes.clear()


def chown_postgres(*paths: Path) -> None:
    for path in paths:
        shutil.chown(path, PG_USER, PG_USER)


# --------------------------------------------------------------------------------------------
# The drill

pytestmark = pytest.mark.integration

PG_BIN = "/usr/lib/postgresql/15/bin"
CLIENT = "local-app"  # writes come from the local API server's address, like the app's
# Generous sanity bounds: the drill fails only when something did not happen at all.
START_BOUND_S = 90


def _parse_env(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def _test_secrets() -> ShardSecrets:
    return ShardSecrets(*(pysecrets.token_urlsafe(18) for _ in range(10)))


class Drill:
    """One shard, its etcd quorum and a client, in namespaces."""

    def __init__(self, inventory: Inventory, shard: Shard, lab: Lab, patroni_bin: str) -> None:
        self.inventory, self.shard, self.lab = inventory, shard, lab
        self.patroni_venv = str(Path(patroni_bin).parent.parent)
        self.secrets = _test_secrets()
        self.repo = PosixRepo(str(lab.base / "pgbackrest-repo"))
        Path(self.repo.path).mkdir(mode=0o750)
        chown_postgres(Path(self.repo.path))
        self.servers = {shard.primary.name: shard.primary, shard.replica.name: shard.replica}
        self.env: dict[str, dict[str, str]] = {}
        self.layouts: dict[str, NodeLayout] = {}
        self.patroni: dict[str, subprocess.Popen[bytes]] = {}
        hosts = {m.host.name: str(m.host.ip) for m in inventory.etcd}
        hosts.update({s.name: str(s.ip) for s in self.servers.values()})
        hosts[CLIENT] = str(inventory.server(CLIENT).ip)
        for name, ip in hosts.items():
            lab.add_server(name, ip)

    # --- etcd ---------------------------------------------------------------------------------
    def start_etcd(self) -> None:
        for member in self.inventory.etcd:
            root = self.lab.base / member.member
            root.mkdir()
            layout = EtcdLayout(config_file=str(root / "etcd.yml"), data_dir=str(root / "data"),
                                systemd_dir=str(root / "systemd"))
            files = etcd_member_files(member, self.inventory, layout)
            Path(layout.config_file).write_text(files[layout.config_file])
            self.lab.start(member.host.name, "etcd", ["etcd", "--config-file", layout.config_file], as_postgres=False)
        endpoints = ",".join(f"http://{m.host.ip}:2379" for m in self.inventory.etcd)

        def healthy() -> bool:
            out = self.lab.exec(CLIENT, ["etcdctl", f"--endpoints={endpoints}", "endpoint", "health"],
                                check=False, env={"ETCDCTL_API": "3"})
            return out.returncode == 0

        wait_for("etcd quorum", healthy, START_BOUND_S)

    # --- Patroni nodes ------------------------------------------------------------------------
    def layout_for(self, server: str) -> NodeLayout:
        root = self.lab.base / server
        return NodeLayout(
            pg_version=15, bin_dir=PG_BIN, data_dir=str(root / "data"), socket_dir=str(root / "run"),
            patroni_dir=str(root / "patroni"), patroni_venv=self.patroni_venv, pgpass=str(root / "pgpass"), patroni_log_dir=str(root / "log"),
            pgbackrest_config=str(root / "pgbackrest.conf"), pgbackrest_log_dir=str(root / "log"),
            pgbackrest_spool_dir=str(root / "spool"), pgbouncer_dir=str(root / "pgbouncer"),
            pgbouncer_log_dir=str(root / "log"), pgbouncer_run_dir=str(root / "run"),
            exporter_dir=str(root / "exporter"), secrets_dir=str(root / "secrets"),
            systemd_dir=str(root / "systemd"), tools_dir=str(root / "tools"), textfile_dir=str(root / "textfile"),
            pgbackrest_lock_dir=str(root / "lock"), extensions=("pg_stat_statements",),
        )

    def prepare_node(self, node: Node) -> str:
        server = self.shard.primary if node == "primary" else self.shard.replica
        layout = self.layout_for(server.name)
        root = self.lab.base / server.name
        for sub in ("", "run", "patroni", "log", "spool", "lock", "pgbouncer", "exporter", "secrets", "systemd", "tools",
                    "textfile"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        bundle = shard_node_bundle(self.shard, node, self.inventory, self.secrets, layout=layout, repo=self.repo)
        env: dict[str, str] = {}
        for path, rendered in bundle.items():
            target = Path(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(rendered.content)
            os.chmod(target, int(rendered.mode, 8))
            shutil.chown(target, rendered.owner, rendered.group)
            if rendered.secret and target.parent == Path(layout.secrets_dir) and target.name in (
                "patroni.env", "pgbackrest.env"
            ):
                env.update(_parse_env(rendered.content))  # what systemd's EnvironmentFile= does
        for sub in ("", "run", "patroni", "log", "spool", "lock"):
            chown_postgres(root / sub)
        self.layouts[server.name] = layout
        self.env[server.name] = env
        return server.name

    def start_patroni(self, server: str) -> None:
        layout = self.layouts[server]
        self.patroni[server] = self.lab.start(server, "patroni", [layout.patroni_bin, layout.patroni_config],
                                              env=self.env[server])

    # --- SQL from the client namespace --------------------------------------------------------
    def sql(self, server: str, query: str, timeout: float = 5) -> subprocess.CompletedProcess[str]:
        ip = self.servers[server].ip
        dsn = f"host={ip} port=5432 user={SUPERUSER} dbname=postgres connect_timeout=2"
        return self.lab.exec(CLIENT, [f"{PG_BIN}/psql", dsn, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", query],
                             check=False, timeout=timeout, env={"PGPASSWORD": self.secrets.superuser_password})

    def writable(self, server: str) -> bool:
        try:
            out = self.sql(server, "INSERT INTO drill_probe DEFAULT VALUES RETURNING 1", timeout=4)
        except subprocess.TimeoutExpired:
            return False
        return out.returncode == 0 and out.stdout.strip() == "1"

    def is_streaming_to(self, primary: str, replica: str) -> bool:
        ip = self.servers[replica].ip
        out = self.sql(primary, f"SELECT state FROM pg_stat_replication WHERE client_addr = '{ip}'")
        return out.returncode == 0 and out.stdout.strip() == "streaming"

    def patroni_api(self, via: str, method: str, path: str, body: dict[str, str]) -> tuple[int, str]:
        """Call a node's Patroni REST API from the client namespace."""
        script = (
            "import sys, urllib.request as u, urllib.error as e\n"
            "body = sys.stdin.read().encode()\n"
            "req = u.Request(sys.argv[1], data=body if sys.argv[2] != 'GET' else None, method=sys.argv[2],"
            " headers={'Content-Type': 'application/json'})\n"
            "try:\n    r = u.urlopen(req, timeout=10); print(r.status); print(r.read().decode())\n"
            "except e.HTTPError as x:\n    print(x.code); print(x.read().decode())\n"
        )
        url = f"http://{self.servers[via].ip}:8008{path}"
        out = self.lab.exec(CLIENT, ["python3", "-c", script, url, method], check=False, timeout=20,
                            input_text=json.dumps(body))
        status, _, text = out.stdout.partition("\n")
        return (int(status) if status.strip().isdigit() else 0), text + out.stderr

    def bootstrap(self) -> tuple[str, str]:
        """etcd, then the primary (initdb + post-bootstrap), then the replica streaming from it."""
        self.start_etcd()
        primary = self.prepare_node("primary")
        replica = self.prepare_node("replica")
        self.start_patroni(primary)
        wait_for("the primary to bootstrap", lambda: self.sql(primary, "SELECT pg_is_in_recovery()").stdout.strip() == "f",
                 START_BOUND_S, interval=0.5)
        created = self.sql(primary, "CREATE TABLE IF NOT EXISTS drill (id int PRIMARY KEY, note text);"
                                    "CREATE TABLE IF NOT EXISTS drill_probe (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())")
        assert created.returncode == 0, created.stderr
        self.start_patroni(replica)
        wait_for("the replica to stream", lambda: self.is_streaming_to(primary, replica), START_BOUND_S, interval=0.5)
        return primary, replica

    def check_bootstrap(self) -> None:
        """What the rendered bootstrap must leave behind with nobody typing a command: the shard's
        roles and database (post_bootstrap.sql), on the replica too, and the pgBackRest stanza
        (post_bootstrap runs `pgbackrest-run stanza`), so WAL is archived from the start."""
        primary, replica = self.shard.primary.name, self.shard.replica.name
        roles = self.sql(primary, "SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles WHERE rolname IN "
                                  "('orchestrator', 'persona', 'pgbouncer', 'postgres_exporter')").stdout.strip()
        assert roles == "orchestrator,persona,pgbouncer,postgres_exporter"
        wait_for("the shard database on the replica", lambda: self.sql(
            replica, "SELECT datname FROM pg_database WHERE datname = 'unde'").stdout.strip() == "unde", 30, interval=0.5)
        # A write first: pg_switch_wal on an empty segment queues nothing.
        self.sql(primary, "INSERT INTO drill_probe DEFAULT VALUES; SELECT pg_switch_wal()")
        wait_for("WAL archived by pgBackRest", lambda: self.sql(
            primary, "SELECT archived_count > 0 FROM pg_stat_archiver").stdout.strip() == "t", 60, interval=0.5)

    def observe(self, server: str, seconds: float) -> list[bool]:
        """Try a write every second for `seconds`; the list of results."""
        results: list[bool] = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            started = time.monotonic()
            results.append(self.writable(server))
            time.sleep(max(0.0, 1 - (time.monotonic() - started)))
        return results


def _report(request: pytest.FixtureRequest, name: str, value: object) -> None:
    """Record a measurement (junit property) and show it even under `pytest -q`."""
    request.node.user_properties.append((name, value))
    capsys: pytest.CaptureFixture[str] = request.getfixturevalue("capsys")
    with capsys.disabled():
        print(f"\n[drill] {name} = {value}", flush=True)


@pytest.fixture
def lab_factory(request: pytest.FixtureRequest) -> Iterator[Callable[[str], Lab]]:
    require_tool("ip")
    require_tool("etcd")
    require_tool("etcdctl")
    require_tool("pgbackrest")
    require_tool("setpriv")
    require_tool("postgres")
    if os.geteuid() != 0:
        pytest.fail("the failover drill needs root (network namespaces); `make test` runs as root")
    labs: list[Lab] = []
    bases: list[Path] = []

    def make(tag: str) -> Lab:
        # /var/tmp, not pytest's tmp_path: the postgres user must traverse it (tmp_path is root-only).
        base = Path(tempfile.mkdtemp(prefix=f"unde-drill-{tag}-", dir="/var/tmp"))
        os.chmod(base, 0o755)
        bases.append(base)
        lab = Lab(tag, base)
        labs.append(lab)
        return lab

    yield make
    for lab in labs:
        lab.close()
    for base in bases:
        if request.session.testsfailed and os.environ.get("UNDE_KEEP_DRILL_LOGS"):
            print(f"[drill] logs kept in {base}")
            continue
        shutil.rmtree(base, ignore_errors=True)


def _predicted(inventory: Inventory, shard: Shard, name: str) -> scenarios.Outcome:
    return next(o for o in scenarios.analyse(inventory, [name]) if o.shard == shard.index)


def test_helsinki_cut_plan_placement(lab_factory: Callable[[str], Lab], request: pytest.FixtureRequest,
                                     deployed_patroni: str) -> None:
    """SPEC contradiction 3, for real: with two etcd votes in Helsinki, cutting Helsinki off
    demotes the healthy local primary, as `scenarios --placement plan` predicts."""
    inventory = load_topology(placement="plan")
    shard = inventory.shards[0]
    drill = Drill(inventory, shard, lab_factory("p"), deployed_patroni)
    started = time.monotonic()
    primary, replica = drill.bootstrap()
    assert drill.writable(primary)
    predicted = _predicted(inventory, shard, "helsinki-down")
    assert predicted.writable is False
    helsinki = {m.host.name for m in inventory.etcd if m.site == "helsinki"} | {replica}
    drill.lab.cut(*sorted(helsinki))
    window = timings.PATRONI_TTL + timings.PATRONI_LOOP_WAIT + 2 * timings.PATRONI_RETRY_TIMEOUT
    results = drill.observe(primary, window)
    _report(request, "plan_helsinki_cut_writes_ok", f"{sum(results)}/{len(results)}")
    observed_writable = any(results[-5:])
    assert observed_writable == predicted.writable, (
        f"scenarios predicts writable={predicted.writable} for helsinki-down (plan), the drill saw {results}")
    recovery = drill.sql(primary, "SELECT pg_is_in_recovery()").stdout.strip()
    _report(request, "plan_local_node_in_recovery", recovery or "not running")
    _report(request, "plan_drill_seconds", round(time.monotonic() - started, 1))
