"""The exporter's setup step (files/postgres_exporter_setup.sh, its `role` part), run for real
against a PostgreSQL 15 the test starts on loopback: it creates the role once, sets its password,
and the exporter can then log in with it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_tool
from unde_infra.render.exporters import postgres_exporter_env, postgres_exporter_setup

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def postgres() -> Iterator[tuple[Path, int]]:
    require_tool("runuser")
    if not (PG_BIN / "initdb").exists():
        pytest.fail("PostgreSQL 15 is not installed; `make test` installs it (as root)")
    base = Path(tempfile.mkdtemp(prefix="unde-exporter-", dir="/var/tmp"))
    shutil.chown(base, "postgres", "postgres")
    data, port = base / "data", _free_port()
    as_postgres = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_postgres, str(PG_BIN / "initdb"), "-D", str(data), "--auth-local=trust",
                    "--auth-host=scram-sha-256"], check=True, capture_output=True, timeout=120)
    server = subprocess.Popen([*as_postgres, str(PG_BIN / "postgres"), "-D", str(data), "-p", str(port),
                               "-k", str(base), "-c", "listen_addresses=127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while subprocess.run([str(PG_BIN / "pg_isready"), "-h", str(base), "-p", str(port)],
                             capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, "PostgreSQL did not start"
            time.sleep(0.2)
        yield base, port
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(base, ignore_errors=True)


def test_the_exporter_role_is_created_once_and_can_log_in(postgres: tuple[Path, int]) -> None:
    socket_dir, port = postgres
    psql = f"runuser -u postgres -- {PG_BIN}/psql -X -q -v ON_ERROR_STOP=1 -h {socket_dir} -p {port}"
    password = "exporterPw4Test9"
    env_file = socket_dir / "exporter.env"
    env_file.write_text(postgres_exporter_env(password, port))
    step = postgres_exporter_setup(psql)
    delivered = step.files()
    script = socket_dir / "postgres-exporter-setup"
    script.write_text(delivered[step.path])
    # Its parameters as rendered, with the environment file where this test keeps it.
    Path(f"{script}.env").write_text(delivered[f"{step.path}.env"].replace(
        "EXPORTER_ENV=/etc/unde/secrets/postgres_exporter.env", f"EXPORTER_ENV={env_file}"))
    for _ in range(2):  # idempotent: the second run only sets the password again
        run = subprocess.run(["sh", str(script), "role"], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        assert password not in run.stdout + run.stderr
    login = subprocess.run(
        [str(PG_BIN / "psql"), "-X", "-At", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres_exporter", "postgres",
         "-c", "SELECT pg_has_role('postgres_exporter', 'pg_monitor', 'member')"],
        capture_output=True, text=True, timeout=30, env={**os.environ, "PGPASSWORD": password},
    )
    assert login.returncode == 0, login.stderr
    assert login.stdout.strip() == "t"
    wrong = subprocess.run(
        [str(PG_BIN / "psql"), "-X", "-At", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres_exporter", "postgres",
         "-c", "SELECT 1"],
        capture_output=True, text=True, timeout=30, env={**os.environ, "PGPASSWORD": "not-the-password"},
    )
    assert wrong.returncode != 0
