"""The first run blocks no traffic by surprise: what a running server serves publicly today
(servers.<name>.inbound) stays open, unless the topology closes it on purpose."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from unde_infra import cli
from unde_infra.errors import TopologyError
from unde_infra.model import DEFAULT_TOPOLOGY, load_topology
from unde_infra.offline import unwrap_secrets
from unde_infra.preview import summary

FIREWALL = "hcloud:index/firewall:Firewall"
ATTACHMENT = "hcloud:index/firewallAttachment:FirewallAttachment"
SERVER = "hcloud:index/server:Server"
WEBHOOKS = {"port": 443, "reason": "webhook receiver"}


def topology_with(tmp_path: Path, **inbound: list[dict]) -> Path:
    data = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    for name, entries in inbound.items():
        data["servers"][name]["inbound"] = entries
    path = tmp_path / "topology.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def firewalls_of(result) -> dict[str, dict]:
    return {r.name: unwrap_secrets(r.inputs) for r in result.run.records if r.type == FIREWALL}


def attached_servers(result, firewall: str) -> list[int]:
    (attachment,) = [r for r in result.run.records if r.type == ATTACHMENT and r.name == firewall]
    return sorted(int(i) for i in unwrap_secrets(attachment.inputs)["serverIds"])


def server_id(result, name: str) -> int:
    (server,) = [r for r in result.run.records if r.type == SERVER and r.name == name]
    return int(server.id)


def test_declared_inbound_stays_open_on_that_server(run_stack, tmp_path) -> None:
    result = run_stack("helsinki", topology=topology_with(tmp_path, scraper=[WEBHOOKS]))
    rules = firewalls_of(result)["unde-scraper-inbound"]["rules"]
    assert rules == [{"direction": "in", "protocol": "tcp", "port": "443", "sourceIps": ["0.0.0.0/0", "::/0"],
                      "description": "served today: webhook receiver"}]
    assert attached_servers(result, "unde-scraper-inbound") == [server_id(result, "scraper")]
    # Nothing is blocked, and HTTPS on a server that is no entry point is no violation when it
    # is what that server serves today.
    assert result.blocked == []
    assert result.mandatory_violations == []
    assert "public traffic the new firewalls block" not in summary(result)
    # The 13 other running servers with a public interface say nothing: a real run waits for them.
    silent = [b.path for b in result.blockers if b.path.endswith(".inbound")]
    assert len(silent) == 13 and "topology: servers.scraper.inbound" not in silent
    (line,) = [line for line in summary(result).splitlines() if "servers.<name>.inbound" in line]
    assert "running servers that do not say what they serve publicly: 13 (" in line
    assert "helsinki-gw" in line and "scraper" not in line


def test_an_entry_the_base_firewall_allows_gets_no_rule_of_its_own(run_stack, tmp_path) -> None:
    result = run_stack("helsinki", topology=topology_with(
        tmp_path, scraper=[{"protocol": "icmp", "reason": "monitoring pings"}]))
    assert "unde-scraper-inbound" not in firewalls_of(result)
    assert result.blocked == [] and result.mandatory_violations == []


def test_an_acknowledged_entry_is_closed_and_listed(run_stack, tmp_path) -> None:
    result = run_stack("helsinki", topology=topology_with(tmp_path, scraper=[{**WEBHOOKS, "close": True}]))
    assert "unde-scraper-inbound" not in firewalls_of(result)
    scraper = server_id(result, "scraper")
    assert not any(r.get("port") == "443" for name, f in firewalls_of(result).items()
                   if scraper in attached_servers(result, name) for r in f["rules"])
    assert [(s.name, e.port) for s, e in result.blocked] == [("scraper", "443")]
    assert result.mandatory_violations == []
    assert ("    scraper: tcp 443 from 0.0.0.0/0, ::/0 (webhook receiver): closed on purpose (close: true)"
            in summary(result).splitlines())


def test_blocked_without_acknowledgement_fails_the_policy(run_stack, tmp_path, capsys) -> None:
    """SSH served to the whole internet today cannot stay open (SSH only from the admin CIDRs):
    the first run would block it, so the topology has to say so."""
    ssh = {"port": 22, "reason": "ssh for the scraping contractor"}
    topology = topology_with(tmp_path, scraper=[ssh])
    result = run_stack("helsinki", topology=topology)
    assert "unde-scraper-inbound" not in firewalls_of(result)
    (violation,) = result.mandatory_violations
    assert violation.policy == "no-surprise-blocking"
    assert violation.urn.endswith("hcloud:index/server:Server::scraper")
    assert "close: true at servers.scraper.inbound.0" in violation.message
    assert "NOT acknowledged" in summary(result)
    code = cli.main(["preview", "--stack", "helsinki", "--topology", str(topology), "--out", str(tmp_path / "out")])
    assert code == 1
    # Acknowledged, the same change passes.
    acknowledged = topology_with(tmp_path, scraper=[{**ssh, "close": True}])
    assert cli.main(["preview", "--stack", "helsinki", "--topology", str(acknowledged),
                     "--out", str(tmp_path / "out2")]) == 0
    assert "scraper: tcp 22 from 0.0.0.0/0, ::/0 (ssh for the scraping contractor): closed on purpose" in \
        capsys.readouterr().out


def test_the_policy_checks_the_firewalls_themselves(run_stack, tmp_path, monkeypatch) -> None:
    """A program whose firewalls lose a declared entry (here: the per-server firewall is never
    made) fails the policy, whatever the plan says."""
    import unde_infra.firewall

    monkeypatch.setattr(unde_infra.firewall, "_is_ssh", lambda entry: True)  # keeps nothing
    result = run_stack("helsinki", topology=topology_with(tmp_path, scraper=[WEBHOOKS]))
    assert "unde-scraper-inbound" not in firewalls_of(result)
    assert [v.policy for v in result.mandatory_violations] == ["no-surprise-blocking"]


def test_a_wider_rule_than_declared_is_still_public_ingress(run_stack, tmp_path, monkeypatch) -> None:
    """The public-ingress rule lets through only what the server declares, not a wider port."""
    import unde_infra.firewall

    real = unde_infra.firewall.Rule

    def widened(protocol, port, sources, description):  # noqa: ANN001, ANN202
        return real(protocol, "400-500" if description.startswith("served today") else port, sources, description)

    monkeypatch.setattr(unde_infra.firewall, "Rule", widened)
    result = run_stack("helsinki", topology=topology_with(tmp_path, scraper=[WEBHOOKS]))
    messages = [v.message for v in result.mandatory_violations if v.policy == "public-ingress"]
    assert messages == ["unde-scraper-inbound: tcp 400-500 open to the internet"]


@pytest.mark.parametrize(
    ("entry", "path", "message"),
    [
        ({"port": 70000, "reason": "x"}, "servers.scraper.inbound.0.port", "ports are 1-65535"),
        ({"port": "443-80", "reason": "x"}, "servers.scraper.inbound.0.port", "ports are 1-65535"),
        ({"port": "https", "reason": "x"}, "servers.scraper.inbound.0.port", "a port (443) or a range"),
        ({"port": 53, "protocol": "sctp", "reason": "x"}, "servers.scraper.inbound.0.protocol", "'tcp', 'udp' or 'icmp'"),
        ({"protocol": "icmp", "port": 8, "reason": "x"}, "servers.scraper.inbound.0", "icmp has no port"),
        ({"protocol": "udp", "reason": "x"}, "servers.scraper.inbound.0", "udp needs a port"),
        ({"port": 443, "sources": ["10.0.0.1/8"], "reason": "x"}, "servers.scraper.inbound.0.sources",
         "'10.0.0.1/8' is not a network in CIDR form"),
        ({"port": 443, "sources": [], "reason": "x"}, "servers.scraper.inbound.0.sources", "at least 1 item"),
        ({"port": 443}, "servers.scraper.inbound.0.reason", "required"),
        ({"port": 443, "reason": "x", "keep": True}, "servers.scraper.inbound.0.keep", "unknown key"),
    ],
)
def test_bad_inbound_entries_are_reported_with_their_path(tmp_path, entry, path, message) -> None:
    with pytest.raises(TopologyError) as caught:
        load_topology(topology_with(tmp_path, scraper=[entry]))
    lines = [str(p) for p in caught.value.problems]
    assert any(line.startswith(f"{path}: ") and message in line for line in lines), lines


def test_inbound_needs_a_public_interface_and_close_a_running_server(tmp_path) -> None:
    with pytest.raises(TopologyError) as caught:
        load_topology(topology_with(tmp_path, **{"staging-db": [WEBHOOKS], "posthog": [{**WEBHOOKS, "close": True}]}))
    lines = sorted(str(p) for p in caught.value.problems)
    assert lines == [
        "servers.posthog.inbound.0.close: only a server that runs today (existing: true) has traffic to close",
        "servers.staging-db.inbound: the server has no public interface behind an hcloud firewall",
    ]
