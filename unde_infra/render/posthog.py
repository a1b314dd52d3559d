"""PostHog on the posthog server (H18): self-hosted with Docker Compose, as the plan says.

The compose file follows PostHog's published hobby deployment (docker-compose.hobby.yml with
docker-compose.base.yml, PostHog/posthog at POSTHOG_COMMIT) with the services the plan needs:
PostgreSQL, Redis, ClickHouse, ZooKeeper and Kafka, object storage for session recordings,
the Django web app, the Celery worker, the plugin server, the Rust capture and feature-flag
services, and Caddy in front. Left out: Temporal (batch exports), livestream, the dev tools.
What differs from the hobby file, on purpose:

* every image is pinned (PostHog's own images to one commit; no `latest`, no `master`);
* no secret is in the compose file: database password, Django secret key, encryption salt
  and object-storage password come from the root-only env file (`--env-file`), generated per
  stack; the hobby file's fixed object-storage and database passwords are gone;
* data lives on the server's disk under /var/lib/posthog (bind mounts, no anonymous volumes);
* Caddy serves plain HTTP on the private address only (local-app sends `POST /capture` over
  the VPN, the team reaches the UI the same way); no port is published on any other address,
  ClickHouse's HTTP port only on loopback for the metrics collector.

Docker Engine and the compose plugin come from Docker's apt repository, pinned to one version
and trusted only through Docker's key with its published fingerprint checked first."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from ..files import python_script, source
from ..files import setup_settings as script_parameters
from ..model import CREATED_OS, OS_CODENAMES, Server
from .app_secrets import POSTHOG_PATH
from .cloud_init import dump_yaml
from .escape import env_file
from .monitoring.metrics import POSTHOG_EVENTS_INGESTED_METRIC, POSTHOG_METRICS_UNIT, POSTHOG_QUERY_LATENCY_P95_METRIC
from .patroni import RenderedFile
from .systemd import timer_unit

POSTHOG_TASK = "posthog"
PROJECT_DIR = "/opt/posthog"
COMPOSE_PATH = f"{PROJECT_DIR}/docker-compose.yml"
CADDYFILE_PATH = f"{PROJECT_DIR}/Caddyfile"
SOURCE_DIR = f"{PROJECT_DIR}/src"  # PostHog's repository at POSTHOG_COMMIT: ClickHouse's configuration
DATA_DIR = "/var/lib/posthog"
ENV_PATH = POSTHOG_PATH  # the compose file's secrets, root-only
UNIT = "unde-posthog.service"
TOOLS_DIR = "/usr/local/lib/unde"
SETUP_PATH = f"{TOOLS_DIR}/posthog-setup"
METRICS_COLLECTOR = f"{TOOLS_DIR}/posthog-metrics"
TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"  # Debian node_exporter's textfile directory
METRICS_FILE = "unde_posthog.prom"
METRICS_INTERVAL_SECONDS = 60
CLICKHOUSE_HTTP = "127.0.0.1:8123"

POSTHOG_REPOSITORY = "https://github.com/PostHog/posthog"
# PostHog cuts no tagged releases any more; its images are tagged with the commit they are built from.
POSTHOG_COMMIT = "00cbfd237ce7978ba4056cbab9df25b9995c70d2"
IMAGES = {
    "db": "postgres:15.12-alpine",
    "redis7": "redis:7.2.7-alpine",
    "clickhouse": "clickhouse/clickhouse-server:24.8.7.41",
    "zookeeper": "zookeeper:3.7.0",
    "kafka": "ghcr.io/posthog/kafka-container:v2.8.2",
    "objectstorage": "minio/minio:RELEASE.2025-02-18T16-25-55Z",
    "web": f"posthog/posthog:{POSTHOG_COMMIT}",
    "worker": f"posthog/posthog:{POSTHOG_COMMIT}",
    "plugins": f"posthog/posthog-node:{POSTHOG_COMMIT}",
    "capture": f"ghcr.io/posthog/posthog/capture:{POSTHOG_COMMIT}",
    "replay-capture": f"ghcr.io/posthog/posthog/capture:{POSTHOG_COMMIT}",
    "feature-flags": f"ghcr.io/posthog/posthog/feature-flags:{POSTHOG_COMMIT}",
    "proxy": "caddy:2.9.1",
}

# Debian 13 (the server the program creates): Docker Engine 26.1 and Compose v2 (2.26, also the
# `docker compose` plugin) from Debian's own archive, with its security support; no other source.
DEBIAN_DOCKER_PACKAGES = ("docker.io", "docker-cli", "docker-compose")
# Debian 12 (an adopted posthog server): Debian's docker-compose is v1 (1.29), which PostHog's
# compose file does not suit, so Docker's apt repository, one version of each package (apt-cache
# madison lists them).
DOCKER_REPOSITORY = "https://download.docker.com/linux/debian"
DOCKER_KEY_URL = f"{DOCKER_REPOSITORY}/gpg"
# Docker's release key, as docs.docker.com publishes it ("Verify that the key fingerprint is ...").
DOCKER_KEY_FINGERPRINT = "9DC858229FC7DD38854AE2D88D81803C0EBFCD88"
DOCKER_KEYRING = "/etc/apt/keyrings/docker.asc"
DOCKER_SOURCE_PATH = "/etc/apt/sources.list.d/docker.list"
DOCKER_PIN_PATH = "/etc/apt/preferences.d/unde-docker"
DOCKER_VERSION = "5:27.5.1-1~debian.12~bookworm"
DOCKER_PACKAGES = {
    "docker-ce": DOCKER_VERSION,
    "docker-ce-cli": DOCKER_VERSION,
    "containerd.io": "1.7.25-1",
    "docker-compose-plugin": "2.32.4-1~debian.12~bookworm",
}
# Data directories under DATA_DIR, and the user id a directory must belong to where the image
# does not take ownership itself (Bitnami's Kafka runs as 1001 and never chowns).
DATA_DIRS = {
    "postgres": None, "redis": None, "clickhouse": None, "zookeeper/data": None, "zookeeper/datalog": None,
    "zookeeper/logs": None, "kafka": 1001, "objectstorage": None, "caddy/data": None, "caddy/config": None,
}
OBJECT_STORAGE_USER = "posthog-objectstorage"


@dataclass(frozen=True)
class PosthogSecrets:
    db_password: str
    secret_key: str
    encryption_salt: str  # 32 random bytes, base64: PostHog's ENCRYPTION_SALT_KEYS (a Fernet key)
    object_storage_password: str


_URL_SAFE = re.compile(r"[A-Za-z0-9._~-]+")


def fernet_key(random_base64: str) -> str:
    """A Fernet key (URL-safe base64 of 32 bytes) from 32 random bytes in standard base64."""
    raw = base64.b64decode(random_base64)
    if len(raw) != 32:
        raise ValueError("the encryption salt must be 32 bytes")
    return base64.urlsafe_b64encode(raw).decode()


def compose_env(secrets: PosthogSecrets) -> str:
    """SECRET: the variables the compose file interpolates, for `docker compose --env-file`."""
    for name in ("db_password", "secret_key", "object_storage_password"):
        if not _URL_SAFE.fullmatch(getattr(secrets, name)):
            raise ValueError(f"{name}: only URL-safe characters (A-Z a-z 0-9 . _ ~ -): it goes into database URLs")
    return env_file({
        "POSTGRES_PASSWORD": secrets.db_password,
        "POSTHOG_SECRET": secrets.secret_key,
        "ENCRYPTION_SALT_KEYS": fernet_key(secrets.encryption_salt),
        "OBJECT_STORAGE_PASSWORD": secrets.object_storage_password,
    })


def _app_environment(server: Server) -> dict[str, str]:
    """What web, worker and plugins share (the hobby file's worker environment)."""
    database = "postgres://posthog:${POSTGRES_PASSWORD}@db:5432/posthog"
    return {
        "SITE_URL": f"http://{server.ip}",
        "SECRET_KEY": "${POSTHOG_SECRET}",
        "ENCRYPTION_SALT_KEYS": "${ENCRYPTION_SALT_KEYS}",
        "DISABLE_SECURE_SSL_REDIRECT": "true",
        "IS_BEHIND_PROXY": "true",
        "DATABASE_URL": database,
        "PERSONS_DATABASE_URL": database,
        "PGHOST": "db",
        "PGUSER": "posthog",
        "PGPASSWORD": "${POSTGRES_PASSWORD}",
        "CLICKHOUSE_HOST": "clickhouse",
        "CLICKHOUSE_DATABASE": "posthog",
        "CLICKHOUSE_SECURE": "false",
        "CLICKHOUSE_VERIFY": "false",
        "KAFKA_HOSTS": "kafka:9092",
        "REDIS_URL": "redis://redis7:6379/",
        "CDP_REDIS_HOST": "redis7",
        "CDP_REDIS_PORT": "6379",
        "CDP_API_URL": "http://plugins:6738",
        "DEPLOYMENT": "hobby",
        "OBJECT_STORAGE_ENABLED": "true",
        "OBJECT_STORAGE_ENDPOINT": "http://objectstorage:19000",
        "OBJECT_STORAGE_ACCESS_KEY_ID": OBJECT_STORAGE_USER,
        "OBJECT_STORAGE_SECRET_ACCESS_KEY": "${OBJECT_STORAGE_PASSWORD}",
        "SESSION_RECORDING_V2_S3_ENDPOINT": "http://objectstorage:19000",
        "SESSION_RECORDING_V2_S3_ACCESS_KEY_ID": OBJECT_STORAGE_USER,
        "SESSION_RECORDING_V2_S3_SECRET_ACCESS_KEY": "${OBJECT_STORAGE_PASSWORD}",
        "OTEL_SDK_DISABLED": "true",
        "OPT_OUT_CAPTURE": "true",  # PostHog's own telemetry about this instance
    }


def _data(path: str, target: str) -> str:
    return f"{DATA_DIR}/{path}:{target}"


def compose_config(server: Server) -> dict[str, object]:
    def service(name: str, **spec: object) -> dict[str, object]:
        # A fresh logging block each time: YAML aliases would make the file harder to read.
        logging = {"driver": "json-file", "options": {"max-size": "50m", "max-file": "3"}}
        return {"image": IMAGES[name], "restart": "unless-stopped", "logging": logging, **spec}

    app = _app_environment(server)
    clickhouse_config = f"{SOURCE_DIR}/docker/clickhouse"
    capture_env = {"ADDRESS": "0.0.0.0:3000", "KAFKA_HOSTS": "kafka:9092", "REDIS_URL": "redis://redis7:6379/",
                   "RUST_LOG": "info,rdkafka=warn"}
    services: dict[str, object] = {
        "db": service(
            "db",
            environment={"POSTGRES_USER": "posthog", "POSTGRES_DB": "posthog", "POSTGRES_PASSWORD": "${POSTGRES_PASSWORD}"},
            healthcheck={"test": ["CMD-SHELL", "pg_isready -U posthog"], "interval": "5s", "timeout": "5s"},
            volumes=[_data("postgres", "/var/lib/postgresql/data")],
        ),
        "redis7": service(
            "redis7",
            command="redis-server --maxmemory-policy allkeys-lru --maxmemory 200mb",
            healthcheck={"test": ["CMD", "redis-cli", "ping"], "interval": "3s", "timeout": "10s", "retries": 10},
            volumes=[_data("redis", "/data")],
        ),
        "clickhouse": service(
            "clickhouse",
            depends_on=["kafka", "zookeeper"],
            ulimits={"nofile": {"soft": 262144, "hard": 262144}},
            # The collector of posthog_events_ingested_total and posthog_query_latency_p95.
            ports=[f"{CLICKHOUSE_HTTP}:8123"],
            volumes=[
                f"{SOURCE_DIR}/posthog/idl:/idl",
                f"{clickhouse_config}/docker-entrypoint-initdb.d:/docker-entrypoint-initdb.d",
                f"{clickhouse_config}/config.xml:/etc/clickhouse-server/config.xml",
                f"{clickhouse_config}/config.d/default.xml:/etc/clickhouse-server/config.d/default.xml",
                f"{clickhouse_config}/users.xml:/etc/clickhouse-server/users.xml",
                f"{clickhouse_config}/user_defined_function.xml:/etc/clickhouse-server/user_defined_function.xml",
                f"{SOURCE_DIR}/posthog/user_scripts:/var/lib/clickhouse/user_scripts",
                _data("clickhouse", "/var/lib/clickhouse"),
            ],
        ),
        "zookeeper": service(
            "zookeeper",
            environment={"ZOO_AUTOPURGE_PURGEINTERVAL": "1", "ZOO_AUTOPURGE_SNAPRETAINCOUNT": "3"},
            volumes=[_data("zookeeper/data", "/data"), _data("zookeeper/datalog", "/datalog"),
                     _data("zookeeper/logs", "/logs")],
        ),
        "kafka": service(
            "kafka",
            depends_on=["zookeeper"],
            environment={
                "KAFKA_BROKER_ID": "1001", "KAFKA_CFG_RESERVED_BROKER_MAX_ID": "1001",
                "KAFKA_CFG_LISTENERS": "PLAINTEXT://:9092", "KAFKA_CFG_ADVERTISED_LISTENERS": "PLAINTEXT://kafka:9092",
                "KAFKA_CFG_ZOOKEEPER_CONNECT": "zookeeper:2181", "ALLOW_PLAINTEXT_LISTENER": "true",
                # Events are in ClickHouse within seconds; an hour of Kafka log is plenty.
                "KAFKA_LOG_RETENTION_MS": "3600000", "KAFKA_LOG_RETENTION_CHECK_INTERVAL_MS": "300000",
                "KAFKA_LOG_RETENTION_HOURS": "1",
            },
            healthcheck={"test": "kafka-cluster.sh cluster-id --bootstrap-server localhost:9092 || exit 1",
                         "interval": "3s", "timeout": "10s", "retries": 10},
            volumes=[_data("kafka", "/bitnami/kafka")],
        ),
        "objectstorage": service(
            "objectstorage",
            environment={"MINIO_ROOT_USER": OBJECT_STORAGE_USER, "MINIO_ROOT_PASSWORD": "${OBJECT_STORAGE_PASSWORD}"},
            entrypoint="sh",
            # The bucket first, then the server (as the hobby file does).
            command="-c 'mkdir -p /data/posthog && minio server --address \":19000\" --console-address \":19001\" /data'",
            volumes=[_data("objectstorage", "/data")],
        ),
        "web": service(
            "web",
            command="sh -c './bin/migrate && ./bin/docker-server'",
            environment=dict(app),
            depends_on={"db": {"condition": "service_healthy"}, "redis7": {"condition": "service_healthy"},
                        "clickhouse": {"condition": "service_started"}, "kafka": {"condition": "service_healthy"},
                        "objectstorage": {"condition": "service_started"}},
        ),
        "worker": service(
            "worker",
            command="./bin/docker-worker-celery --with-scheduler",
            environment=dict(app),
            depends_on={"web": {"condition": "service_started"}},
        ),
        "plugins": service(
            "plugins",
            command="./bin/plugin-server --no-restart-loop",
            environment=dict(app),
            depends_on={"web": {"condition": "service_started"}},
        ),
        "capture": service(
            "capture",
            environment={**capture_env, "KAFKA_TOPIC": "events_plugin_ingestion", "CAPTURE_MODE": "events"},
            depends_on=["kafka", "redis7"],
        ),
        "replay-capture": service(
            "replay-capture",
            environment={**capture_env, "KAFKA_TOPIC": "session_recording_snapshot_item_events",
                         "CAPTURE_MODE": "recordings"},
            depends_on=["kafka", "redis7"],
        ),
        "feature-flags": service(
            "feature-flags",
            environment={"WRITE_DATABASE_URL": app["DATABASE_URL"], "READ_DATABASE_URL": app["DATABASE_URL"],
                         "REDIS_URL": "redis://redis7:6379/", "ADDRESS": "0.0.0.0:3001"},
            depends_on={"db": {"condition": "service_healthy"}, "redis7": {"condition": "service_healthy"}},
        ),
        "proxy": service(
            "proxy",
            # The private address only: local-app's capture and the team's UI come over the VPN.
            ports=[f"{server.ip}:80:80"],
            volumes=[f"{CADDYFILE_PATH}:/etc/caddy/Caddyfile:ro", _data("caddy/data", "/data"),
                     _data("caddy/config", "/config")],
            depends_on=["web", "capture", "replay-capture", "feature-flags"],
        ),
    }
    # The project is named after its directory (/opt/posthog), as in the hobby deployment.
    return {"services": services}


def compose_file(server: Server) -> str:
    header = (
        f"# PostHog on {server.name}, rendered by unde-infra from PostHog's hobby deployment\n"
        f"# (PostHog/posthog {POSTHOG_COMMIT[:12]}); edits are overwritten. Secrets: {ENV_PATH}.\n"
    )
    return header + dump_yaml(compose_config(server))


def caddyfile() -> str:
    """PostHog's routes (docker-compose.base.yml's Caddyfile) on plain HTTP, port 80 in the container."""
    return "\n".join([
        "# Rendered by unde-infra: PostHog's routes, plain HTTP on the private network.",
        "{",
        "\tauto_https off",
        "\tadmin off",
        "}",
        "",
        ":80 {",
        "\t@capture path /e /e/* /i/v0/* /batch /batch* /capture /capture*",
        "\t@replay-capture path /s /s/*",
        "\t@flags path /flags /flags*",
        "\thandle @capture {",
        "\t\treverse_proxy capture:3000",
        "\t}",
        "\thandle @replay-capture {",
        "\t\treverse_proxy replay-capture:3000",
        "\t}",
        "\thandle @flags {",
        "\t\treverse_proxy feature-flags:3001",
        "\t}",
        "\thandle {",
        "\t\treverse_proxy web:8000",
        "\t}",
        "}",
        "",
    ])


def compose_unit() -> str:
    compose = f"/usr/bin/docker compose --project-directory {PROJECT_DIR} --env-file {ENV_PATH}"
    return "\n".join([
        "[Unit]",
        "Description=PostHog (Docker Compose, unde-infra)",
        "Requires=docker.service",
        "After=docker.service network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=oneshot",
        "RemainAfterExit=yes",
        f"WorkingDirectory={PROJECT_DIR}",
        f"ExecStart={compose} up -d --remove-orphans",
        # A reload recreates only the services whose configuration or image changed.
        f"ExecReload={compose} up -d --remove-orphans",
        f"ExecStop={compose} stop",
        "TimeoutStartSec=30min",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])


def docker_from_debian(os: str) -> bool:
    """Docker from Debian's archive (Debian 13), or from Docker's repository (Debian 12)."""
    return os != "debian-12"


def docker_apt_source() -> str:
    return f"deb [arch=amd64 signed-by={DOCKER_KEYRING}] {DOCKER_REPOSITORY} bookworm stable\n"


def docker_apt_pin() -> str:
    """apt preferences: exactly DOCKER_PACKAGES' versions, never a newer one by accident."""
    blocks = [
        f"Package: {package}\nPin: version {version}\nPin-Priority: 1001\n"
        for package, version in DOCKER_PACKAGES.items()
    ]
    return "# Rendered by unde-infra: Docker's packages stay at the pinned versions.\n" + "\n".join(blocks)


def setup_settings(os: str = CREATED_OS) -> str:
    debian = docker_from_debian(os)
    return script_parameters({
        "CODENAME": OS_CODENAMES[os],
        # Empty on Debian 13: no key, no repository.
        "DOCKER_KEY_URL": "" if debian else DOCKER_KEY_URL,
        "DOCKER_KEY_FINGERPRINT": "" if debian else DOCKER_KEY_FINGERPRINT,
        "DOCKER_KEYRING": "" if debian else DOCKER_KEYRING,
        "DOCKER_PACKAGES": " ".join(DEBIAN_DOCKER_PACKAGES) if debian else " ".join(
            f"{package}={version}" for package, version in DOCKER_PACKAGES.items()),
        "POSTHOG_REPOSITORY": POSTHOG_REPOSITORY, "POSTHOG_COMMIT": POSTHOG_COMMIT, "SOURCE_DIR": SOURCE_DIR,
        # What the compose file mounts from PostHog's repository (a sparse checkout).
        "SOURCE_PATHS": "docker/clickhouse posthog/idl posthog/user_scripts",
        "PROJECT_DIR": PROJECT_DIR, "ENV_FILE": ENV_PATH, "DATA_DIR": DATA_DIR,
        "DATA_DIRS": " ".join(f"{path}:{uid}" if uid is not None else path for path, uid in DATA_DIRS.items()),
        "UNIT": UNIT, "METRICS_TIMER": f"{POSTHOG_METRICS_UNIT}.timer",
    })


def metrics_collector_settings() -> dict[str, object]:
    return {
        "clickhouse_url": f"http://{CLICKHOUSE_HTTP}/",
        "database": "posthog",
        "output_dir": TEXTFILE_DIR,
        "file_name": METRICS_FILE,
        "events_metric": POSTHOG_EVENTS_INGESTED_METRIC,
        "latency_metric": POSTHOG_QUERY_LATENCY_P95_METRIC,
        "latency_window_minutes": 10,
    }


def metrics_units() -> dict[str, str]:
    service = "\n".join([
        "[Unit]",
        "Description=PostHog ingestion and query latency for node_exporter (unde-infra)",
        f"After={UNIT}",
        "",
        "[Service]",
        "Type=oneshot",
        f"ExecStart=/usr/bin/python3 {METRICS_COLLECTOR}",
        "",
    ])
    timer = timer_unit("PostHog metrics for node_exporter (unde-infra)",
                       ["OnBootSec=2min", f"OnUnitActiveSec={METRICS_INTERVAL_SECONDS}s"])
    return {
        f"/etc/systemd/system/{POSTHOG_METRICS_UNIT}.service": service,
        f"/etc/systemd/system/{POSTHOG_METRICS_UNIT}.timer": timer,
    }


def posthog_files(server: Server, secrets: PosthogSecrets, os: str | None = None) -> dict[str, RenderedFile]:
    """Everything the posthog server receives (running `os`, by default server.os); only the env
    file carries secrets. Docker's apt source and pin only where Docker comes from its repository."""
    os = os or server.os
    files = {
        COMPOSE_PATH: RenderedFile(compose_file(server)),
        CADDYFILE_PATH: RenderedFile(caddyfile()),
        ENV_PATH: RenderedFile(compose_env(secrets), mode="0600", secret=True),
        f"/etc/systemd/system/{UNIT}": RenderedFile(compose_unit()),
        SETUP_PATH: RenderedFile(source("posthog_setup.sh"), mode="0755"),
        f"{SETUP_PATH}.env": RenderedFile(setup_settings(os)),
    }
    if not docker_from_debian(os):
        files[DOCKER_SOURCE_PATH] = RenderedFile(docker_apt_source())
        files[DOCKER_PIN_PATH] = RenderedFile(docker_apt_pin())
    for path, text in python_script(METRICS_COLLECTOR, "posthog_metrics.py", metrics_collector_settings()).items():
        files[path] = RenderedFile(text, mode="0755" if path == METRICS_COLLECTOR else "0644")
    files.update({path: RenderedFile(text) for path, text in metrics_units().items()})
    return files


SAMPLE_SECRETS = PosthogSecrets("sample", "sample", base64.b64encode(bytes(32)).decode(), "sample")

