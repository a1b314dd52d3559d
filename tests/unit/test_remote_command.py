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


def connection_args(server: pulumi.CustomResource) -> command.remote.ConnectionArgs:
    """A login like a host's: an address from a resource's output, a secret key, a jump host."""
    key = pulumi.Output.secret("placeholder-key")
    return command.remote.ConnectionArgs(
        host=server.id.apply(lambda _: "10.1.1.20"),
        user="root",
        port=22,
        private_key=key,
        proxy=command.remote.ProxyConnectionArgs(host="198.51.100.1", user="root", private_key=key),
    )


@pytest.mark.parametrize(
    "arguments",
    [
        pytest.param({}, id="create only"),
        pytest.param({"stdin": "plain text\n", "triggers": ["digest"]}, id="plain stdin and trigger"),
        pytest.param({"stdin": "secret", "triggers": ["secret digest", "second"], "secret": True}, id="secret stdin"),
    ],
)
def test_a_remote_command_registers_what_the_generated_class_registers(fresh_event_loop, arguments) -> None:
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
        connection = connection_args(server)

        def opts() -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions(parent=parent, depends_on=[server], ignore_changes=["stdin"])

        create = "install -m 0600 /dev/stdin /etc/x"
        command.remote.Command("generated", connection=connection, create=create, opts=opts(), **inputs)
        RemoteCommand("lean", login=pulumi.Output.secret(connection), create=create, opts=opts(), **inputs)

    monitor = register_both(fresh_event_loop, build)
    generated, lean = comparable(monitor.requests["generated"]), comparable(monitor.requests["lean"])
    assert generated["type"] == "command:remote:Command" and generated["version"]
    assert generated["additionalSecretOutputs"] == ["connection"]
    assert generated["replaceOnChanges"] == ["triggers[*]"] and generated["dependencies"]
    assert lean == generated


def test_one_login_serves_every_command_of_a_host_as_a_secret(fresh_event_loop, inventory) -> None:
    """The commands of a host share one secret Output of its connection, and each still
    registers it as a secret, with the server it depends on."""
    from components.hosts import Host

    def build() -> None:
        server = command.local.Command("server", create="true")
        host = Host(inventory.server("staging-db"), server.stdout, server, jump="198.51.100.1")
        login = host.login()
        assert host.login() is login
        for name in ("first", "second"):
            RemoteCommand(name, login=host.login(), create="true")

    monitor = register_both(fresh_event_loop, build)
    server_urn = next(r.urn for r in monitor.records if r.name == "server")
    for name in ("first", "second"):
        record = next(r for r in monitor.records if r.name == name)
        assert record.secret_paths == {"connection"}
        assert list(monitor.requests[name].propertyDependencies["connection"].urns) == [server_urn]
