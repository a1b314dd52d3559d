"""The generated documentation (unde_infra/reference.py): docs/reference/ and the generated regions
of the pages are what the code makes now, every key is described next to its field, and what the
reference says of a key is what the program does."""

from __future__ import annotations

import re
from dataclasses import fields

import pytest

from policies.rules import PolicyFile
from unde_infra import reference
from unde_infra.capacity import Capacity
from unde_infra.errors import Problems
from unde_infra.pricing import Pricing
from unde_infra.schema import MAPPING_SECTIONS, RETIRED_SECTION, SECTIONS, ServerTypesFile, TopologyFile
from unde_infra.settings import (
    HOST_KEYS,
    KNOWN_KEYS,
    NETWORK_IMPORT_KEYS,
    SECRET_KEYS,
    SETTINGS,
    ExistingHost,
    StackSettings,
    parse_settings,
)
from unde_infra.stack_outputs import HelsinkiOutputs


def test_the_generated_documentation_is_what_the_code_makes_now() -> None:
    stale = reference.stale()
    report = "\n".join(f"{path.relative_to(reference.ROOT)}:\n  " + "\n  ".join(diff[:12]) for path, diff in stale)
    assert not stale, f"the generated documentation is stale: run `make docs`\n{report}"


@pytest.mark.parametrize("model", [TopologyFile, PolicyFile, Pricing, Capacity, ServerTypesFile, HelsinkiOutputs],
                         ids=lambda m: m.__name__)
def test_every_key_of_a_config_model_has_a_description(model: type) -> None:
    assert reference.missing_descriptions(model) == []


def test_every_stack_setting_has_a_kind_and_a_description() -> None:
    assert [key for key, s in SETTINGS.items() if not (s.kind and s.description)] == []


def test_the_stack_settings_keys_come_from_their_descriptions() -> None:
    assert "sshKeyImportIds" in KNOWN_KEYS and "hosts" in KNOWN_KEYS
    assert not any("." in key or ":" in key for key in KNOWN_KEYS)
    assert SECRET_KEYS == {"objectStorageAccessKey", "objectStorageSecretKey", "sshPrivateKey", "telegramBotToken",
                           "slackWebhookUrl", "heartbeatUrl", "posthogApiKey", "dnsApiToken"}
    assert HOST_KEYS == ("address", "user", "port", "eurMonth", "os")
    assert NETWORK_IMPORT_KEYS == ("id", "currentRange", "subnets")


def _attribute(key: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower()


@pytest.mark.parametrize("stack", ["helsinki", "local"])
def test_a_documented_default_is_what_the_program_takes(stack: str) -> None:
    problems = Problems()
    settings = parse_settings(stack, {}, problems)
    attributes = {f.name for f in fields(StackSettings)}
    checked = []
    for key, setting in SETTINGS.items():
        if setting.default is not None and _attribute(key) in attributes:
            assert str(getattr(settings, _attribute(key))).lower() == str(setting.default).lower(), key
            checked.append(key)
    assert {"topology", "adopting", "provider", "location", "helsinkiStack", "slackChannel", "routerosUser",
            "routerosPrivateInterface", "entryHostname"} <= set(checked)


def test_a_documented_default_of_an_existing_host_is_what_the_program_takes() -> None:
    host = ExistingHost("203.0.113.10")
    for key in HOST_KEYS:
        setting = SETTINGS[f"hosts.<name>.{key}"]
        if setting.default is not None:
            assert str(getattr(host, _attribute(key))) == str(setting.default), key


def test_the_topologys_sections_are_the_documented_model() -> None:
    assert set(TopologyFile.model_fields) == set(SECTIONS) | {"plan_version", RETIRED_SECTION}
    assert MAPPING_SECTIONS == {"sites", "tasks", "servers"}


def test_the_reference_shows_a_keys_type_default_and_allowed_values() -> None:
    page = reference.topology_page()
    assert ("| `shards.durability` | text | `async` | `async`, `sync` | How a commit is acknowledged"
            in page)
    assert "| `servers.<server>.tunnel.index` | whole number | required | 0 to 255 |" in page
    assert "| `servers.<server>.ip` | private IPv4 address (RFC 1918) | required |" in page
    assert "| `servers.<server>.inbound[].sources` | list of text | `[0.0.0.0/0, ::/0]` | at least 1 entry |" in page
    stack = reference.stack_config_page()
    assert "| `location` | hcloud location | local |  | `sin` | `fsn1`, `nbg1`, `hel1`, `ash`, `hil`, `sin` |" in stack
    assert "| `dnsApiToken` | hcloud API token | local | yes | none |" in stack


def test_the_help_pages_do_not_depend_on_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    narrow = reference.commands_page()
    monkeypatch.setenv("COLUMNS", "250")
    assert reference.commands_page() == narrow
    assert "## `unde-infra ops`" in narrow and "## `unde-infra validate`" in narrow


def test_a_generated_region_is_filled_and_an_unknown_one_refused() -> None:
    text = "a\n<!-- generated: data-flow (make docs) -->\nold\n<!-- end of generated: data-flow -->\nb\n"
    filled = reference.fill_regions(text, "page.md")
    assert filled.startswith("a\n<!-- generated: data-flow (make docs) -->\n```mermaid\nflowchart LR\n")
    assert filled.endswith("```\n<!-- end of generated: data-flow -->\nb\n")
    with pytest.raises(KeyError, match="page.md: no generated region 'nothing'"):
        reference.fill_regions(text.replace("data-flow", "nothing"), "page.md")


def test_the_timelines_are_the_scenarios_bounds() -> None:
    text = reference.failover_timelines()
    assert "writable again after 25 s, the routing entry follows: 29 s" in text
    assert "every client reaches Helsinki after 182 s" in text
    assert "  resolvers' cached answers expire (TTL 60 s) : 00:02:02, 00:03:02" in text
    assert "  demotes (2 s), acknowledged writes until here : 00:00:19, 00:00:21" in text


def test_the_data_flow_names_what_each_stack_builds() -> None:
    parts = {p.stack: p for p in reference.stack_parts()}
    assert parts["helsinki"].components[0] == "HelsinkiNetwork"
    assert "ShardPair" in parts["local"].components and "ShardPair" not in parts["helsinki"].components
    assert parts["local"].children["ShardPair"] == ("WireGuardPeer",)
    assert "patroni" in reference.renderer_modules() and "monitoring" in reference.renderer_modules()
