"""`RemoteCommand` sends the provider what pulumi_command's generated class sends.

The reference is the generated `pulumi_command.remote.Command` at the installed version: both
register under one monitor from the same arguments, and every field of the two registration
requests must be equal but the name (and the call stack the SDK records, which points at this
file either way)."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_command as command
import pytest
from google.protobuf.json_format import MessageToDict
from pulumi.runtime.proto import resource_pb2
from pulumi.runtime.stack import run_in_stack

from components import hosts
from components.hosts import Host
from components.remote_command import RemoteCommand
from unde_infra.offline import OfflineMocks, RecordingMonitor, _configure

# Fields that tell the two registrations apart by design.
OWN_FIELDS = ("name", "sourcePosition", "stackTrace")


class RequestMonitor(RecordingMonitor):
    """The preview's monitor, keeping each registration request as the SDK sent it."""

    def __init__(self) -> None:
        super().__init__(OfflineMocks({}, {}))
        self.requests: dict[str, resource_pb2.RegisterResourceRequest] = {}

    def RegisterResource(self, request: Any) -> Any:
        kept = resource_pb2.RegisterResourceRequest()
        kept.CopyFrom(request)
        self.requests[request.name] = kept
        return super().RegisterResource(request)


def comparable(request: resource_pb2.RegisterResourceRequest) -> dict[str, Any]:
    kept = resource_pb2.RegisterResourceRequest()
    kept.CopyFrom(request)
    for name in OWN_FIELDS:
        kept.ClearField(name)  # type: ignore[arg-type]
    return MessageToDict(kept, preserving_proto_field_name=True)


def register_both(fresh_event_loop, build) -> RequestMonitor:
    monitor = RequestMonitor()
    _configure(monitor, "local")
    fresh_event_loop.run_until_complete(run_in_stack(build))
    return monitor


def host_like(server: pulumi.CustomResource, inventory, monkeypatch) -> Host:
    """A host like a delivery's: an address from a resource's output, a secret key, a jump host."""
    monkeypatch.setattr(hosts, "admin_private_key", lambda: pulumi.Output.secret("placeholder-key"))
    return Host(inventory.server("staging-db"), server.id.apply(lambda _: "10.1.1.20"), server, jump="198.51.100.1")


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param({}, id="create only"),
        pytest.param({"stdin": "plain text\n", "triggers": ["digest"]}, id="plain stdin and trigger"),
        pytest.param({"stdin": "secret", "triggers": ["secret digest", "second"], "secret": True}, id="secret stdin"),
    ],
)
def test_a_remote_command_registers_what_the_generated_class_registers(fresh_event_loop, inventory, monkeypatch,
                                                                        arguments) -> None:
    arguments = dict(arguments)
    secret = arguments.pop("secret", False)

    def build() -> None:
        parent = pulumi.ComponentResource("unde:test:Parent", "parent")
        server = command.local.Command("server", create="true", opts=pulumi.ResourceOptions(parent=parent))
        inputs: dict[str, Any] = {}
        if "stdin" in arguments:
            inputs["stdin"] = pulumi.Output.secret(arguments["stdin"]) if secret else arguments["stdin"]
        if "triggers" in arguments:
            inputs["triggers"] = [pulumi.Output.secret(t) if secret else pulumi.Output.from_input(t)
                                  for t in arguments["triggers"]]
        host = host_like(server, inventory, monkeypatch)

        def opts() -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions(parent=parent, depends_on=[server], ignore_changes=["stdin"])

        create = "install -m 0600 /dev/stdin /etc/x"
        command.remote.Command("generated", connection=host.connection(), create=create, opts=opts(), **inputs)
        # The host's first command: its turn adds no dependency.
        RemoteCommand("lean", host=host, create=create, opts=opts(), **inputs)

    monitor = register_both(fresh_event_loop, build)
    generated, lean = comparable(monitor.requests["generated"]), comparable(monitor.requests["lean"])
    assert generated["type"] == "command:remote:Command" and generated["version"]
    assert generated["additionalSecretOutputs"] == ["connection"]
    assert generated["replaceOnChanges"] == ["triggers[*]"] and generated["dependencies"]
    assert lean == generated


def test_one_login_serves_every_command_of_a_host_as_a_secret(fresh_event_loop, inventory) -> None:
    """The commands of a host share one secret Output of its connection, and each still
    registers it as a secret, with the server it depends on; the second waits for the first
    (the host's turn), by `depends_on` only."""

    def build() -> None:
        server = command.local.Command("server", create="true")
        host = Host(inventory.server("staging-db"), server.stdout, server, jump="198.51.100.1")
        login = host.login()
        assert host.login() is login
        for name in ("first", "second"):
            RemoteCommand(name, host=host, create="true")

    monitor = register_both(fresh_event_loop, build)
    urns = {r.name: r.urn for r in monitor.records}
    for name in ("first", "second"):
        record = next(r for r in monitor.records if r.name == name)
        assert record.secret_paths == {"connection"}
        assert list(monitor.requests[name].propertyDependencies["connection"].urns) == [urns["server"]]
    assert sorted(monitor.requests["first"].dependencies) == [urns["server"]]
    assert sorted(monitor.requests["second"].dependencies) == sorted([urns["server"], urns["first"]])


def test_hosts_behind_a_jump_host_share_the_lanes_and_the_others_chain_alone(fresh_event_loop, inventory) -> None:
    """Each host reached directly is a chain of its own; the hosts behind jump hosts are spread
    over JUMP_LANES chains in the order they first appear, and keep their lane."""
    from components.remote_command import JUMP_LANES, DeliveryQueues

    servers = sorted(inventory.servers.values(), key=lambda s: s.name)
    direct, private = servers[:2], servers[2 : JUMP_LANES + 3]  # reached directly / through a jump host
    assert len(private) == JUMP_LANES + 1

    def build() -> None:
        for server in [*direct, *private, private[0], private[-1]]:
            jump = None if server in direct else "198.51.100.1"
            RemoteCommand(f"{server.name}:x{len(monitor_names)}", host=Host.at(server, "192.0.2.1", None, jump=jump),
                          create="true")
            monitor_names.append(f"{server.name}:x{len(monitor_names)}")
        queues = DeliveryQueues.for_this_run()
        assert queues is DeliveryQueues.for_this_run()  # one registry per stack run
        assert queues.queue(direct[0].name, jumped=False) == f"host {direct[0].name}"
        assert [queues.queue(s.name, jumped=True) for s in private] == [
            *(f"lane {k}" for k in range(JUMP_LANES)), "lane 0"]

    monitor_names: list[str] = []
    monitor = register_both(fresh_event_loop, build)
    urn = {r.name: r.urn for r in monitor.records}
    deps = {name: sorted(monitor.requests[name].dependencies) for name in monitor_names}
    first, second = monitor_names[:2]
    assert deps[first] == deps[second] == []  # two direct hosts: two chains
    lanes = monitor_names[2 : 2 + JUMP_LANES]
    assert all(deps[name] == [] for name in lanes)  # one lane each
    wrapped, again_first, again_last = monitor_names[2 + JUMP_LANES :]
    assert deps[wrapped] == [urn[lanes[0]]]  # the eighth private host shares lane 0
    assert deps[again_first] == [urn[wrapped]] and deps[again_last] == [urn[again_first]]


def test_every_stack_run_has_queues_of_its_own(fresh_event_loop, inventory) -> None:
    """A second run in the same process does not wait for the first run's commands."""
    server = inventory.server("staging-db")
    for _ in range(2):
        monitor = register_both(fresh_event_loop, lambda: RemoteCommand(
            "only", host=Host.at(server, "192.0.2.1", None), create="true"))
        assert list(monitor.requests["only"].dependencies) == []
