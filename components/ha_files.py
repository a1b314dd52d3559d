"""The shard HA files of a server (PostgreSQL, Patroni, PgBouncer, pgBackRest, exporter; etcd),
from the renderers, as deliveries."""

from __future__ import annotations

import pulumi
import pulumi_random as random

from unde_infra.model import Inventory, Server, Shard
from unde_infra.render.etcd import etcd_member_files
from unde_infra.render.node_setup import etcd_member_setup, shard_node_setup
from unde_infra.render.patroni import Node, RenderedFile, shard_node_bundle
from unde_infra.render.postgres import ShardSecrets

from .delivery import RemoteFile

SHARD_PASSWORDS = ("superuser", "replication", "rewind", "pgbouncer", "exporter")
SAMPLE_SECRETS = ShardSecrets(*(["sample-value"] * 8))
SHARD_NODE_SETUP = shard_node_setup()
ETCD_MEMBER_SETUP = etcd_member_setup()


def shard_secrets(shard: Shard, parent: pulumi.Resource) -> pulumi.Output[ShardSecrets]:
    """The shard's passwords (generated once, kept in state) and the object storage keys."""
    opts = pulumi.ResourceOptions(parent=parent)
    passwords = {
        name: random.RandomPassword(f"{shard.scope}-{name}-password", length=32, special=False, opts=opts).result
        for name in SHARD_PASSWORDS
    }
    # The backup repository's encryption passphrase: losing it loses every backup, so it is
    # never rotated by the program.
    cipher = random.RandomPassword(
        f"{shard.scope}-repo-cipher-pass", length=64, special=False, opts=pulumi.ResourceOptions(parent=parent, protect=True)
    ).result
    config = pulumi.Config()
    values = pulumi.Output.all(
        *(passwords[name] for name in SHARD_PASSWORDS),
        config.require_secret("objectStorageAccessKey"),
        config.require_secret("objectStorageSecretKey"),
        cipher,
    )
    return pulumi.Output.secret(values.apply(lambda v: ShardSecrets(*v)))


def _remote(rendered: pulumi.Output[dict[str, RenderedFile]], path: str, sample: RenderedFile) -> RemoteFile:
    content = rendered.apply(lambda files: files[path].content)
    if not sample.secret:
        content = pulumi.Output.unsecret(content)  # shown in previews and diffs
    return RemoteFile(content, mode=sample.mode, owner=sample.owner, group=sample.group, secret=sample.secret)


def shard_node_files(shard: Shard, node: Node, inventory: Inventory, secrets: pulumi.Output[ShardSecrets]) -> dict[str, RemoteFile]:
    rendered = secrets.apply(lambda s: shard_node_bundle(shard, node, inventory, s))
    sample = shard_node_bundle(shard, node, inventory, SAMPLE_SECRETS)
    return {path: _remote(rendered, path, spec) for path, spec in sample.items()}


def etcd_files(server: Server, inventory: Inventory) -> dict[str, RemoteFile]:
    """The etcd member configuration of `server`, or nothing if it hosts no member."""
    member = next((m for m in inventory.etcd if m.host.name == server.name), None)
    if member is None:
        return {}
    return {path: RemoteFile(text) for path, text in etcd_member_files(member, inventory).items()}
