"""Run the real Pulumi program offline, under the SDK's mock monitor, and record what it registers.

No Pulumi CLI, no credentials, no network: `__main__.py` (the very file `pulumi up` runs) is
executed inside a Pulumi stack whose resource monitor is a `MockMonitor` subclass. Every
registration is recorded with its inputs and options, shaped like the resources of
`pulumi stack export`. The mocks answer only what a provider would compute (ids, addresses);
the program's own inputs are recorded exactly as the program produced them.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import contextvars
import hashlib
import json
import os
import sys
import threading
from collections.abc import Callable, Collection
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc, settings
from pulumi.runtime.config import set_all_config
from pulumi.runtime.proto import resource_pb2
from pulumi.runtime.stack import run_in_stack
from pulumi.runtime.sync_await import _ensure_event_loop, _sync_await

from .gc_settings import quiet_gc
from .model import ROOT
from .provider_schema import planned_differences
from .settings import PROGRAM_SECRETS, PROJECT, stand_in_secret

T = TypeVar("T")
SECRET_MASK = "[secret]"
OFFLINE_SECRET_PREFIX = "offline-placeholder"
# Stand-ins for what a provider assigns, each derived from the resource's name (`stable_number`):
# adding or removing one resource leaves the others' as they were, so a diff of two previews shows
# only what changed. Documentation-range addresses (RFC 5737, RFC 3849) stand in for the public
# addresses Hetzner assigns: 203.0.113.11-249 (the converge lab uses .250 and .251 itself).
STAND_IN_PUBLIC_NET = "203.0.113."
STAND_IN_PUBLIC_HOSTS = range(11, 250)
STAND_IN_IPV6_GROUPS = range(0x10, 0x10000)
# hcloud ids are numbers: created resources get 10,000,000-89,999,999, adopted servers the stack
# config does not name 90,000,000-99,999,999.
STAND_IN_IDS = range(10_000_000, 90_000_000)
STAND_IN_IMPORT_IDS = range(90_000_000, 100_000_000)
STACK_OUTPUTS_FILE = ROOT / "config" / "offline-stack-outputs.yaml"


@dataclass
class Record:
    urn: str
    type: str
    name: str
    custom: bool
    parent: str | None
    inputs: dict[str, Any]  # with offline placeholder secrets, for artifacts only
    secret_paths: set[str]
    dependencies: list[str]
    protect: bool
    ignore_changes: list[str]
    retain_on_delete: bool
    import_id: str | None
    delete_before_replace: bool
    replace_on_changes: list[str]
    aliases: list[str]
    provider: str | None
    id: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)

    def export(self) -> dict[str, Any]:
        """The entry of resources.json: `pulumi stack export` keys, secret values masked."""
        entry: dict[str, Any] = {
            "urn": self.urn,
            "type": self.type,
            "custom": self.custom,
            "parent": self.parent,
            "inputs": mask_secrets(self.inputs),
            "dependencies": sorted(set(self.dependencies)),
            "protect": self.protect,
            "ignoreChanges": self.ignore_changes,
            "retainOnDelete": self.retain_on_delete,
            "importId": self.import_id,
        }
        if self.custom:
            entry["id"] = self.id
        if self.provider:
            entry["provider"] = self.provider
        if self.delete_before_replace:
            entry["deleteBeforeReplace"] = True
        if self.replace_on_changes:
            entry["replaceOnChanges"] = self.replace_on_changes
        if self.aliases:
            entry["aliases"] = self.aliases
        return entry


def mask_secrets(value: Any) -> Any:
    """JSON-ready values: secrets masked, assets as their text and hash, and whole numbers as
    integers (the wire format carries every number as a double)."""
    if rpc.is_rpc_secret(value):
        return SECRET_MASK
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: mask_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v) for v in value]
    if isinstance(value, pulumi.StringAsset):
        return {"text": value.text, "hash": hashlib.sha256(value.text.encode()).hexdigest()}
    return value


def unwrap_secrets(value: Any) -> Any:
    if rpc.is_rpc_secret(value):
        return unwrap_secrets(rpc.unwrap_rpc_secret(value))
    if isinstance(value, dict):
        return {k: unwrap_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap_secrets(v) for v in value]
    return value


def stable_number(key: str, numbers: range, taken: Collection[int] = ()) -> int:
    """A number of `numbers` derived from `key` alone, or the next one after it that is not
    `taken`: the same key gets the same number whatever other keys come and go, unless two want
    the same one."""
    start = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % len(numbers)
    for step in range(len(numbers)):
        number = numbers[(start + step) % len(numbers)]
        if number not in taken:
            return number
    raise RuntimeError(f"no free stand-in for {key}: all {len(numbers)} of {numbers} are taken")


def stable_numbers(keys: list[str], numbers: range, taken: Collection[int] = ()) -> dict[str, int]:
    """`stable_number` of each key, all different, chosen in the order of `keys`."""
    chosen: dict[str, int] = {}
    used = set(taken)
    for key in keys:
        chosen[key] = stable_number(key, numbers, used)
        used.add(chosen[key])
    return chosen


def stand_in_import_ids(servers: list[str], real_ids: Collection[str]) -> dict[str, str]:
    """Import ids the offline preview stands in for adopted servers the stack config does not
    name: one per server name, none equal to a real id of the config."""
    taken = {int(i) for i in real_ids if str(i).isdigit()}
    return {name: str(number) for name, number in stable_numbers(sorted(servers), STAND_IN_IMPORT_IDS, taken).items()}


class OfflineMocks(pulumi_mocks.Mocks):
    """Answers what the providers would compute: numeric hcloud ids, assigned addresses,
    placeholder values for generated secrets, and the other stack's outputs."""

    def __init__(
        self,
        stack_outputs: dict[str, dict[str, Any]],
        public_addresses: dict[str, str],
        secret_prefix: str = OFFLINE_SECRET_PREFIX,
        server_names: list[str] | None = None,
        public_servers: list[str] | None = None,
    ) -> None:
        self.secret_prefix = secret_prefix
        self.stack_outputs = stack_outputs
        self.public_addresses = public_addresses
        # Every server's stand-in addresses are chosen before the program runs, in the order of
        # the names (not of registration, which is concurrent), so that where two names want the
        # same address the same one wins in every run: two previews of one commit are identical.
        stand_in_public = sorted(set(public_servers or []) - set(public_addresses))
        self._public_hosts = stable_numbers(stand_in_public, STAND_IN_PUBLIC_HOSTS)
        self._ipv6_groups = stable_numbers(sorted(server_names or []), STAND_IN_IPV6_GROUPS)
        self._ids: set[int] = set()

    def new_id(self, typ: str, name: str) -> str:
        """A stand-in id derived from the resource's type and name (hcloud ids are numbers)."""
        rid = stable_number(f"{typ}::{name}", STAND_IN_IDS, self._ids)
        self._ids.add(rid)
        return str(rid)

    @staticmethod
    def _chosen(chosen: dict[str, int], name: str, numbers: range) -> int:
        """`name`'s number in `chosen`, chosen now for a server the run was not told of."""
        if name not in chosen:
            chosen[name] = stable_number(name, numbers, set(chosen.values()))
        return chosen[name]

    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str, dict]:
        state = dict(args.inputs)
        rid = args.resource_id or self.new_id(args.typ, args.name)
        if args.typ == "pulumi:pulumi:StackReference":
            ref = state.get("name", args.name)
            stack = str(ref).rsplit("/", 1)[-1]
            return rid, {"name": ref, "outputs": self.stack_outputs.get(stack, {}), "secretOutputNames": []}
        if args.typ == "hcloud:index/server:Server":
            name = state.get("name", args.name)
            public = any(n.get("ipv4Enabled", True) for n in state.get("publicNets", [{}]))
            address = self.public_addresses.get(name)
            if public and address is None:
                address = f"{STAND_IN_PUBLIC_NET}{self._chosen(self._public_hosts, str(name), STAND_IN_PUBLIC_HOSTS)}"
            group = self._chosen(self._ipv6_groups, str(name), STAND_IN_IPV6_GROUPS)
            state.update(ipv4Address=address or "", ipv6Address=f"2001:db8:{group:x}::1", status="running")
        elif args.typ == "random:index/randomBytes:RandomBytes":
            # Deterministic bytes of the requested length, so that derived values (WireGuard
            # public keys) are real derivations of a placeholder, never of a real secret.
            raw = hashlib.sha256(f"{self.secret_prefix}-{args.name}".encode()).digest() * 8
            raw = raw[: int(state.get("length", 32))]
            state.update(base64=base64.b64encode(raw).decode(), hex=raw.hex())
        elif args.typ.startswith("random:index/random"):
            state["result"] = f"{self.secret_prefix}-{args.name}"
        elif args.typ.startswith("command:remote:") or args.typ.startswith("command:local:"):
            state.setdefault("stdout", "")
            state.setdefault("stderr", "")
        return rid, state

    def call(self, args: pulumi_mocks.MockCallArgs) -> tuple[dict, list | None]:
        return {}, None


class ImportMismatch(Exception):
    """What `pulumi up` reports as "inputs to import do not match the existing resource"."""


# (resource type, import id) -> the resource's live inputs, as the provider would read them.
LiveState = dict[tuple[str, str], dict[str, Any]]


def import_mismatches(resource_type: str, inputs: dict[str, Any], live: dict[str, Any], ignored: list[str]) -> list[str]:
    """The inputs an import would refuse: the program's (with the provider's defaults) against
    what the provider reads from the live resource, not ignored, different."""
    differences = planned_differences(resource_type, inputs, live, ignored)
    return [f"{key}: program {mask_secrets(mine)!r}, live {mask_secrets(theirs)!r}"
            for key, (mine, theirs) in differences.items()]


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """The SDK's mock monitor, keeping the whole registration request of every resource. With a
    live state it also fails an import the way the engine would, on any input that differs."""

    def __init__(self, mocks: OfflineMocks, live_state: LiveState | None = None) -> None:
        super().__init__(mocks)
        self.live_state = live_state or {}
        self.import_failures: list[str] = []
        self.records: list[Record] = []
        self.stack_outputs: dict[str, Any] = {}
        self.stack_urn: str | None = None

    def RegisterResource(self, request: Any) -> Any:
        urn = self.make_urn(request.parent, request.type, request.name)
        if request.type == "pulumi:pulumi:Stack":
            self.stack_urn = urn
            return resource_pb2.RegisterResourceResponse(urn=urn)
        _ensure_event_loop()
        inputs = rpc.deserialize_properties(request.object)
        plain = unwrap_secrets(inputs)
        live = self.live_state.get((request.type, request.importId)) if request.importId else None
        if live is not None:
            differences = import_mismatches(request.type, plain, live, list(request.ignoreChanges))
            if differences:
                # Raised after the run (run_program): an exception here would hang the SDK's wait.
                self.import_failures.append(f"{urn}: inputs to import do not match the existing resource: "
                                            + "; ".join(differences))
        secret_inputs = {k for k, v in inputs.items() if rpc.is_rpc_secret(v)}
        rid, state = self.mocks.new_resource(
            pulumi_mocks.MockResourceArgs(
                typ=request.type,
                name=request.name,
                inputs=plain,
                provider=request.provider,
                resource_id=request.importId or None,
                custom=request.custom,
            )
        )
        secret_outputs = set(request.additionalSecretOutputs) | secret_inputs
        wire = {k: rpc.wrap_rpc_secret(v) if k in secret_outputs else v for k, v in state.items()}
        obj_proto = _sync_await(rpc.serialize_properties(wire, {}))
        self.resources[urn] = pulumi_mocks.MockMonitor.ResourceRegistration(urn, rid or "", state)
        self.records.append(
            Record(
                urn=urn,
                type=request.type,
                name=request.name,
                custom=request.custom,
                parent=request.parent or self.stack_urn,
                inputs=inputs,
                secret_paths=secret_inputs,
                dependencies=list(request.dependencies),
                protect=bool(request.protect),
                ignore_changes=list(request.ignoreChanges),
                retain_on_delete=bool(request.retainOnDelete),
                import_id=request.importId or None,
                delete_before_replace=bool(request.deleteBeforeReplace),
                replace_on_changes=list(request.replaceOnChanges),
                aliases=[a.urn or a.spec.name for a in request.aliases] + list(request.aliasURNs),
                provider=request.provider or None,
                id=rid if request.custom else None,
                outputs=state,
            )
        )
        return resource_pb2.RegisterResourceResponse(urn=urn, id=rid or "", object=obj_proto)

    def ReadResource(self, request: Any) -> Any:
        response = super().ReadResource(request)
        self.records.append(
            Record(
                urn=response.urn,
                type=request.type,
                name=request.name,
                custom=True,
                parent=request.parent or self.stack_urn,
                inputs=rpc.deserialize_properties(request.properties),
                secret_paths=set(),
                dependencies=list(request.dependencies),
                protect=False,
                ignore_changes=[],
                retain_on_delete=False,
                import_id=None,
                delete_before_replace=False,
                replace_on_changes=[],
                aliases=[],
                provider=request.provider or None,
                id=request.id,
            )
        )
        return response

    def RegisterResourceOutputs(self, request: Any) -> Any:
        if request.urn == self.stack_urn:
            self.stack_outputs = rpc.deserialize_properties(request.outputs)
        return super().RegisterResourceOutputs(request)


@dataclass
class StackRun:
    stack: str
    records: list[Record]
    outputs: dict[str, Any]
    config: dict[str, Any]
    stand_ins: list[str]

    def resources(self) -> list[dict[str, Any]]:
        """Parents before children, each level by URN: the same order in every run, whatever
        order the SDK's concurrent registration took."""
        parent_of = {r.urn: r.parent for r in self.records}

        def depth(urn: str) -> int:
            level = 0
            while urn in parent_of:
                urn = parent_of[urn] or ""
                level += 1
            return level

        return [r.export() for r in sorted(self.records, key=lambda r: (depth(r.urn), r.urn))]

    def masked_outputs(self) -> dict[str, Any]:
        return mask_secrets(self.outputs)

    def plain_outputs(self) -> dict[str, Any]:
        return unwrap_secrets(self.outputs)


def run_program(
    stack: str,
    config: dict[str, Any],
    *,
    stack_outputs: dict[str, dict[str, Any]] | None = None,
    public_addresses: dict[str, str] | None = None,
    program: Path = ROOT / "__main__.py",
    stand_ins: list[str] | None = None,
    secret_prefix: str = OFFLINE_SECRET_PREFIX,
    server_names: list[str] | None = None,
    public_servers: list[str] | None = None,
    live_state: LiveState | None = None,
    gc_tuning: bool = True,
    secret_values: dict[str, str] | None = None,
) -> StackRun:
    """Execute `program` as stack `stack` with `config` (project keys unprefixed) under mocks.
    `server_names` (every server of the topology) and `public_servers` (those with a public IPv4)
    let the stand-in addresses be chosen before the run (OfflineMocks).
    `secret_values` stand in for encrypted config secrets where a placeholder will not do (the
    converge lab's services parse some of them as URLs); a preview sets none.
    `gc_tuning` runs it with the runner's garbage-collector settings (gc_settings.quiet_gc);
    the run registers the same resources either way."""
    pulumi_config: dict[str, str] = {}
    secret_keys: list[str] = []
    # Secrets the program requires but the committed stack config cannot hold unencrypted.
    config = {**{key: {"secure": "offline"} for key in PROGRAM_SECRETS.get(stack, ())}, **config}
    for key, value in config.items():
        full = key if ":" in key else f"{PROJECT}:{key}"
        if isinstance(value, dict) and set(value) == {"secure"}:
            # An encrypted config secret cannot be read offline: a placeholder stands in.
            value = (secret_values or {}).get(key, stand_in_secret(key, secret_prefix))
            secret_keys.append(full)
        pulumi_config[full] = value if isinstance(value, str) else json.dumps(value)
    mocks = OfflineMocks(stack_outputs or {}, public_addresses or {}, secret_prefix, server_names, public_servers)
    monitor = RecordingMonitor(mocks, live_state)
    _configure(monitor, stack)
    set_all_config(pulumi_config, secret_keys)
    saved_path = list(sys.path)
    sys.path.insert(0, str(program.parent))
    # The program runs as `__main__` in a namespace of its own, as `runpy.run_path` (the language
    # host's way) runs it, but executed straight from its code object: the SDK records every
    # resource's call stack, and runpy's three frames under each cost more than the program.
    code = compile(program.read_bytes(), str(program), "exec")
    try:
        def program_body() -> None:
            exec(code, {"__name__": "__main__", "__file__": str(program), "__builtins__": builtins})  # noqa: S102

        with quiet_gc() if gc_tuning else nullcontext():
            on_own_thread(lambda: _sync_await(run_in_stack(program_body)))
    finally:
        sys.path[:] = saved_path
        settings.set_root_resource(None)  # type: ignore[arg-type]
    if monitor.import_failures:
        raise ImportMismatch("\n".join(sorted(monitor.import_failures)))
    return StackRun(stack, monitor.records, monitor.stack_outputs, config, list(stand_ins or []))


def on_own_thread(body: Callable[[], T]) -> T:
    """`body()` on a thread of its own, with an event loop of its own, in a copy of the caller's
    context (the SDK's settings are context variables); its result returned, its exception raised.

    The SDK records the whole call stack of every resource (`traceback.extract_stack`: each frame
    walked, its file checked and its line looked up). On a thread of its own that stack starts at
    the program, not under its caller's frames: the command's nine, a test runner's fifty."""
    context = contextvars.copy_context()
    outcome: dict[str, Any] = {}

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            outcome["result"] = context.run(body)
        except BaseException as error:  # noqa: BLE001 raised again in the caller's thread
            outcome["error"] = error
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    thread = threading.Thread(target=run, name="pulumi-program", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return cast(T, outcome["result"])


def _configure(monitor: RecordingMonitor, stack: str) -> None:
    features = set(monitor.GetDeploymentInfo(None).supportedFeatures)
    settings.configure(
        pulumi_mocks.MockSettings(
            monitor=monitor,
            monitor_features=features,
            engine=pulumi_mocks.MockEngine(None),
            project=PROJECT,
            stack=stack,
            dry_run=True,
            organization="organization",
            callbacks=None,
        )
    )
    settings.set_root_resource(None)  # type: ignore[arg-type]
    os.environ.setdefault("PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION", "true")
