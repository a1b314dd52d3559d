"""Both stacks, run as the real program under the SDK's mock monitor: which resources they
register, with which inputs and options."""

from __future__ import annotations

from pathlib import Path

import pulumi
import pytest
import yaml

from unde_infra.errors import TopologyError
from unde_infra.offline import Record, run_program, unwrap_secrets
from unde_infra.preview import StackResult
from unde_infra.provider_schema import import_facts, planned_differences, replacement_causes, replacing_properties
from unde_infra.render.delivery import marker_path, write_file
from unde_infra.render.escape import shell_word

ROOT = Path(__file__).resolve().parents[2]

SERVER = "hcloud:index/server:Server"
REPLACE_FORCING = replacing_properties(SERVER)
STATEFUL_URNS = Path(__file__).with_name("stateful_server_urns.txt")


def servers(result: StackResult) -> dict[str, Record]:
    return {r.name: r for r in result.run.records if r.type == SERVER}


def by_urn(result: StackResult) -> dict[str, Record]:
    return {r.urn: r for r in result.run.records}


def plain(value):  # the recorded inputs keep secrets wrapped; these tests read plain values
    from unde_infra.offline import unwrap_secrets

    return unwrap_secrets(value)


def test_helsinki_declares_every_helsinki_server(run_stack, inventory) -> None:
    result = run_stack("helsinki")
    found = servers(result)
    expected = {s.name for s in inventory.stack_servers("helsinki") if s.dedicated is None}
    assert set(found) == expected
    for name, record in found.items():
        server = inventory.server(name)
        inputs = plain(record.inputs)
        assert inputs["serverType"] == server.hcloud_type
        assert inputs["location"] == ("fsn1" if server.site == "witness" else "hel1")
        assert inputs["labels"] == server.labels
        assert inputs["networks"][0]["ip"] == str(server.ip)
        assert isinstance(inputs["networks"][0]["networkId"], float | int)  # an integer id, not a string
        assert inputs["publicNets"][0]["ipv4Enabled"] is server.public_ipv4
    dedicated = [r for r in result.run.records if r.type == "unde:helsinki:DedicatedHost"]
    assert [r.name for r in dedicated] == ["production-db"]


def test_existing_servers_are_adopted_never_created(run_stack, inventory) -> None:
    ids = {s.name: str(1000 + i) for i, s in enumerate(inventory.stack_servers("helsinki")) if s.existing and not s.dedicated}
    result = run_stack("helsinki", importIds=ids)
    assert result.run.stand_ins == []
    for name, record in servers(result).items():
        server = inventory.server(name)
        if server.existing:
            assert record.import_id == ids[name]
            assert record.protect is True
            assert REPLACE_FORCING | {"publicNets"} <= set(record.ignore_changes)
            assert record.id == ids[name]
            inputs = plain(record.inputs)
            assert inputs["deleteProtection"] is True and inputs["rebuildProtection"] is True
        else:
            assert record.import_id is None
            assert record.id is not None and record.id.isdigit()  # numeric hcloud ids


def test_a_real_run_without_import_ids_stops_before_creating_anything(fresh_event_loop, real_run_ready) -> None:
    config = real_run_ready("helsinki", importIds={"scraper": "4711"})
    del config["telegramChatId"]
    with pytest.raises(pulumi.RunError) as caught:
        run_program("helsinki", config)
    cause = caught.value.__cause__
    assert isinstance(cause, TopologyError)
    lines = [str(p) for p in cause.problems]
    assert any(line.startswith("importIds.helsinki-gw: helsinki-gw runs already, so it is adopted") for line in lines)
    assert not any(line.startswith("importIds.scraper") for line in lines)
    import_lines = [line for line in lines if line.startswith("importIds.")]
    assert len(import_lines) == 14  # 15 adopted cloud servers, one of which has its id
    # No Telegram chat: a real run stops on that too, in the same report, and on nothing else.
    assert [line for line in lines if not line.startswith("importIds.")] == [
        next(line for line in lines if line.startswith("telegramChatId: "))]


def test_the_ready_config_runs_as_the_cli_runs_it(fresh_event_loop, real_run_ready) -> None:
    """With every blocker resolved the program runs outside the preview's reporting too (the
    check of the test above is not what stops every run)."""
    run = run_program("helsinki", real_run_ready("helsinki"))
    assert sum(r.type == SERVER for r in run.records) == 19


def test_every_server_has_a_component_parent(run_stack) -> None:
    for stack in ("helsinki", "local"):
        result = run_stack(stack)
        records = by_urn(result)
        for record in servers(result).values():
            parent = records[record.parent]  # type: ignore[index]
            assert not parent.custom and parent.type.startswith("unde:"), record.urn


def test_local_stack_on_hcloud(run_stack, inventory) -> None:
    result = run_stack("local")
    found = servers(result)
    assert set(found) == {s.name for s in inventory.stack_servers("local")}
    types = {name: plain(r.inputs)["serverType"] for name, r in found.items()}
    assert types["local-shard-0"] == "cpx62"  # 16 vCPU / 32 GB in Singapore, within the local limit
    assert types["local-orchestrator"] == "cpx42"
    assert types["local-etcd-1"] == "cpx12"
    assert types["shard-replica-0"] == "ccx23"
    assert plain(found["shard-replica-0"].inputs)["location"] == "hel1"
    assert plain(found["local-app"].inputs)["location"] == "sin"
    # The replica joins the Helsinki network, whose id comes from the helsinki stack.
    replica_network = plain(found["shard-replica-0"].inputs)["networks"][0]["networkId"]
    assert int(replica_network) == 10000001  # config/offline-stack-outputs.yaml
    pairs = [r for r in result.run.records if r.type == "unde:local:ShardPair"]
    assert [r.name for r in pairs] == ["shard0"]
    children = [r.name for r in result.run.records if r.parent == pairs[0].urn]
    assert {"local-shard-0", "shard-replica-0"} <= set(children)


def test_local_stack_on_existing_hosts(run_stack, inventory) -> None:
    hosts = {s.name: {"address": f"192.0.2.{10 + i}", "user": "admin"} for i, s in enumerate(inventory.site_servers("local"))}
    result = run_stack("local", provider="existing", hosts=hosts)
    found = servers(result)
    assert set(found) == {"shard-replica-0"}  # the replica stays on hcloud in Helsinki
    bootstraps = {r.name: plain(r.inputs) for r in result.run.records if r.name.endswith("-bootstrap")}
    assert set(bootstraps) == {f"{s.name}-bootstrap" for s in inventory.site_servers("local")}
    app = bootstraps["local-app-bootstrap"]
    assert app["connection"]["host"] == "192.0.2.10" and app["connection"]["user"] == "admin"
    assert app["stdin"].startswith("#cloud-config\n")
    assert app["triggers"] == [app["stdin"]]
    assert result.artifacts["local-app"]["user-data.yaml"] == app["stdin"]
    # A login that is not root runs every step through sudo; the file keeps its mode and owner.
    (wg,) = [r for r in result.run.records if r.name == "local-app:/etc/wireguard/wg-app.conf"]
    written = write_file("/etc/wireguard/wg-app.conf", "0600", "root", "root", marker_path("unde.network.WireGuardPeer.apply"))
    assert plain(wg.inputs)["create"] == f"sudo -n bash -c {shell_word(written)}"
    assert app["create"].startswith("sudo -n bash -c 'set -eu; install -d -m 0755 /var/lib/cloud/seed/nocloud;")


def test_existing_hosts_need_an_address_each(fresh_event_loop) -> None:
    from unde_infra.errors import PreviewInputError
    from unde_infra.preview import prepare

    with pytest.raises(PreviewInputError) as caught:
        prepare(["local"], None, None, config_overrides={"provider": "existing", "hosts": {}})
    assert "hosts.local-app: provider existing: give this server's address" in str(caught.value)


@pytest.mark.xdist_group("sixteen-shards")  # the session's 16-shard runs, on one worker
def test_sixteen_shards_make_sixteen_pairs(run_stack) -> None:
    result = run_stack("local", shards=16)
    pairs = [r for r in result.run.records if r.type == "unde:local:ShardPair"]
    assert len(pairs) == 16
    found = servers(result)
    assert {plain(found[f"shard-replica-{n}"].inputs)["serverType"] for n in range(16)} == {"ccx33"}
    addresses = [plain(r.inputs)["networks"][0]["ip"] for r in found.values()]
    assert len(addresses) == len(set(addresses))


def test_stateful_servers_keep_their_urns(run_stack) -> None:
    """A stateful server whose URN changes would be deleted and created again. If a refactor
    moves one, add an alias and update stateful_server_urns.txt in the same change."""
    urns = []
    for stack in ("helsinki", "local"):
        result = run_stack(stack)
        for record in servers(result).values():
            if record.protect:
                urns.append(record.urn)
                assert REPLACE_FORCING <= set(record.ignore_changes), record.urn
    expected = [line for line in STATEFUL_URNS.read_text().splitlines() if line and not line.startswith("#")]
    assert sorted(urns) == sorted(expected)


def test_remote_commands_log_in_with_the_configured_key(run_stack) -> None:
    result = run_stack("helsinki", sshPrivateKey={"secure": "v1:abc"})
    (command,) = [r for r in result.run.records if r.name == "staging-db:/etc/unde/server.env"]
    exported = command.export()["inputs"]["connection"]
    assert exported == "[secret]"  # the key makes the whole connection secret
    connection = plain(command.inputs)["connection"]
    assert connection["host"] == "10.1.0.8" and connection["user"] == "root"
    assert connection["proxy"]["host"] == "46.62.233.30"  # private servers through helsinki-gw
    assert connection["privateKey"] == connection["proxy"]["privateKey"] == "offline-placeholder-sshPrivateKey"
    assert plain(command.inputs)["create"] == write_file(
        "/etc/unde/server.env", "0644", "root", "root", marker_path("unde.helsinki.BatchHost.base")
    )


def test_the_adoption_run_leaves_the_existing_servers_as_they_are(run_stack) -> None:
    first = run_stack("helsinki", adopting=True)
    later = run_stack("helsinki")
    for name in ("helsinki-gw", "staging-db"):
        adopting, managed = servers(first)[name], servers(later)[name]
        assert {"labels", "serverType", "deleteProtection", "networks"} <= set(adopting.ignore_changes)
        assert not {"labels", "deleteProtection", "networks"} & set(managed.ignore_changes)
        assert "serverType" in managed.ignore_changes  # an adopted server's type: only with resize: true
        assert adopting.import_id == managed.import_id is not None
    # Servers to create are not affected by the adoption run.
    assert "labels" not in servers(first)["posthog"].ignore_changes


@pytest.mark.parametrize(
    ("stack", "change"),
    [
        ("helsinki", {"sshKeys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4 other"]}),
        ("local", {"shards": 4}),
        ("local", {"location": "sin", "sshKeys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4 other"]}),
    ],
)
def test_a_change_never_touches_what_would_replace_a_stateful_server(run_stack, stack, change) -> None:
    """Between two runs that differ by an everyday change (a new admin key, more shards), every
    input of a protected server that changes is one the provider applies in place, or one the
    program tells it to ignore: nothing that would replace the server."""
    shards = change.pop("shards", None)
    before = servers(run_stack(stack))
    after = servers(run_stack(stack, shards=shards, **change))
    protected = [name for name, record in before.items() if record.protect]
    assert protected
    for name in protected:
        old, new = plain(before[name].inputs), plain(after[name].inputs)
        changed = {key for key in old.keys() | new.keys() if old.get(key) != new.get(key)}
        assert before[name].urn == after[name].urn
        assert changed & REPLACE_FORCING <= set(after[name].ignore_changes), (name, changed)
    if "sshKeys" in change:
        # The new key really changes the bootstrap: ignored, so no server is replaced for it.
        assert any(plain(before[n].inputs)["userData"] != plain(after[n].inputs)["userData"] for n in protected)


def test_the_admin_keys_are_uploaded_once_per_hetzner_project(run_stack) -> None:
    """Hetzner refuses a second copy of a key in one project (uniqueness_error): the helsinki
    stack owns the keys, the local stack's servers use their ids from its outputs."""
    helsinki = run_stack("helsinki")
    keys = [r for r in helsinki.run.records if r.type == "hcloud:index/sshKey:SshKey"]
    assert len(keys) == 1 and keys[0].import_id is None
    exported = helsinki.run.plain_outputs()["sshKeyIds"]
    assert exported == [keys[0].id]
    assert all(unwrap_secrets(s.inputs)["sshKeys"] == exported for s in servers(helsinki).values())
    local = run_stack("local")
    assert not [r for r in local.run.records if r.type == "hcloud:index/sshKey:SshKey"]
    offline_ids = yaml.safe_load((ROOT / "config" / "offline-stack-outputs.yaml").read_text())["helsinki"]["sshKeyIds"]
    assert all(unwrap_secrets(s.inputs)["sshKeys"] == offline_ids for s in servers(local).values())


def test_a_key_uploaded_before_is_adopted_by_its_id(run_stack) -> None:
    result = run_stack("helsinki", sshKeyImportIds={"0": "4711"})
    (key,) = [r for r in result.run.records if r.type == "hcloud:index/sshKey:SshKey"]
    assert key.import_id == "4711" and key.id == "4711"
    assert set(key.ignore_changes) == {"name", "labels"}
    assert all(unwrap_secrets(s.inputs)["sshKeys"] == ["4711"] for s in servers(result).values())


def _live_project(inventory, config: dict) -> tuple[dict, dict]:
    """A realistic Hetzner project as it runs today, before the program touched it: the network
    already widened (change_ip_range), no labels, no protection, the servers with their own names
    and types. Returns the stack config that adopts it (from `config`, ready for a real run) and
    the live state the mocks check against."""
    existing = [s for s in inventory.stack_servers("helsinki") if s.existing and s.dedicated is None]
    ids = {s.name: str(5000 + i) for i, s in enumerate(existing, 1)}
    config = dict(config)
    config.update(importIds=ids, telegramChatId=-1001234567890, sshKeyImportIds={"0": "4711"},
                  networkImport={"id": 4242, "subnets": ["10.1.0.0/24", "10.1.1.0/24"]})
    # The admin key, uploaded by hand under another name (`hcloud ssh-key list`).
    live = {("hcloud:index/sshKey:SshKey", "4711"): {"name": "admin@laptop", "publicKey": config["sshKeys"][0],
                                                     "labels": {}}}
    live[("hcloud:index/network:Network", "4242")] = {
        "name": "unde-net", "ipRange": "10.0.0.0/14", "labels": {}, "deleteProtection": False,
        "exposeRoutesToVswitch": False}
    live[("hcloud:index/networkSubnet:NetworkSubnet", "4242-10.1.0.0/24")] = {
        "networkId": 4242, "type": "cloud", "networkZone": "eu-central", "ipRange": "10.1.0.0/24"}
    # production-db's vSwitch subnet (the dedicated server joins the cloud network through it).
    live[("hcloud:index/networkSubnet:NetworkSubnet", "4242-10.1.1.0/24")] = {
        "networkId": 4242, "type": "vswitch", "networkZone": "eu-central", "ipRange": "10.1.1.0/24",
        "vswitchId": int(config["vswitchId"])}
    for i, server in enumerate(existing):
        # What the provider's Read sets on import (import-facts.yaml): no networks, public nets,
        # keepDisk and the other inputs it never reads. One server has Hetzner backups on, one a
        # firewall made by hand, one sits in a spread placement group made by hand; an official
        # image reads back by name.
        live[("hcloud:index/server:Server", ids[server.name])] = {
            "name": server.name, "serverType": "cx22", "location": "hel1", "image": "ubuntu-22.04", "labels": {},
            "deleteProtection": False, "rebuildProtection": False, "backups": i == 0,
            "firewallIds": [777] if i == 1 else [], "placementGroupId": 888 if i == 2 else None,
            "status": "running"}
    return config, live


def test_the_adoption_run_imports_a_live_project_and_a_plain_run_would_not(fresh_event_loop, inventory, real_run_ready) -> None:
    config, live = _live_project(inventory, real_run_ready("helsinki"))
    run = run_program("helsinki", {**config, "adopting": True}, live_state=live)
    imported = {(r.type, r.import_id) for r in run.records if r.import_id}
    assert imported == set(live)  # the key, the network, its two subnets and every adopted cloud server
    # Without the adoption run every difference is an import failure, as `pulumi up` reports it.
    with pytest.raises(Exception, match="inputs to import do not match") as caught:
        run_program("helsinki", config, live_state=live)
    assert "labels" in str(caught.value) or "deleteProtection" in str(caught.value)
    # Read leaves keepDisk unset while Check defaults it: an import differs on it.
    assert "keepDisk: program False, live None" in str(caught.value)


def test_an_adoption_run_that_sent_the_defaulted_fields_would_be_refused(fresh_event_loop, inventory, real_run_ready,
                                                                         monkeypatch) -> None:
    import components.hosts

    config, live = _live_project(inventory, real_run_ready("helsinki"))
    defaulted = {"keepDisk", "shutdownBeforeDeletion", "ignoreRemoteFirewallIds"}
    monkeypatch.setattr(components.hosts, "ADOPTION_RUN_FIELDS",
                        [f for f in components.hosts.ADOPTION_RUN_FIELDS if f not in defaulted])
    with pytest.raises(Exception, match="inputs to import do not match") as caught:
        run_program("helsinki", {**config, "adopting": True}, live_state=live)
    assert "shutdownBeforeDeletion: program False, live None" in str(caught.value)


def test_an_uploaded_key_that_differs_from_the_config_is_refused(fresh_event_loop, inventory, real_run_ready) -> None:
    """A key's text forces a new key (RequiresReplace): an import of a different text fails, and
    a replacement would collide with the uploaded copy (uniqueness_error)."""
    config, live = _live_project(inventory, real_run_ready("helsinki"))
    live[("hcloud:index/sshKey:SshKey", "4711")]["publicKey"] = config["sshKeys"][0].replace("admin@unde", "old@laptop")
    with pytest.raises(Exception, match="sshKey:SshKey::admin-0: inputs to import do not match") as caught:
        run_program("helsinki", {**config, "adopting": True}, live_state=live)
    assert "publicKey: program" in str(caught.value)
    assert replacing_properties("hcloud:index/sshKey:SshKey") == {"publicKey"}


def test_the_live_servers_hold_only_what_the_provider_reads(inventory, real_run_ready) -> None:
    _, live = _live_project(inventory, real_run_ready("helsinki"))
    not_read = import_facts(SERVER).not_read
    assert {"keepDisk", "shutdownBeforeDeletion", "ignoreRemoteFirewallIds", "networks", "publicNets"} <= not_read
    for (kind, _), state in live.items():
        if kind == SERVER:
            assert not not_read & state.keys()


def test_the_run_after_the_adoption_updates_in_place_and_keeps_what_it_must(fresh_event_loop, inventory, real_run_ready) -> None:
    """After the adoption run the state is what the provider read; the next run (adopting off)
    plans an update of each server from it: no replacement, no resize, no change to backups or
    hand-made firewalls or placement groups; labels, protection, networks and the defaulted
    fields converge."""
    config, live = _live_project(inventory, real_run_ready("helsinki"))
    run = run_program("helsinki", config)  # no live state: nothing is imported in this run
    ids = {v: k for k, v in config["importIds"].items()}
    converging = {"labels", "deleteProtection", "rebuildProtection", "networks", "keepDisk", "shutdownBeforeDeletion",
                  "ignoreRemoteFirewallIds"}
    for record in run.records:
        if record.type != SERVER or record.import_id not in ids:
            continue
        state = live[(SERVER, record.import_id)]
        inputs = unwrap_secrets(record.inputs)
        changes = planned_differences(SERVER, inputs, state, record.ignore_changes)
        assert replacement_causes(SERVER, state, inputs, record.ignore_changes) == [], record.name
        assert set(changes) == converging, (record.name, changes)
        assert changes["keepDisk"] == (False, None)
        # Without the ignore list the image alone would replace every adopted server, and the
        # one in a placement group would be taken out of it.
        assert "image" in replacement_causes(SERVER, state, inputs)
        if state["placementGroupId"] is not None:
            assert "placementGroupId" in planned_differences(SERVER, inputs, state)


def test_a_network_at_its_old_range_is_widened_before_the_import(fresh_event_loop, inventory, real_run_ready) -> None:
    config, _ = _live_project(inventory, real_run_ready("helsinki"))
    config["networkImport"] = {**config["networkImport"], "currentRange": "10.1.0.0/16"}
    with pytest.raises(pulumi.RunError) as caught:
        run_program("helsinki", config)
    lines = [str(p) for p in caught.value.__cause__.problems]  # type: ignore[union-attr]
    assert any(line.startswith("networkImport.currentRange: the network is at 10.1.0.0/16") and
               "hcloud network change-ip-range --ip-range 10.0.0.0/14 4242" in line for line in lines), lines
