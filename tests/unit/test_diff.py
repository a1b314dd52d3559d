"""`unde-infra diff OLD NEW`: two real previews compared. The same commit gives an empty diff; a
protected network's range or an adopted server's location change is a replacement that fails the
diff (exit 3); an import or an ignored field is not; added shards show their servers, files and
cost; files built from secrets never show their content."""

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


# The previews of the committed configuration are shared with test_cli.py (conftest).
pytestmark = pytest.mark.xdist_group("committed-previews")


@pytest.fixture(scope="module")
def previews(committed_previews, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("previews")
    wide = base / "topology-wide.yaml"
    data = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    data["network"]["ip_range"] = "10.0.0.0/13"  # the protected Helsinki network's range
    wide.write_text(yaml.safe_dump(data))
    runs = {name: committed_previews(shared) for name, shared in (("a", "a"), ("b", "b"), ("two", "two-shards"))}
    runs["wide"] = (unde("preview", "--stack", "all", "--out", str(base / "wide"), "--topology", str(wide)), base / "wide")
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
