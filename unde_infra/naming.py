"""Conventions shared by the components that register resources and by the readers of what they
registered (the offline preview, the policy pack): one place for each, so the two never drift."""

from __future__ import annotations

from .provider_schema import replacing_properties

SERVER_TYPE = "hcloud:index/server:Server"
REMOTE_COMMAND_TYPE = "command:remote:Command"
REMOTE_COPY_TYPE = "command:remote:CopyToRemote"  # where the far end has no shell (RouterOS)

# hcloud.Server inputs whose change makes the provider replace the server, from the provider's
# schema and ForceNew facts (config/provider-schemas). A change to them (a new bootstrap, a new
# admin key, a new image release) must never replace a running server: it applies to servers
# created afterwards only.
REPLACE_FORCING_FIELDS = tuple(sorted(replacing_properties(SERVER_TYPE)))

_BOOTSTRAP_SUFFIX = "-bootstrap"


def bootstrap_name(server: str) -> str:
    """The command that bootstraps an existing host (its stdin is the host's user data)."""
    return f"{server}{_BOOTSTRAP_SUFFIX}"


def bootstrapped_server(resource_type: str, name: str) -> str | None:
    """The server a resource bootstraps, or None when it is no bootstrap command."""
    if resource_type == REMOTE_COMMAND_TYPE and name.endswith(_BOOTSTRAP_SUFFIX):
        return name[: -len(_BOOTSTRAP_SUFFIX)]
    return None


def delivery_name(server: str, path: str) -> str:
    """A file delivery: `<server>:<absolute path>`."""
    return f"{server}:{path}"


def delivered_file(name: str) -> tuple[str, str] | None:
    """(server, path) of a file delivery's name, or None for any other name."""
    server, sep, path = name.partition(":")
    return (server, path) if sep and path.startswith("/") else None


# The hcloud Load Balancer in front of the API instances (local-app scale-out); its price is in
# config/pricing.yaml under the same name.
LOAD_BALANCER_TYPE = "lb11"
LOAD_BALANCER_RESOURCE_TYPE = "hcloud:index/loadBalancer:LoadBalancer"
BUCKET_RESOURCE_TYPE = "minio:index/s3Bucket:S3Bucket"
