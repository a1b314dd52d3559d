"""The hot-path Redis on local-redis: its configuration, users and exporter login, then its setup."""

from __future__ import annotations

import pulumi

from unde_infra.render.redis import SETUP_PATH

from .delivery import deliver
from .hosts import Host
from .secrets import LocalSecrets


def deliver_redis(host: Host, secrets: LocalSecrets, parent: pulumi.Resource) -> None:
    """Redis from Debian with the rendered files; the setup restarts Redis only when redis.conf
    changed and reloads the users (ACL LOAD) otherwise."""
    deliver(host, secrets.redis_files(host.server), parent, apply=SETUP_PATH, apply_label="redis")
