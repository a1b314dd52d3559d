"""The neutral view the rules read, built from the offline preview's records or from what the
Pulumi CLI hands a policy pack."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from unde_infra.errors import Problems
from unde_infra.model import ROOT, Inventory, load_topology
from unde_infra.offline import Record, unwrap_secrets
from unde_infra.settings import TOPOLOGY_OVERRIDE_ENV, StackSettings, parse_settings, read_stack_config

from .rules import Context, PolicyConfig, ResourceView, load_policy_config

try:  # present wherever the policy pack runs; the offline preview does not need it
    from pulumi_policy import Secret as PolicySecret
except ImportError:  # pragma: no cover
    PolicySecret = None  # type: ignore[assignment,misc]


def from_record(record: Record) -> ResourceView:
    return ResourceView(
        type=record.type,
        name=record.name,
        urn=record.urn,
        inputs=unwrap_secrets(record.inputs),
        protect=record.protect,
        ignore_changes=tuple(record.ignore_changes),
        import_id=record.import_id,
        parent=record.parent,
        secret_inputs=frozenset(record.secret_paths),
        dependencies=tuple(record.dependencies),
    )


def _unwrap_policy_secrets(value: Any) -> tuple[Any, bool]:
    if PolicySecret is not None and isinstance(value, PolicySecret):
        return _unwrap_policy_secrets(value.value)[0], True
    if isinstance(value, dict):
        items = {k: _unwrap_policy_secrets(v) for k, v in value.items()}
        return {k: v for k, (v, _) in items.items()}, any(s for _, s in items.values())
    if isinstance(value, list):
        items_list = [_unwrap_policy_secrets(v) for v in value]
        return [v for v, _ in items_list], any(s for _, s in items_list)
    return value, False


def from_policy_resource(resource: Any) -> ResourceView:
    """A `pulumi_policy.PolicyResource` (stack validation) as a view."""
    inputs: dict[str, Any] = {}
    secret: set[str] = set()
    for key in list(resource.props.keys()):
        try:
            value = resource.props[key]
        except Exception:  # noqa: BLE001 - an unknown value in a preview: the rule cannot see it
            continue
        plain, is_secret = _unwrap_policy_secrets(value)
        inputs[key] = plain
        if is_secret:
            secret.add(key)
    return ResourceView(
        type=resource.resource_type,
        name=resource.name,
        urn=resource.urn,
        inputs=inputs,
        protect=bool(resource.opts.protect),
        ignore_changes=tuple(resource.opts.ignore_changes or ()),
        parent=resource.parent.urn if resource.parent is not None else None,
        secret_inputs=frozenset(secret),
        dependencies=tuple(d.urn for d in resource.dependencies),
    )


def stack_from_urn(urn: str) -> str:
    return urn.split("::", 1)[0].removeprefix("urn:pulumi:")


def context_for(stack: str, inventory: Inventory | None = None, config: PolicyConfig | None = None,
                admin_cidrs: tuple[str, ...] | None = None, project_dir: Path = ROOT,
                import_ids: Mapping[str, str] | None = None) -> Context:
    """The context of a stack: its topology, admin CIDRs and import ids, from its stack config
    (checked as the program checks it)."""
    settings: StackSettings | None = None
    if inventory is None or admin_cidrs is None or import_ids is None:
        problems = Problems()
        settings = parse_settings(stack, read_stack_config(stack, project_dir), problems, project_dir=project_dir)
        problems.raise_if_any(f"Pulumi.{stack}.yaml")
    if inventory is None:
        assert settings is not None
        override = os.environ.get(TOPOLOGY_OVERRIDE_ENV)
        inventory = load_topology(Path(override) if override else settings.topology_path(project_dir))
    if admin_cidrs is None:
        assert settings is not None
        admin_cidrs = tuple(str(c) for c in settings.admin_cidrs)
    if import_ids is None:
        assert settings is not None
        import_ids = settings.import_ids
    return Context(stack, inventory, config or load_policy_config(), admin_cidrs, import_ids)
