"""What makes the offline preview fast changes nothing it writes: the runner's garbage-collector
settings, libyaml's emitter, the topology derived once, one login per host."""

from __future__ import annotations

import gc
import os
import shutil
from pathlib import Path

import pytest
import yaml

from unde_infra import gc_settings
from unde_infra.errors import TopologyError
from unde_infra.gc_settings import YOUNG_THRESHOLD, quiet_gc
from unde_infra.model import DEFAULT_TOPOLOGY, load_topology
from unde_infra.preview import prepare, run_stacks, write_results
from unde_infra.render.escape import BLOCK_DUMPER, PURE_BLOCK_DUMPER
from unde_infra.render.escape import yaml_dump as dump_yaml

YAML_SUFFIXES = (".yml", ".yaml")


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_preview_with_the_runners_gc_settings_writes_what_a_plain_run_writes(run_stack, tmp_path) -> None:
    """The local stack (the shard pairs, every kind of delivered bundle) as committed: a run with
    the interpreter's own GC settings writes the same bytes as the shared run with the runner's."""
    tuned = run_stack("local")
    before = (gc.get_threshold(), gc.isenabled(), gc.get_freeze_count())
    (plain,) = run_stacks(prepare(["local"], None, None), gc_tuning=False)
    # Nothing set, nothing frozen (the earlier runs' frozen objects may be freed meanwhile).
    assert (gc.get_threshold(), gc.isenabled()) == before[:2] and gc.get_freeze_count() <= before[2]
    trees = []
    for name, result in (("plain", plain), ("tuned", tuned)):
        write_results([result], tmp_path / name)
        trees.append(files_under(tmp_path / name))
    plain_files, tuned_files = trees
    assert len(plain_files) > 100 and plain_files.keys() == tuned_files.keys()
    assert [path for path in plain_files if plain_files[path] != tuned_files[path]] == []


def test_the_gc_settings_hold_for_the_outermost_use_and_are_undone_after_an_error(fresh_event_loop, tmp_path,
                                                                                   monkeypatch) -> None:
    # As in a fresh process: the worker's earlier runs leave their heaps frozen (conftest.run_stack).
    gc.unfreeze()
    monkeypatch.setattr(gc_settings, "_left_frozen", False)
    before = (gc.get_threshold(), gc.isenabled(), gc.get_freeze_count())
    run_stacks(prepare(["helsinki"], None, None))  # a whole run, with the settings
    assert (gc.get_threshold(), gc.isenabled(), gc.get_freeze_count()) == before
    with pytest.raises(RuntimeError):
        with quiet_gc():
            assert gc.get_threshold()[0] == YOUNG_THRESHOLD
            with quiet_gc():
                assert gc.get_threshold()[0] == YOUNG_THRESHOLD
            assert gc.get_threshold()[0] == YOUNG_THRESHOLD and gc.get_freeze_count() > 0  # still the outer one's
            raise RuntimeError("the run failed")
    assert (gc.get_threshold(), gc.isenabled(), gc.get_freeze_count()) == before
    # Left frozen (the command's last run): what the body allocated is never walked again.
    with quiet_gc(leave_frozen=True):
        allocated = [[] for _ in range(1000)]
    assert gc.get_threshold() == before[0] and gc.get_freeze_count() >= before[2] + len(allocated)


def test_after_a_run_left_frozen_the_next_never_counts_the_frozen(monkeypatch) -> None:
    """Counting walks every frozen object: a test worker's dozens of runs would pay for each
    earlier one again on every later run."""
    with quiet_gc(leave_frozen=True):
        pass

    def walk() -> int:
        raise AssertionError("gc.get_freeze_count walked the frozen heap")

    monkeypatch.setattr(gc, "get_freeze_count", walk)
    with quiet_gc():
        pass
    with quiet_gc(leave_frozen=True):
        pass


# Scalars where YAML emitters are known to disagree: quoting of look-alike values, line breaks,
# indentation indicators, non-ASCII and control characters, very long lines.
TRICKY_DOCUMENT = {
    "look-alikes": ["yes", "no", "on", "off", "null", "~", "true", "010", "0x1F", "1e3", ".inf", "", "- item", "@at",
                    "key: value", "# not a comment", "it's \"quoted\""],
    "blocks": ["a\nb", "a\n", "a\n\n\n", "\n\nlead\n", "  indented\nline\n", "trailing  \nspace\n", "tab\there\n",
               "crlf\r\nline\r\n"],
    "characters": ["naïve — 日本", "bell\x07", "no\u00a0break", "x " * 800],
    "numbers": [0, -1, 2**70, 1.5, -0.0, True, None],
    "keys": {1: "int", "1": "str", None: "null", 2.5: "float"},
    "nested": {"list": [{"k": 1, "v": [1, {"deep": "yes"}]}], "empty": {}, "none": []},
}


def test_libyaml_writes_the_bytes_of_the_pure_python_emitter(run_stack) -> None:
    assert yaml.__with_libyaml__ and issubclass(BLOCK_DUMPER, yaml.CSafeDumper)  # the fast path is the one in use
    assert dump_yaml(TRICKY_DOCUMENT, PURE_BLOCK_DUMPER) == dump_yaml(TRICKY_DOCUMENT, BLOCK_DUMPER)
    checked = 0
    for stack in ("helsinki", "local"):
        for server, files in run_stack(stack).artifacts.items():
            for path, text in files.items():
                if not path.endswith(YAML_SUFFIXES):
                    continue
                # A leading comment (cloud-config's marker, a rendered-by header) is the
                # renderer's, not the dumper's.
                lines = text.splitlines(keepends=True)
                while lines and lines[0].startswith("#"):
                    lines.pop(0)
                body = "".join(lines)
                data = yaml.safe_load(body)
                # Every rendered YAML file is what either emitter writes for its data.
                assert dump_yaml(data, PURE_BLOCK_DUMPER) == body, f"{server}:{path}"
                assert dump_yaml(data, BLOCK_DUMPER) == body, f"{server}:{path}"
                checked += 1
    assert checked > 30  # user data of every server, Patroni, Prometheus, Alertmanager, Grafana, etcd


def test_the_topology_is_derived_once_while_its_file_is_unchanged(tmp_path: Path) -> None:
    topology = tmp_path / "topology.yaml"
    shutil.copy(DEFAULT_TOPOLOGY, topology)
    first = load_topology(topology)
    assert load_topology(topology) is first
    assert load_topology(topology, shards=2) is not first and len(load_topology(topology, shards=2).shards) == 2
    # An edited file is read again, even at the same size and modification time.
    text = topology.read_text()
    edited = text.replace("count: 1", "count: 3", 1)
    assert edited != text and len(edited) == len(text)
    stat = topology.stat()
    topology.write_text(edited)
    os.utime(topology, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert len(load_topology(topology).shards) == 3
    # A broken file is reported every time it is read, never remembered.
    topology.write_text(text.replace("count: 1", "count: 0", 1))
    for _ in range(2):
        with pytest.raises(TopologyError):
            load_topology(topology)


def test_a_host_logs_in_with_one_connection_until_its_login_changes(inventory) -> None:
    from components.hosts import Host

    # Plain values stand in for the Outputs of a run: an Output made outside a stack run would
    # stay in the SDK's list of pending outputs and be awaited by the next run.
    server = inventory.server("staging-db")
    host = Host(server, "10.1.1.20", None, jump="198.51.100.1")  # type: ignore[arg-type]
    connection = host.connection()
    assert host.connection() is connection
    assert connection.host == "10.1.1.20" and connection.proxy is not None
    assert connection.proxy.host == "198.51.100.1"
    host.jump = "198.51.100.2"
    assert host.connection() is not connection and host.connection().proxy.host == "198.51.100.2"
    # A host whose address is known in advance logs in at that address as text.
    fixed = Host(server, "unused", None, fixed_address="10.1.1.21")  # type: ignore[arg-type]
    assert fixed.connection().host == "10.1.1.21" and fixed.connection().proxy is None
