"""Stack settings are checked like the topology: every problem at once, `path: message`."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Network

import pytest

from unde_infra.errors import Problems
from unde_infra.model import load_topology
from unde_infra.readiness import blockers
from unde_infra.settings import check_against_inventory, entry_settings_missing, parse_settings

# The settings these tests are about, among all blockers of a real run.
NAMED = ("telegramChatId", "dnsZone", "entryDomain", "acmeEmail")


def named(found) -> list[str]:
    return [b.path for b in found if b.path in NAMED]


def test_every_bad_setting_is_reported() -> None:
    problems = Problems()
    parse_settings(
        "helsinki",
        {
            "shards": 0,
            "importIds": {"scraper": "abc"},
            "adminCidrs": ["not-a-cidr"],
            "provider": "aws",
            "vswitchId": "x1",
            "networkImport": {"id": "n1", "currentRange": "10.1.0.0/33"},
            "colour": "red",
        },
        problems,
    )
    assert [str(p) for p in problems.items] == [
        "colour: unknown setting (known: acmeEmail, adminCidrs, adopting, dnsApiToken, dnsZone, dnsZoneImport, entryDomain, entryHostname, "
        "heartbeatUrl, helsinkiStack, hosts, importIds, location, "
        "networkImport, objectStorageAccessKey, objectStorageSecretKey, posthogApiKey, provider, routerosPrivateInterface, "
        "routerosUser, shards, site, slackChannel, slackWebhookUrl, sshKeyImportIds, sshKeys, sshPrivateKey, telegramBotToken, "
        "telegramChatId, topology, vswitchId)",
        "adminCidrs[0]: 'not-a-cidr' is not a CIDR (an IPv4 or IPv6 network)",
        "networkImport.id: hcloud network ids are numbers (got 'n1')",
        "networkImport.currentRange: '10.1.0.0/33' is not an IPv4 network (CIDR)",
        "shards: the shard count is a whole number from 1 to 1024 (got 0)",
        "importIds.scraper: hcloud server ids are numbers (got 'abc')",
        "vswitchId: Robot vSwitch ids are numbers (got 'x1')",
        "provider: unknown provider 'aws' (known: hcloud, existing)",
    ]


def test_settings_against_the_inventory() -> None:
    problems = Problems()
    settings = parse_settings(
        "helsinki",
        {"importIds": {"nope": "1"}, "networkImport": {"id": 7, "subnets": ["10.9.0.0/24"]}, "sshKeys": []},
        problems,
    )
    assert not problems
    check_against_inventory(settings, load_topology(), problems)
    lines = [str(p) for p in problems.items]
    assert "networkImport.subnets: 10.9.0.0/24 is not a subnet of the topology's network" in lines
    assert "vswitchId: production-db joins through a Robot vSwitch: set its id" in lines
    assert "sshKeys: at least one admin SSH public key" in lines
    # A missing import id is no inconsistency: a real run's blocker (the preview stands one in).
    assert not any(line.startswith("importIds.") for line in lines)
    assert sum(b.path.startswith("importIds.") and "runs already" in b.message
               for b in blockers(settings, load_topology())) == 15
    assert settings.existing_subnets == (IPv4Network("10.9.0.0/24"),)


def test_a_real_run_of_the_monitoring_stack_needs_the_telegram_chat() -> None:
    inventory = load_topology()
    base = {"site": "helsinki", "sshKeys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG1ho4d0mZ2fJ9Fp3XhXqA5U2n0S2gk2U0m8Q5xS8Z2F admin"],
            "adminCidrs": ["198.51.100.0/24"],
            "vswitchId": 1, "importIds": {s.name: "1" for s in inventory.stack_servers("helsinki") if s.existing}}
    for chat, expected in ((None, ["telegramChatId"]), (-1001234567890, [])):
        raw = dict(base) if chat is None else {**base, "telegramChatId": chat}
        problems = Problems()
        settings = parse_settings("helsinki", raw, problems)
        check_against_inventory(settings, inventory, problems)
        assert not problems, [str(p) for p in problems.items]
        assert named(blockers(settings, inventory)) == expected
    # The local stack renders the second alert path's Alertmanager: the same chat, set there too.
    for chat, wanted in ((None, True), (-1001234567890, False)):
        problems = Problems()
        raw = {"site": "local", "sshKeys": base["sshKeys"], "adminCidrs": base["adminCidrs"],
               **({"telegramChatId": chat} if chat else {})}
        local = parse_settings("local", raw, problems)
        check_against_inventory(local, inventory, problems)
        assert ("telegramChatId" in named(blockers(local, inventory))) == wanted


@pytest.mark.parametrize(
    ("domain", "ok"),
    [("api.unde.example", True), ("API.Unde.Example", True), ("a-b.c1.example", True), ("xn--80ak6aa92e.com", True),
     ("localhost", False), ("api..example", False), ("-api.example", False), ("api-.example", False),
     ("10.2.0.2", False), ("api.example.", False), ("api example.com", False), ("api.example.com;evil", False),
     ("a" * 64 + ".example", False), ("*.example.com", False)],
)
def test_entry_domain_must_be_a_dns_name(domain: str, ok: bool) -> None:
    problems = Problems()
    settings = parse_settings("local", {"site": "local", "entryDomain": domain}, problems)
    assert (settings.entry_domain == domain.lower()) is ok
    assert [p.path for p in problems.items] == ([] if ok else ["entryDomain"])


@pytest.mark.parametrize(
    ("email", "ok"),
    [("ops@unde.example", True), ("ops+acme@unde.example", True), ("ops", False), ("@unde.example", False),
     ("ops@localhost", False), ("ops@unde.example\nbcc: x", False), ("o ps@unde.example", False)],
)
def test_acme_email_must_be_an_address(email: str, ok: bool) -> None:
    problems = Problems()
    settings = parse_settings("local", {"site": "local", "acmeEmail": email}, problems)
    assert (settings.acme_email == email) is ok
    assert [p.path for p in problems.items] == ([] if ok else ["acmeEmail"])


def test_a_real_run_of_the_local_stack_needs_the_entry_domain_and_the_acme_account() -> None:
    """The entry's name is the entry record's (dnsZone, entryHostname) when the stack manages the
    entry's DNS, which it does while the topology has a standby entry; without one, entryDomain."""
    inventory = load_topology()
    keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG1ho4d0mZ2fJ9Fp3XhXqA5U2n0S2gk2U0m8Q5xS8Z2F admin"]
    zone = {"dnsZone": "unde.example"}
    for extra, expected in (({}, ["dnsZone", "acmeEmail"]), (zone, ["acmeEmail"]),
                            ({**zone, "acmeEmail": "ops@unde.example"}, []),
                            ({**zone, "entryHostname": "@", "acmeEmail": "ops@unde.example"}, []),
                            ({**zone, "entryDomain": "www.unde.example", "acmeEmail": "ops@unde.example"},
                             ["entryDomain"])):
        problems = Problems()
        # telegramChatId: the second alert path's, asked for on its own (above).
        settings = parse_settings("local", {"site": "local", "sshKeys": keys, "adminCidrs": ["198.51.100.0/24"],
                                            "telegramChatId": -100123, **extra}, problems)
        check_against_inventory(settings, inventory, problems)
        assert [p.path for p in problems.items] + named(blockers(settings, inventory)) == expected
        if "dnsZone" in extra:
            assert settings.entry_domain == ("unde.example" if extra.get("entryHostname") == "@" else "api.unde.example")
    # A copy: load_topology's cache hands every caller the same inventory.
    without_standby = dataclasses.replace(
        inventory, servers={n: s for n, s in inventory.servers.items() if not n.startswith("standby-")})
    for extra, expected in (({}, ["entryDomain", "acmeEmail"]), ({"entryDomain": "api.unde.example"}, ["acmeEmail"])):
        problems = Problems()
        settings = parse_settings("local", {"site": "local", "sshKeys": keys, "adminCidrs": ["198.51.100.0/24"],
                                            "telegramChatId": -100123, **extra}, problems)
        check_against_inventory(settings, without_standby, problems)
        assert [p.path for p in problems.items] + named(blockers(settings, without_standby)) == expected
    # The helsinki stack has no entry point: neither is asked for there.
    assert entry_settings_missing(parse_settings("helsinki", {"site": "helsinki"}, Problems()), inventory) == {}


def test_an_entry_domain_without_the_zone_is_refused_where_the_stack_manages_the_entrys_dns() -> None:
    """The shipped Pulumi.local.yaml once said `pulumi config set entryDomain api.example.com`: the
    offline run took it, and the real run, with dnsZone set, refused it. With a standby entry the
    name is the record's, so entryDomain without dnsZone is refused at once."""
    inventory = load_topology()
    problems = Problems()
    settings = parse_settings("local", {"site": "local", "entryDomain": "api.example.com"}, problems)
    check_against_inventory(settings, inventory, problems)
    assert [(p.path, p.message.split(":")[0]) for p in problems.items if p.path == "entryDomain"] == \
        [("entryDomain", "the stack manages the entry's DNS (the topology has a standby entry), so the entry's name "
                         "is its record's, entryHostname in dnsZone")]
