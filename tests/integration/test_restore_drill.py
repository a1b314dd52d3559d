"""Restore drill: a full backup into a real S3 server over TLS, more writes, then the runbook's
point-in-time restore into a fresh cluster. The rows up to the target must be there, the later
ones must not.

What is real: PostgreSQL 15 with the rendered archive_command, pgBackRest 2.45 with the rendered
configuration and environment (encrypted repository, asynchronous archiving with a spool), the
rendered runner (`pgbackrest-run backup full|diff`, its primary check and its metrics file), and
the runbook's restore command. The S3 server is moto's (PyPI `moto[server]`), on loopback, with
a certificate from a throw-away CA that pgBackRest verifies (pgBackRest needs TLS for S3).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from lab.s3 import TLS_TERMINATOR, moto_server, write_ca, write_server_cert
from tests.conftest import require_tool
from unde_infra import runbook
from unde_infra.render import pgbackrest
from unde_infra.render.postgres import NodeLayout

pytestmark = pytest.mark.integration

PG_BIN = Path("/usr/lib/postgresql/15/bin")
STANZA = "shard0"
BUCKET = "unde-backups"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(what: str, probe, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.3)


class Cluster:
    """A PostgreSQL 15 cluster run by the postgres user on a loopback port."""

    def __init__(self, base: Path, name: str, env: dict[str, str]) -> None:
        self.data = base / name
        self.run_dir = base / f"{name}-run"
        self.run_dir.mkdir()
        shutil.chown(self.run_dir, "postgres", "postgres")
        self.port = _free_port()
        self.env = env
        self.log = self.run_dir / "postgresql.log"

    def pg(self, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["runuser", "-u", "postgres", "--", *args], capture_output=True, text=True,
                              timeout=timeout, check=check, env=self.env, cwd="/")

    def start(self) -> None:
        self.pg(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o",
                f"-p {self.port} -k {self.run_dir} -c listen_addresses=''", "start")

    def stop(self) -> None:
        try:
            self.pg(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop", check=False)
        finally:
            self.pg(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)

    def sql(self, query: str) -> str:
        out = self.pg(str(PG_BIN / "psql"), "-h", str(self.run_dir), "-p", str(self.port), "-d", "postgres",
                      "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", query, timeout=30)
        return out.stdout.strip()


@pytest.fixture
def workdir() -> Iterator[Path]:
    # The postgres user must traverse it; pytest's tmp_path is root-only.
    base = Path(tempfile.mkdtemp(prefix="unde-restore-", dir="/var/tmp"))
    os.chmod(base, 0o755)
    yield base
    # pgBackRest's asynchronous archiver outlives a PostgreSQL stopped in immediate mode.
    subprocess.run(["pkill", "-f", f"--config={base}/"], check=False)
    if not os.environ.get("UNDE_KEEP_DRILL_LOGS"):
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def s3_server(workdir: Path) -> Iterator[tuple[int, Path]]:
    """moto's S3 server on loopback behind a small TLS terminator: werkzeug closes TLS
    connections without close_notify, which pgBackRest's OpenSSL 3 reports as an error."""
    moto = moto_server()
    ca_pair = write_ca(workdir, "unde restore drill CA", days=1)
    ca = ca_pair[0]
    cert, key = write_server_cert(workdir, ca_pair, ["localhost"], ["127.0.0.1"])
    os.chmod(ca, 0o644)
    backend_port, port = _free_port(), _free_port()
    log = open(workdir / "moto.log", "wb")
    procs = [
        subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(backend_port)], stdout=log, stderr=subprocess.STDOUT,
                         start_new_session=True),
        subprocess.Popen([sys.executable, "-c", TLS_TERMINATOR, str(cert), str(key), "127.0.0.1", str(port), str(backend_port)],
                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True),
    ]
    try:
        import boto3

        client = boto3.client("s3", endpoint_url=f"https://localhost:{port}", verify=str(ca), region_name="us-east-1",
                              aws_access_key_id="drill", aws_secret_access_key="drill-secret")

        def up() -> bool:
            try:
                client.list_buckets()
                return True
            except Exception:
                return any(p.poll() is not None for p in procs)  # a dead server fails below, not by timing out

        _wait("the S3 server", up, 30)
        assert all(p.poll() is None for p in procs), (workdir / "moto.log").read_text()
        client.create_bucket(Bucket=BUCKET)
        yield port, ca
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


def test_backup_then_point_in_time_restore(workdir: Path, s3_server: tuple[int, Path],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    for tool in ("pgbackrest", "runuser"):
        require_tool(tool)
    if os.geteuid() != 0:
        pytest.fail("the restore drill needs root (it runs PostgreSQL as the postgres user)")
    port, ca = s3_server
    layout = NodeLayout(
        pg_version=15, bin_dir=str(PG_BIN), data_dir=str(workdir / "primary"), socket_dir=str(workdir / "primary-run"),
        pgbackrest_config=str(workdir / "pgbackrest.conf"), pgbackrest_log_dir=str(workdir / "log"),
        pgbackrest_spool_dir=str(workdir / "spool"), pgbackrest_lock_dir=str(workdir / "lock"), tools_dir=str(workdir / "tools"),
        textfile_dir=str(workdir / "textfile"), systemd_dir=str(workdir / "systemd"),
    )
    for sub in ("log", "spool", "lock", "tools", "textfile"):
        (workdir / sub).mkdir()
        shutil.chown(workdir / sub, "postgres", "postgres")
    # pgBackRest 2.45 checks the certificate against DNS names only, so the endpoint is "localhost".
    repo = pgbackrest.S3Repo(endpoint="localhost", bucket=BUCKET, region="us-east-1", port=port, ca_file=str(ca))
    primary = Cluster(workdir, "primary", {})
    stanza = pgbackrest.Stanza(name=STANZA, data_dir=layout.data_dir, port=primary.port,
                               socket_dir=str(primary.run_dir), patroni_api=None)
    Path(layout.pgbackrest_config).write_text(pgbackrest.stanza_conf(stanza, repo, layout))
    runner = Path(layout.pgbackrest_runner)
    for path, text in pgbackrest.runner_files(stanza, layout).items():
        Path(path).write_text(text)  # the runner and its parameters beside it
    env_text = pgbackrest.repo_env("drill-cipher-pass-0123456789", "drill", "drill-secret", repo)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
           **dict(line.split("=", 1) for line in env_text.splitlines())}
    primary.env = env

    primary.data.mkdir(mode=0o700)
    shutil.chown(primary.data, "postgres", "postgres")
    initdb = primary.pg(str(PG_BIN / "initdb"), "-D", str(primary.data), "--data-checksums", "-A", "peer", check=False)
    assert initdb.returncode == 0, initdb.stdout + initdb.stderr
    archive = f"pgbackrest --config={layout.pgbackrest_config} --stanza={STANZA} archive-push %p"
    with open(primary.data / "postgresql.auto.conf", "a") as conf:
        conf.write(f"archive_mode = on\narchive_command = '{archive}'\nwal_level = replica\n")
    primary.start()
    try:
        def runner_cmd(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["python3", str(runner), *args], capture_output=True, text=True, timeout=300, env=env)

        assert runner_cmd("is-primary").returncode == 0
        full = runner_cmd("backup", "full")
        assert full.returncode == 0, full.stdout + full.stderr
        primary.sql("CREATE TABLE orders (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())")
        primary.sql("INSERT INTO orders (id) SELECT generate_series(1, 100)")
        time.sleep(1.1)
        target = dt.datetime.fromisoformat(primary.sql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', "
                                                       "'YYYY-MM-DD\"T\"HH24:MI:SS.US') || '+00:00'"))
        time.sleep(1.1)
        primary.sql("INSERT INTO orders (id) SELECT generate_series(101, 200)")
        diff = runner_cmd("backup", "diff")
        assert diff.returncode == 0, diff.stdout + diff.stderr
        segment = primary.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")
        primary.sql("SELECT pg_switch_wal()")
        _wait("the WAL after the target in the archive",
              lambda: (primary.sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") or "") >= segment, 90)

        metrics = (Path(layout.textfile_dir) / pgbackrest.METRICS_FILE).read_text()
        values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in metrics.splitlines()
                  if line and not line.startswith("#")}
        now = time.time()
        for kind in ("full", "diff"):
            stamp = values[f'{pgbackrest.LAST_BACKUP_METRIC}{{stanza="{STANZA}",type="{kind}"}}']
            assert now - 600 < stamp <= now + 5, (kind, stamp)
        assert values[f'{pgbackrest.BACKUP_COUNT_METRIC}{{stanza="{STANZA}"}}'] == 2
        assert values[f'{pgbackrest.REPO_SIZE_METRIC}{{stanza="{STANZA}"}}'] > 1_000_000
        assert values[f'{pgbackrest.INFO_SUCCESS_METRIC}{{stanza="{STANZA}"}}'] == 1
    finally:
        primary.stop()

    # The runbook's restore, into a fresh directory: the primary is gone.
    restored = Cluster(workdir, "restored", env)
    restored.data.mkdir(mode=0o700)
    shutil.chown(restored.data, "postgres", "postgres")
    started = time.monotonic()
    restore = restored.pg(*runbook.restore_command(STANZA, target, replace(layout, data_dir=str(restored.data))),
                          timeout=300, check=False)
    assert restore.returncode == 0, restore.stdout + restore.stderr
    restored.start()
    try:
        _wait("the restored cluster to promote", lambda: restored.sql("SELECT pg_is_in_recovery()") == "f", 120)
        seconds = round(time.monotonic() - started, 1)
        rows = restored.sql("SELECT count(*), min(id), max(id) FROM orders")
        assert rows == "100|1|100", f"restored to {target}: {rows}"
    finally:
        restored.stop()
    with capsys.disabled():
        print(f"\n[restore] point-in-time restore to the target: {seconds} s, rows {rows}", flush=True)
