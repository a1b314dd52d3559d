"""`unde-infra diff OLD_DIR NEW_DIR`: what a change does, from two offline previews (the merge
base's and the merge request's): resources added, removed and changed with their changed inputs,
the replacements the providers would make, the files each server receives that changed, and the
monthly cost delta.

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
from .naming import REMOTE_COMMAND_TYPE, SERVER_TYPE
from .provider_schema import replacement_causes

EXIT_OK, EXIT_BAD_INPUT, EXIT_FORBIDDEN = 0, 2, 3
FORMATS = ("text", "markdown", "json")
# A long or multi-line input (user data, a delivered file's stdin) is summarised: the file itself
# is an artifact, whose diff follows.
SHORT_VALUE = 120
ARTIFACT_DIFF_LINES = 400
# GitLab refuses a note over 1,000,000 characters.
MARKDOWN_LIMIT = 900_000


@dataclass(frozen=True)
class InputChange:
    path: str
    old: Any
    new: Any


@dataclass
class ResourceChange:
    stack: str
    urn: str
    type: str
    action: str  # create, delete, update, replace, import
    changes: list[InputChange] = field(default_factory=list)
    replace_causes: list[str] = field(default_factory=list)
    forbidden: str = ""  # why this replacement or deletion must not happen

    @property
    def name(self) -> str:
        return self.urn.rsplit("::", 1)[-1]


@dataclass
class ArtifactChange:
    stack: str
    server: str
    path: str
    action: str  # added, removed, changed
    secret: bool
    diff: list[str] = field(default_factory=list)


@dataclass
class StackCost:
    stack: str
    old: float
    new: float
    lines: list[tuple[str, float, float]]  # name, old, new (changed lines only)


@dataclass
class PreviewDiff:
    resources: list[ResourceChange]
    artifacts: list[ArtifactChange]
    costs: list[StackCost]

    @property
    def forbidden(self) -> list[ResourceChange]:
        return [r for r in self.resources if r.forbidden]

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


# --------------------------------------------------------------------------------------------
# Comparing


def compare(old_dir: Path, new_dir: Path) -> PreviewDiff:
    problems = Problems()
    old, new = read_preview(old_dir, problems), read_preview(new_dir, problems)
    problems.raise_if_any("unde-infra diff")
    stateful_tasks = {name for name, task in load_topology().tasks.items() if task.stateful}
    resources: list[ResourceChange] = []
    artifacts: list[ArtifactChange] = []
    costs = []
    empty = StackPreview({}, set(), {})
    for stack in [s for s in STACKS if s in old or s in new]:
        before, after = old.get(stack, empty), new.get(stack, empty)
        for urn in sorted(set(before.resources) | set(after.resources)):
            change = _resource_change(stack, before.resources.get(urn), after.resources.get(urn), stateful_tasks)
            if change is not None:
                resources.append(change)
        artifacts += _artifact_changes(stack, before, after)
        costs.append(_stack_cost(stack, before, after))
    return PreviewDiff(resources, artifacts, costs)


def _resource_change(stack: str, old: dict[str, Any] | None, new: dict[str, Any] | None,
                     stateful_tasks: set[str]) -> ResourceChange | None:
    if old is None:
        assert new is not None
        return ResourceChange(stack, new["urn"], new["type"], "create")
    if new is None:
        change = ResourceChange(stack, old["urn"], old["type"], "delete")
        change.forbidden = _guarded(old, stateful_tasks, "deleted")
        return change
    changes = _input_changes(old.get("inputs") or {}, new.get("inputs") or {})
    for option in ("protect", "ignoreChanges", "retainOnDelete", "importId", "parent"):
        if old.get(option) != new.get(option):
            changes.append(InputChange(f"({option})", old.get(option), new.get(option)))
    if not changes:
        return None
    change = ResourceChange(stack, new["urn"], new["type"], "update", changes)
    if new.get("importId") and not old.get("importId"):
        change.action = "import"  # adopting what exists: nothing is created or replaced
        return change
    if not new.get("custom", True):
        return change
    causes = replacement_causes(new["type"], old.get("inputs") or {}, new.get("inputs") or {},
                                new.get("ignoreChanges") or [])
    if causes:
        change.action, change.replace_causes = "replace", causes
        change.forbidden = _guarded(old, stateful_tasks, "replaced")
    return change


def _guarded(resource: dict[str, Any], stateful_tasks: set[str], verb: str) -> str:
    inputs = resource.get("inputs") or {}
    reasons = []
    if resource.get("protect"):
        reasons.append("protected")
    if resource.get("importId"):
        reasons.append(f"adopted (import id {resource['importId']})")
    task = (inputs.get("labels") or {}).get("task") if resource["type"] == SERVER_TYPE else None
    if task in stateful_tasks:
        reasons.append(f"stateful (task {task})")
    if inputs.get("deleteProtection") is True:
        reasons.append("delete protection on")
    return f"{' and '.join(reasons)}: it must never be {verb}" if reasons else ""


def _input_changes(old: Any, new: Any, path: str = "") -> list[InputChange]:
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                found.append(InputChange(sub, None, new[key]))
            elif key not in new:
                found.append(InputChange(sub, old[key], None))
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
        found.append(ArtifactChange(stack, server, path, action, secret, lines))
    return found


def _stack_cost(stack: str, old: StackPreview, new: StackPreview) -> StackCost:
    before = resources_cost(stack, list(old.resources.values()))
    after = resources_cost(stack, list(new.resources.values()))
    old_lines = {line.name: line.eur for line in before.lines}
    new_lines = {line.name: line.eur for line in after.lines}
    changed = [(name, old_lines.get(name, 0.0), new_lines.get(name, 0.0))
               for name in sorted(set(old_lines) | set(new_lines)) if old_lines.get(name) != new_lines.get(name)]
    return StackCost(stack, before.total(), after.total(), changed)


# --------------------------------------------------------------------------------------------
# Output


def _value(value: Any) -> str:
    if isinstance(value, str) and ("\n" in value or len(value) > SHORT_VALUE):
        return f"<text, {len(value.splitlines())} lines>"
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= SHORT_VALUE else text[: SHORT_VALUE - 3] + "..."


def _change_line(change: InputChange) -> str:
    if change.old is None:
        return f"{change.path}: + {_value(change.new)}"
    if change.new is None:
        return f"{change.path}: - {_value(change.old)}"
    return f"{change.path}: {_value(change.old)} -> {_value(change.new)}"


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


def _counts(diff: PreviewDiff) -> str:
    actions = [r.action for r in diff.resources]
    parts = [f"{actions.count(a)} to {a}" for a in ("create", "update", "replace", "delete", "import") if actions.count(a)]
    return (", ".join(parts) or "no resource changes") + f"; {len(diff.artifacts)} files changed"


def render_text(diff: PreviewDiff) -> str:
    if diff.empty:
        return "no changes: both previews register the same resources and deliver the same files\n"
    out = [f"unde-infra diff: {_counts(diff)}"]
    for change in diff.forbidden:
        out.append(f"ERROR {change.stack} {change.urn}: would be {'deleted' if change.action == 'delete' else 'replaced'}"
                   f"{' (' + ', '.join(change.replace_causes) + ')' if change.replace_causes else ''}; {change.forbidden}")
    for stack in STACKS:
        changes = [r for r in diff.resources if r.stack == stack]
        if changes:
            out.append(f"\nstack {stack}: resources")
        for change in changes:
            causes = f" (replaced because of {', '.join(change.replace_causes)})" if change.replace_causes else ""
            out.append(f"  {change.action:<7} {change.type}  {change.name}{causes}")
            out += [f"            {_change_line(c)}" for c in change.changes]
        files = [a for a in diff.artifacts if a.stack == stack]
        if files:
            out.append(f"\nstack {stack}: files")
        for artifact in files:
            note = " (built from secrets: content not shown)" if artifact.secret else ""
            out.append(f"  {artifact.action:<7} {artifact.server}:{artifact.path}{note}")
            out += [f"    {line}" for line in _limited(artifact.diff)]
    out += ["", "cost:", *[f"  {line}" for line in _cost_lines(diff)]]
    return "\n".join(out) + "\n"


def _limited(lines: list[str]) -> list[str]:
    if len(lines) <= ARTIFACT_DIFF_LINES:
        return lines
    return [*lines[:ARTIFACT_DIFF_LINES], f"... {len(lines) - ARTIFACT_DIFF_LINES} more lines (see the preview artifacts)"]


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
    out += ["### Cost (per month)", "",
            *[f"  - {line.strip()}" if line.startswith("  ") else f"- {line}" for line in _cost_lines(diff)], ""]
    if any(r.action == "replace" and r.type == REMOTE_COMMAND_TYPE for r in diff.resources):
        out += ["A `command:remote:Command` replaced because of its `triggers` runs again: the file it "
                "delivers is written where the server's copy differs, then its apply step runs; the server itself "
                "is not touched.", ""]
    for stack in STACKS:
        changes = [r for r in diff.resources if r.stack == stack]
        if changes:
            out += [f"### Stack `{stack}`: resources", "", "| action | type | name | changed inputs |", "|---|---|---|---|"]
            for change in changes:
                action = f"**{change.action}**" if change.action in ("replace", "delete") else change.action
                if change.replace_causes:
                    action += f" ({', '.join(change.replace_causes)})"
                details = "<br>".join(_change_line(c).replace("|", "\\|") for c in change.changes)
                out.append(f"| {action} | `{change.type}` | `{change.name}` | {details} |")
            out.append("")
        files = [a for a in diff.artifacts if a.stack == stack]
        if files:
            out += [f"### Stack `{stack}`: files the servers receive", ""]
            for artifact in files:
                title = f"{artifact.action}: `{artifact.server}:{artifact.path}`"
                if artifact.secret:
                    out += [f"- {title} (built from secrets: content not shown)"]
                    continue
                out += [f"<details><summary>{title}</summary>", "", "```diff", *_limited(artifact.diff), "```", "",
                        "</details>", ""]
    text = "\n".join(out) + "\n"
    if len(text) > MARKDOWN_LIMIT:
        text = text[:MARKDOWN_LIMIT] + "\n\n... the report is cut here; the whole diff is in the job's artifacts.\n"
    return text


def render_json(diff: PreviewDiff) -> str:
    return json.dumps({
        "empty": diff.empty,
        "forbidden": [c.urn for c in diff.forbidden],
        "resources": [{"stack": c.stack, "urn": c.urn, "type": c.type, "action": c.action,
                       "replace_causes": c.replace_causes, "forbidden": c.forbidden,
                       "changes": [{"path": i.path, "old": i.old, "new": i.new} for i in c.changes]}
                      for c in diff.resources],
        "artifacts": [{"stack": a.stack, "server": a.server, "path": a.path, "action": a.action, "secret": a.secret,
                       "diff": a.diff} for a in diff.artifacts],
        "cost": [{"stack": c.stack, "old_eur": c.old, "new_eur": c.new, "delta_eur": round(c.new - c.old, 2),
                  "lines": [{"name": n, "old_eur": o, "new_eur": w} for n, o, w in c.lines]} for c in diff.costs],
    }, indent=2, default=str) + "\n"


RENDERERS = {"text": render_text, "markdown": render_markdown, "json": render_json}


def cmd_diff(args: argparse.Namespace) -> int:
    diff = compare(args.old, args.new)
    print(RENDERERS[args.format](diff), end="")
    return diff.exit_code()


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("diff", help="compare two previews: resources, replacements, files, cost (exit 3: a forbidden replacement)")
    parser.add_argument("old", type=Path, help="the earlier preview (e.g. the merge base's)")
    parser.add_argument("new", type=Path, help="the later preview (e.g. the merge request's)")
    parser.add_argument("--format", choices=FORMATS, default="text")
    parser.set_defaults(func=cmd_diff)
