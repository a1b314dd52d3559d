"""Exporters beside the Redis servers and the PostgreSQL servers that are not shards, and the
backups of those PostgreSQL servers (production-db, staging-db)."""

from __future__ import annotations

import pulumi
import pulumi_random as random

from unde_infra.model import Inventory
from unde_infra.render.exporters import (
    needs_redis_exporter,
    needs_standalone_postgres_exporter,
    postgres_exporter_files,
    postgres_exporter_setup,
)
from unde_infra.render.patroni import RenderedFile
from unde_infra.render.pgbackrest import standalone_files, standalone_setup
from unde_infra.render.redis import adopted_redis_exporter_files, adopted_redis_exporter_setup

from .delivery import deliver, rendered_files, setup_files
from .hosts import Host


def _standalone_backup_files(inventory: Inventory, host: Host, values: list[str]) -> dict[str, RenderedFile]:
    cipher_pass, s3_key, s3_secret = values
    return {
        # The postgres user's archive_command reads the keys file: it belongs to that user.
        path: RenderedFile(content, mode=mode, secret=secret,
                           owner="postgres" if secret else "root", group="postgres" if secret else "root")
        for path, (content, mode, secret) in standalone_files(host.server, inventory, cipher_pass, s3_key,
                                                              s3_secret).items()
    }


def deliver_standalone_backups(host: Host, inventory: Inventory, parent: pulumi.Resource) -> None:
    """pgBackRest for a PostgreSQL server this program does not run: its own prefix in the
    backups bucket, its own cipher pass (generated once, protected: losing it loses the backups)."""
    server = host.server
    cipher = random.RandomPassword(
        f"{server.name}-repo-cipher-pass", length=64, special=False,
        opts=pulumi.ResourceOptions(parent=parent, protect=True),
    ).result
    config = pulumi.Config()
    values = pulumi.Output.all(cipher, config.require_secret("objectStorageAccessKey"),
                               config.require_secret("objectStorageSecretKey"))
    rendered: pulumi.Output[dict[str, RenderedFile]] = pulumi.Output.secret(values).apply(  # type: ignore[arg-type]
        lambda v: _standalone_backup_files(inventory, host, v)
    )
    sample = _standalone_backup_files(inventory, host, ["sample"] * 3)
    step = standalone_setup(server)
    deliver(host, {**rendered_files(rendered, sample), **setup_files(step)}, parent, apply=step.command,
            apply_label="backups")


def deliver_exporters(host: Host, parent: pulumi.Resource) -> None:
    server = host.server
    if needs_redis_exporter(server) and server.existing:
        # A running Redis this program adopted (push: Celery's broker): only the exporter and its
        # own ACL user. The Redis this program installs brings its exporter along (components/redis.py).
        password = random.RandomPassword(
            f"{server.name}-redis-exporter-password", length=32, special=False,
            opts=pulumi.ResourceOptions(parent=parent),
        ).result
        adopted: pulumi.Output[dict[str, RenderedFile]] = pulumi.Output.secret(password).apply(  # type: ignore[arg-type]
            adopted_redis_exporter_files
        )
        deliver(host, rendered_files(adopted, adopted_redis_exporter_files("sample")), parent,
                apply=adopted_redis_exporter_setup(), apply_label="redis-exporter")
    if needs_standalone_postgres_exporter(server):
        password = random.RandomPassword(
            f"{server.name}-exporter-password", length=32, special=False, opts=pulumi.ResourceOptions(parent=parent)
        ).result
        rendered: pulumi.Output[dict[str, RenderedFile]] = pulumi.Output.secret(password).apply(  # type: ignore[arg-type]
            postgres_exporter_files
        )
        step = postgres_exporter_setup()
        files = {**rendered_files(rendered, postgres_exporter_files("sample")), **setup_files(step)}
        deliver(host, files, parent, apply=step.command, apply_label="postgres-exporter")
