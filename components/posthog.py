"""PostHog on the posthog server: Docker from its pinned apt source, then PostHog's compose stack."""

from __future__ import annotations

import pulumi
import pulumi_random as random

from unde_infra.render.patroni import RenderedFile
from unde_infra.render.posthog import SAMPLE_SECRETS, SETUP_PATH, PosthogSecrets, posthog_files

from .delivery import deliver, rendered_files
from .hosts import Host


def deliver_posthog(host: Host, parent: pulumi.Resource) -> None:
    """PostHog's own secrets, generated once and kept (the names predate the compose stack, so
    state keeps them), in the root-only env file the compose file reads; the rest of its files."""
    values = pulumi.Output.all(
        random.RandomPassword("posthog-db-password", length=32, special=False).result,
        random.RandomPassword("posthog-secret-key", length=50, special=False).result,
        random.RandomBytes("posthog-encryption-salt", length=32).base64,
        random.RandomPassword("posthog-object-storage-password", length=32, special=False).result,
    )
    rendered: pulumi.Output[dict[str, RenderedFile]] = pulumi.Output.secret(values).apply(  # type: ignore[arg-type]
        lambda v: posthog_files(host.server, PosthogSecrets(*v), host.os)
    )
    files = rendered_files(rendered, posthog_files(host.server, SAMPLE_SECRETS, host.os))
    deliver(host, files, parent, apply=SETUP_PATH, apply_label="posthog")
