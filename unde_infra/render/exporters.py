"""Exporters of the servers that are not shards: redis_exporter beside every Redis, and
postgres_exporter beside the PostgreSQL servers this program does not run itself (production-db,
staging-db). The shards' exporters come with their HA files (render/patroni.py)."""

from __future__ import annotations

from ..model import Server
from .escape import env_file, shell_word
from .patroni import RenderedFile, exporter_unit_dropin
from .postgres import DEFAULT_LAYOUT, EXPORTER_USER
from .postgres_exporter import ENV_FILE_NAME

EXPORTER_ENV = f"{DEFAULT_LAYOUT.secrets_dir}/{ENV_FILE_NAME}"
EXPORTER_DROPIN = f"{DEFAULT_LAYOUT.systemd_dir}/prometheus-postgres-exporter.service.d/unde.conf"
STANDALONE_DATABASE = "postgres"


def needs_redis_exporter(server: Server) -> bool:
    return "redis" in server.services


def needs_standalone_postgres_exporter(server: Server) -> bool:
    return "postgres" in server.services and "patroni" not in server.services


def redis_exporter_setup() -> str:
    # Debian's unit scrapes redis://localhost:6379 and listens on :9121, as the targets expect.
    return "\n".join(
        [
            "set -e",
            "DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus-redis-exporter",
            "systemctl enable --now prometheus-redis-exporter",
        ]
    )


def postgres_exporter_env(password: str, port: int = 5432) -> str:
    """SECRET: the exporter's connection to a standalone PostgreSQL."""
    return env_file(
        {
            "DATA_SOURCE_URI": f"127.0.0.1:{port}/{STANDALONE_DATABASE}?sslmode=disable",
            "DATA_SOURCE_USER": EXPORTER_USER,
            "DATA_SOURCE_PASS": password,
        }
    )


def postgres_exporter_files(password: str) -> dict[str, RenderedFile]:
    return {
        EXPORTER_ENV: RenderedFile(postgres_exporter_env(password), mode="0600", secret=True),
        EXPORTER_DROPIN: RenderedFile(exporter_unit_dropin(DEFAULT_LAYOUT)),
    }


PSQL_AS_POSTGRES = "runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1"


def exporter_role_command(psql: str = PSQL_AS_POSTGRES) -> str:
    """Create the exporter's pg_monitor role (once) and set its password from the environment
    (DATA_SOURCE_PASS). The password reaches psql on stdin through printf, a shell builtin, so
    no process list ever shows it."""
    sql = (
        f"DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{EXPORTER_USER}') "
        f"THEN CREATE ROLE {EXPORTER_USER} LOGIN IN ROLE pg_monitor; END IF; END$$;\\n"
        f"ALTER ROLE {EXPORTER_USER} PASSWORD '%s';\\n"
    )
    return f'printf {shell_word(sql)} "$DATA_SOURCE_PASS" | {psql}'


def postgres_exporter_setup() -> str:
    return "\n".join(
        [
            "set -e",
            "DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus-postgres-exporter",
            f". {EXPORTER_ENV}",
            exporter_role_command(),
            "systemctl daemon-reload",
            "systemctl enable prometheus-postgres-exporter",
            "systemctl restart prometheus-postgres-exporter",
        ]
    )
