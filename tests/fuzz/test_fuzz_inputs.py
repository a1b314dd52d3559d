"""A property-based fuzzer over the real config files: Hypothesis mutates the committed topology
and stack configs the way an attacker or a tired operator would (hostile text with control
characters and shell metacharacters, wrong types, booleans for counts, odd numbers, renamed or
removed entries the code needs, alias bombs, bytes that are not UTF-8) and drives the command as
a person runs it, `unde-infra validate` and `unde-infra preview`.

Whatever the input, the command must: exit 0, 1 or 2; never raise (a traceback); write nothing
to --out when it exits 2; report each problem on its own line; and when it exits 0 or 1, no
hostile marker may have become a line of its own in any file a server receives, and every
rendered YAML and JSON file must still parse.

Bounded for `make test`: fixed example counts, no deadline per example, derandomized (the same
examples on every run, so CI is reproducible) and no example database."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.conftest import project_copy, run_cli

ROOT = Path(__file__).resolve().parents[2]
MARKER = "UNDEFUZZ"
HOSTILE_TEXT = [
    f"x\n{MARKER}=1",
    f"x\r\n{MARKER}: injected",
    f"$({MARKER})",
    f"`{MARKER}`",
    f"a; {MARKER} && b",
    f"a\"b'c\\{MARKER}",
    f"a,{MARKER}=http://203.0.113.66:2380",
    f"a=b {MARKER}",
    f"\x00{MARKER}",
    f"\x1b[31m{MARKER}",
    f"{MARKER}\u2028line",
    f"\u202e{MARKER}",
    f"# {MARKER}",
    f"[{MARKER}]",
    f"ssh-ed25519 AAAA {MARKER}\nssh-rsa AAAA",
    f"10.1.0.2\n{MARKER}",
    f"../../{MARKER}.yaml",
    f"/etc/{MARKER}.yaml",
    MARKER * 300,
    "",
    " ",
    "\u00b2",  # str.isdigit() says yes, int() says no
    "\u0661\u0662",
    "0x1F",
    "-0",
]
ODD_VALUES: list[Any] = [
    True, False, None, 0, -1, 1, 2, 3, 65536, 10**30, 1.5, float("inf"), float("nan"),
    [], {}, ["a"], {"a": 1}, "yes", "1", "0.0.0.0/0", "::/0", "10.0.0.5", "192.168.1.1", "8.8.8.8",
]
# Entries the code needs by name or by task: renaming or removing one must be a `path: message`.
FIXED = [
    ("servers", "monitoring"), ("servers", "posthog"), ("servers", "helsinki-gw"), ("servers", "local-app"),
    ("servers", "etcd-witness"), ("servers", "local-etcd-1"), ("object_storage", "buckets", "unde-backups"),
    ("tasks", "monitoring"), ("tasks", "shard"), ("sites", "local"), ("etcd", "placements", "three-sites"),
    ("network", "subnets", "replicas"),
]
BILLION_LAUGHS = "\n".join(
    ["bomb: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"bomb{i}: &a{i} [{', '.join(f'*a{i - 1}' for _ in range(9))}]" for i in range(1, 9)]
)
SMALL_BOMB = "\n".join(  # within the alias count, over the expanded size
    ["bomb: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"bomb{i}: &a{i} [{', '.join(f'*a{i - 1}' for _ in range(10))}]" for i in range(1, 6)]
)


def _base() -> dict[str, Any]:
    return {
        "topology": yaml.safe_load((ROOT / "config" / "topology.yaml").read_text()),
        "helsinki": yaml.safe_load((ROOT / "Pulumi.helsinki.yaml").read_text()),
        "local": yaml.safe_load((ROOT / "Pulumi.local.yaml").read_text()),
    }


BASE = _base()


def _paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(tree, dict):
        for key, value in tree.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            found += _paths(value, (*prefix, i))
    return found


def _parent(tree: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        tree = tree[part]
    if not isinstance(tree, (dict, list)) or (isinstance(tree, dict) and path[-1] not in tree):
        raise KeyError(path)
    return tree


@st.composite
def mutation(draw: st.DrawFn, files: tuple[str, ...] = ("topology", "helsinki", "local")) -> tuple[str, Any]:
    """(file, new content): a tree for YAML dumping, or raw bytes for text-level damage. One to
    three edits of one file, each drawn from what a person (or an attacker) would do to it."""
    name = draw(st.sampled_from(files))
    tree = copy.deepcopy(BASE[name])
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["replace", "replace", "suffix", "nudge", "delete", "rename", "fixed", "collide", "text", "root"]))
        if kind == "text":
            return name, _damaged_text(draw, tree)
        if kind == "root":  # the whole file is something else: a list, a scalar, the mapping nested
            return name, draw(st.sampled_from([[tree], {"config": tree}, *ODD_VALUES[:12], "just text"]))
        if kind == "collide" and name == "topology":
            servers = tree.get("servers")
            if isinstance(servers, dict) and isinstance(servers.get("local-app"), dict):
                servers["local-app"] = {**servers["local-app"], "instances": 2}
                servers["local-app-2"] = {"site": "local", "task": "mood", "size": {"vcpu": 2, "ram_gb": 4},
                                          "ip": "10.2.0.99", "tunnel": {"interface": "wg-app2", "index": 99}}
            continue
        if kind == "fixed" and name == "topology":
            path = draw(st.sampled_from(FIXED))
            try:
                parent = _parent(tree, path)
                value = parent.pop(path[-1])
            except (KeyError, TypeError, AttributeError):
                continue
            if draw(st.booleans()):
                parent[draw(st.sampled_from([f"{path[-1]}-renamed", "renamed"]))] = value
            continue
        paths = _paths(tree)
        if not paths:
            continue
        path = draw(st.sampled_from(paths))
        parent = _parent(tree, path)
        current = parent[path[-1]]
        if kind == "delete":
            del parent[path[-1]]
        elif kind == "rename" and isinstance(parent, dict):
            parent[draw(st.sampled_from([*HOSTILE_TEXT, "renamed", True, 7]))] = parent.pop(path[-1])
        elif kind == "suffix" and isinstance(current, str):
            parent[path[-1]] = current + draw(st.sampled_from(HOSTILE_TEXT))
        elif kind == "nudge" and isinstance(current, int) and not isinstance(current, bool):
            parent[path[-1]] = current + draw(st.sampled_from([-1, 1, 2, 255, -256, 10**6]))
        elif kind == "nudge" and isinstance(current, bool):
            parent[path[-1]] = draw(st.sampled_from([not current, int(current), str(current).lower()]))
        else:
            parent[path[-1]] = draw(st.sampled_from(HOSTILE_TEXT + ODD_VALUES))
    return name, tree


def _damaged_text(draw: st.DrawFn, tree: Any) -> bytes:
    text = yaml.safe_dump(tree, sort_keys=False)
    damage = draw(st.sampled_from(["bomb", "small-bomb", "latin1", "empty", "truncate", "tabs", "duplicate"]))
    if damage == "bomb":
        return (text + BILLION_LAUGHS + "\n").encode()
    if damage == "small-bomb":
        return (text + SMALL_BOMB + "\n").encode()
    if damage == "latin1":
        return text.encode() + "# caf\xe9\n".encode("latin-1")
    if damage == "empty":
        return b"# nothing here\n"
    if damage == "truncate":
        return text.encode()[: draw(st.integers(1, max(1, len(text) - 1)))]
    if damage == "duplicate":
        return (text + text.splitlines()[0] + "\n").encode()
    return text.replace("  ", "\t", 1).encode()


def _write(project: Path, name: str, content: Any) -> Path:
    target = project / "config" / "topology.yaml" if name == "topology" else project / f"Pulumi.{name}.yaml"
    data = content if isinstance(content, bytes) else yaml.safe_dump(content, sort_keys=False, allow_unicode=False).encode()
    target.write_bytes(data)
    return target


def _check_report(code: int, stderr: str) -> None:
    assert code in (0, 1, 2), code
    assert "Traceback" not in stderr
    if code == 2:
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert lines, "exit 2 without a word"
        assert all(": " in line for line in lines), lines


def _check_artifacts(out: Path) -> int:
    """Every rendered file still parses, and no hostile marker starts a line of its own."""
    checked = 0
    for path in out.rglob("*"):
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        for line in text.splitlines():
            assert not line.lstrip().startswith(MARKER), f"{path}: injected line {line!r}"
        if path.suffix in (".yaml", ".yml"):
            yaml.safe_load(text)
        elif path.suffix == ".json":
            json.loads(text)
        checked += 1
    return checked


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=examples, derandomize=True, database=None, deadline=None, print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


@fuzz(160)
@given(change=mutation(files=("topology",)))
def test_validate_survives_any_topology(change: tuple[str, Any], tmp_path_factory: pytest.TempPathFactory) -> None:
    project = project_copy(tmp_path_factory.mktemp("validate"))
    topology = _write(project, *change)
    code, _, stderr = run_cli(["validate", "--topology", str(topology)])
    event(f"exit {code}")
    _check_report(code, stderr)
    assert code in (0, 2)  # validate runs no policy
    # The other commands that read a topology take the same input the same way.
    for args in (["scenarios", "--json"], ["runbook", "replica"]):
        other, _, stderr = run_cli([*args, "--topology", str(topology)])
        _check_report(other, stderr)
        assert (other == 0) == (code == 0), (args, other, stderr)


@fuzz(45)
@given(change=mutation(), stack=st.sampled_from(["helsinki", "local"]))
def test_preview_survives_any_config(change: tuple[str, Any], stack: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    tmp = tmp_path_factory.mktemp("preview")
    project = project_copy(tmp)
    _write(project, *change)
    out = tmp / "out"
    code, _, stderr = run_cli(["preview", "--stack", stack, "--project-dir", str(project), "--out", str(out)])
    event(f"exit {code}")
    _check_report(code, stderr)
    if code == 2:
        assert not out.exists(), "exit 2 wrote to --out"
    else:
        assert _check_artifacts(out) > 10


@pytest.mark.parametrize(
    "content",
    [BILLION_LAUGHS.encode(), b"servers: {caf\xe9: 1}\n", b"", b"a: " + b"[" * 5000 + b"\n"],
    ids=["billion-laughs", "latin-1", "empty", "deep-nesting"],
)
def test_hostile_files_as_a_process(content: bytes, tmp_path: Path) -> None:
    """A few cases in a real process too: exit 2, `path: message`, no traceback, nothing written."""
    topology = tmp_path / "topology.yaml"
    topology.write_bytes(content)
    out = tmp_path / "out"
    for args in (["validate"], ["preview", "--stack", "local", "--out", str(out)]):
        result = subprocess.run(
            [sys.executable, "-m", "unde_infra", *args, "--topology", str(topology)],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 2, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        assert result.stderr.splitlines()[1].startswith(f"  {topology}: ") or result.stderr.splitlines()[1].startswith("  line ")
    assert not out.exists()
