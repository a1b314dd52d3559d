"""The local stack's generated secrets and the files that carry them to each server."""

from __future__ import annotations

from functools import partial

import pulumi
import pulumi_random as random

from unde_infra.known import POSTHOG
from unde_infra.model import LOCAL, Inventory, Server, Shard
from unde_infra.render.app_secrets import (
    APP_DB_USERS,
    DB_USER_OF_TASK,
    MEK_PATH,
    MEK_TASKS,
    POSTHOG_INGEST_TASK,
    POSTHOG_PATH,
    SHARD_CREDENTIALS_PATH,
    posthog_ingest,
    shard_credentials,
    shard_hosts,
)
from unde_infra.render.patroni import Node, RenderedFile
from unde_infra.render.redis import (
    CLIENT_ENV,
    CLIENT_USERS,
    REDIS_TASK,
    ROUTER_USER,
    USERS,
    client_env,
    redis_server_files,
)
from unde_infra.render.shard_routing import routing_files

from .base import UndeComponent
from .delivery import RemoteFile, rendered_files


def _by_shard_and_user(values: dict[str, str]) -> dict[tuple[int, str], str]:
    return {(int(key.split(":")[0]), key.split(":")[1]): value for key, value in values.items()}


class LocalSecrets(UndeComponent):
    TYPE = "unde:local:Secrets"

    def __init__(self, inventory: Inventory, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("local-secrets", opts)
        self.inventory = inventory
        # 32 random bytes: the AES-256 key that encrypts user knowledge.
        self.mek: pulumi.Output[str] = pulumi.Output.secret(
            random.RandomBytes("master-encryption-key", length=32, opts=self.child()).base64  # type: ignore[arg-type]
        )
        self.app_passwords = {
            (shard.index, user): random.RandomPassword(
                f"{shard.scope}-{user}-password", length=32, special=False, opts=self.child()
            ).result
            for shard in inventory.shards
            for user in APP_DB_USERS
        }
        self.posthog_api_key = pulumi.Config().require_secret("posthogApiKey")
        # One password per Redis user (render/redis.USERS): the hot-path Redis stores their
        # hashes, each client server receives its own.
        self.redis_passwords = {
            user.name: random.RandomPassword(f"local-redis-{user.name}-password", length=32, special=False,
                                             opts=self.child()).result
            for user in USERS
        }
        self.register_outputs({})

    def redis_server(self) -> Server | None:
        return next((s for s in self.inventory.site_servers(LOCAL) if s.task == REDIS_TASK), None)

    def redis_files(self, server: Server) -> dict[str, RemoteFile]:
        """What the hot-path Redis server receives: configuration, users, the exporter's login."""
        passwords = pulumi.Output.all(**self.redis_passwords)
        rendered: pulumi.Output[dict[str, RenderedFile]] = pulumi.Output.secret(passwords).apply(  # type: ignore[arg-type]
            partial(redis_server_files, server)
        )
        sample = redis_server_files(server, {user.name: "sample" for user in USERS})
        return rendered_files(rendered, sample)

    def routing_files(self, shard: Shard, node: Node) -> dict[str, RemoteFile]:
        """A shard node's routing watcher, with the `router` user's password (root-only); none
        without a hot-path Redis to write to."""
        redis = self.redis_server()
        if redis is None:
            return {}
        password = self.redis_passwords[ROUTER_USER]
        rendered: pulumi.Output[dict[str, RenderedFile]] = pulumi.Output.secret(password).apply(  # type: ignore[arg-type]
            partial(routing_files, shard, node, redis)
        )
        return rendered_files(rendered, routing_files(shard, node, redis, "sample"))

    def app_passwords_of(self, shard: int) -> dict[str, pulumi.Output[str]]:
        return {user: value for (index, user), value in self.app_passwords.items() if index == shard}

    def files_for(self, server: Server) -> dict[str, RemoteFile]:
        files: dict[str, RemoteFile] = {}
        if server.task in MEK_TASKS:
            files[MEK_PATH] = RemoteFile(self.mek.apply(lambda key: key + "\n"), mode="0400", secret=True)
        db_user = DB_USER_OF_TASK.get(server.task)
        if db_user is not None:
            passwords = pulumi.Output.all(
                **{f"{index}:{user}": value for (index, user), value in self.app_passwords.items()}
            ).apply(_by_shard_and_user)
            shards = shard_hosts(self.inventory, server)
            files[SHARD_CREDENTIALS_PATH] = RemoteFile(
                passwords.apply(partial(shard_credentials, user=db_user, shards=shards)), mode="0600", secret=True
            )
        redis = self.redis_server()
        if server.task in CLIENT_USERS and redis is not None:
            user = CLIENT_USERS[server.task]
            files[CLIENT_ENV] = RemoteFile(
                self.redis_passwords[user].apply(partial(client_env, redis, user)), mode="0600", secret=True
            )
        if server.task == POSTHOG_INGEST_TASK:
            posthog = self.inventory.only(POSTHOG)
            files[POSTHOG_PATH] = RemoteFile(
                self.posthog_api_key.apply(lambda key: posthog_ingest(key, f"http://{posthog.ip}")),
                mode="0600",
                secret=True,
            )
        return files
