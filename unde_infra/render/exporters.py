"""Exporters of the servers that are not shards: redis_exporter beside every Redis (its files are
in render/redis.py), and postgres_exporter beside the PostgreSQL servers this program does not run
itself (production-db, staging-db). The shards' exporters come with their HA files
(render/patroni.py)."""

from __future__ import annotations

from ..files import SetupStep
from ..model import Server
from .escape import env_file
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


def postgres_exporter_setup(psql: str = PSQL_AS_POSTGRES) -> SetupStep:
    """files/postgres_exporter_setup.sh: the exporter installed, its pg_monitor role created once
    with the password of the root-only environment file, the exporter restarted."""
    return SetupStep(f"{DEFAULT_LAYOUT.tools_dir}/postgres-exporter-setup", "postgres_exporter_setup.sh",
                     {"EXPORTER_ENV": EXPORTER_ENV, "PSQL": psql})
