"""The providers' published schemas, kept as data, and what follows from them.

`config/provider-schemas/<provider>.json` holds each provider's `schema.json` trimmed to the
resources the program registers (see `provider_schema_trim` for where each came from and how it
is regenerated). From them:

- `check_records` checks every registered resource the way the provider would before it acts:
  unknown input, missing required input, wrong type, a value outside an enum. The offline
  preview stops on any of them (exit 2), naming the URN and the property.
- `replacing_properties` and `replacement_causes` say which changed inputs replace a resource:
  the schema's replace markers plus the facts of `replace-facts.yaml` (the Terraform provider's
  ForceNew and RequiresReplace where the schema is silent), each with its source.

The Pulumi SDK is imported only where a run's values are looked at (secrets, assets, unknown
values, `_sdk`): the commands that read previews and schemas (`diff`, `validate`) start without
it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DIR = ROOT / "config" / "provider-schemas"
REPLACE_FACTS_FILE = SCHEMA_DIR / "replace-facts.yaml"
IMPORT_FACTS_FILE = SCHEMA_DIR / "import-facts.yaml"
PROVIDERS = ("hcloud", "command", "random", "minio")
PROVIDER_PREFIX = "pulumi:providers:"
STACK_REFERENCE = "pulumi:pulumi:StackReference"
# The engine's own resource: its one input is the other stack's name.
BUILTIN_RESOURCES: dict[str, dict[str, Any]] = {
    STACK_REFERENCE: {"inputProperties": {"name": {"type": "string"}}, "requiredInputs": ["name"]},
}
# Inputs the SDK adds to every explicit provider resource, outside the provider's schema.
SDK_PROVIDER_INPUTS = frozenset({"version", "pluginDownloadURL"})


@cache
def _sdk() -> SimpleNamespace:
    """The Pulumi SDK's value types, imported on first use (once, not on every call)."""
    import pulumi
    from pulumi.output import Unknown
    from pulumi.runtime import rpc

    return SimpleNamespace(Asset=pulumi.Asset, Archive=pulumi.Archive, StringAsset=pulumi.StringAsset,
                           Unknown=Unknown, rpc=rpc)


@dataclass(frozen=True)
class SchemaViolation:
    urn: str
    property: str  # a path into the inputs: `rules[0].direction`
    message: str

    def __str__(self) -> str:
        return f"{self.urn}: {self.property}: {self.message}"


class ProviderSchemaError(Exception):
    """Inputs the provider would refuse: reported like bad input, exit code 2."""

    def __init__(self, violations: list[SchemaViolation]) -> None:
        self.violations = violations
        super().__init__(self.report())

    def report(self) -> str:
        count = len(self.violations)
        head = f"provider schemas: {count} problem{'s' if count != 1 else ''}"
        return "\n".join([head, *(f"  {v}" for v in self.violations)])


@cache
def load_schema(provider: str) -> dict[str, Any]:
    """A provider's trimmed schema with the pinned SDK's differences applied."""
    path = SCHEMA_DIR / f"{provider}.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    for token, difference in data.get("pinnedSdk", {}).get("differences", {}).items():
        node = data["resources"].get(token) or data["types"].get(token)
        if node is None:
            continue
        props_key = "inputProperties" if token in data["resources"] else "properties"
        node.setdefault(props_key, {}).update(difference.get("addedInputs", {}))
        if "requiredInputs" in difference:
            node["requiredInputs" if token in data["resources"] else "required"] = difference["requiredInputs"]
    return data


@cache
def _replace_facts() -> dict[str, dict[str, dict[str, Any]]]:
    return yaml.safe_load(REPLACE_FACTS_FILE.read_text(encoding="utf-8")) or {}


def _provider_of(resource_type: str) -> str:
    if resource_type.startswith(PROVIDER_PREFIX):
        return resource_type[len(PROVIDER_PREFIX):]
    return resource_type.split(":", 1)[0]


def resource_schema(resource_type: str) -> dict[str, Any] | None:
    """The schema of a resource type's inputs (`inputProperties`, `requiredInputs`), or None."""
    if resource_type in BUILTIN_RESOURCES:
        return BUILTIN_RESOURCES[resource_type]
    provider = _provider_of(resource_type)
    if provider not in PROVIDERS:
        return None
    schema = load_schema(provider)
    if resource_type.startswith(PROVIDER_PREFIX):
        return schema.get("provider", {})
    resource: dict[str, Any] | None = schema["resources"].get(resource_type)
    return resource


# --- replacement ----------------------------------------------------------------------------------

def replace_fact_sources(resource_type: str) -> dict[str, str]:
    """input name -> the source of the fact that adds or removes it from the replacing inputs."""
    return {name: str(fact.get("source", "")) for name, fact in _replace_facts().get(resource_type, {}).items()}


@cache
def replacing_properties(resource_type: str) -> frozenset[str]:
    """Top-level input names (camelCase as in resources.json) whose change replaces a resource of
    that type: the schema's `willReplaceOnChanges`/`replaceOnChanges` markers, plus the provider's
    ForceNew facts where the schema is silent, minus those the pinned version dropped."""
    schema = resource_schema(resource_type) or {}
    marked = {name for name, prop in schema.get("inputProperties", {}).items()
              if prop.get("willReplaceOnChanges") or prop.get("replaceOnChanges")}
    facts = _replace_facts().get(resource_type, {})
    marked |= {name for name, fact in facts.items() if fact.get("replaces")}
    marked -= {name for name, fact in facts.items() if not fact.get("replaces")}
    return frozenset(marked)


def replacement_causes(
    resource_type: str, old_inputs: dict, new_inputs: dict, ignore_changes: Iterable[str] = ()
) -> list[str]:
    """The changed, not-ignored input names that would force replacement, sorted. An input that
    appears or disappears counts as changed; an unknown new value counts as a change, as the
    engine plans a replacement when a replace-forcing input is not known yet."""
    unknown = _sdk().Unknown
    ignored = set(ignore_changes)
    causes = []
    for name in replacing_properties(resource_type):
        if name in ignored:
            continue
        old, new = _plain(old_inputs.get(name)), _plain(new_inputs.get(name))
        if isinstance(new, unknown) or old != new:
            causes.append(name)
    return sorted(causes)


def _plain(value: Any) -> Any:
    """Comparable values: secrets unwrapped, whole doubles as integers, assets as their text."""
    sdk = _sdk()
    if sdk.rpc.is_rpc_secret(value):
        return _plain(sdk.rpc.unwrap_rpc_secret(value))
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, sdk.StringAsset):
        return {"text": value.text}
    return value


# --- import and the runs after it ----------------------------------------------------------------

@dataclass(frozen=True)
class ImportFacts:
    # Each field's key in import-facts.yaml and what it holds (docs/reference/other-config-files.md).
    not_read: frozenset[str] = field(default=frozenset(), metadata={
        "key": "notRead", "kind": "list of input names",
        "description": "Inputs Read never sets on import: the live state has none of them, so a value the program "
                       "sends, or a default Check adds, differs from the imported state."})
    defaults: Mapping[str, Any] = field(default_factory=dict, metadata={
        "key": "defaults", "kind": "mapping: input name -> value",
        "description": "The Terraform schema's Default, which Check adds where the program sends nothing."})
    computed: frozenset[str] = field(default=frozenset(), metadata={
        "key": "computed", "kind": "list of input names",
        "description": "Optional + Computed inputs: a live value the program leaves unset is kept, no difference."})
    sets: frozenset[str] = field(default=frozenset(), metadata={
        "key": "sets", "kind": "list of input names",
        "description": "Inputs the provider keeps as a set (TypeSet): their members' order is no difference."})


@cache
def import_facts(resource_type: str) -> ImportFacts:
    """What the provider reads on import and defaults on Check (config/provider-schemas/import-facts.yaml)."""
    facts = (yaml.safe_load(IMPORT_FACTS_FILE.read_text(encoding="utf-8")) or {}).get(resource_type)
    if facts is None:
        return ImportFacts()
    return ImportFacts(frozenset(facts.get("notRead") or ()), dict(facts.get("defaults") or {}),
                       frozenset(facts.get("computed") or ()), frozenset(facts.get("sets") or ()))


def planned_differences(
    resource_type: str, inputs: Mapping[str, Any], state: Mapping[str, Any], ignore_changes: Iterable[str] = ()
) -> dict[str, tuple[Any, Any]]:
    """input name -> (program, live) for each input the engine would find different between the
    program's inputs (with the provider's defaults) and a resource's live state: on import a
    mismatch, later an update (or a replacement, see `replacement_causes`). Nested blocks compare
    on what the program sets (their other fields are computed); maps and lists compare whole, sets
    whatever their order; an empty value and no value are the same."""
    facts = import_facts(resource_type)
    ignored = set(ignore_changes)
    program = {**facts.defaults, **{k: v for k, v in inputs.items() if v is not None and not k.startswith("__")}}
    props = (resource_schema(resource_type) or {}).get("inputProperties", {})
    differences = {}
    # Outputs the provider computes (status, addresses) are no inputs: they never differ.
    live_inputs = {k for k in state if k in props} if props else set(state)
    for name in sorted(program.keys() | live_inputs):
        if name in ignored or name.startswith("__"):
            continue
        if name not in program and name in facts.computed:
            continue
        mine, live = _plain(program.get(name)), _plain(state.get(name))
        if name in facts.sets:
            mine, live = in_set_order(mine), in_set_order(live)
        if not _same(mine, live, props.get(name, {})):
            differences[name] = (mine, live)
    return differences


def in_set_order(value: Any) -> Any:
    """A set input's members in one order (sorted by their text), so that two orders compare equal."""
    return sorted(value, key=str) if isinstance(value, list) else value


def _same(mine: Any, live: Any, spec: Mapping[str, Any]) -> bool:
    if _empty(mine) and _empty(live):
        return True
    items = spec.get("items", {})
    if isinstance(mine, list) and isinstance(live, list) and "$ref" in items:
        # A list of nested blocks (networks, publicNets): each of the program's blocks must match
        # one live block on the fields it sets.
        unmatched = list(live)
        for block in mine:
            match = next((b for b in unmatched if isinstance(b, dict) and isinstance(block, dict)
                          and all(_plain(b.get(k)) == v for k, v in block.items() if v is not None)), None)
            if match is None:
                return False
            unmatched.remove(match)
        return not unmatched
    return bool(mine == live)


def _empty(value: Any) -> bool:
    return value is None or value == {} or value == []


# --- the check ------------------------------------------------------------------------------------

def check_records(records: Iterable[Any]) -> list[SchemaViolation]:
    """Every violation of the providers' schemas among registered resources (offline.Record or
    anything with urn, type, custom and inputs), in URN order."""
    violations: list[SchemaViolation] = []
    for record in records:
        violations += check_resource(record.urn, record.type, record.inputs, custom=record.custom)
    return sorted(violations, key=lambda v: (v.urn, v.property, v.message))


def check_resource(urn: str, resource_type: str, inputs: Mapping[str, Any], *, custom: bool = True) -> list[SchemaViolation]:
    if not custom:
        return []  # a component (`unde:...`): the program's own type, no provider behind it
    schema = resource_schema(resource_type)
    if schema is None:
        provider = _provider_of(resource_type)
        where = "no schema is kept for provider" if provider not in PROVIDERS else "not a resource of provider"
        return [SchemaViolation(urn, "(type)", f"{resource_type}: {where} {provider!r}")]
    is_provider = resource_type.startswith(PROVIDER_PREFIX)
    checker = _Checker(urn, _provider_of(resource_type), json_strings=is_provider)
    props = schema.get("inputProperties", {})
    for name, value in inputs.items():
        if name.startswith("__") or (is_provider and name in SDK_PROVIDER_INPUTS):
            continue
        if name not in props:
            checker.add(name, f"unknown input (the schema has {_names(props)})")
            continue
        checker.value(name, value, props[name])
    for name in schema.get("requiredInputs", []) or []:
        if _absent(inputs.get(name)):
            checker.add(name, "missing required input")
    return checker.violations


def _absent(value: Any) -> bool:
    return value is None


def _names(props: Mapping[str, Any]) -> str:
    return ", ".join(sorted(props)) or "none"


class _Checker:
    def __init__(self, urn: str, provider: str, json_strings: bool) -> None:
        self.urn = urn
        self.provider = provider
        # A provider resource's non-string inputs travel JSON-encoded as strings.
        self.json_strings = json_strings
        self.violations: list[SchemaViolation] = []

    def add(self, path: str, message: str) -> None:
        self.violations.append(SchemaViolation(self.urn, path, message))

    def value(self, path: str, value: Any, spec: Mapping[str, Any], secret: bool = False) -> None:
        sdk = _sdk()
        if sdk.rpc.is_rpc_secret(value):
            value, secret = sdk.rpc.unwrap_rpc_secret(value), True
        if value is None or isinstance(value, sdk.Unknown):
            return  # unset, or computed later: the provider checks it when it is known
        ref = spec.get("$ref")
        if ref is not None:
            self._ref(path, value, ref, secret)
            return
        kind = spec.get("type")
        if kind is None:
            return
        if self.json_strings and kind != "string" and isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                self.add(path, f"expected {kind} (JSON-encoded), got {_short(value, secret)}")
                return
        if kind == "string":
            self._expect(path, value, isinstance(value, str), "string", secret)
        elif kind == "boolean":
            self._expect(path, value, isinstance(value, bool), "boolean", secret)
        elif kind == "integer":
            whole = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and value.is_integer())
            self._expect(path, value, whole and not isinstance(value, bool), "integer", secret)
        elif kind == "number":
            self._expect(path, value, isinstance(value, (int, float)) and not isinstance(value, bool), "number", secret)
        elif kind == "array":
            if self._expect(path, value, isinstance(value, list), "array", secret):
                for i, item in enumerate(value):
                    self.value(f"{path}[{i}]", item, spec.get("items", {}), secret)
        elif kind == "object":
            if self._expect(path, value, isinstance(value, dict), "object", secret):
                if "properties" in spec:
                    self._object(path, value, spec, secret)
                else:
                    for key, item in value.items():
                        self.value(f"{path}.{key}", item, spec.get("additionalProperties", {}), secret)

    def _expect(self, path: str, value: Any, ok: bool, kind: str, secret: bool = False) -> bool:
        if not ok:
            self.add(path, f"expected {kind}, got {type(value).__name__} {_short(value, secret)}")
        return ok

    def _ref(self, path: str, value: Any, ref: str, secret: bool) -> None:
        if ref == "pulumi.json#/Any":
            return
        if ref in ("pulumi.json#/Asset", "pulumi.json#/Archive"):
            sdk = _sdk()
            self._expect(path, value, isinstance(value, (sdk.Asset, sdk.Archive)), ref.rsplit("/", 1)[-1], secret)
            return
        if ref == "pulumi.json#/Json":
            return
        if not ref.startswith("#/types/"):
            self.add(path, f"schema refers to {ref}, which the check does not know")
            return
        token = ref[len("#/types/"):]
        spec = load_schema(self.provider)["types"].get(token)
        if spec is None:
            self.add(path, f"type {token} is missing from the trimmed schema (regenerate it)")
            return
        if "enum" in spec:
            allowed = [e.get("value") for e in spec["enum"]]
            if value not in allowed:
                self.add(path, f"{_short(value, secret)} is not one of {', '.join(map(repr, allowed))} ({token})")
            return
        self.value(path, value, {"type": "object", **spec} if "properties" in spec else spec, secret)

    def _object(self, path: str, value: Mapping[str, Any], spec: Mapping[str, Any], secret: bool) -> None:
        props = spec.get("properties", {})
        for key, item in value.items():
            if key not in props:
                self.add(f"{path}.{key}", f"unknown property (the type has {_names(props)})")
                continue
            self.value(f"{path}.{key}", item, props[key], secret)
        for key in spec.get("required", []) or []:
            if _absent(value.get(key)):
                self.add(f"{path}.{key}", "missing required property")


def _short(value: Any, secret: bool = False) -> str:
    if secret:
        return "[secret]"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
