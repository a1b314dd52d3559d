"""`unde-infra diff OLD_DIR NEW_DIR`: what `pulumi up` does when a change lands, from two offline
previews (the merge base's and the merge request's), no more and no less: resources added,
removed and changed with their changed inputs, the replacements the providers would make, the
resizes (hcloud powers a server off for one), the files each server receives that changed, and
the monthly cost delta. Every format starts with one line per server that changes and the cost.

A change to a field in the resource's `ignoreChanges` is shown as ignored, with why and what to
do when it is wanted; a resource with nothing else is no update, and the cost is what the
servers will really be. Inputs that carry another resource's id show that resource's name.

Replacements come from the providers' replace-forcing properties (`provider_schema`). Replacing
or deleting a protected, stateful or adopted resource is an error: exit code 3."""

from __future__ import annotations

import argparse
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cost import resources_cost
from .errors import Problems
from .model import STACKS, load_topology
from .naming import REMOTE_COMMAND_TYPE, SERVER_TYPE, bootstrapped_server
from .provider_schema import import_facts, in_set_order, replacement_causes

EXIT_OK, EXIT_BAD_INPUT, EXIT_FORBIDDEN = 0, 2, 3
FORMATS = ("text", "markdown", "json")
# A long or multi-line input (user data, a delivered file's stdin) is summarised: the file itself
# is an artifact, whose diff follows.
SHORT_VALUE = 120
BRIEF_VALUE = 24  # in the one line per server
ARTIFACT_DIFF_LINES = 400
# GitLab refuses a note over 1,000,000 characters.
MARKDOWN_LIMIT = 900_000
# An hcloud server's user data, as the preview writes it among the server's files.
USER_DATA_PATH = "/user-data.yaml"
ZONE_RECORD_TYPE = "hcloud:index/zoneRrset:ZoneRrset"
RESIZE_EFFECT = "hcloud powers it off for a minute or two to resize it"
REPLACED_COMMAND_NOTE = (
    "A `command:remote:Command` replaced because of its `triggers` runs again: the file it delivers is written "
    "where the server's copy differs, then its apply step runs; the server itself is not touched."
)


@dataclass(frozen=True)
class IgnoredField:
    why: str  # why `pulumi up` leaves the field as it is
    wanted: str  # what to do when the change is wanted; {server} stands for the resource's name


# The fields the program puts in a resource's ignoreChanges, and why (components/hosts.py,
# components/warm_standby.py, components/network.py, components/sites.py).
IGNORED_FIELDS: dict[tuple[str, str], IgnoredField] = {
    (SERVER_TYPE, "serverType"): IgnoredField(
        "an adopted server keeps its type: a resize powers it off",
        "set `resize: true` on servers.{server} in the topology (hcloud then powers it off for the resize)"),
    (SERVER_TYPE, "location"): IgnoredField(
        "a server stays where it was created: a new location would replace it",
        "to move it, add a server in the new location under another name, move its work there, then remove this one"),
    (SERVER_TYPE, "image"): IgnoredField(
        "a running server is never re-imaged: a new image would replace it",
        "servers created from now on get it; reinstall a running one by hand (`hcloud server rebuild`) in a "
        "maintenance window"),
    (SERVER_TYPE, "userData"): IgnoredField(
        "user data runs at a server's first boot only: a change would replace it",
        "nothing for a running server: it gets what the file deliveries carry (see the files); servers created "
        "from now on boot with it"),
    (SERVER_TYPE, "sshKeys"): IgnoredField(
        "hcloud installs these keys only when it creates a server: a change would replace it",
        "add the key to the running servers by hand (`ssh-copy-id`); servers created from now on get it"),
    (SERVER_TYPE, "publicNets"): IgnoredField(
        "an adopted server keeps its public network: attaching or detaching a primary IP needs it powered off",
        "change it in a maintenance window (`hcloud server poweroff`, `hcloud primary-ip`), then here"),
    (SERVER_TYPE, "backups"): IgnoredField(
        "an adopted server keeps Hetzner's backups as they are",
        "switch them with `hcloud server enable-backup` / `disable-backup`"),
    (SERVER_TYPE, "placementGroupId"): IgnoredField(
        "an adopted server stays in its placement group: hcloud moves a server only while it is powered off",
        "in a maintenance window: `hcloud server poweroff`, `hcloud server add-to-placement-group`"),
    (ZONE_RECORD_TYPE, "records"): IgnoredField(
        "the entry failover watcher owns the record's value after the first run",
        "nothing: a new entry address reaches the record through the watcher's parameters"),
}
IGNORED_ELSEWHERE = IgnoredField(
    "it is in the resource's ignoreChanges: an adopted resource keeps it, or the stack is in its adoption run "
    "(`adopting: true`)",
    "after the adoption run, run again without `adopting: true`; otherwise change it by hand (hcloud)")


def server_of(resource_type: str, name: str) -> str | None:
    """The server a resource stands for: an hcloud server, or an existing host's bootstrap."""
    return name if resource_type == SERVER_TYPE else bootstrapped_server(resource_type, name)


@dataclass(frozen=True)
class InputChange:
    path: str
    old: Any
    new: Any
    ignored: IgnoredField | None = None  # the field is in the resource's ignoreChanges: `pulumi up` leaves it


@dataclass(frozen=True)
class Resize:
    old: str
    new: str
    stateful_task: str | None  # the server's task when it is stateful


@dataclass
class ResourceChange:
    stack: str
    urn: str
    type: str
    action: str  # create, delete, update, replace, import, ignored (only ignored changes: nothing happens)
    changes: list[InputChange] = field(default_factory=list)
    replace_causes: list[str] = field(default_factory=list)
    forbidden: str = ""  # why this replacement or deletion must not happen
    resize: Resize | None = None
    note: str = ""  # what a created server is (its type), or what an adopted one is adopted with

    @property
    def name(self) -> str:
        return self.urn.rsplit("::", 1)[-1]

    @property
    def applied(self) -> list[InputChange]:
        return [c for c in self.changes if c.ignored is None]

    @property
    def ignored(self) -> list[InputChange]:
        return [c for c in self.changes if c.ignored is not None]

    @property
    def server(self) -> str | None:
        return server_of(self.type, self.name)


@dataclass
class ArtifactChange:
    stack: str
    server: str
    path: str
    action: str  # added, removed, changed
    secret: bool
    diff: list[str] = field(default_factory=list)
    not_delivered: str = ""  # why the server does not receive this change

    @property
    def delivered(self) -> bool:
        return not self.not_delivered


@dataclass
class StackCost:
    stack: str
    old: float
    new: float
    lines: list[tuple[str, float, float]]  # name, old, new (changed lines only)


@dataclass
class ServerChange:
    """What `pulumi up` does to one server, for the report's first screen."""

    name: str
    stack: str
    what: str  # created, adopted, resized, replaced, deleted, updated, bootstrapped, unchanged
    detail: str = ""
    files: int = 0  # files it receives that changed
    ignored: list[str] = field(default_factory=list)  # "field old -> new", left as it is
    blocked: str = ""
    resize: Resize | None = None

    def describe(self) -> str:
        parts = [f"{self.what}{' ' + self.detail if self.detail else ''}"]
        if self.files and self.what not in ("created", "deleted"):
            parts.append(f"{self.files} file{'s' if self.files != 1 else ''} changed")
        elif self.files and self.what == "created":
            parts.append(f"receives {self.files} files")
        if self.ignored:
            parts.append(f"ignored: {', '.join(self.ignored)}")
        text = "; ".join(parts)
        if self.resize and self.resize.stateful_task:
            text += f" (STATEFUL: task {self.resize.stateful_task})"
        return text + (f" (BLOCKED: {self.blocked})" if self.blocked else "")


@dataclass
class PreviewDiff:
    resources: list[ResourceChange]
    artifacts: list[ArtifactChange]
    costs: list[StackCost]
    servers: list[ServerChange] = field(default_factory=list)

    @property
    def forbidden(self) -> list[ResourceChange]:
        return [r for r in self.resources if r.forbidden]

    @property
    def stateful_resizes(self) -> list[ResourceChange]:
        return [r for r in self.resources if r.resize and r.resize.stateful_task]

    @property
    def empty(self) -> bool:
        return not self.resources and not self.artifacts

    def exit_code(self) -> int:
        return EXIT_FORBIDDEN if self.forbidden else EXIT_OK


# --------------------------------------------------------------------------------------------
# Reading a preview


@dataclass
class StackPreview:
    resources: dict[str, dict[str, Any]]
    secret_files: set[str]
    artifacts: dict[str, Path]  # "server:/path" -> file


def read_preview(directory: Path, problems: Problems) -> dict[str, StackPreview]:
    stacks = {}
    if not directory.is_dir():
        problems.add(str(directory), "not a preview directory (make one with `unde-infra preview --out DIR`)")
        return {}
    for stack in STACKS:
        stack_dir = directory / stack
        if not (stack_dir / "resources.json").is_file():
            continue
        try:
            resources = json.loads((stack_dir / "resources.json").read_text(encoding="utf-8"))
            secret_files = set(json.loads((stack_dir / "secret-files.json").read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as exc:
            problems.add(str(stack_dir), f"unreadable preview: {exc}")
            continue
        artifacts = {}
        root = stack_dir / "artifacts"
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            server, *rest = file.relative_to(root).parts
            artifacts[f"{server}:/{'/'.join(rest)}"] = file
        stacks[stack] = StackPreview({r["urn"]: r for r in resources}, secret_files, artifacts)
    if not stacks:
        problems.add(str(directory), "holds no stack preview (helsinki/resources.json or local/resources.json)")
    return stacks


def names_by_id(preview: dict[str, StackPreview]) -> dict[str, str]:
    """The name of the resource behind each id of the preview (its own, or the id it is adopted
    with): the local stack's inputs carry the helsinki stack's ids."""
    names = {}
    for stack in preview.values():
        for resource in stack.resources.values():
            name = resource["urn"].rsplit("::", 1)[-1]
            for rid in (resource.get("id"), resource.get("importId")):
                if rid not in (None, ""):
                    names[str(rid)] = name
    return names


def _refers_to_resources(key: str) -> bool:
    """Inputs whose values are other resources' ids (hcloud's serverIds, networkId, sshKeys...)."""
    return key.endswith(("Id", "Ids")) or key == "sshKeys"


def with_names(value: Any, names: dict[str, str], refers: bool = False) -> Any:
    """`value` with every id of another resource in the previews replaced by that resource's
    name: offline those ids are stand-ins, and a real id says nothing to a reader either."""
    if isinstance(value, dict):
        return {k: with_names(v, names, refers or _refers_to_resources(str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [with_names(v, names, refers) for v in value]
    if refers and isinstance(value, int | str) and not isinstance(value, bool) and str(value) in names:
        return names[str(value)]
    return value


# --------------------------------------------------------------------------------------------
# Comparing


def compare(old_dir: Path, new_dir: Path) -> PreviewDiff:
    problems = Problems()
    old, new = read_preview(old_dir, problems), read_preview(new_dir, problems)
    problems.raise_if_any("unde-infra diff")
    stateful_tasks = {name for name, task in load_topology().tasks.items() if task.stateful}
    old_names, new_names = names_by_id(old), names_by_id(new)
    resources: list[ResourceChange] = []
    artifacts: list[ArtifactChange] = []
    costs = []
    empty = StackPreview({}, set(), {})
    for stack in [s for s in STACKS if s in old or s in new]:
        before, after = old.get(stack, empty), new.get(stack, empty)
        for urn in sorted(set(before.resources) | set(after.resources)):
            change = _resource_change(stack, _comparable(before.resources.get(urn), old_names),
                                      _comparable(after.resources.get(urn), new_names), stateful_tasks)
            if change is not None:
                resources.append(change)
        artifacts += _artifact_changes(stack, before, after)
        costs.append(_stack_cost(stack, before, after))
    return PreviewDiff(resources, artifacts, costs, _server_changes(resources, artifacts, server_stacks(old, new)))


def _comparable(resource: dict[str, Any] | None, names: dict[str, str]) -> dict[str, Any] | None:
    """The resource with other resources named, not numbered, and its sets in one order (a set's
    order is no change to the provider)."""
    if resource is None:
        return None
    inputs = with_names(resource.get("inputs") or {}, names)
    sets = import_facts(resource["type"]).sets
    return {**resource, "inputs": {k: in_set_order(v) if k in sets else v for k, v in inputs.items()}}


def _resource_change(stack: str, old: dict[str, Any] | None, new: dict[str, Any] | None,
                     stateful_tasks: set[str]) -> ResourceChange | None:
    if old is None:
        assert new is not None
        created = ResourceChange(stack, new["urn"], new["type"], "create")
        if new["type"] == SERVER_TYPE:
            created.note = f"({(new.get('inputs') or {}).get('serverType')})"
        return created
    if new is None:
        change = ResourceChange(stack, old["urn"], old["type"], "delete")
        change.forbidden = _guarded(old, stateful_tasks, "deleted")
        return change
    ignored = new.get("ignoreChanges") or []
    sets = import_facts(new["type"]).sets
    changes = [_marked(c, new["type"], ignored)
               for c in _input_changes(old.get("inputs") or {}, new.get("inputs") or {}, sets=sets)]
    for option in ("protect", "ignoreChanges", "retainOnDelete", "importId", "parent"):
        if old.get(option) != new.get(option):
            changes.append(InputChange(f"({option})", old.get(option), new.get(option)))
    if not changes:
        return None
    change = ResourceChange(stack, new["urn"], new["type"], "update", changes)
    if new.get("importId") and not old.get("importId"):
        change.action = "import"  # adopting what exists: nothing is created or replaced
        change.note = f"(import id {new['importId']})"
        return change
    if not change.applied:
        change.action = "ignored"
        return change
    if not new.get("custom", True):
        return change
    causes = replacement_causes(new["type"], old.get("inputs") or {}, new.get("inputs") or {}, ignored)
    if causes:
        change.action, change.replace_causes = "replace", causes
        change.forbidden = _guarded(old, stateful_tasks, "replaced")
    elif new["type"] == SERVER_TYPE:
        resized = next((c for c in change.applied if c.path == "serverType"), None)
        if resized is not None:
            change.resize = Resize(str(resized.old), str(resized.new), _stateful_task(new, stateful_tasks))
    return change


def _marked(change: InputChange, resource_type: str, ignored: list[str]) -> InputChange:
    """The change, with why `pulumi up` leaves it when its field is in the resource's ignoreChanges
    (a field, or a path into one: `labels.team`, `records[0]`)."""
    entry = next((e for e in ignored if change.path == e or change.path.startswith((f"{e}.", f"{e}["))), None)
    if entry is None:
        return change
    top = entry.split(".", 1)[0].split("[", 1)[0]
    return InputChange(change.path, change.old, change.new, IGNORED_FIELDS.get((resource_type, top), IGNORED_ELSEWHERE))


def _stateful_task(resource: dict[str, Any], stateful_tasks: set[str]) -> str | None:
    task = ((resource.get("inputs") or {}).get("labels") or {}).get("task") if resource["type"] == SERVER_TYPE else None
    return task if task in stateful_tasks else None


def _guarded(resource: dict[str, Any], stateful_tasks: set[str], verb: str) -> str:
    inputs = resource.get("inputs") or {}
    reasons = []
    if resource.get("protect"):
        reasons.append("protected")
    if resource.get("importId"):
        reasons.append(f"adopted (import id {resource['importId']})")
    task = _stateful_task(resource, stateful_tasks)
    if task:
        reasons.append(f"stateful (task {task})")
    if inputs.get("deleteProtection") is True:
        reasons.append("delete protection on")
    return f"{' and '.join(reasons)}: it must never be {verb}" if reasons else ""


def _scalar_list(value: Any) -> bool:
    return isinstance(value, list) and all(not isinstance(v, dict | list) for v in value)


def _input_changes(old: Any, new: Any, path: str = "", sets: frozenset[str] = frozenset()) -> list[InputChange]:
    """The changed values, by path; a set (`sets`: top-level inputs) changes as a whole, its members
    come and go."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                found.append(InputChange(sub, None, new[key]))
            elif key not in new:
                found.append(InputChange(sub, old[key], None))
            elif sub in sets:
                found += [] if old[key] == new[key] else [InputChange(sub, old[key], new[key])]
            else:
                found += _input_changes(old[key], new[key], sub)
        return found
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [c for i, (a, b) in enumerate(zip(old, new, strict=True)) for c in _input_changes(a, b, f"{path}[{i}]")]
    return [] if old == new else [InputChange(path, old, new)]


def _artifact_changes(stack: str, old: StackPreview, new: StackPreview) -> list[ArtifactChange]:
    found = []
    for key in sorted(set(old.artifacts) | set(new.artifacts)):
        server, _, path = key.partition(":")
        before = old.artifacts[key].read_text(encoding="utf-8") if key in old.artifacts else None
        after = new.artifacts[key].read_text(encoding="utf-8") if key in new.artifacts else None
        if before == after:
            continue
        secret = key in old.secret_files or key in new.secret_files
        action = "added" if before is None else "removed" if after is None else "changed"
        lines = [] if secret else list(difflib.unified_diff(
            (before or "").splitlines(), (after or "").splitlines(),
            f"a/{server}{path}", f"b/{server}{path}", lineterm="",
        ))
        found.append(ArtifactChange(stack, server, path, action, secret, lines, _not_delivered(server, path, old, new)))
    return found


def _not_delivered(server: str, path: str, old: StackPreview, new: StackPreview) -> str:
    """Why a running hcloud server never receives this change of its files: its user data runs at
    first boot only (an existing host's bootstrap runs again instead, and is delivered)."""
    if path != USER_DATA_PATH:
        return ""
    urns = [urn for urn, r in new.resources.items() if r["type"] == SERVER_TYPE and urn.rsplit("::", 1)[-1] == server]
    if any(urn in old.resources and "userData" in (new.resources[urn].get("ignoreChanges") or []) for urn in urns):
        return "user data runs at a server's first boot only: servers created from now on get it"
    return ""


def as_applied(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """`new` as `pulumi up` leaves it: the fields in its ignoreChanges keep their old values."""
    if old is None:
        return new
    inputs = dict(new.get("inputs") or {})
    previous = old.get("inputs") or {}
    for name in new.get("ignoreChanges") or []:
        if name in previous:
            inputs[name] = previous[name]
        else:
            inputs.pop(name, None)
    return {**new, "inputs": inputs}


def _stack_cost(stack: str, old: StackPreview, new: StackPreview) -> StackCost:
    before = resources_cost(stack, list(old.resources.values()))
    after = resources_cost(stack, [as_applied(old.resources.get(urn), r) for urn, r in new.resources.items()])
    old_lines = {line.name: line.eur for line in before.lines}
    new_lines = {line.name: line.eur for line in after.lines}
    changed = [(name, old_lines.get(name, 0.0), new_lines.get(name, 0.0))
               for name in sorted(set(old_lines) | set(new_lines)) if old_lines.get(name) != new_lines.get(name)]
    return StackCost(stack, before.total(), after.total(), changed)


# What a change of a server's own resource means for the server: its hcloud server, or for a host
# that exists outside hcloud, the command that bootstraps it.
SERVER_ACTIONS = {"create": "created", "import": "adopted", "replace": "replaced", "delete": "deleted",
                  "update": "updated", "ignored": "unchanged"}
HOST_ACTIONS = {**SERVER_ACTIONS, "create": "bootstrapped", "replace": "bootstrapped again",
                "delete": "no longer bootstrapped (the host stays)"}


def server_stacks(*previews: dict[str, StackPreview]) -> dict[str, str]:
    """The stack each server's own resource is in (its hcloud server, or an existing host's
    bootstrap): files for it may come from the other stack too."""
    found = {}
    for preview in previews:
        for stack, content in preview.items():
            for resource in content.resources.values():
                server = server_of(resource["type"], resource["urn"].rsplit("::", 1)[-1])
                if server is not None:
                    found[server] = stack
    return found


def _server_changes(resources: list[ResourceChange], artifacts: list[ArtifactChange],
                    stacks: dict[str, str]) -> list[ServerChange]:
    """One entry per server that changes: its own resource's change, the files it receives that
    changed, the changes `pulumi up` leaves alone."""
    servers: dict[str, ServerChange] = {}

    def entry(name: str, stack: str) -> ServerChange:
        return servers.setdefault(name, ServerChange(name, stacks.get(name, stack), "unchanged"))

    for change in resources:
        if change.server is None:
            continue
        server = entry(change.server, change.stack)
        server.what = (SERVER_ACTIONS if change.type == SERVER_TYPE else HOST_ACTIONS)[change.action]
        server.blocked = change.forbidden
        server.ignored = [_brief(c) for c in change.ignored]
        if change.resize is not None:
            server.what, server.resize = "resized", change.resize
            server.detail = f"{change.resize.old} -> {change.resize.new}: {RESIZE_EFFECT}"
        elif change.replace_causes:
            server.detail = f"({', '.join(change.replace_causes)})"
        elif change.action == "update":
            server.detail = "(" + ", ".join(c.path.strip("()") for c in change.applied) + ")"
        else:
            server.detail = change.note
    for artifact in artifacts:
        if artifact.delivered:
            entry(artifact.server, artifact.stack).files += 1
    return sorted(servers.values(), key=lambda s: (STACKS.index(s.stack) if s.stack in STACKS else len(STACKS), s.name))


def _brief(change: InputChange) -> str:
    """A change in a few words: its field, and its values where they are short."""
    old, new = (json.dumps(v, sort_keys=True, default=str) for v in (change.old, change.new))
    return change.path if max(len(old), len(new)) > BRIEF_VALUE else f"{change.path} {old} -> {new}"


# --------------------------------------------------------------------------------------------
# Output: the same sections in every format, in this order: the counts; what is blocked and
# what powers a stateful server off; one line per server; the cost; then the details.


def _value(value: Any) -> str:
    if isinstance(value, str) and ("\n" in value or len(value) > SHORT_VALUE):
        return f"<text, {len(value.splitlines())} lines>"
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= SHORT_VALUE else text[: SHORT_VALUE - 3] + "..."


def _change_line(change: InputChange) -> str:
    """`path: old -> new`; a list of values by the members it loses (-) and gains (+)."""
    members: list[str] = []
    if _scalar_list(change.old) and _scalar_list(change.new):
        members = [*(f"- {_value(v)}" for v in change.old if v not in change.new),
                   *(f"+ {_value(v)}" for v in change.new if v not in change.old)]
    if change.old is None:
        line = f"{change.path}: + {_value(change.new)}"
    elif change.new is None:
        line = f"{change.path}: - {_value(change.old)}"
    elif members:
        line = f"{change.path}: {', '.join(members)}"
    else:
        line = f"{change.path}: {_value(change.old)} -> {_value(change.new)}"
    return line + (" (ignored)" if change.ignored else "")


CHANGING_ACTIONS = ("create", "update", "replace", "delete", "import")


def counts(diff: PreviewDiff) -> dict[str, int]:
    actions = [r.action for r in diff.resources]
    delivered = sum(1 for a in diff.artifacts if a.delivered)
    return {**{action: actions.count(action) for action in (*CHANGING_ACTIONS, "ignored")},
            "files_changed": delivered, "files_not_delivered": len(diff.artifacts) - delivered}


def _counts(diff: PreviewDiff) -> str:
    found = counts(diff)
    text = ", ".join(f"{found[a]} to {a}" for a in CHANGING_ACTIONS if found[a]) or "no resource changes"
    if found["ignored"]:
        text += f"; {found['ignored']} with ignored changes only"
    text += f"; {found['files_changed']} files changed"
    return text + (f" (and {found['files_not_delivered']} not delivered)" if found["files_not_delivered"] else "")


def _blocked_lines(diff: PreviewDiff) -> list[str]:
    return [f"{c.stack} {c.urn}: would be {'deleted' if c.action == 'delete' else 'replaced'}"
            f"{' (' + ', '.join(c.replace_causes) + ')' if c.replace_causes else ''}; {c.forbidden}" for c in diff.forbidden]


def _warning_lines(diff: PreviewDiff) -> list[str]:
    return [f"{c.name} ({c.stack}) is resized {c.resize.old} -> {c.resize.new}: {RESIZE_EFFECT}, and its task "
            f"{c.resize.stateful_task} is stateful: what it serves stops until it is back. Merge it in a maintenance "
            "window." for c in diff.stateful_resizes if c.resize]


def _cost_lines(diff: PreviewDiff) -> list[str]:
    out = []
    for cost in diff.costs:
        delta = cost.new - cost.old
        out.append(f"{cost.stack}: EUR {cost.old:,.2f} -> {cost.new:,.2f} per month ({delta:+,.2f})")
        out += [f"  {name}: {old:,.2f} -> {new:,.2f}" for name, old, new in cost.lines]
    total_old, total_new = sum(c.old for c in diff.costs), sum(c.new for c in diff.costs)
    out.append(f"total: EUR {total_old:,.2f} -> {total_new:,.2f} per month ({total_new - total_old:+,.2f}); "
               "Hetzner Cloud resources only (servers, primary IPv4, load balancers, object storage), "
               "prices from config/pricing.yaml")
    return out


def _notes(diff: PreviewDiff) -> list[str]:
    notes = []
    if any(r.action == "replace" and r.type == REMOTE_COMMAND_TYPE for r in diff.resources):
        notes.append(REPLACED_COMMAND_NOTE)
    if any(not a.delivered for a in diff.artifacts):
        notes.append("A running hcloud server's user data (`user-data.yaml`) is not delivered: it runs at the "
                     "server's first boot only; servers created from now on get it.")
    return notes


@dataclass
class IgnoredGroup:
    """One field's ignored change, with the resources it is ignored on (the same reason for all)."""

    path: str
    reason: IgnoredField
    changes: list[tuple[str, Any, Any]]  # resource name, old, new

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self.changes]

    @property
    def wanted(self) -> str:
        return self.reason.wanted.format(server=self.names[0] if len(self.names) == 1 else "<name>")

    def describe(self) -> str:
        values = {(json.dumps(old, sort_keys=True, default=str), json.dumps(new, sort_keys=True, default=str))
                  for _, old, new in self.changes}
        _, old, new = self.changes[0]
        change = _change_line(InputChange(self.path, old, new)) if len(values) == 1 else f"{self.path} changed"
        names = self.names
        where = names[0] if len(names) == 1 else f"{len(names)} resources ({', '.join(names)})"
        return f"{change} on {where}: {self.reason.why}. If it is wanted: {self.wanted}."


def ignored_groups(diff: PreviewDiff) -> list[IgnoredGroup]:
    groups: dict[tuple[str, str], IgnoredGroup] = {}
    for resource in diff.resources:
        for change in resource.ignored:
            assert change.ignored is not None
            group = groups.setdefault((change.path, change.ignored.why), IgnoredGroup(change.path, change.ignored, []))
            group.changes.append((resource.name, change.old, change.new))
    return list(groups.values())


def _server_rows(diff: PreviewDiff) -> list[tuple[str, str, str]]:
    return [(s.name, s.stack, s.describe()) for s in diff.servers]


def render_text(diff: PreviewDiff) -> str:
    if diff.empty:
        return "no changes: both previews register the same resources and deliver the same files\n"
    out = [f"unde-infra diff: {_counts(diff)}"]
    blocked = _blocked_lines(diff)
    if blocked:
        out += ["", "BLOCKED: replacement or deletion of a protected, stateful or adopted resource (exit 3)"]
        out += [f"ERROR {line}" for line in blocked]
    warnings = _warning_lines(diff)
    if warnings:
        out += ["", "WARNING: a stateful server is powered off", *[f"WARNING {line}" for line in warnings]]
    rows = _server_rows(diff)
    out += ["", "servers (what pulumi up does to each; only servers with a change):"]
    width = max((len(name) for name, _, _ in rows), default=0)
    out += [f"  {name:<{width}}  {stack:<8}  {text}" for name, stack, text in rows] or ["  none"]
    out += ["", "cost (per month):", *[f"  {line}" for line in _cost_lines(diff)]]
    notes = _notes(diff)
    if notes:
        out += ["", "notes:", *[f"  - {note}" for note in notes]]
    groups = ignored_groups(diff)
    if groups:
        out += ["", "ignored changes (pulumi up leaves these as they are):", *[f"  - {g.describe()}" for g in groups]]
    for stack in STACKS:
        changes = [r for r in diff.resources if r.stack == stack]
        if changes:
            out.append(f"\nstack {stack}: resources")
        for change in changes:
            out.append(f"  {change.action:<7} {change.type}  {change.name}{_action_note(change)}")
            out += [f"            {_change_line(c)}" for c in change.changes]
        files = [a for a in diff.artifacts if a.stack == stack]
        if files:
            out.append(f"\nstack {stack}: files")
        for artifact in files:
            out.append(f"  {artifact.action:<7} {artifact.server}:{artifact.path}{_artifact_note(artifact)}")
            out += [f"    {line}" for line in _limited(artifact.diff)]
    return "\n".join(out) + "\n"


def _action_note(change: ResourceChange) -> str:
    if change.replace_causes:
        return f" (replaced because of {', '.join(change.replace_causes)})"
    if change.resize:
        return f" (a resize: {RESIZE_EFFECT})"
    return ""


def _artifact_note(artifact: ArtifactChange) -> str:
    notes = ["built from secrets: content not shown"] if artifact.secret else []
    if artifact.not_delivered:
        notes.append(f"not delivered: {artifact.not_delivered}")
    return f" ({'; '.join(notes)})" if notes else ""


def _limited(lines: list[str]) -> list[str]:
    if len(lines) <= ARTIFACT_DIFF_LINES:
        return lines
    return [*lines[:ARTIFACT_DIFF_LINES], f"... {len(lines) - ARTIFACT_DIFF_LINES} more lines (see the preview artifacts)"]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(diff: PreviewDiff) -> str:
    out = ["## unde-infra: what this merge request changes", ""]
    if diff.empty:
        return "\n".join([*out, "No changes: both previews register the same resources and deliver the same files.", ""])
    out += [f"**{_counts(diff)}**", ""]
    if diff.forbidden:
        out += ["### Blocked: replacement or deletion of a protected, stateful or adopted resource", ""]
        out += [f"- `{c.urn}`: {c.action}{' (' + ', '.join(f'`{x}`' for x in c.replace_causes) + ')' if c.replace_causes else ''}"
                f" — {c.forbidden}" for c in diff.forbidden]
        out.append("")
    warnings = _warning_lines(diff)
    if warnings:
        out += ["### Warning: a stateful server is powered off", "", *[f"- **{line}**" for line in warnings], ""]
    out += ["### Servers", ""]
    rows = _server_rows(diff)
    if rows:
        out += ["| server | stack | what `pulumi up` does |", "|---|---|---|"]
        out += [f"| `{name}` | {stack} | {_cell(text)} |" for name, stack, text in rows]
    else:
        out.append("No server changes.")
    out += ["", "### Cost (per month)", "",
            *[f"  - {line.strip()}" if line.startswith("  ") else f"- {line}" for line in _cost_lines(diff)], ""]
    notes = _notes(diff)
    if notes:
        out += ["### Notes", "", *[f"- {note}" for note in notes], ""]
    groups = ignored_groups(diff)
    if groups:
        out += ["### Ignored changes: `pulumi up` leaves these as they are", "", *[f"- {g.describe()}" for g in groups], ""]
    for stack in STACKS:
        changes = [r for r in diff.resources if r.stack == stack]
        if changes:
            out += [f"### Stack `{stack}`: resources", "", "| action | type | name | changed inputs |", "|---|---|---|---|"]
            for change in changes:
                action = f"**{change.action}**" if change.action in ("replace", "delete") else change.action
                if change.replace_causes:
                    action += f" ({', '.join(change.replace_causes)})"
                elif change.resize:
                    action = f"**update**: resize ({RESIZE_EFFECT})"
                details = "<br>".join(_cell(_change_line(c)) for c in change.changes)
                out.append(f"| {action} | `{change.type}` | `{change.name}` | {details} |")
            out.append("")
        files = [a for a in diff.artifacts if a.stack == stack]
        if files:
            out += [f"### Stack `{stack}`: files the servers receive", ""]
            for artifact in files:
                title = f"{artifact.action}: `{artifact.server}:{artifact.path}`{_artifact_note(artifact)}"
                if artifact.secret:
                    out += [f"- {title}"]
                    continue
                out += [f"<details><summary>{title}</summary>", "", "```diff", *_limited(artifact.diff), "```", "",
                        "</details>", ""]
    text = "\n".join(out) + "\n"
    if len(text) > MARKDOWN_LIMIT:
        text = text[:MARKDOWN_LIMIT] + "\n\n... the report is cut here; the whole diff is in the job's artifacts.\n"
    return text


def _ignored_json(change: InputChange, name: str) -> dict[str, Any]:
    assert change.ignored is not None
    return {"path": change.path, "old": change.old, "new": change.new, "why": change.ignored.why,
            "if_wanted": change.ignored.wanted.format(server=name)}


def render_json(diff: PreviewDiff) -> str:
    """The summary first (counts, blocked, warnings, one line per server, the cost), then the
    details; each server and each cost line on one line of its own."""
    total_old, total_new = sum(c.old for c in diff.costs), sum(c.new for c in diff.costs)
    summary: dict[str, Any] = {
        "empty": diff.empty,
        "headline": _counts(diff) if not diff.empty else "no changes",
        "counts": counts(diff),
        "blocked": _blocked_lines(diff),
        "warnings": _warning_lines(diff),
        "servers": [{"server": s.name, "stack": s.stack, "change": s.what, "summary": s.describe(), "files_changed": s.files,
                     "ignored": s.ignored, "powers_off": s.resize is not None,
                     "stateful": bool(s.resize and s.resize.stateful_task), "blocked": s.blocked}
                    for s in diff.servers],
        "cost": [{"stack": c.stack, "old_eur": c.old, "new_eur": c.new, "delta_eur": round(c.new - c.old, 2),
                  "lines": [{"name": n, "old_eur": o, "new_eur": w} for n, o, w in c.lines]} for c in diff.costs],
        "cost_total": {"old_eur": round(total_old, 2), "new_eur": round(total_new, 2),
                       "delta_eur": round(total_new - total_old, 2)},
    }
    details: dict[str, Any] = {
        "forbidden": [c.urn for c in diff.forbidden],
        "notes": _notes(diff),
        "ignored": [{"path": g.path, "why": g.reason.why, "if_wanted": g.wanted, "resources": g.names}
                    for g in ignored_groups(diff)],
        "resources": [{"stack": c.stack, "urn": c.urn, "type": c.type, "action": c.action,
                       "replace_causes": c.replace_causes, "forbidden": c.forbidden,
                       "resize": None if c.resize is None else {"old": c.resize.old, "new": c.resize.new,
                                                                "powers_off": True,
                                                                "stateful_task": c.resize.stateful_task},
                       "changes": [{"path": i.path, "old": i.old, "new": i.new} for i in c.applied],
                       "ignored": [_ignored_json(i, c.name) for i in c.ignored]}
                      for c in diff.resources],
        "artifacts": [{"stack": a.stack, "server": a.server, "path": a.path, "action": a.action, "secret": a.secret,
                       "not_delivered": a.not_delivered, "diff": a.diff} for a in diff.artifacts],
    }
    one_line = {"servers", "cost"}
    parts = []
    for key, value in {**summary, **details}.items():
        if key in one_line and value:
            rows = ",\n".join(f"    {json.dumps(row, default=str)}" for row in value)
            parts.append(f"  {json.dumps(key)}: [\n{rows}\n  ]")
        else:
            parts.append(f"  {json.dumps(key)}: " + json.dumps(value, indent=2, default=str).replace("\n", "\n  "))
    return "{\n" + ",\n".join(parts) + "\n}\n"


RENDERERS = {"text": render_text, "markdown": render_markdown, "json": render_json}


def cmd_diff(args: argparse.Namespace) -> int:
    diff = compare(args.old, args.new)
    print(RENDERERS[args.format](diff), end="")
    return diff.exit_code()


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("diff", help="what `pulumi up` does from two previews: servers, resources, replacements, "
                                         "resizes, files, cost (exit 3: a forbidden replacement)")
    parser.add_argument("old", type=Path, help="the earlier preview (e.g. the merge base's)")
    parser.add_argument("new", type=Path, help="the later preview (e.g. the merge request's)")
    parser.add_argument("--format", choices=FORMATS, default="text")
    parser.set_defaults(func=cmd_diff)
