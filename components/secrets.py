"""The local stack's generated secrets and the files that carry them to each server."""

from __future__ import annotations

from functools import partial

import pulumi
import pulumi_random as random

from unde_infra.known import POSTHOG
from unde_infra.model import Inventory, Server
from unde_infra.render.app_secrets import (
    APP_DB_USERS,
    MEK_PATH,
    MEK_TASKS,
    POSTHOG_INGEST_TASK,
    POSTHOG_PATH,
    SHARD_CREDENTIALS_PATH,
    posthog_ingest,
    shard_credentials,
)

from .base import UndeComponent
from .delivery import RemoteFile


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
        self.register_outputs({})

    def app_passwords_of(self, shard: int) -> dict[str, pulumi.Output[str]]:
        return {user: value for (index, user), value in self.app_passwords.items() if index == shard}

    def files_for(self, server: Server) -> dict[str, RemoteFile]:
        files: dict[str, RemoteFile] = {}
        if server.task in MEK_TASKS:
            files[MEK_PATH] = RemoteFile(self.mek.apply(lambda key: key + "\n"), mode="0400", secret=True)
        if server.task in APP_DB_USERS:
            shards = [(s.index, str(s.primary.ip)) for s in self.inventory.shards]
            passwords = pulumi.Output.all(
                **{f"{index}:{user}": value for (index, user), value in self.app_passwords.items()}
            ).apply(_by_shard_and_user)
            files[SHARD_CREDENTIALS_PATH] = RemoteFile(
                passwords.apply(partial(shard_credentials, user=server.task, shards=shards)), mode="0600", secret=True
            )
        if server.task == POSTHOG_INGEST_TASK:
            posthog = self.inventory.only(POSTHOG)
            files[POSTHOG_PATH] = RemoteFile(
                self.posthog_api_key.apply(lambda key: posthog_ingest(key, f"http://{posthog.ip}")),
                mode="0600",
                secret=True,
            )
        return files
