"""Regenerate `config/provider-schemas/<provider>.json` from a provider's published `schema.json`.

The trimmed file keeps what the program registers: the resources it uses, every type they reach,
and the provider's own inputs, with descriptions dropped. It records where the full schema came
from (repository, ref, commit, path, sha256) and compares it with the installed, pinned Python
SDK: an input the SDK has and the schema lacks (the SDK is generated from the pinned version's
schema), or a different set of required inputs, is written down under `pinnedSdk.differences`
and applied by the checker, so the data describes the pinned version.

    git -C <clone of pulumi/pulumi-hcloud> show <commit>:provider/cmd/pulumi-resource-hcloud/schema.json \\
        > /tmp/hcloud-schema.json
    .venv/bin/python -m unde_infra.provider_schema_trim hcloud /tmp/hcloud-schema.json \\
        --repository https://github.com/pulumi/pulumi-hcloud --ref v1.39.1 --commit <commit>

The resources kept are those of the existing trimmed file plus any `--resource TOKEN`.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.metadata
import inspect
import json
import re
import sys
from pathlib import Path
from typing import Any

from .provider_schema import SCHEMA_DIR

KEPT_KEYS = (
    "type", "items", "additionalProperties", "$ref", "properties", "required", "enum", "value", "secret",
    "willReplaceOnChanges", "replaceOnChanges", "deprecationMessage", "default", "inputProperties",
    "requiredInputs",
)
SCHEMA_PATH = "provider/cmd/pulumi-resource-{provider}/schema.json"


def _trim_node(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _trim_value(k, v) for k, v in node.items() if k in KEPT_KEYS}
    return node


def _trim_value(key: str, value: Any) -> Any:
    if key in ("properties", "inputProperties"):
        return {name: _trim_node(prop) for name, prop in sorted(value.items())}
    if key in ("items", "additionalProperties") and isinstance(value, dict):
        return _trim_node(value)
    if key == "enum":
        return [{"value": e.get("value")} for e in value]
    return value


def referenced_types(node: Any) -> set[str]:
    """Type tokens a schema node refers to (`#/types/<token>`), not following them."""
    found: set[str] = set()
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/types/"):
            found.add(ref[len("#/types/"):])
        for value in node.values():
            found |= referenced_types(value)
    elif isinstance(node, list):
        for value in node:
            found |= referenced_types(value)
    return found


def trim(full: dict[str, Any], resources: list[str]) -> dict[str, Any]:
    """The part of a full schema that the given resources and the provider's inputs need."""
    missing = [r for r in resources if r not in full.get("resources", {})]
    if missing:
        raise SystemExit(f"not in the schema: {', '.join(missing)}")
    kept_resources = {r: _trim_node({k: v for k, v in full["resources"][r].items()
                                     if k in ("inputProperties", "requiredInputs")}) for r in sorted(resources)}
    provider = _trim_node({k: v for k, v in full.get("provider", {}).items()
                           if k in ("inputProperties", "requiredInputs")})
    pending = referenced_types(kept_resources) | referenced_types(provider)
    types: dict[str, Any] = {}
    while pending:
        token = pending.pop()
        if token in types or token not in full.get("types", {}):
            continue
        types[token] = _trim_node(full["types"][token])
        pending |= referenced_types(types[token]) - set(types)
    return {
        "name": full.get("name"),
        "provider": provider,
        "resources": kept_resources,
        "types": dict(sorted(types.items())),
    }


# --- the pinned SDK, as generated from the pinned version's schema ---------------------------------

def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def sdk_args_class(package: str, token: str, is_type: bool) -> type | None:
    """The SDK's `<Name>Args` input class for a resource or type token, or None."""
    _, module, name = token.split(":")
    module_path, _, member = module.partition("/")
    base = f"pulumi_{package}" + ("" if module_path == "index" else f".{module_path}")
    file = "_inputs" if is_type else _snake(member or name)
    try:
        mod = importlib.import_module(f"{base}.{file}")
    except ModuleNotFoundError:
        return None
    # A resource whose name a type shares has its arguments class renamed `<Name>InitArgs`.
    for candidate in ([f"{name}Args"] if is_type else [f"{name}InitArgs", f"{name}Args"]):
        cls = getattr(mod, candidate, None)
        if isinstance(cls, type) and cls.__module__ == mod.__name__:
            return cls
    return None


def sdk_inputs(cls: type) -> tuple[dict[str, Any], set[str]]:
    """(wire name -> annotation, required wire names) of an SDK input class."""
    wire: dict[str, str] = {}
    for attr, value in vars(cls).items():
        if isinstance(value, property) and hasattr(value.fget, "_pulumi_name"):
            wire[attr] = value.fget._pulumi_name  # type: ignore[union-attr]
    params = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    annotations = {wire[p]: params[p].annotation for p in params if p in wire}
    required = {wire[p] for p, v in params.items() if p in wire and v.default is inspect.Parameter.empty}
    return annotations, required


def _schema_type(annotation: Any) -> dict[str, Any]:
    text = str(annotation)
    for marker, kind in (("Sequence[", "array"), ("Mapping[", "object"), ("bool", "boolean"),
                         ("int", "integer"), ("float", "number"), ("str", "string")):
        if marker in text:
            return {"type": kind}
    return {"$ref": "pulumi.json#/Any"}


def sdk_differences(package: str, trimmed: dict[str, Any]) -> dict[str, Any]:
    """What the installed SDK's input classes say differently from the trimmed schema."""
    differences: dict[str, Any] = {}
    entries = [(t, r.get("inputProperties", {}), r.get("requiredInputs", []), False)
               for t, r in trimmed["resources"].items()]
    entries += [(t, d.get("properties", {}), d.get("required", []), True)
                for t, d in trimmed["types"].items() if d.get("type") == "object"]
    for token, props, required, is_type in entries:
        cls = sdk_args_class(package, token, is_type)
        if cls is None:
            continue
        annotations, sdk_required = sdk_inputs(cls)
        entry: dict[str, Any] = {}
        added = {name: _schema_type(annotations[name]) for name in sorted(set(annotations) - set(props))}
        if added:
            entry["addedInputs"] = added
        if sdk_required != set(required or []):
            entry["requiredInputs"] = sorted(sdk_required)
        if entry:
            differences[token] = entry
    return differences


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unde_infra.provider_schema_trim", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("provider", help="hcloud, command, random or minio")
    parser.add_argument("schema", type=Path, help="the provider's full schema.json")
    parser.add_argument("--repository", required=True)
    parser.add_argument("--ref", required=True, help="the release tag the schema was taken at")
    parser.add_argument("--commit", required=True)
    parser.add_argument("--resource", action="append", default=[], help="a resource token to keep as well")
    parser.add_argument("--note", default="", help="why this ref, when it is not the pinned version")
    args = parser.parse_args(argv)
    target = SCHEMA_DIR / f"{args.provider}.json"
    existing = json.loads(target.read_text(encoding="utf-8")) if target.exists() else {}
    resources = sorted(set(existing.get("resources", {})) | set(args.resource))
    raw = args.schema.read_bytes()
    trimmed = trim(json.loads(raw), resources)
    sdk_package = f"pulumi-{args.provider}"
    data = {
        "source": {
            "repository": args.repository,
            "ref": args.ref,
            "commit": args.commit,
            "path": SCHEMA_PATH.format(provider=args.provider),
            "url": f"{args.repository}/blob/{args.commit}/{SCHEMA_PATH.format(provider=args.provider)}",
            "sha256": hashlib.sha256(raw).hexdigest(),
            **({"note": args.note} if args.note else {}),
        },
        "pinnedSdk": {
            "package": sdk_package,
            "version": importlib.metadata.version(sdk_package),
            "differences": sdk_differences(args.provider, trimmed),
        },
        **trimmed,
    }
    target.write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    print(f"wrote {target}: {len(trimmed['resources'])} resources, {len(trimmed['types'])} types, "
          f"{len(data['pinnedSdk']['differences'])} differences from the pinned SDK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
