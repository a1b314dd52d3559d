"""Shard node rendering: SPEC's PostgreSQL values, pg_hba, patroni.yml, etcd, pgBackRest, PgBouncer,
postgres_exporter, and where secrets may appear."""

from __future__ import annotations

import json
import re
from ipaddress import IPv4Network, ip_network
from pathlib import Path

import pytest
import yaml

from unde_infra import timings
from unde_infra.model import Inventory, load_topology
from unde_infra.render import etcd, monitoring, patroni, pgbackrest, pgbouncer, postgres, postgres_exporter
from unde_infra.render.postgres import ShardSecrets, layout_for

# SPEC.md, "Shard PostgreSQL configuration (32 GB RAM, NVMe)", verbatim values.
SPEC_32GB = {
    "shared_buffers": "8GB",
    "effective_cache_size": "24GB",
    "work_mem": "40MB",
    "maintenance_work_mem": "2GB",
    "wal_buffers": "64MB",
    "random_page_cost": "1.1",
    "seq_page_cost": "1.0",
    "effective_io_concurrency": "200",
    "fsync": "on",
    "synchronous_commit": "local",
    "full_page_writes": "on",
    "wal_level": "replica",
    "max_wal_senders": "5",
    "wal_keep_size": "4GB",
    "max_replication_slots": "5",
    "checkpoint_timeout": "10min",
    "max_wal_size": "2GB",
    "max_connections": "100",
    "archive_mode": "on",
}

SECRETS = ShardSecrets(
    superuser_password="su-Secret-1",
    replication_password="repl-Secret-2",
    rewind_password="rew-Secret-3",
    pgbouncer_password="pgb-Secret-4",
    exporter_password="exp-Secret-5",
    s3_access_key="AKIA-Secret-6",
    s3_secret_key="s3-Secret-7",
    repo_cipher_pass="cipher-Secret-8",
    orchestrator_password="orch-Secret-9",
    persona_password="pers-Secret-10",
)


@pytest.fixture(scope="module")
def two_shards() -> Inventory:
    return load_topology(shards=2)


def test_spec_values_exactly_at_32_gb(inventory: Inventory) -> None:
    shard = inventory.shards[0]
    assert shard.primary.ram_gb == 32
    rendered = {k: str(v) for k, v in postgres.spec_parameters(shard, shard.primary).items()}
    for name, value in SPEC_32GB.items():
        assert rendered[name] == value, name
    # SPEC's archive_command, with the config path pgBackRest is given explicitly.
    assert rendered["archive_command"] == (
        "pgbackrest --config=/etc/pgbackrest/pgbackrest.conf --stanza=shard0 archive-push %p"
    )


def test_memory_scales_with_ram() -> None:
    assert postgres.memory_parameters(16) == {
        "shared_buffers": "4GB",
        "effective_cache_size": "12GB",
        "work_mem": "20MB",
        "maintenance_work_mem": "1GB",
        "wal_buffers": "32MB",
    }
    assert postgres.memory_parameters(64)["shared_buffers"] == "16GB"
    with pytest.raises(ValueError):
        postgres.memory_parameters(0)


def test_replica_gets_its_own_memory_and_the_same_cluster_settings(inventory: Inventory) -> None:
    shard = inventory.shards[0]
    primary = yaml.safe_load(patroni.patroni_yaml(shard, "primary", inventory))
    replica = yaml.safe_load(patroni.patroni_yaml(shard, "replica", inventory))
    assert primary["postgresql"]["parameters"]["shared_buffers"] == "8GB"
    assert replica["postgresql"]["parameters"]["shared_buffers"] == "4GB"  # ccx23, 16 GB
    assert primary["bootstrap"]["dcs"] == replica["bootstrap"]["dcs"]


def test_stanza_per_shard(two_shards: Inventory) -> None:
    for shard in two_shards.shards:
        config = yaml.safe_load(patroni.patroni_yaml(shard, "primary", two_shards))
        params = config["bootstrap"]["dcs"]["postgresql"]["parameters"]
        assert f"--stanza=shard{shard.index} archive-push %p" in params["archive_command"]
        assert f"--stanza=shard{shard.index} archive-get %f" in config["postgresql"]["recovery_conf"]["restore_command"]
        assert config["scope"] == f"shard{shard.index}"
        assert f"[shard{shard.index}]" in pgbackrest.pgbackrest_conf(shard, pgbackrest.default_repo(two_shards))


def test_pg_hba_admits_only_private_and_tunnel_ranges_with_scram(two_shards: Inventory) -> None:
    allowed = [IPv4Network("127.0.0.1/32")] + [s.range for s in two_shards.sites.values()]
    allowed.append(two_shards.network.tunnel_range)
    for shard in two_shards.shards:
        for line in postgres.pg_hba(shard, two_shards):
            fields = line.split()
            assert fields[-1] in {"scram-sha-256", "peer"}, line
            if fields[0] == "local":
                continue
            assert fields[0] == "host", line  # no hostnossl/hostssl surprises, no 'trust'
            network = ip_network(fields[3])
            assert any(network.subnet_of(a) for a in allowed), line  # type: ignore[arg-type]
        replication = [line.split()[3] for line in postgres.pg_hba(shard, two_shards) if " replication " in line]
        assert f"{shard.replica.ip}/32" in replication and f"{shard.primary.ip}/32" in replication
        assert shard.primary.tunnel is not None and f"{shard.primary.tunnel.local_ip}/32" in replication


@pytest.mark.parametrize("placement", ["three-sites", "plan"])
def test_patroni_yml(placement: str) -> None:
    inventory = load_topology(placement=placement, shards=2)
    for shard in inventory.shards:
        for node, server in (("primary", shard.primary), ("replica", shard.replica)):
            config = yaml.safe_load(patroni.patroni_yaml(shard, node, inventory))  # type: ignore[arg-type]
            assert config["scope"] == shard.scope and config["name"] == server.name
            assert config["etcd3"]["hosts"] == [f"{m.host.ip}:2379" for m in inventory.etcd]
            dcs = config["bootstrap"]["dcs"]
            assert (dcs["ttl"], dcs["loop_wait"], dcs["retry_timeout"]) == (
                timings.PATRONI_TTL, timings.PATRONI_LOOP_WAIT, timings.PATRONI_RETRY_TIMEOUT)
            assert dcs["maximum_lag_on_failover"] == timings.MAXIMUM_LAG_ON_FAILOVER_BYTES
            assert dcs["failsafe_mode"] is True
            assert dcs["postgresql"]["use_slots"] is True and dcs["postgresql"]["use_pg_rewind"] is True
            assert dcs["postgresql"]["parameters"]["max_slot_wal_keep_size"] == postgres.MAX_SLOT_WAL_KEEP_SIZE
            assert "data-checksums" in config["bootstrap"]["initdb"]
            assert config["postgresql"]["connect_address"] == f"{server.ip}:5432"
            assert config["restapi"]["connect_address"] == f"{server.ip}:8008"
            assert config["postgresql"]["create_replica_methods"] == ["pgbackrest", "basebackup"]
            for user in config["postgresql"]["authentication"].values():
                assert set(user) == {"username"}  # passwords come from the environment file
    plan = load_topology(placement="plan")
    assert "10.1.2.10:2379" in yaml.safe_load(patroni.patroni_yaml(plan.shards[0], "primary", plan))["etcd3"]["hosts"]


def test_timing_rule_is_enforced() -> None:
    assert timings.patroni_rule_holds()
    with pytest.raises(ValueError, match="loop_wait"):
        patroni.PatroniTimings(ttl=20, loop_wait=10, retry_timeout=6)


def _bundle(inventory: Inventory, node: str = "primary") -> dict[str, patroni.RenderedFile]:
    return patroni.shard_node_bundle(inventory.shards[0], node, inventory, SECRETS)  # type: ignore[arg-type]


def test_secrets_only_in_secret_files(inventory: Inventory) -> None:
    for node in ("primary", "replica"):
        bundle = _bundle(inventory, node)
        assert {p for p, f in bundle.items() if f.secret} == patroni.secret_paths()
        for path, rendered in bundle.items():
            assert path.startswith("/"), path
            leaked = [v for v in SECRETS.values() if v in rendered.content]
            if rendered.secret:
                assert leaked, f"{path} is marked secret but carries none"
                assert rendered.mode == "0600", path
                if path != "/etc/pgbouncer/userlist.txt":
                    assert rendered.owner == "root", path
            else:
                assert not leaked, f"a secret leaked into {path}"
    assert "<redacted>" in repr(SECRETS) and SECRETS.superuser_password not in repr(SECRETS)


def test_shard_node_files_paths(inventory: Inventory) -> None:
    files = patroni.shard_node_files(inventory.shards[0], "primary", inventory, SECRETS)
    assert set(files) == set(_bundle(inventory))
    assert {"/etc/patroni/patroni.yml", "/etc/pgbackrest/pgbackrest.conf", "/etc/pgbouncer/pgbouncer.ini",
            "/etc/postgres_exporter/queries.yaml", "/etc/unde/secrets/patroni.env"} <= set(files)
    env = files["/etc/unde/secrets/patroni.env"]
    assert f"PATRONI_SUPERUSER_PASSWORD={SECRETS.superuser_password}\n" in env
    unit = files["/etc/systemd/system/patroni.service"]
    assert "EnvironmentFile=/etc/unde/secrets/patroni.env" in unit
    assert "EnvironmentFile=/etc/unde/secrets/pgbackrest.env" in unit  # archive_command needs the keys
    # Debian 12's layout (the default): the pinned Patroni from its virtualenv, never Debian 12's
    # 3.0.2 (double-demote race).
    assert "ExecStart=/opt/patroni/bin/patroni /etc/patroni/patroni.yml" in unit
    # Debian 13's: Debian's Patroni 4.0.7 (it has the 4.0.6 fix), PostgreSQL in the same place.
    trixie = patroni.shard_node_files(inventory.shards[0], "primary", inventory, SECRETS, layout=layout_for("debian-13"))
    assert "ExecStart=/usr/bin/patroni /etc/patroni/patroni.yml" in trixie["/etc/systemd/system/patroni.service"]
    assert "bin_dir: /usr/lib/postgresql/17/bin" in trixie["/etc/patroni/patroni.yml"]
    assert set(trixie) == set(files)
    with pytest.raises(ValueError):
        patroni.shard_node_files(inventory.shards[0], "standby", inventory, SECRETS)  # type: ignore[arg-type]


def test_post_bootstrap_reads_passwords_from_the_environment(inventory: Inventory) -> None:
    files = patroni.shard_node_files(inventory.shards[0], "primary", inventory, SECRETS)
    sql = files["/etc/patroni/post_bootstrap.sql"]
    assert "\\getenv pgbouncer_password UNDE_PGBOUNCER_PASSWORD" in sql
    assert "CREATE EXTENSION IF NOT EXISTS vector;" in sql
    assert "PASSWORD :'exporter_password'" in sql
    script = files["/etc/patroni/post_bootstrap.sh"]
    settings = files["/etc/patroni/post_bootstrap.sh.env"]
    assert "UNDE_" not in script + settings and '-f "$POST_BOOTSTRAP_SQL"' in script
    assert "POST_BOOTSTRAP_SQL=/etc/patroni/post_bootstrap.sql\n" in settings


def test_pgbackrest_repo_is_the_backups_bucket(inventory: Inventory) -> None:
    shard = inventory.shards[0]
    repo = pgbackrest.default_repo(inventory)
    conf = pgbackrest.pgbackrest_conf(shard, repo)
    assert "repo1-type=s3" in conf
    assert "repo1-s3-bucket=unde-backups" in conf
    assert "repo1-s3-endpoint=hel1.your-objectstorage.com" in conf
    assert "repo1-cipher-type=aes-256-cbc" in conf
    assert not re.search(r"repo1-s3-key|cipher-pass", conf)
    env = pgbackrest.pgbackrest_env(SECRETS, repo)
    assert f"PGBACKREST_REPO1_S3_KEY={SECRETS.s3_access_key}" in env
    assert f"PGBACKREST_REPO1_S3_KEY_SECRET={SECRETS.s3_secret_key}" in env
    posix = pgbackrest.pgbackrest_env(SECRETS, pgbackrest.PosixRepo("/tmp/repo"))
    assert SECRETS.s3_access_key not in posix


def test_etcd_member_config(inventory: Inventory) -> None:
    members = {m.member for m in inventory.etcd}
    for member in inventory.etcd:
        files = etcd.etcd_member_files(member, inventory)
        config = yaml.safe_load(files[etcd.EtcdLayout().config_file])
        assert config["heartbeat-interval"] == timings.ETCD_HEARTBEAT_MS
        assert config["election-timeout"] == timings.ETCD_ELECTION_TIMEOUT_MS
        assert config["pre-vote"] is True and config["enable-grpc-gateway"] is True
        cluster = dict(item.split("=") for item in config["initial-cluster"].split(","))
        assert set(cluster) == members
        assert cluster[member.member] == f"http://{member.host.ip}:2380"
        assert config["listen-client-urls"].startswith(f"http://{member.host.ip}:2379")
    plan = load_topology(placement="plan")
    with pytest.raises(ValueError, match="not a member"):
        etcd.etcd_config(next(m for m in inventory.etcd if m.member == "etcd-witness"), plan)


def test_only_the_local_etcd_member_pulls_the_leader_home(inventory: Inventory) -> None:
    layout = etcd.EtcdLayout()
    for member in inventory.etcd:
        files = etcd.etcd_member_files(member, inventory)
        if member.site == "local":
            script = files[layout.leader_affinity]
            settings = json.loads(files[f"{layout.leader_affinity}.json"])
            assert settings["me"] == f"http://{member.host.ip}:2379" and "move-leader" in script
            assert settings["endpoints"] == [f"http://{m.host.ip}:2379" for m in inventory.etcd]
            timer = files[f"/etc/systemd/system/{etcd.LEADER_AFFINITY_UNIT}.timer"]
            assert f"OnUnitActiveSec={etcd.LEADER_AFFINITY_INTERVAL_SECONDS}s" in timer
            compile(script, "etcd-leader-affinity", "exec")
        else:
            assert layout.leader_affinity not in files


def test_etcd_timings_fit_the_rtt() -> None:
    rtt_ms = 120  # SPEC: Helsinki <-> local
    assert timings.ETCD_HEARTBEAT_MS >= rtt_ms
    assert timings.ETCD_ELECTION_TIMEOUT_MS >= 10 * rtt_ms
    assert timings.ETCD_ELECTION_TIMEOUT_MS >= 5 * timings.ETCD_HEARTBEAT_MS
    # etcd must settle a leader change well inside Patroni's retry window.
    assert timings.ETCD_ELECTION_TIMEOUT_MS * 2 < timings.PATRONI_RETRY_TIMEOUT * 1000
    with pytest.raises(ValueError):
        etcd.etcd_config(load_topology().etcd[0], load_topology(),
                         etcd.EtcdLayout(heartbeat_ms=500, election_timeout_ms=1000))


def test_pgbouncer(inventory: Inventory) -> None:
    shard = inventory.shards[0]
    ini = pgbouncer.pgbouncer_ini(shard.replica)
    assert f"listen_addr = {shard.replica.ip},127.0.0.1" in ini
    assert "auth_type = scram-sha-256" in ini and "pool_mode = transaction" in ini
    assert pgbouncer.SERVER_POOL_SIZE < 100  # below max_connections, with room for Patroni and replication
    assert pgbouncer.userlist(SECRETS) == f'"pgbouncer" "{SECRETS.pgbouncer_password}"\n'


def test_exporter_metric_names() -> None:
    queries = yaml.safe_load(postgres_exporter.queries_yaml())
    names = {f"{key}_{column}" for key, q in queries.items() for m in q["metrics"] for column, spec in m.items()
             if spec["usage"] != "LABEL"}
    assert postgres_exporter.EMBEDDING_INDEX_METRIC in names
    assert postgres_exporter.WAL_RETAINED_METRIC in names
    assert "pg_relation_size(to_regclass('idx_messages_embedding'))" in queries["unde_embedding_index"]["query"]
    # The monitoring engineer's alert reads the same name.
    assert monitoring.EMBEDDING_INDEX_METRIC == postgres_exporter.EMBEDDING_INDEX_METRIC


def test_existing_postgres_servers_are_backed_up_under_their_own_prefix(inventory: Inventory) -> None:
    server = inventory.server("production-db")
    files = pgbackrest.standalone_files(server, inventory, "cipher-pass-value", "key", "secret")
    conf, mode, secret = files["/etc/pgbackrest/pgbackrest.conf"]
    assert "repo1-path=/production-db/pgbackrest" in conf and "[production-db]" in conf
    assert not secret and "cipher-pass-value" not in conf
    keys, mode, secret = files[pgbackrest.STANDALONE_SECRETS_CONF]
    assert secret and mode == "0600" and "repo1-cipher-pass=cipher-pass-value\n" in keys
    step = pgbackrest.standalone_setup(server)
    setup, settings = step.files()[step.path], step.files()[f"{step.path}.env"]
    assert "archive-push %p" in setup and "systemctl restart" not in setup  # never restarts production
    assert f"STANZA={server.name}\n" in settings and "CONFIG=/etc/pgbackrest/pgbackrest.conf\n" in settings
    with pytest.raises(ValueError):
        pgbackrest.standalone_secrets_conf("a\nrepo1-path=/elsewhere", "k", "s")


def test_backups_run_on_a_schedule_only_where_the_primary_is(inventory: Inventory) -> None:
    shard = inventory.shards[0]
    files = patroni.shard_node_files(inventory.shards[0], "replica", inventory, SECRETS)
    full = files["/etc/systemd/system/unde-pgbackrest-full.timer"]
    diff = files["/etc/systemd/system/unde-pgbackrest-diff.timer"]
    assert "OnCalendar=Sun *-*-* 02:30:00" in full and "Unit=unde-pgbackrest-backup@full.service" in full
    assert "OnCalendar=Mon..Sat *-*-* 02:30:00" in diff
    runner = files["/usr/local/lib/unde/pgbackrest-run"]
    assert '+ "/primary"' in runner
    assert json.loads(files["/usr/local/lib/unde/pgbackrest-run.json"])["patroni_api"] == (
        f"http://{shard.replica.ip}:8008")
    conf = files["/etc/pgbackrest/pgbackrest.conf"]
    assert "archive-async=y" in conf and "repo1-retention-full=2" in conf and "spool-path=" in conf
    assert '"$PGBACKREST_RUNNER" stanza' in files["/etc/patroni/post_bootstrap.sh"]
    assert "PGBACKREST_RUNNER=/usr/local/lib/unde/pgbackrest-run\n" in files["/etc/patroni/post_bootstrap.sh.env"]


def _setup_settings(os: str) -> dict[str, str]:
    from unde_infra.render.node_setup import shard_node_setup

    step = shard_node_setup(os)
    return dict(line.split("=", 1) for line in step.files()[f"{step.path}.env"].splitlines())


def test_on_debian_13_the_shard_node_installs_from_debian_alone() -> None:
    from unde_infra.render.node_setup import shard_node_steps

    settings = _setup_settings("debian-13")
    assert settings["CODENAME"] == "trixie"
    assert settings["PGDG_SOURCE"] == settings["PGDG_KEY_URL"] == settings["PATRONI_INSTALL"] == "''"
    assert settings["PACKAGES"].strip("'").split() == [
        "postgresql-17", "postgresql-17-pgvector", "patroni", "python3-etcd", "pgbouncer", "pgbackrest",
        "prometheus-postgres-exporter",
    ]
    assert "python3-venv" not in settings["PACKAGES"] and "curl" not in settings["PACKAGES"]
    # No Patroni install step travels with it, only the setup itself.
    assert [step.name for step in shard_node_steps("debian-13")] == ["shard_node_setup.sh"]


def test_on_debian_12_the_shard_node_keeps_pgdg_and_the_pinned_patroni() -> None:
    from unde_infra.render.node_setup import PATRONI_INSTALL_PATH, shard_node_steps

    settings = _setup_settings("debian-12")
    assert settings["CODENAME"] == "bookworm"
    assert settings["PGDG_SOURCE"] == (
        "'deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] "
        "https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main'")
    assert settings["PATRONI_INSTALL"] == PATRONI_INSTALL_PATH and settings["PATRONI_VENV"] == "/opt/patroni"
    assert "patroni" not in settings["PACKAGES"].split()
    assert [step.name for step in shard_node_steps("debian-12")] == ["shard_node_setup.sh", "patroni_install.sh"]


def test_the_shard_setup_refuses_a_system_it_was_not_rendered_for(tmp_path: Path) -> None:
    """The script checks /etc/os-release before it touches anything: rendered for the other
    Debian than the one this machine runs, it stops with the fix in its message."""
    import subprocess

    from unde_infra.files import source
    from unde_infra.render.node_setup import shard_node_setup

    running = next(line.split("=", 1)[1].strip('"') for line in Path("/etc/os-release").read_text().splitlines()
                   if line.startswith("VERSION_CODENAME="))
    other = "debian-13" if running == "bookworm" else "debian-12"
    script = tmp_path / "shard-node-setup"
    script.write_text(source("shard_node_setup.sh"))
    step = shard_node_setup(other)
    (tmp_path / "shard-node-setup.env").write_text(step.files()[f"{step.path}.env"])
    result = subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert f"this node runs Debian {running}, its files were rendered for" in result.stderr
    assert "servers.<name>.os" in result.stderr
