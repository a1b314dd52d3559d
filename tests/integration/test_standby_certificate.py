"""The standby entry's certificate, obtained for real by DNS-01 on loopback.

The rendered files/entry_certificate.sh (the standby's parameters: DNS-01 with the rendered
hooks) runs Debian's certbot 2.1 against Pebble (Let's Encrypt's ACME test server, Debian's
package). certbot runs the rendered DNS-01 hook (files/acme_dns_hook.py with the shared API
client beside it), which sets the TXT record through a fake Hetzner Cloud API on loopback; the
fake publishes what it holds to pebble-challtestsrv's DNS server, which Pebble asks to validate
the challenge, as Let's Encrypt asks Hetzner's nameservers. Then nginx accepts the rendered TLS
site with the certificate Pebble issued, and `certbot renew` (what certbot.timer runs) renews
it with the hooks certbot kept.

Changed for the test: certbot's directories and ACME server (a wrapper on PATH adds the flags),
nginx and systemctl stand-ins for the script's reload (the real nginx checks the tree after),
the hook's API endpoint, token file and publication wait (0 s: challtestsrv answers at once).
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import require_tool
from tests.unit.test_acme_dns_hook import FakeZone
from tests.unit.test_entry_failover import TOKEN
from unde_infra.model import load_topology
from unde_infra.render import entry_failover
from unde_infra.render.entry import DnsChallenge, EntryLayout, entry_files
from unde_infra.render.entry_failover import EntryDns

pytestmark = pytest.mark.integration
DNS = EntryDns("unde.example", "api")
DEADLINE_SECONDS = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(what: str, check: Callable[[], bool], logs: list[Path]) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    tails = "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-1500:]}" for log in logs if log.exists())
    pytest.fail(f"timed out waiting for {what}\n{tails}")


def listening(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True


def pebble_tls(directory: Path) -> Path:
    """A CA and Pebble's listener certificate for 127.0.0.1; returns the CA file certbot trusts."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble listener test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    from ipaddress import IPv4Address

    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(IPv4Address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    return directory / "ca.pem"


class PublishingZone(FakeZone):
    """The fake Cloud API, publishing its TXT RRSets to challtestsrv's DNS (Hetzner's nameservers)."""

    def __init__(self, management: str) -> None:
        self.management = management
        self.published: list[tuple[str, str]] = []
        super().__init__()

    def respond(self, method: str, path: str, body: bytes, headers: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
        answer = super().respond(method, path, body, headers)
        if "/TXT/actions/" in path and answer[0] < 300:
            name = path.split("/rrsets/", 1)[1].split("/", 1)[0]
            host = f"{name}.{DNS.zone}."
            records = self.txt.get(name, {}).get("records", [])
            call = ("set-txt", {"host": host, "value": records[0].strip('"')}) if records else (
                "clear-txt", {"host": host})
            request = urllib.request.Request(f"{self.management}/{call[0]}", data=json.dumps(call[1]).encode(),
                                             method="POST")
            with urllib.request.urlopen(request, timeout=5):
                self.published.append((call[0], host))
        return answer


@pytest.fixture
def started() -> Iterator[Callable[[list[str], Path, dict[str, str] | None], subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_certbot_gets_the_standby_certificate_by_dns_01_through_the_rendered_hook(
        tmp_path: Path, started: Callable[..., subprocess.Popen[bytes]]) -> None:
    certbot, pebble, challtestsrv = require_tool("certbot"), require_tool("pebble"), require_tool("pebble-challtestsrv")
    nginx = require_tool("nginx")
    dns_port, management_port, acme_port, pebble_management = free_port(), free_port(), free_port(), free_port()
    ca = pebble_tls(tmp_path)
    logs = [tmp_path / "challtestsrv.log", tmp_path / "pebble.log"]
    started([challtestsrv, "-dns01", f"127.0.0.1:{dns_port}", "-management", f"127.0.0.1:{management_port}",
             "-http01", "", "-https01", "", "-tlsalpn01", ""], logs[0])
    (tmp_path / "pebble.json").write_text(json.dumps({"pebble": {
        "listenAddress": f"127.0.0.1:{acme_port}", "managementListenAddress": f"127.0.0.1:{pebble_management}",
        "certificate": str(tmp_path / "cert.pem"), "privateKey": str(tmp_path / "key.pem"),
        "httpPort": free_port(), "tlsPort": free_port(), "ocspResponderURL": "",
        "externalAccountBindingRequired": False}}))
    # No random sleeps or nonce rejections, and no reuse of a valid authorization (so that the
    # renewal below is challenged again, as Let's Encrypt does after 30 days): the validation
    # itself is Pebble's.
    started([pebble, "-config", str(tmp_path / "pebble.json"), "-dnsserver", f"127.0.0.1:{dns_port}"], logs[1],
            {"PATH": "/usr/bin:/bin", "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0",
             "PEBBLE_AUTHZREUSE": "0"})
    wait_until("challtestsrv and pebble", lambda: listening(management_port) and listening(acme_port), logs)

    zone = PublishingZone(f"http://127.0.0.1:{management_port}")
    try:
        inventory = load_topology()
        standby = inventory.servers["standby-api"]
        # The hook and the shared API client, as the decider's server receives them.
        tools = tmp_path / "tools"
        tools.mkdir()
        rendered = entry_failover.watcher_files(entry_failover.DECIDER, standby, inventory, DNS, "198.51.100.10",
                                                "203.0.113.20")
        for path in (entry_failover.ACME_HOOK_PATH, entry_failover.DNS_CLIENT_PATH, entry_failover.SUPPORT_PATH):
            (tools / Path(path).name).write_text(rendered[path])
        settings = json.loads(rendered[f"{entry_failover.ACME_HOOK_PATH}.json"])
        token = tmp_path / "dns-api-token"
        token.write_text(TOKEN + "\n")
        token.chmod(0o600)
        settings.update(token_file=str(token), publish_wait_seconds=0)
        settings["api"]["endpoint"] = zone.endpoint
        (tools / "acme-dns-hook.json").write_text(json.dumps(settings))
        hook = f"/usr/bin/python3 {tools}/acme-dns-hook"
        # The standby entry's tree, with the hook commands at the test's path.
        layout = EntryLayout(str(tmp_path / "root"))
        files = entry_files(inventory, DNS.fqdn, "ops@unde.example", layout, api_servers=[standby],
                            dns_challenge=DnsChallenge(f"{hook} auth", f"{hook} cleanup"))
        for path, file in files.items():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(file.content)
            Path(path).chmod(int(file.mode, 8))
        Path(layout.tls_enabled).mkdir(parents=True, exist_ok=True)
        # certbot with the test's directories and ACME server; nginx and systemctl stand in for the reload.
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        letsencrypt = layout.letsencrypt
        (bin_dir / "certbot").write_text(
            f"#!/bin/sh\nexec {certbot} --server https://127.0.0.1:{acme_port}/dir --config-dir {letsencrypt} "
            f"--work-dir {tmp_path}/certbot-work --logs-dir {tmp_path}/certbot-logs \"$@\"\n")
        for tool in ("nginx", "systemctl"):
            (bin_dir / tool).write_text(f"#!/bin/sh\necho {tool} \"$@\" >> {tmp_path}/reloads\n")
        for executable in bin_dir.iterdir():
            executable.chmod(0o755)
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "REQUESTS_CA_BUNDLE": str(ca), "HOME": str(tmp_path)}
        obtained = subprocess.run(["sh", f"{layout.tools_dir}/entry-certificate"], capture_output=True, text=True,
                                  timeout=180, env=env)
        assert obtained.returncode == 0, obtained.stdout + obtained.stderr + logs[1].read_text()[-2000:]

        live = Path(layout.certificate_dir(DNS.fqdn))
        issued = x509.load_pem_x509_certificate((live / "fullchain.pem").read_bytes())
        names = issued.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName)
        assert names == [DNS.fqdn] and "Pebble" in issued.issuer.rfc4514_string()
        # The hook set the challenge through the API and removed it afterwards; challtestsrv
        # served it to Pebble in between.
        adds = [r for r in zone.requests if r["path"].endswith("/add_records")]
        removes = [r for r in zone.requests if r["path"].endswith("/remove_records")]
        assert len(adds) == len(removes) == 1
        assert adds[0]["path"] == "/v1/zones/unde.example/rrsets/_acme-challenge.api/TXT/actions/add_records"
        assert zone.txt == {} and zone.published == [("set-txt", "_acme-challenge.api.unde.example."),
                                                     ("clear-txt", "_acme-challenge.api.unde.example.")]
        assert (tmp_path / "reloads").read_text() == "nginx -t\nsystemctl reload nginx\n"
        # The real nginx accepts the TLS site with the issued certificate.
        main = tmp_path / "nginx.conf"
        main.write_text(f"user root;\npid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
                        f"http {{\n  include {layout.root}/etc/nginx/conf.d/*.conf;\n}}\n")
        checked = subprocess.run([nginx, "-t", "-c", str(main), "-p", str(tmp_path)], capture_output=True, text=True,
                                 timeout=30)
        assert checked.returncode == 0 and "test is successful" in checked.stderr, checked.stderr

        # What certbot.timer runs: the renewal goes through the same hooks, which certbot kept.
        renewal = (Path(letsencrypt) / "renewal" / f"{DNS.fqdn}.conf").read_text()
        assert f"manual_auth_hook = {hook} auth" in renewal and f"manual_cleanup_hook = {hook} cleanup" in renewal
        # (certbot renew sleeps up to 8 minutes first when run without a terminal, to spread the
        # load on Let's Encrypt; the timer keeps that, the test does not wait for it.)
        renewed = subprocess.run([str(bin_dir / "certbot"), "renew", "--force-renewal", "--non-interactive",
                                  "--no-random-sleep-on-renew"],
                                 capture_output=True, text=True, timeout=180, env=env)
        assert renewed.returncode == 0, renewed.stdout + renewed.stderr
        again = x509.load_pem_x509_certificate((live / "fullchain.pem").read_bytes())
        assert again.serial_number != issued.serial_number
        assert len([r for r in zone.requests if r["path"].endswith("/add_records")]) == 2 and zone.txt == {}
        # The token never reached certbot's output or its logs (they keep the hooks' output).
        certbot_logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "certbot-logs").glob("*"))
        assert TOKEN not in obtained.stdout + obtained.stderr + renewed.stdout + renewed.stderr + certbot_logs
        assert os.stat(live / "privkey.pem").st_mode & 0o077 == 0 or (live / "privkey.pem").is_symlink()
    finally:
        zone.close()
