"""`unde-infra diff OLD NEW`: two real previews compared. The same commit gives an empty diff; a
protected network's range or an adopted server's location change is a replacement that fails the
diff (exit 3); an import is not, and a change to an ignored field is shown as ignored (why, and
what to do); a resize says it powers the server off, loudly for a stateful one; removing a server
changes no other resource's stand-in id, and ids show as names; added shards show their servers,
files and cost; files built from secrets never show their content. Every format starts with one
line per changed server and the cost."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import unde
from unde_infra.model import DEFAULT_TOPOLOGY
from unde_infra.pricing import load_pricing

NETWORK_URN = "urn:pulumi:helsinki::unde-infra::unde:network:HelsinkiNetwork$hcloud:index/network:Network::unde"
GATEWAY_URN = "urn:pulumi:helsinki::unde-infra::unde:helsinki:HelsinkiGateway$hcloud:index/server:Server::helsinki-gw"
SERVER = "hcloud:index/server:Server"
FIREWALL_ATTACHMENT = "hcloud:index/firewallAttachment:FirewallAttachment"
# Edits of the committed topology's text (its order kept): the Helsinki site moves to fsn1, which
# every server ignores; posthog (stateful, created by the program) and standby-api (stateless) get
# a larger type; so does scraper (adopted, no `resize: true`: ignored) and push (adopted, stateful,
# with `resize: true`).
EDITS = {
    "    location: hel1\n": "    location: fsn1\n",
    "task: posthog, type: ccx33,": "task: posthog, type: ccx43,",
    "task: standby-api, type: cx33,": "task: standby-api, type: cx43,",
    "task: scraper, type: cpx22,": "task: scraper, type: cpx32,",
    "task: batch-redis, type: cpx32,": "task: batch-redis, type: cpx42, resize: true,",
}


# The previews of the committed configuration are shared with test_cli.py (conftest).
pytestmark = pytest.mark.xdist_group("committed-previews")


@pytest.fixture(scope="module")
def previews(committed_previews, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("previews")
    wide = base / "topology-wide.yaml"
    data = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    data["network"]["ip_range"] = "10.0.0.0/13"  # the protected Helsinki network's range
    wide.write_text(yaml.safe_dump(data))
    text = DEFAULT_TOPOLOGY.read_text()
    edited = text
    for old, new in EDITS.items():
        assert edited.count(old) == 1, old
        edited = edited.replace(old, new)
    (base / "topology-edited.yaml").write_text(edited)
    scraper_line = next(line for line in text.splitlines(keepends=True) if line.startswith("  scraper:") and "site:" in line)
    (base / "topology-no-scraper.yaml").write_text(text.replace(scraper_line, ""))
    runs = {name: committed_previews(shared) for name, shared in (("a", "a"), ("b", "b"), ("two", "two-shards"))}
    for name, topology in (("wide", wide), ("edited", base / "topology-edited.yaml"),
                           ("no-scraper", base / "topology-no-scraper.yaml")):
        runs[name] = (unde("preview", "--stack", "all", "--out", str(base / name), "--topology", str(topology)), base / name)
    for name, (result, _) in runs.items():
        assert result.returncode == 0, f"preview {name}: {result.stderr}"
    return {name: out for name, (_, out) in runs.items()}


def edited_copy(source: Path, target: Path, stack: str, urn: str, edit) -> Path:  # type: ignore[no-untyped-def]
    shutil.copytree(source, target)
    path = target / stack / "resources.json"
    resources = json.loads(path.read_text())
    edit(next(r for r in resources if r["urn"] == urn))
    path.write_text(json.dumps(resources, indent=2))
    return target


def test_two_previews_of_one_commit_give_an_empty_diff(previews: dict[str, Path]) -> None:
    for fmt in ("text", "markdown", "json"):
        result = unde("diff", str(previews["a"]), str(previews["b"]), "--format", fmt)
        assert result.returncode == 0, result.stderr
        if fmt == "json":
            data = json.loads(result.stdout)
            assert data["empty"] and data["resources"] == [] and data["artifacts"] == []
            assert all(c["delta_eur"] == 0 for c in data["cost"])
        else:
            assert "no changes" in result.stdout.lower()


def test_widening_the_protected_network_is_a_replacement_that_fails(previews: dict[str, Path]) -> None:
    result = unde("diff", str(previews["a"]), str(previews["wide"]), "--format", "json")
    assert result.returncode == 3
    data = json.loads(result.stdout)
    assert data["forbidden"] == [NETWORK_URN]
    network = next(r for r in data["resources"] if r["urn"] == NETWORK_URN)
    assert network["action"] == "replace" and network["replace_causes"] == ["ipRange"]
    assert "protected" in network["forbidden"] and "delete protection on" in network["forbidden"]
    assert {"path": "ipRange", "old": "10.0.0.0/14", "new": "10.0.0.0/13"} in network["changes"]
    text = unde("diff", str(previews["a"]), str(previews["wide"])).stdout
    assert f"ERROR helsinki {NETWORK_URN}: would be replaced (ipRange); protected" in text
    markdown = unde("diff", str(previews["a"]), str(previews["wide"]), "--format", "markdown").stdout
    assert "### Blocked" in markdown and f"`{NETWORK_URN}`: replace (`ipRange`)" in markdown


def test_an_adopted_servers_location_change_is_a_forbidden_replacement(previews: dict[str, Path], tmp_path: Path) -> None:
    def relocate(resource: dict) -> None:  # type: ignore[type-arg]
        resource["inputs"]["location"] = "fsn1"
        resource["ignoreChanges"] = [f for f in resource["ignoreChanges"] if f != "location"]

    moved = edited_copy(previews["a"], tmp_path / "moved", "helsinki", GATEWAY_URN, relocate)
    result = unde("diff", str(previews["a"]), str(moved), "--format", "json")
    assert result.returncode == 3, result.stdout
    gateway = next(r for r in json.loads(result.stdout)["resources"] if r["urn"] == GATEWAY_URN)
    assert gateway["action"] == "replace" and gateway["replace_causes"] == ["location"]
    assert "adopted (import id" in gateway["forbidden"] and "protected" in gateway["forbidden"]


def test_a_change_to_an_ignored_field_is_not_a_replacement(previews: dict[str, Path], tmp_path: Path) -> None:
    def new_image(resource: dict) -> None:  # type: ignore[type-arg]
        assert "image" in resource["ignoreChanges"]
        resource["inputs"]["image"] = "debian-13"

    rebuilt = edited_copy(previews["a"], tmp_path / "image", "helsinki", GATEWAY_URN, new_image)
    result = unde("diff", str(previews["a"]), str(rebuilt), "--format", "json")
    assert result.returncode == 0, result.stdout
    (gateway,) = json.loads(result.stdout)["resources"]
    assert (gateway["action"], gateway["replace_causes"], gateway["forbidden"]) == ("ignored", [], "")
    assert gateway["changes"] == [] and [c["path"] for c in gateway["ignored"]] == ["image"]


def test_an_import_is_not_a_replacement(previews: dict[str, Path], tmp_path: Path) -> None:
    def not_adopted_before(resource: dict) -> None:  # type: ignore[type-arg]
        resource["importId"] = None
        resource["inputs"]["location"] = "fsn1"

    before = edited_copy(previews["a"], tmp_path / "before", "helsinki", GATEWAY_URN, not_adopted_before)
    result = unde("diff", str(before), str(previews["a"]), "--format", "json")
    assert result.returncode == 0, result.stdout
    (gateway,) = json.loads(result.stdout)["resources"]
    assert gateway["action"] == "import" and gateway["forbidden"] == ""


def test_a_second_shard_adds_its_pair_files_and_cost(previews: dict[str, Path]) -> None:
    result = unde("diff", str(previews["a"]), str(previews["two"]), "--format", "json")
    assert result.returncode == 0, result.stdout
    data = json.loads(result.stdout)
    created = {r["urn"].rsplit("::", 1)[-1] for r in data["resources"] if r["action"] == "create"}
    assert {"local-shard-1", "shard-replica-1"} <= created
    assert not [r for r in data["resources"] if r["action"] in ("replace", "delete") and r["forbidden"]]
    added = {(a["server"], a["path"]) for a in data["artifacts"] if a["action"] == "added"}
    assert ("local-shard-1", "user-data.yaml") in added or ("local-shard-1", "/user-data.yaml") in added
    prices = load_pricing().servers.eur_month
    local = next(c for c in data["cost"] if c["stack"] == "local")
    assert local["delta_eur"] == pytest.approx(prices["cpx62"] + prices["ccx23"])
    assert next(c for c in data["cost"] if c["stack"] == "helsinki")["delta_eur"] == 0


def test_files_built_from_secrets_never_show_their_content(previews: dict[str, Path]) -> None:
    secret = json.loads((previews["two"] / "local" / "secret-files.json").read_text())
    new_secret = [s for s in secret if "shard1" in s or s.startswith("local-shard-1:")]
    assert new_secret, "the second shard brings files built from secrets"
    server, _, path = new_secret[0].partition(":")
    artifacts = previews["two"] / "local" / "artifacts"
    content = (artifacts / server / path.lstrip("/")).read_text()
    # The lines only this secret file has (not a shared header): its keys among them.
    public = ""
    for stack in ("helsinki", "local"):
        root = previews["two"] / stack / "artifacts"
        hidden = set(json.loads((previews["two"] / stack / "secret-files.json").read_text()))
        public += "".join(p.read_text() for p in root.rglob("*") if p.is_file()
                          and f"{p.relative_to(root).parts[0]}:/{'/'.join(p.relative_to(root).parts[1:])}" not in hidden)
    own = [line for line in content.splitlines() if len(line.strip()) > 8 and line not in public]
    assert any("PrivateKey" in line for line in own)
    for fmt in ("text", "markdown", "json"):
        output = unde("diff", str(previews["a"]), str(previews["two"]), "--format", fmt).stdout
        assert "content not shown" in output or '"secret": true' in output
        for line in own:
            assert line not in output, f"{fmt} shows a line of {new_secret[0]}"


def test_an_ordinary_file_change_is_shown_as_a_unified_diff(previews: dict[str, Path]) -> None:
    text = unde("diff", str(previews["a"]), str(previews["two"])).stdout
    assert "--- a/monitoring/etc/prometheus/" in text or "+++ b/monitoring/" in text
    assert "\n    +" in text


def test_bad_directories_exit_2(tmp_path: Path) -> None:
    result = unde("diff", str(tmp_path / "missing"), str(tmp_path))
    assert result.returncode == 2
    assert f"{tmp_path / 'missing'}: not a preview directory" in result.stderr
    assert f"{tmp_path}: holds no stack preview" in result.stderr


def diff_of(old: Path, new: Path, fmt: str = "text") -> tuple[int, str]:
    result = unde("diff", str(old), str(new), "--format", fmt)
    assert not result.stderr, result.stderr
    return result.returncode, result.stdout


def by_name(data: dict, kind: str) -> dict[str, dict]:  # type: ignore[type-arg]
    return {r["urn"].rsplit("::", 1)[-1]: r for r in data["resources"] if r["type"] == kind}


def test_stand_in_ids_and_addresses_come_from_names() -> None:
    from pulumi.runtime.mocks import MockResourceArgs

    from unde_infra.offline import OfflineMocks, stand_in_import_ids

    names = ["helsinki-gw", "scraper", "push", "model-generator", "monitoring", "collage"]
    every = stand_in_import_ids(names, [])
    without = stand_in_import_ids([n for n in names if n != "scraper"], [])
    assert without == {n: i for n, i in every.items() if n != "scraper"}
    assert len(set(every.values())) == len(names) and all(90_000_000 <= int(i) < 100_000_000 for i in every.values())
    # A real id of the stack config is never stood in for another server.
    assert stand_in_import_ids(["push"], [every["push"]])["push"] != every["push"]

    def addresses(servers: list[str]) -> dict[str, tuple[str, str]]:
        mocks = OfflineMocks({}, {}, server_names=servers, public_servers=servers)
        states = {n: mocks.new_resource(MockResourceArgs(SERVER, n, {"name": n, "publicNets": [{"ipv4Enabled": True}]},
                                                         custom=True)) for n in reversed(servers)}
        return {n: (state["ipv4Address"], state["ipv6Address"]) for n, (_, state) in states.items()}

    assert addresses([n for n in names if n != "scraper"]) == {n: a for n, a in addresses(names).items() if n != "scraper"}


def test_removing_a_server_changes_no_other_servers_stand_in_ids(previews: dict[str, Path]) -> None:
    code, output = diff_of(previews["a"], previews["no-scraper"], "json")
    assert code == 3  # scraper is adopted: its deletion is blocked
    data = json.loads(output)
    assert [urn.rsplit("::", 1)[-1] for urn in data["forbidden"]] == ["scraper"]
    assert not [(r["urn"], c["path"]) for r in data["resources"] for c in r["changes"] if c["path"] == "(importId)"]
    updated = {r["urn"].rsplit("::", 1)[-1] for r in data["resources"] if r["action"] == "update"}
    assert updated == {"unde-helsinki-base"}  # the base firewall, which scraper leaves
    servers = {s["server"]: s["change"] for s in data["servers"]}
    assert servers == {"scraper": "deleted", "monitoring": "unchanged"}  # monitoring: its scrape targets


def test_firewall_attachments_name_their_servers(previews: dict[str, Path]) -> None:
    _, output = diff_of(previews["a"], previews["no-scraper"], "json")
    attachment = by_name(json.loads(output), FIREWALL_ATTACHMENT)["unde-helsinki-base"]
    (change,) = attachment["changes"]
    assert change["path"] == "serverIds" and set(change["old"]) - set(change["new"]) == {"scraper"}
    assert "helsinki-gw" in change["new"] and not [s for s in change["new"] if not str(s)[:1].isalpha()]
    _, text = diff_of(previews["a"], previews["no-scraper"])
    assert 'hcloud:index/firewallAttachment:FirewallAttachment  unde-helsinki-base\n            serverIds: - "scraper"\n' in text
    _, markdown = diff_of(previews["a"], previews["two"], "markdown")
    assert '| update | `hcloud:index/firewallAttachment:FirewallAttachment` | `unde-local-base` | serverIds: + "local-shard-1" |' in markdown


def test_servers_attached_in_another_order_are_no_change(previews: dict[str, Path], tmp_path: Path) -> None:
    """A firewall attachment's servers are a set to the provider: reordering the topology's
    servers changes nothing."""
    attachment = next(r["urn"] for r in json.loads((previews["a"] / "helsinki" / "resources.json").read_text())
                      if r["urn"].endswith("FirewallAttachment::unde-helsinki-base"))

    def reverse(resource: dict) -> None:  # type: ignore[type-arg]
        resource["inputs"]["serverIds"].reverse()

    reordered = edited_copy(previews["a"], tmp_path / "reordered", "helsinki", attachment, reverse)
    assert diff_of(previews["a"], reordered) == (0, "no changes: both previews register the same resources and "
                                                    "deliver the same files\n")


def test_changes_to_ignored_fields_are_shown_as_ignored_with_what_to_do(previews: dict[str, Path]) -> None:
    code, output = diff_of(previews["a"], previews["edited"], "json")
    assert code == 0, output
    data = json.loads(output)
    servers = by_name(data, SERVER)
    helsinki = {name for name, r in servers.items() if r["stack"] == "helsinki"}
    assert len(helsinki) == 18
    for name in helsinki:  # the site's new location: ignored by every server, none is moved or replaced
        assert {"path": "location", "old": "hel1", "new": "fsn1"}.items() <= servers[name]["ignored"][0].items()
        assert servers[name]["replace_causes"] == []
    scraper = servers["scraper"]
    assert scraper["action"] == "ignored" and scraper["changes"] == [] and scraper["resize"] is None
    server_type = next(c for c in scraper["ignored"] if c["path"] == "serverType")
    assert (server_type["old"], server_type["new"]) == ("cpx22", "cpx32")
    assert server_type["why"] == "an adopted server keeps its type: a resize powers it off"
    assert server_type["if_wanted"].startswith("set `resize: true` on servers.scraper in the topology")
    # Only the resized servers are updates; the others only have ignored changes.
    assert data["counts"]["update"] == 3 and data["counts"]["ignored"] == 15
    assert sorted(n for n, r in servers.items() if r["action"] == "update") == ["posthog", "push", "standby-api"]
    # The cost is what the servers will be: scraper keeps its type.
    helsinki_cost = next(c for c in data["cost"] if c["stack"] == "helsinki")
    assert sorted(line["name"] for line in helsinki_cost["lines"]) == ["posthog", "push", "standby-api"]
    _, text = diff_of(previews["a"], previews["edited"])
    assert "\n  scraper               helsinki  unchanged; ignored: location \"hel1\" -> \"fsn1\", serverType \"cpx22\" -> \"cpx32\"\n" in text
    assert ('  - serverType: "cpx22" -> "cpx32" on scraper: an adopted server keeps its type: a resize powers it off. '
            "If it is wanted: set `resize: true` on servers.scraper in the topology") in text
    assert '  - location: "hel1" -> "fsn1" on 18 resources (' in text and "a server stays where it was created" in text
    assert "  ignored hcloud:index/server:Server  scraper\n" in text and "update  hcloud:index/server:Server  scraper" not in text


def test_a_resize_powers_the_server_off_loudly_for_a_stateful_one(previews: dict[str, Path]) -> None:
    code, output = diff_of(previews["a"], previews["edited"], "json")
    assert code == 0  # a resize is allowed, stateful or not
    data = json.loads(output)
    servers = by_name(data, SERVER)
    assert servers["posthog"]["resize"] == {"old": "ccx33", "new": "ccx43", "powers_off": True, "stateful_task": "posthog"}
    assert servers["push"]["resize"] == {"old": "cpx32", "new": "cpx42", "powers_off": True, "stateful_task": "batch-redis"}
    assert servers["standby-api"]["resize"] == {"old": "cx33", "new": "cx43", "powers_off": True, "stateful_task": None}
    assert [w.split(" ", 1)[0] for w in data["warnings"]] == ["posthog", "push"]
    summary = {s["server"]: s for s in data["servers"]}
    assert (summary["posthog"]["powers_off"], summary["posthog"]["stateful"]) == (True, True)
    assert (summary["standby-api"]["powers_off"], summary["standby-api"]["stateful"]) == (True, False)

    _, text = diff_of(previews["a"], previews["edited"])
    lines = text.splitlines()
    warning = ("WARNING posthog (helsinki) is resized ccx33 -> ccx43: hcloud powers it off for a minute or two to resize "
               "it, and its task posthog is stateful: what it serves stops until it is back. Merge it in a maintenance window.")
    assert lines[2] == "WARNING: a stateful server is powered off" and lines[3] == warning
    assert not [line for line in lines if line.startswith("WARNING standby-api")]
    assert ("  standby-api           helsinki  resized cx33 -> cx43: hcloud powers it off for a minute or two to resize it; "
            'ignored: location "hel1" -> "fsn1"') in lines
    assert "  update  hcloud:index/server:Server  posthog (a resize: hcloud powers it off for a minute or two to resize it)" in lines

    _, markdown = diff_of(previews["a"], previews["edited"], "markdown")
    assert markdown.index("### Warning: a stateful server is powered off") < markdown.index("### Servers")
    assert f"- **{warning.removeprefix('WARNING ')}**" in markdown
    assert "| `standby-api` | helsinki | resized cx33 -> cx43: hcloud powers it off" in markdown


def test_every_format_starts_with_the_servers_and_the_cost(previews: dict[str, Path]) -> None:
    _, text = diff_of(previews["a"], previews["no-scraper"])
    first_screen = text[: text.index("\nstack helsinki: resources")].splitlines()
    blocked = ("protected and adopted (import id {}) and delete protection on: it must never be deleted")
    gone = json.loads((previews["a"] / "helsinki" / "resources.json").read_text())
    scraper_id = next(r["importId"] for r in gone if r["urn"].endswith("Server::scraper"))
    servers_at = first_screen.index("servers (what pulumi up does to each; only servers with a change):")
    assert first_screen[servers_at + 1:servers_at + 5] == [
        "  monitoring  helsinki  unchanged; 1 file changed",
        f"  scraper     helsinki  deleted (BLOCKED: {blocked.format(scraper_id)})",
        "",
        "cost (per month):",
    ]
    assert first_screen[servers_at + 5].startswith("  helsinki: EUR ") and "scraper: " in first_screen[servers_at + 6]
    assert first_screen[0].startswith("unde-infra diff: ") and first_screen[2].startswith("BLOCKED: ")

    _, markdown = diff_of(previews["a"], previews["no-scraper"], "markdown")
    headings = [line for line in markdown.splitlines() if line.startswith("### ")]
    assert headings[:5] == ["### Blocked: replacement or deletion of a protected, stateful or adopted resource",
                            "### Servers", "### Cost (per month)", "### Notes", "### Stack `helsinki`: resources"]
    assert "| `monitoring` | helsinki | unchanged; 1 file changed |\n| `scraper` | helsinki | deleted (BLOCKED: " in markdown

    _, output = diff_of(previews["a"], previews["no-scraper"], "json")
    assert list(json.loads(output))[:9] == ["empty", "headline", "counts", "blocked", "warnings", "servers", "cost",
                                            "cost_total", "forbidden"]
    rows = output.splitlines()
    servers_at = rows.index('  "servers": [')
    assert servers_at < 30 and json.loads(rows[servers_at + 1].strip().rstrip(","))["server"] == "monitoring"
    assert json.loads(rows[servers_at + 2])["summary"].startswith("deleted (BLOCKED: protected and adopted")


def test_the_text_says_as_much_as_the_markdown(previews: dict[str, Path]) -> None:
    _, text = diff_of(previews["a"], previews["wide"])
    _, markdown = diff_of(previews["a"], previews["wide"], "markdown")
    replaced = ("A `command:remote:Command` replaced because of its `triggers` runs again: the file it delivers is "
                "written where the server's copy differs, then its apply step runs; the server itself is not touched.")
    not_delivered = ("A running hcloud server's user data (`user-data.yaml`) is not delivered: it runs at the server's "
                     "first boot only; servers created from now on get it.")
    for note in (replaced, not_delivered):
        assert f"\n  - {note}\n" in text and f"\n- {note}\n" in markdown
    assert "\nBLOCKED: replacement or deletion of a protected, stateful or adopted resource (exit 3)\n" in text
    assert "\n### Blocked: replacement or deletion of a protected, stateful or adopted resource\n" in markdown
    ignored = "- userData changed on 20 resources ("
    assert f"\n  {ignored}" in text and f"\n{ignored}" in markdown
    assert "  changed scraper:/user-data.yaml (not delivered: user data runs at a server's first boot only" in text
    for row in (line for line in markdown.splitlines() if line.startswith("| `")):
        name, stack, what = (cell.strip(" `") for cell in row.strip("|").split("|"))
        assert any(line.split() == [name, stack, *what.split()] for line in text.splitlines()), row
