"""Every example a shipped config file gives in a comment is something the program accepts: each
is applied to a copy of its file, alone and together with the file's other examples (what a
reader who follows every comment ends with), and the copy is read by the program as the real
file is (`unde-infra validate`, or the file's loader).

Two forms are examples:
- a comment line `# example: <path>: <YAML value>`, the path dotted from the file's root
  (`shards.durability_overrides: {0: sync}`, `config.unde-infra:networkImport: {id: 1234567}`);
- in a stack config, a comment holding a `pulumi config set [--secret] [--path] KEY VALUE -s STACK`
  command, applied as the CLI would write it (a secret as an encrypted value).
Commented-out YAML in any other form is refused (test_every_commented_setting_is_a_marked_example),
so that an example cannot slip past these tests."""

from __future__ import annotations

import re
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from policies.rules import load_policy_config
from tests.conftest import unde
from unde_infra.capacity import load_capacity
from unde_infra.config_files import load_config
from unde_infra.model import ROOT, load_server_types
from unde_infra.pricing import load_pricing
from unde_infra.stack_outputs import check_stack_outputs

SHIPPED = [*sorted((ROOT / "config").glob("*.yaml")), ROOT / "Pulumi.helsinki.yaml", ROOT / "Pulumi.local.yaml"]
EXAMPLE = re.compile(r"^\s*#\s*example:\s*(?P<path>[^\s:][^\s]*?):\s+(?P<value>.+)$")
CONFIG_SET = re.compile(r"pulumi config set [^`]*")  # up to the end, or a closing backquote
# A comment that reads as a setting (`key: {`, `key: [`, `key: true`, `key: 3`) but is not marked.
COMMENTED_SETTING = re.compile(r"^\s*#\s*(?!example:)[A-Za-z_][\w.:-]*:\s+(\{|\[|true\b|false\b|-?\d)")
PROJECT = "unde-infra"


@dataclass(frozen=True)
class Example:
    file: Path
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.file.relative_to(ROOT)}:{self.line}: {self.text.strip()}"


def comment_lines(path: Path) -> list[tuple[int, str]]:
    return [(n, line) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if line.lstrip().startswith("#")]


def examples(path: Path) -> list[Example]:
    found = []
    for number, line in comment_lines(path):
        if EXAMPLE.match(line) or (path.name.startswith("Pulumi.") and CONFIG_SET.search(line)):
            found.append(Example(path, number, line))
    return found


ALL = [e for path in SHIPPED for e in examples(path)]


# --- applying an example --------------------------------------------------------------------


def _set(data: dict[str, Any], path: list[str | int], value: Any, where: str) -> None:
    node: Any = data
    for key in path[:-1]:
        if isinstance(node, dict) and key not in node:
            node[key] = [] if isinstance(path[path.index(key) + 1], int) else {}
        if not isinstance(node, (dict, list)):
            raise AssertionError(f"{where}: {'.'.join(map(str, path))} goes through a value")
        node = node[key]
    last = path[-1]
    if isinstance(node, list) and isinstance(last, int):
        node.extend([None] * (last + 1 - len(node)))
    node[last] = value


def apply_yaml_example(data: dict[str, Any], example: Example) -> None:
    match = EXAMPLE.match(example.text)
    assert match, example
    path = match["path"].split(".")
    node: Any = data
    for key in path[:-1]:
        assert isinstance(node, dict) and key in node, f"{example}: the file has no {key!r} there"
        node = node[key]
    node[path[-1]] = yaml.safe_load(match["value"])


def _config_path(key: str) -> list[str | int]:
    """`pulumi config set --path` segments: `a.b`, `a[0]`, `a.0`."""
    segments: list[str | int] = []
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", key):
        segments.append(int(part[1:-1]) if part.startswith("[") else part)
    return segments


def apply_config_set(data: dict[str, Any], example: Example, stack: str) -> None:
    command = CONFIG_SET.search(example.text).group(0)  # type: ignore[union-attr]
    # A placeholder (`<token>`, `<the DNS project's token>`) is one word; as a value that is not a
    # secret it reaches the program as it is, which refuses it.
    words = shlex.split(re.sub(r"<[^<>]*>", "<placeholder>", command), comments=True)
    assert words[:3] == ["pulumi", "config", "set"], example
    args = words[3:]
    secret, path_mode = "--secret" in args, "--path" in args
    args = [a for a in args if a not in ("--secret", "--path")]
    assert len(args) == 4 and args[2] == "-s", f"{example}: pulumi config set [--secret] [--path] KEY VALUE -s STACK"
    key, value, _, named_stack = args
    assert named_stack == stack, f"{example}: a command for stack {named_stack} in Pulumi.{stack}.yaml"
    segments = _config_path(key) if path_mode else [key]
    first = str(segments[0])
    segments[0] = first if ":" in first else f"{PROJECT}:{first}"
    stored = {"secure": "v1:ZXhhbXBsZQ=="} if secret else value
    config = data.setdefault("config", {})
    _set(config, segments, stored, str(example))


# --- reading a file as the program does ------------------------------------------------------


def _check_stack_config(path: Path, tmp: Path) -> None:
    project = tmp / "project"
    (project / "config").mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "config" / "topology.yaml", project / "config" / "topology.yaml")
    for stack in ("helsinki", "local"):
        if not (project / f"Pulumi.{stack}.yaml").exists():
            shutil.copy(ROOT / f"Pulumi.{stack}.yaml", project / f"Pulumi.{stack}.yaml")
    shutil.copy(path, project / path.name.removeprefix("example-"))
    stack = path.name.removeprefix("example-").split(".")[1]
    result = unde("validate", "--stack", stack, "--project-dir", str(project))
    assert (result.returncode, result.stderr) == (0, ""), result.stderr


def _check_topology(path: Path, tmp: Path) -> None:
    result = unde("validate", "--topology", str(path))
    assert (result.returncode, result.stderr) == (0, ""), result.stderr


CHECKS: dict[str, Callable[[Path, Path], Any]] = {
    "topology.yaml": _check_topology,
    "policy.yaml": lambda path, tmp: load_policy_config(path),
    "pricing.yaml": lambda path, tmp: load_pricing(path),
    "capacity.yaml": lambda path, tmp: load_capacity(path),
    "server_types.yaml": lambda path, tmp: load_server_types(path),
    "offline-stack-outputs.yaml": lambda path, tmp: check_stack_outputs(load_config(path), str(path)),
    "Pulumi.helsinki.yaml": _check_stack_config,
    "Pulumi.local.yaml": _check_stack_config,
}


def accepted(file: Path, chosen: list[Example], tmp: Path) -> None:
    """Applies `chosen` to a copy of `file` and has the program read it."""
    data = yaml.safe_load(file.read_text(encoding="utf-8"))
    stack = file.name.split(".")[1] if file.name.startswith("Pulumi.") else ""
    for example in chosen:
        if EXAMPLE.match(example.text):
            apply_yaml_example(data, example)
        else:
            apply_config_set(data, example, stack)
    copy = tmp / f"example-{file.name}"
    copy.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    CHECKS[file.name](copy, tmp)


# --- the tests ---------------------------------------------------------------------------------


def test_every_shipped_file_has_a_check() -> None:
    assert {p.name for p in SHIPPED} == set(CHECKS)


def test_the_shipped_files_give_the_examples_they_should() -> None:
    where = {(e.file.name, e.text.split("example:")[-1].strip().split(":")[0]) for e in ALL if "example:" in e.text}
    assert {("topology.yaml", "shards.durability_overrides"), ("topology.yaml", "servers.scraper.inbound"),
            ("Pulumi.helsinki.yaml", "config.unde-infra"), ("pricing.yaml", "exchange_rates")} <= where
    commands = [e.text for e in ALL if "pulumi config set" in e.text]
    assert any("dnsZone unde.app" in c for c in commands) and any("importIds.helsinki-gw" in c for c in commands)


@pytest.mark.parametrize("example", ALL, ids=str)
def test_an_example_alone_is_accepted(example: Example, tmp_path: Path) -> None:
    accepted(example.file, [example], tmp_path)


@pytest.mark.parametrize("file", [p for p in SHIPPED if examples(p)], ids=lambda p: p.name)
def test_a_files_examples_together_are_accepted(file: Path, tmp_path: Path) -> None:
    accepted(file, examples(file), tmp_path)


def test_every_commented_setting_is_a_marked_example() -> None:
    unmarked = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}" for p in SHIPPED for n, line in comment_lines(p)
                if COMMENTED_SETTING.match(line) or re.search(r"\be\.g\.\s*[{\[]", line)]
    assert unmarked == []


def test_the_old_entry_domain_comment_is_refused(tmp_path: Path) -> None:
    """What Pulumi.local.yaml's comment once told the reader to run, with the zone a real run
    needs: the program refuses it (the comment now names what it accepts)."""
    old = Example(ROOT / "Pulumi.local.yaml", 0, "  #   pulumi config set entryDomain api.example.com -s local")
    with pytest.raises(AssertionError, match="entryDomain: the stack manages the entry's DNS"):
        accepted(old.file, [old], tmp_path)


def test_an_example_the_program_refuses_fails_the_test(tmp_path: Path) -> None:
    bad = Example(ROOT / "config" / "topology.yaml", 0, "  # example: shards.durability_overrides: {0: strict}")
    with pytest.raises(AssertionError, match="shards.durability_overrides"):
        accepted(bad.file, [bad], tmp_path)
