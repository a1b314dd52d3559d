"""The rendered shard HA files, checked by the real tools: patroni --validate-config, postgres,
pgbouncer and etcd.

What is rewritten for the check, always through the renderers' parameters (NodeLayout,
EtcdLayout), never by patching them:
  * patroni: data_dir (a path that does not exist yet, as on a fresh node) and bin_dir (the CI
    machine's PostgreSQL 15 instead of the plan's 17). Addresses are NOT rewritten: the check
    runs in a network namespace whose loopback holds the topology's addresses, with a TCP
    listener on each etcd member's client port, because validate-config connects to the etcd
    hosts and requires the listen addresses to be free and local;
  * postgres / pgbouncer / etcd: data, socket, log and pid paths into a temporary directory;
    pgbouncer and etcd also run in a namespace holding the node's own address.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_tool
from unde_infra.model import Inventory, load_topology
from unde_infra.render import etcd, patroni, pgbouncer, postgres
from unde_infra.render.postgres import NodeLayout, ShardSecrets

PG_BIN = "/usr/lib/postgresql/15/bin"
AS_POSTGRES = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
SECRETS = ShardSecrets(*(f"test-secret-{i}" for i in range(10)))
LISTENER = (
    "import socket, sys, time\n"
    "socks = []\n"
    "for hostport in sys.argv[1:]:\n"
    "    host, port = hostport.rsplit(':', 1)\n"
    "    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "    s.bind((host, int(port))); s.listen(16); socks.append(s)\n"
    "print('ready', flush=True)\n"
    "time.sleep(120)\n"
)


@pytest.fixture
def workdir() -> Iterator[Path]:
    # The postgres user must traverse it; pytest's tmp_path is root-only.
    base = Path(tempfile.mkdtemp(prefix="unde-ha-tools-", dir="/var/tmp"))
    os.chmod(base, 0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _kill_namespace(ns: str) -> None:
    for _ in range(50):
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


@contextmanager
def namespace(addresses: Sequence[str]) -> Iterator[list[str]]:
    """A network namespace with `addresses` on its loopback; yields the `ip netns exec` prefix.
    Every process in it is killed and the namespace deleted on exit."""
    require_tool("ip")
    if os.geteuid() != 0:
        pytest.fail("these checks need root (network namespaces); `make test` runs as root")
    ns = f"udha{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        for address in sorted(set(addresses)):
            subprocess.run(["ip", "-n", ns, "addr", "add", f"{address}/32", "dev", "lo"], check=True)
        yield ["ip", "netns", "exec", ns]
    finally:
        _kill_namespace(ns)
        subprocess.run(["ip", "netns", "del", ns], check=False)


def _validate_layout(base: Path, server: str) -> NodeLayout:
    return NodeLayout(pg_version=15, bin_dir=PG_BIN, data_dir=str(base / server / "data"))


@pytest.mark.parametrize("placement", ["three-sites", "plan"])
def test_every_patroni_yml_passes_validate_config(placement: str, workdir: Path, deployed_patroni: str) -> None:
    patroni_bin = deployed_patroni
    inventory = load_topology(placement=placement, shards=2)
    configs: list[tuple[str, Path]] = []
    for shard in inventory.shards:
        for node, server in (("primary", shard.primary), ("replica", shard.replica)):
            path = workdir / f"{server.name}.yml"
            text = patroni.patroni_yaml(shard, node, inventory, layout=_validate_layout(workdir, server.name))  # type: ignore[arg-type]
            path.write_text(text)
            configs.append((server.name, path))
    addresses = [str(s.ip) for sh in inventory.shards for s in (sh.primary, sh.replica)]
    addresses += [str(m.host.ip) for m in inventory.etcd]
    with namespace(addresses) as netns:
        listener = subprocess.Popen([*netns, "python3", "-c", LISTENER, *etcd.patroni_hosts(inventory)],
                                    stdout=subprocess.PIPE, text=True)
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        for name, path in configs:
            result = subprocess.run([*netns, patroni_bin, "--validate-config", str(path)],
                                    capture_output=True, text=True, timeout=60)
            assert result.returncode == 0 and not result.stderr.strip(), f"{name}: {result.stderr}{result.stdout}"
        # The validator is not a rubber stamp: a config without a scope, or whose etcd
        # members are not there, fails.
        broken = yaml.safe_load(configs[0][1].read_text())
        del broken["scope"]
        broken["etcd3"]["hosts"] = ["10.9.9.9:2379"]
        bad = workdir / "broken.yml"
        bad.write_text(yaml.safe_dump(broken))
        result = subprocess.run([*netns, patroni_bin, "--validate-config", str(bad)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode != 0 and "scope" in result.stderr
        listener.kill()
        listener.wait(timeout=10)


def _initdb(base: Path) -> Path:
    data = base / "pgdata"
    data.mkdir(mode=0o700)
    shutil.chown(data, "postgres", "postgres")
    # initdb's own pg_hba is replaced by the rendered one before the server starts.
    result = subprocess.run([*AS_POSTGRES, f"{PG_BIN}/initdb", "-D", str(data), "--data-checksums", "-A", "trust",
                             "-U", "postgres"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return data


def test_postgres_accepts_the_rendered_parameters_and_pg_hba(inventory: Inventory, workdir: Path) -> None:
    postgres_bin = require_tool("postgres")
    require_tool("setpriv")
    shard = inventory.shards[0]
    data = _initdb(workdir)
    run_dir = workdir / "run"
    run_dir.mkdir()
    shutil.chown(run_dir, "postgres", "postgres")
    params = postgres.spec_parameters(shard, shard.primary)
    lines = [f"{name} = '{value}'" for name, value in params.items()]
    # Only where the test needs them: a private socket and no TCP listener.
    lines += [f"unix_socket_directories = '{run_dir}'", "listen_addresses = ''"]
    with open(data / "postgresql.conf", "a") as conf:
        conf.write("\n".join(lines) + "\n")
    (data / "pg_hba.conf").write_text("\n".join(postgres.pg_hba(shard, inventory)) + "\n")
    for name in params:
        shown = subprocess.run([*AS_POSTGRES, postgres_bin, "-D", str(data), "-C", name],
                               capture_output=True, text=True, timeout=30)
        assert shown.returncode == 0, f"{name}: {shown.stderr}"
    # Start it with every setting (8 GB shared_buffers is only reserved, not touched) and the
    # rendered pg_hba, and ask PostgreSQL whether it parsed every hba line.
    log = run_dir / "postgres.log"
    started = subprocess.run([*AS_POSTGRES, f"{PG_BIN}/pg_ctl", "-D", str(data), "-l", str(log), "-w", "-t", "60",
                              "start"], capture_output=True, text=True, timeout=90)
    try:
        assert started.returncode == 0, started.stderr + (log.read_text() if log.exists() else "")
        rules = subprocess.run([*AS_POSTGRES, f"{PG_BIN}/psql", "-h", str(run_dir), "-XAtq", "-d", "postgres", "-c",
                                "SELECT count(*), count(error) FROM pg_hba_file_rules"],
                               capture_output=True, text=True, timeout=30)
        assert rules.returncode == 0, rules.stderr
        assert rules.stdout.strip() == f"{len(postgres.pg_hba(shard, inventory))}|0"
        # The running server shows every value as rendered (SHOW keeps the units SPEC uses).
        query = " UNION ALL ".join(f"SELECT '{name}', current_setting('{name}')" for name in params)
        shown = subprocess.run([*AS_POSTGRES, f"{PG_BIN}/psql", "-h", str(run_dir), "-XAtq", "-d", "postgres",
                                "-F", "=", "-c", query], capture_output=True, text=True, timeout=30)
        assert shown.returncode == 0, shown.stderr
        running = dict(line.split("=", 1) for line in shown.stdout.splitlines())
        differ = {name: (running.get(name), value) for name, value in params.items()
                  if running.get(name) != str(value) and not _same_number(running.get(name), str(value))}
        assert not differ, f"running value vs rendered: {differ}"
    finally:
        subprocess.run([*AS_POSTGRES, f"{PG_BIN}/pg_ctl", "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)


def _same_number(a: str | None, b: str) -> bool:
    try:
        return a is not None and float(a) == float(b)  # SPEC writes 1.0, PostgreSQL shows 1
    except ValueError:
        return False


def test_pgbouncer_starts_with_the_rendered_config(inventory: Inventory, workdir: Path) -> None:
    pgbouncer_bin = require_tool("pgbouncer")
    shard = inventory.shards[0]
    layout = NodeLayout(pgbouncer_dir=str(workdir), pgbouncer_log_dir=str(workdir), pgbouncer_run_dir=str(workdir),
                        socket_dir=str(workdir))
    shutil.chown(workdir, "postgres", "postgres")
    ini = workdir / "pgbouncer.ini"
    ini.write_text(pgbouncer.pgbouncer_ini(shard.primary, layout))
    (workdir / "userlist.txt").write_text(pgbouncer.userlist(SECRETS))
    for path in (ini, workdir / "userlist.txt"):
        shutil.chown(path, "postgres", "postgres")
        os.chmod(path, 0o600)
    with namespace([str(shard.primary.ip)]) as netns:
        proc = subprocess.Popen([*netns, *AS_POSTGRES, pgbouncer_bin, str(ini)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 20
        listening = ""
        while time.monotonic() < deadline and proc.poll() is None:
            listening = subprocess.run([*netns, "ss", "-Hltn"], capture_output=True, text=True).stdout
            if f"{shard.primary.ip}:6432" in listening and "127.0.0.1:6432" in listening:
                break
            time.sleep(0.2)
        alive = proc.poll() is None
        proc.terminate()
        proc.wait(timeout=10)
        log = (workdir / "pgbouncer.log").read_text() if (workdir / "pgbouncer.log").exists() else ""
        assert alive, f"pgbouncer exited: {log}"
        assert f"{shard.primary.ip}:6432" in listening and "127.0.0.1:6432" in listening, log
        assert "FATAL" not in log and "ERROR" not in log, log


@pytest.mark.parametrize("placement", ["three-sites", "plan"])
def test_etcd_parses_the_rendered_member_config(placement: str, workdir: Path) -> None:
    etcd_bin = require_tool("etcd")
    inventory = load_topology(placement=placement)
    member = inventory.etcd[0]
    layout = etcd.EtcdLayout(config_file=str(workdir / "etcd.yml"), data_dir=str(workdir / "data"))
    files = etcd.etcd_member_files(member, inventory, layout)
    Path(layout.config_file).write_text(files[layout.config_file])
    log = workdir / "etcd.log"
    with namespace([str(member.host.ip)]) as netns, open(log, "w") as out:
        proc = subprocess.Popen([*netns, etcd_bin, "--config-file", layout.config_file], stdout=out,
                                stderr=subprocess.STDOUT)
        # Alone, the member waits for its peers; it must have parsed everything and keep running.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            if "starting an etcd server" in log.read_text():
                time.sleep(1)  # a bad value would make it exit right after this line
                break
            time.sleep(0.2)
        alive = proc.poll() is None
        proc.terminate()
        proc.wait(timeout=10)
    text = log.read_text()
    assert alive, text[-2000:]
    assert '"heartbeat-interval":"150ms"' in text and '"election-timeout":"1.5s"' in text, text[-2000:]
    assert '"pre-vote":true' in text
    assert re.search(rf'"initial-cluster":"{re.escape(files_cluster(files, layout))}"', text)


def files_cluster(files: dict[str, str], layout: etcd.EtcdLayout) -> str:
    return str(yaml.safe_load(files[layout.config_file])["initial-cluster"])
