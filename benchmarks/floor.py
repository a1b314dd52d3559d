"""The floor of the offline preview: the bare Pulumi SDK registering what a preview registered.

Reads the `resources.json` of each stack a preview wrote and registers the same resources in one
process, one stack after the other (helsinki first, as the preview runs them): the same count,
types, names, parents, inputs, dependencies and options, under the SDK's own mock monitor with
mocks that only echo the inputs back. Custom resources are `pulumi.CustomResource` with the
recorded type token and inputs (a `StackReference` is read, as the SDK's class does), components
`pulumi.ComponentResource`, providers `pulumi.ProviderResource`; a masked secret is registered as
a secret value. No program logic runs: what is left is the SDK's own cost of these
registrations. (tests/unit/test_benchmarks.py registers it under the preview's recording monitor
and gets the very same resources.json back.)

    .venv/bin/python benchmarks/floor.py PREVIEW_DIR [--gc tuned]

`--gc tuned` applies the offline runner's garbage-collector settings, for a comparison of the
program alone; by default the interpreter runs with its defaults, as a bare program does.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import mocks, settings
from pulumi.runtime.stack import run_in_stack
from pulumi.runtime.sync_await import _sync_await

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROJECT = "unde-infra"
STACKS = ("helsinki", "local")
SECRET_MASK = "[secret]"
PROVIDER_PREFIX = "pulumi:providers:"
STACK_REFERENCE = "pulumi:pulumi:StackReference"


class EchoMocks(mocks.Mocks):
    """The trivial mocks: each resource gets the id it had in the preview and its inputs back."""

    def __init__(self, ids: dict[tuple[str, str], str]) -> None:
        self.ids = ids

    def new_resource(self, args: mocks.MockResourceArgs) -> tuple[str, dict]:
        return args.resource_id or self.ids.get((args.typ, args.name), ""), args.inputs

    def call(self, args: mocks.MockCallArgs) -> tuple[dict, list | None]:
        return {}, None


def revive(value: Any) -> Any:
    """An input as the program passed it: a masked secret as a secret, an asset as an asset."""
    if value == SECRET_MASK:
        return pulumi.Output.secret(SECRET_MASK)
    if isinstance(value, dict):
        if set(value) == {"text", "hash"}:
            return pulumi.StringAsset(value["text"])
        return {k: revive(v) for k, v in value.items()}
    if isinstance(value, list):
        return [revive(v) for v in value]
    return value


def registration_order(entries: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every entry after its parent, its provider and its dependencies (the file orders by depth)."""
    by_urn = {e["urn"]: e for e in entries}
    done: set[str] = set()

    def visit(entry: dict[str, Any]) -> Iterator[dict[str, Any]]:
        stack = [(entry, False)]
        while stack:
            current, expanded = stack.pop()
            if current["urn"] in done:
                continue
            if expanded:
                done.add(current["urn"])
                yield current
                continue
            stack.append((current, True))
            before = [current.get("parent"), current.get("provider", "").rsplit("::", 1)[0], *current["dependencies"]]
            stack.extend((by_urn[u], False) for u in before if u in by_urn and u not in done)

    for entry in entries:
        yield from visit(entry)


def register(entries: list[dict[str, Any]]) -> None:
    resources: dict[str, pulumi.Resource] = {}
    for entry in registration_order(entries):
        name = entry["urn"].rsplit("::", 1)[1]
        provider = entry.get("provider", "").rsplit("::", 1)[0]
        opts = pulumi.ResourceOptions(
            parent=resources.get(entry["parent"]),
            depends_on=[resources[u] for u in entry["dependencies"]],
            protect=entry["protect"],
            ignore_changes=entry["ignoreChanges"] or None,
            retain_on_delete=entry["retainOnDelete"],
            import_=entry["importId"],
            delete_before_replace=entry.get("deleteBeforeReplace"),
            replace_on_changes=entry.get("replaceOnChanges"),
            aliases=entry.get("aliases"),
            provider=resources[provider] if provider else None,  # type: ignore[arg-type]
        )
        kind = entry["type"]
        inputs = revive(entry["inputs"])
        resource: pulumi.Resource
        if not entry["custom"]:
            component = pulumi.ComponentResource(kind, name, None, opts)
            component.register_outputs({})
            resource = component
        elif kind.startswith(PROVIDER_PREFIX):
            resource = pulumi.ProviderResource(kind[len(PROVIDER_PREFIX):], name, inputs, opts)
        elif kind == STACK_REFERENCE:
            resource = pulumi.CustomResource(kind, name, inputs, pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(id=entry["id"])))
        else:
            resource = pulumi.CustomResource(kind, name, inputs, opts)
        resources[entry["urn"]] = resource


def run_stack(
    stack: str, entries: list[dict[str, Any]], outputs: dict[str, Any], monitor: mocks.MockMonitor | None = None
) -> int:
    """Register `entries` as stack `stack` under `monitor` (by default the SDK's own with the
    trivial mocks); the number of resources the monitor saw."""
    asyncio.set_event_loop(asyncio.new_event_loop())
    if monitor is None:
        monitor = mocks.MockMonitor(EchoMocks({(e["type"], e["urn"].rsplit("::", 1)[1]): e["id"] for e in entries if e.get("id")}))
    settings.configure(
        mocks.MockSettings(
            monitor=monitor,
            monitor_features=set(monitor.GetDeploymentInfo(None).supportedFeatures),
            engine=mocks.MockEngine(None),
            project=PROJECT,
            stack=stack,
            dry_run=True,
            organization="organization",
            callbacks=None,
        )
    )
    settings.set_root_resource(None)  # type: ignore[arg-type]

    def program() -> None:
        register(entries)
        for key, value in outputs.items():
            pulumi.export(key, revive(value))

    try:
        _sync_await(run_in_stack(program))
    finally:
        settings.set_root_resource(None)  # type: ignore[arg-type]
    return len(monitor.resources)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preview", type=Path, help="a preview's output directory (with helsinki/ and local/)")
    parser.add_argument("--gc", choices=["default", "tuned"], default="default")
    args = parser.parse_args()
    if args.gc == "tuned":
        from unde_infra.gc_settings import quiet_gc

        tuning = quiet_gc()
    else:
        tuning = nullcontext()
    registered = 0
    with tuning:
        for stack in STACKS:
            folder = args.preview / stack
            entries = json.loads((folder / "resources.json").read_text(encoding="utf-8"))
            outputs = json.loads((folder / "outputs.json").read_text(encoding="utf-8"))
            registered += run_stack(stack, entries, outputs)
    print(f"registered {registered} resources (gc {args.gc}, thresholds {gc.get_threshold()})")


if __name__ == "__main__":
    main()
