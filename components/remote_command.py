"""The provider's `command:remote:Command`, registered from the inputs this program sets, in its
host's turn.

pulumi_command's generated class gives every one of the resource's eleven properties an Output
(stdout and stderr too, which nothing here reads) and deep-unwraps the connection into a new
secret Output for each command: two dozen Outputs a command, and a preview registers some 1,800
commands, a sixth of its time. `RemoteCommand` sends the provider the very request the generated
class sends (tests/unit/test_remote_command.py compares the two field by field, from the same
arguments), from the four inputs the program uses and the login each host makes secret once
(`Host.login`). Everything else about the resource is the provider's: its schema, its plugin,
what `pulumi up` does with it.

Every SSH resource also waits for its turn (`DeliveryQueues`): `pulumi up` starts everything
whose dependencies are done at once, and sshd refuses a burst of new connections (MaxStartups;
see unde_infra/limits.SSH_CONNECTION_BUDGET)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib.metadata import version
from typing import TYPE_CHECKING, TypeVar

import pulumi
from pulumi.runtime import get_root_resource

from unde_infra.limits import SSH_CONNECTION_BUDGET

if TYPE_CHECKING:
    from .hosts import Host

TYPE = "command:remote:Command"
# What the generated class adds to every command's options: the plugin version the engine
# loads, the connection kept secret in the state, and a changed trigger running it again.
_PROVIDER_OPTIONS = pulumi.ResourceOptions(
    version=version("pulumi_command"),
    additional_secret_outputs=["connection"],
    replace_on_changes=["triggers[*]"],
)
# Lanes for the hosts reached through a jump host: a jump host then carries at most one
# connection per lane plus one of its own chain, within the budget.
JUMP_LANES = SSH_CONNECTION_BUDGET - 1
_QUEUES_ATTRIBUTE = "_unde_delivery_queues"
R = TypeVar("R", bound=pulumi.Resource)


class DeliveryQueues:
    """Which SSH resource each new one waits for, so that no host sees more than
    `SSH_CONNECTION_BUDGET` connections at once under `pulumi up`'s unbounded parallelism.

    A host reached directly has a chain of its own: each command waits for the one registered
    before it for that host, so the host sees one connection at a time. The hosts reached
    through a jump host are spread, in the order they first appear, over `lanes` chains shared
    by all of them (whichever jump host they use): a jump host sees at most one connection per
    lane plus its own chain's. A host keeps the queue it was first given, however a later
    `Host` of the same server reaches it (components make their own `Host`s of one server, so
    the queues are keyed by server name).

    Each turn is a `depends_on` on a resource constructed earlier in the program, so the order
    never has a cycle; never a trigger, so a command that runs again (its file changed) does
    not make the commands after it run again. The queues belong to the stack run
    (`for_this_run`): the offline preview runs many stacks in one process."""

    def __init__(self, lanes: int = JUMP_LANES) -> None:
        self.lanes = lanes
        self._queue_of: dict[str, str] = {}  # server -> its queue
        self._last: dict[str, pulumi.Resource] = {}  # queue -> the resource registered last in it
        self._jumped = 0

    @classmethod
    def for_this_run(cls) -> DeliveryQueues:
        """The queues of the stack being run, kept on its root resource (the `pulumi:pulumi:Stack`
        object the SDK makes for each run), so they end with the run."""
        root = get_root_resource()
        if root is None:
            raise RuntimeError("remote commands are registered inside a stack (pulumi.runtime.run_in_stack)")
        queues = getattr(root, _QUEUES_ATTRIBUTE, None)
        if queues is None:
            queues = cls()
            setattr(root, _QUEUES_ATTRIBUTE, queues)
        return queues

    def queue(self, server: str, jumped: bool) -> str:
        if server not in self._queue_of:
            if jumped:
                self._queue_of[server] = f"lane {self._jumped % self.lanes}"
                self._jumped += 1
            else:
                self._queue_of[server] = f"host {server}"
        return self._queue_of[server]

    def in_turn(self, host: Host, build: Callable[[pulumi.ResourceOptions], R],
                opts: pulumi.ResourceOptions | None = None) -> R:
        """The SSH resource `build` makes from `opts`, made to wait for the resource before it in
        `host`'s queue."""
        queue = self.queue(host.server.name, host.jump is not None)
        previous = self._last.get(queue)
        if previous is not None:
            opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[previous]))
        resource = build(opts or pulumi.ResourceOptions())
        self._last[queue] = resource
        return resource


def in_turn(host: Host, build: Callable[[pulumi.ResourceOptions], R], opts: pulumi.ResourceOptions | None = None) -> R:
    """An SSH resource other than a `RemoteCommand` (an upload), in its host's turn."""
    return DeliveryQueues.for_this_run().in_turn(host, build, opts)


class RemoteCommand(pulumi.CustomResource):
    """`create` run over SSH on `host` (its login, a secret Output shared by the host's
    commands), fed `stdin`, run again whenever one of `triggers` changes, and registered in the
    host's turn (`DeliveryQueues`)."""

    def __init__(
        self,
        resource_name: str,
        *,
        host: Host,
        create: pulumi.Input[str],
        stdin: pulumi.Input[str] | None = None,
        triggers: Sequence[pulumi.Input[object]] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props: dict[str, object] = {"connection": host.login(), "create": create}
        if stdin is not None:
            props["stdin"] = stdin
        if triggers is not None:
            props["triggers"] = triggers

        def register(queued: pulumi.ResourceOptions) -> RemoteCommand:
            super(RemoteCommand, self).__init__(
                TYPE, resource_name, props, pulumi.ResourceOptions.merge(queued, _PROVIDER_OPTIONS)
            )
            return self

        DeliveryQueues.for_this_run().in_turn(host, register, opts)

