"""The provider's `command:remote:Command`, registered from the inputs this program sets.

pulumi_command's generated class gives every one of the resource's eleven properties an Output
(stdout and stderr too, which nothing here reads) and deep-unwraps the connection into a new
secret Output for each command: two dozen Outputs a command, and a preview registers some 1,800
commands, a sixth of its time. `RemoteCommand` sends the provider the very request the generated
class sends (tests/unit/test_remote_command.py compares the two field by field, from the same
arguments), from the four inputs the program uses and the login each host makes secret once
(`Host.login`). Everything else about the resource is the provider's: its schema, its plugin,
what `pulumi up` does with it."""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import version

import pulumi
import pulumi_command as command

TYPE = "command:remote:Command"
# What the generated class adds to every command's options: the plugin version the engine
# loads, the connection kept secret in the state, and a changed trigger running it again.
_PROVIDER_OPTIONS = pulumi.ResourceOptions(
    version=version("pulumi_command"),
    additional_secret_outputs=["connection"],
    replace_on_changes=["triggers[*]"],
)


class RemoteCommand(pulumi.CustomResource):
    """`create` run over SSH with `login` (a secret Output, `Host.login()`), fed `stdin`, and
    run again whenever one of `triggers` changes."""

    def __init__(
        self,
        resource_name: str,
        *,
        login: pulumi.Output[command.remote.ConnectionArgs],
        create: pulumi.Input[str],
        stdin: pulumi.Input[str] | None = None,
        triggers: Sequence[pulumi.Input[object]] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props: dict[str, object] = {"connection": login, "create": create}
        if stdin is not None:
            props["stdin"] = stdin
        if triggers is not None:
            props["triggers"] = triggers
        super().__init__(TYPE, resource_name, props, pulumi.ResourceOptions.merge(opts, _PROVIDER_OPTIONS))
