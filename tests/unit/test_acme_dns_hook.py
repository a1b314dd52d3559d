"""certbot's DNS-01 hook for the standby entry's certificate (unde_infra/files/acme_dns_hook.py),
against a fake Hetzner Cloud API on loopback, through the client it shares with the failover
watcher (files/hcloud_dns.py): the TXT record's name and quoted value, add_records with the TTL
(Hetzner creates the RRSet), remove_records (Hetzner deletes it once empty; a missing one is
nothing to do), the wait for publication, temporary errors retried, the token in no output.
Then the hook as certbot runs it: from its rendered files in one directory (script, parameters,
the shared client beside it), with CERTBOT_DOMAIN and CERTBOT_VALIDATION."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_entry_failover import TOKEN, FakeApi
from unde_infra import timings
from unde_infra.files import acme_dns_hook as hook
from unde_infra.files import hcloud_dns
from unde_infra.model import Inventory
from unde_infra.render import entry_failover
from unde_infra.render.entry_failover import EntryDns

DNS = EntryDns("unde.example", "api")
VALIDATION = "gfj9Xq-Kd7S3bH_tOuLp2w8YfV0cNzRr1aEeUiM4kXs"  # base64url SHA-256, 43 characters
TXT_PATH = "/v1/zones/unde.example/rrsets/_acme-challenge.api/TXT"


class FakeZone(FakeApi):
    """The fake API, keeping TXT RRSets as Hetzner does: add_records creates, remove_records
    deletes an RRSet left empty, a missing RRSet is 404."""

    def __init__(self) -> None:
        super().__init__()
        self.txt: dict[str, dict[str, Any]] = {}

    def respond(self, method: str, path: str, body: bytes, headers: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
        if self.script:
            return super().respond(method, path, body, headers)
        if "/TXT/actions/" in path and method == "POST":
            name = path.split("/rrsets/", 1)[1].split("/", 1)[0]
            data = json.loads(body)
            values = [r["value"] for r in data["records"]]
            if path.endswith("/add_records"):
                rrset = self.txt.setdefault(name, {"ttl": data.get("ttl"), "records": []})
                rrset["records"] += [v for v in values if v not in rrset["records"]]
            elif name not in self.txt:
                return 404, {"error": {"code": "not_found", "message": "rrset not found"}}, {}
            else:
                self.txt[name]["records"] = [v for v in self.txt[name]["records"] if v not in values]
                if not self.txt[name]["records"]:
                    del self.txt[name]
            return 201, {"action": {"id": 4712, "command": path.rsplit("/", 1)[1], "status": "success"}}, {}
        return super().respond(method, path, body, headers)


@pytest.fixture
def zone() -> Iterator[FakeZone]:
    fake = FakeZone()
    yield fake
    fake.close()


def config_for(api: FakeZone, token_file: Path, publish: float = 7.0) -> hook.HookConfig:
    return hook.HookConfig(zone="unde.example", api=hcloud_dns.ApiSettings(api.endpoint, 5, 3, 5),
                           token_file=str(token_file), ttl=60, publish_wait_seconds=publish)


def test_auth_sets_the_challenge_and_waits_for_publication_cleanup_removes_it(zone: FakeZone, tmp_path: Path) -> None:
    token = tmp_path / "dns-api-token"
    token.write_text(TOKEN + "\n")
    out, pauses = io.StringIO(), list[float]()
    env = {"CERTBOT_DOMAIN": "api.unde.example", "CERTBOT_VALIDATION": VALIDATION}
    hook.run("auth", config_for(zone, token), env, hcloud_dns.Redactor(out), sleep=pauses.append)
    (add,) = zone.requests
    assert add["method"] == "POST" and add["path"] == f"{TXT_PATH}/actions/add_records"
    assert add["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert add["body"] == {"ttl": 60, "records": [
        {"value": f'"{VALIDATION}"', "comment": "ACME DNS-01 challenge (certbot on the standby entry)"}]}
    assert zone.txt == {"_acme-challenge.api": {"ttl": 60, "records": [f'"{VALIDATION}"']}}
    assert pauses == [7.0]  # Let's Encrypt asks once the nameservers have it
    hook.run("cleanup", config_for(zone, token), env, hcloud_dns.Redactor(out), sleep=pauses.append)
    assert zone.requests[-1]["path"] == f"{TXT_PATH}/actions/remove_records"
    assert zone.requests[-1]["body"] == {"records": [{"value": f'"{VALIDATION}"'}]}
    assert zone.txt == {}
    # A second cleanup (certbot after a failed auth): nothing there, nothing wrong.
    hook.run("cleanup", config_for(zone, token), env, hcloud_dns.Redactor(out), sleep=pauses.append)
    assert "was not there" in out.getvalue() and TOKEN not in out.getvalue()


def test_temporary_errors_are_retried_mistakes_are_not(zone: FakeZone, tmp_path: Path) -> None:
    token = tmp_path / "dns-api-token"
    token.write_text(TOKEN)
    env = {"CERTBOT_DOMAIN": "api.unde.example", "CERTBOT_VALIDATION": VALIDATION}
    zone.script = [(503, {"error": {"code": "unavailable"}}, {}), (429, {"error": {"code": "rate_limit_exceeded"}},
                                                                   {"Retry-After": "2"})]
    out, pauses = io.StringIO(), list[float]()
    hook.run("auth", config_for(zone, token, publish=0), env, hcloud_dns.Redactor(out), sleep=pauses.append)
    assert pauses == [1.0, 2.0, 0] and len(zone.requests) == 3 and zone.txt
    zone.script = [(401, {"error": {"code": "unauthorized"}}, {})]
    with pytest.raises(hcloud_dns.ApiError, match="HTTP 401 unauthorized") as raised:
        hook.run("auth", config_for(zone, token, publish=0), env, hcloud_dns.Redactor(out), sleep=pauses.append)
    # The fake echoes the Authorization header in its error message, as a careless proxy might.
    assert TOKEN not in str(raised.value) and TOKEN not in out.getvalue()


@pytest.mark.parametrize("domain, expected", [
    ("api.unde.example", "_acme-challenge.api"), ("API.unde.example.", "_acme-challenge.api"),
    ("unde.example", "_acme-challenge"), ("eu.api.unde.example", "_acme-challenge.eu.api"),
])
def test_the_challenge_name_is_relative_to_the_zone(domain: str, expected: str) -> None:
    assert hook.challenge_name(domain, "unde.example") == expected


@pytest.mark.parametrize("domain", ["api.other.example", "xunde.example", "*.unde.example"])
def test_refuses_names_outside_the_zone(domain: str) -> None:
    with pytest.raises(hook.UsageError, match="is not a name in the zone"):
        hook.challenge_name(domain, "unde.example")


@pytest.mark.parametrize("validation", ['x" ; rm -rf /', "", "short", VALIDATION + "\n"])
def test_refuses_what_is_no_dns_01_validation(validation: str) -> None:
    assert hook.txt_value(VALIDATION) == f'"{VALIDATION}"'
    with pytest.raises(hook.UsageError, match="not an ACME DNS-01 validation"):
        hook.txt_value(validation)


def test_certbot_runs_it_from_its_rendered_files(zone: FakeZone, inventory: Inventory, tmp_path: Path) -> None:
    """The hook and the client it imports, delivered to one directory, run by the system Python
    as certbot runs them; the parameters are the rendered ones with the API and token moved."""
    standby = inventory.servers["standby-api"]
    files = entry_failover.watcher_files(entry_failover.DECIDER, standby, inventory, DNS, "198.51.100.10",
                                         "203.0.113.20")
    settings = json.loads(files[f"{entry_failover.ACME_HOOK_PATH}.json"])
    assert settings["zone"] == "unde.example" and settings["token_file"] == entry_failover.TOKEN_PATH
    assert settings["publish_wait_seconds"] == timings.DNS_PUBLISH_SECONDS
    assert settings["api"]["endpoint"] == "https://api.hetzner.cloud/v1"
    tools = tmp_path / "tools"
    tools.mkdir()
    for path in (entry_failover.ACME_HOOK_PATH, entry_failover.DNS_CLIENT_PATH, entry_failover.SUPPORT_PATH):
        (tools / Path(path).name).write_text(files[path])
    token = tmp_path / "dns-api-token"
    token.write_text(TOKEN + "\n")
    settings.update(token_file=str(token), publish_wait_seconds=0)
    settings["api"]["endpoint"] = zone.endpoint
    script = tools / "acme-dns-hook"
    (tools / "acme-dns-hook.json").write_text(json.dumps(settings))
    env = {"CERTBOT_DOMAIN": "api.unde.example", "CERTBOT_VALIDATION": VALIDATION, "PATH": "/usr/bin:/bin"}
    for action in ("auth", "cleanup"):
        done = subprocess.run(["/usr/bin/python3", str(script), action], capture_output=True, text=True, timeout=30,
                              env=env)
        assert done.returncode == 0 and done.stderr == "", done.stdout + done.stderr  # certbot: stderr is an error
        assert TOKEN not in done.stdout + done.stderr
        assert bool(zone.txt) == (action == "auth")
    assert entry_failover.acme_hook_command("auth") == f"/usr/bin/python3 {entry_failover.ACME_HOOK_PATH} auth"
    usage = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=30, env=env)
    assert usage.returncode == hook.EXIT_USAGE and "auth|cleanup" in usage.stdout
    unset = subprocess.run([sys.executable, str(script), "auth"], capture_output=True, text=True, timeout=30,
                           env={"PATH": "/usr/bin:/bin"})
    assert unset.returncode == hook.EXIT_USAGE and "CERTBOT_DOMAIN is not set" in unset.stdout
