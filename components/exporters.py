"""Exporters beside the Redis servers and the PostgreSQL servers that are not shards."""

from __future__ import annotations

import pulumi
import pulumi_random as random

from unde_infra.render.exporters import (
    needs_redis_exporter,
    needs_standalone_postgres_exporter,
    postgres_exporter_files,
    postgres_exporter_setup,
    redis_exporter_setup,
)
from unde_infra.render.patroni import RenderedFile

from .delivery import deliver, rendered_files
from .hosts import Host


def deliver_exporters(host: Host, parent: pulumi.Resource) -> None:
    server = host.server
    if needs_redis_exporter(server):
        deliver(host, {}, parent, apply=redis_exporter_setup(), apply_label="redis-exporter")
    if needs_standalone_postgres_exporter(server):
        password = random.RandomPassword(
            f"{server.name}-exporter-password", length=32, special=False, opts=pulumi.ResourceOptions(parent=parent)
        ).result
        rendered: pulumi.Output[dict[str, RenderedFile]] = pulumi.Output.secret(password).apply(  # type: ignore[arg-type]
            postgres_exporter_files
        )
        files = rendered_files(rendered, postgres_exporter_files("sample"))
        deliver(host, files, parent, apply=postgres_exporter_setup(), apply_label="postgres-exporter")
