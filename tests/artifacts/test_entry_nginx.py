"""The entry host's nginx, as rendered, is accepted by nginx itself (`nginx -t`) with a self-signed
test certificate where certbot's would be; and, run for real on loopback, it answers TLS with
HTTP/2, proxies /healthz and the API to the FastAPI instances, serves ACME's challenge files on
port 80 and redirects everything else there to HTTPS. Only the listen ports and the upstream's
addresses are rewritten for the run."""

from __future__ import annotations

import datetime
import http.client
import http.server
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import require_tool
from unde_infra.model import DEFAULT_TOPOLOGY, load_topology
from unde_infra.render.entry import DnsChallenge, EntryLayout, entry_files, nginx_upstream
from unde_infra.render.entry_failover import acme_hook_command

DOMAIN = "api.unde.invalid"


def test_nginx_accepts_the_upstream(tmp_path: Path) -> None:
    nginx = require_tool("nginx")
    data = yaml.safe_load(DEFAULT_TOPOLOGY.read_text())
    data["servers"]["local-app"]["instances"] = 3
    topology = tmp_path / "topology.yaml"
    topology.write_text(yaml.safe_dump(data))
    upstream = tmp_path / "unde-api-upstream.conf"
    upstream.write_text(nginx_upstream(load_topology(topology)))
    # A minimal main config standing for the entry host's: the rendered file in its http block.
    main = tmp_path / "nginx.conf"
    main.write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n  include {upstream};\n  server {{ listen 127.0.0.1:18080; location / {{ proxy_pass http://unde_api; }} }}\n}}\n"
    )
    result = subprocess.run([nginx, "-t", "-c", str(main), "-p", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr
    broken = upstream.read_text().replace("least_conn;", "least_conn")
    upstream.write_text(broken)
    result = subprocess.run([nginx, "-t", "-c", str(main), "-p", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode != 0


def self_signed(directory: Path) -> None:
    """What certbot leaves in live/<domain>/, made here for the test."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DOMAIN)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(DOMAIN)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True)
    (directory / "fullchain.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "privkey.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (directory / "privkey.pem").chmod(0o600)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Tree:
    def __init__(self, root: Path, *, standby: bool = False) -> None:
        self.root = root
        self.layout = EntryLayout(str(root))
        inventory = load_topology()
        # The standby entry (standby-api): its own FastAPI behind it, its certificate by DNS-01.
        extra = {"api_servers": [inventory.servers["standby-api"]],
                 "dns_challenge": DnsChallenge(acme_hook_command("auth"), acme_hook_command("cleanup"))}
        self.files = entry_files(inventory, DOMAIN, "ops@unde.invalid", self.layout, **(extra if standby else {}))
        for path, rendered in self.files.items():
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(rendered.content)
        Path(self.layout.tls_enabled).mkdir(parents=True)
        self.main = root / "nginx.conf"
        # Debian's nginx.conf in short: conf.d/*.conf inside http {}.
        self.main.write_text(
            f"user root;\npid {root}/nginx.pid;\nerror_log {root}/error.log;\nevents {{}}\n"
            f"http {{\n  access_log off;\n  include {root}/etc/nginx/conf.d/*.conf;\n}}\n"
        )

    def enable_tls(self) -> None:
        # What the setup does once the certificate exists.
        (Path(self.layout.tls_enabled) / "api-tls.conf").symlink_to(self.layout.tls_site)

    def check(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run([require_tool("nginx"), "-t", "-c", str(self.main), "-p", str(self.root)],
                              capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("standby", [False, True], ids=["local-app", "standby-api"])
def test_nginx_accepts_the_tls_entry_point_with_a_certificate(tmp_path: Path, standby: bool) -> None:
    tree = Tree(tmp_path, standby=standby)
    # Before certbot's first certificate: port 80 alone (ACME and the redirect) is a valid config.
    result = tree.check()
    assert result.returncode == 0, result.stderr
    # The TLS site without its certificate is what nginx refuses, hence the setup's order.
    tree.enable_tls()
    assert tree.check().returncode != 0
    self_signed(Path(tree.layout.certificate_dir(DOMAIN)))
    result = tree.check()
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    tls = Path(tree.layout.tls_site).read_text()
    assert "listen 443 ssl http2;" in tls and f"server_name {DOMAIN};" in tls
    assert "location = /healthz {" in tls and "proxy_pass http://unde_api;" in tls
    upstream = Path(tree.layout.upstream).read_text()
    # The standby entry proxies to its own FastAPI (standby-api's private address), not to the local site's.
    assert ("server 10.1.0.20:8000" in upstream) == standby and ("server 10.2.0.2:8000" in upstream) != standby


def test_the_certificate_script_asks_for_the_rendered_challenge(tmp_path: Path) -> None:
    """files/entry_certificate.sh with certbot, nginx and systemctl standing in (they record their
    arguments): HTTP-01 through the webroot on the local entry, DNS-01 with the hooks on the standby."""
    for standby in (False, True):
        root = tmp_path / ("standby" if standby else "local")
        tree = Tree(root, standby=standby)
        bin_dir = root / "bin"
        bin_dir.mkdir()
        calls = root / "calls"
        for tool in ("certbot", "nginx", "systemctl"):
            (bin_dir / tool).write_text(f'#!/bin/sh\nprintf "%s\\n" "{tool}" "$@" "--" >> {calls}\n')
            (bin_dir / tool).chmod(0o755)
        script = f"{tree.layout.tools_dir}/entry-certificate"
        Path(script).chmod(0o755)
        done = subprocess.run(["sh", script], capture_output=True, text=True, timeout=30,
                              env={"PATH": f"{bin_dir}:/usr/bin:/bin"})
        assert done.returncode == 0, done.stderr
        certbot = calls.read_text().split("--\n")[0].splitlines()
        assert certbot[:2] == ["certbot", "certonly"] and ["--domain", DOMAIN] == certbot[-3:-1]
        if standby:
            assert certbot[certbot.index("--preferred-challenges") + 1] == "dns" and "--manual" in certbot
            # Each hook reaches certbot as one argument, the whole command certbot stores and runs.
            assert certbot[certbot.index("--manual-auth-hook") + 1] == acme_hook_command("auth")
            assert certbot[certbot.index("--manual-cleanup-hook") + 1] == acme_hook_command("cleanup")
            assert "--webroot" not in certbot
        else:
            assert certbot[certbot.index("--webroot-path") + 1] == tree.layout.webroot and "--manual" not in certbot
        # Then the TLS site is switched on, checked and nginx reloaded.
        assert Path(tree.layout.tls_enabled, "api-tls.conf").is_symlink()
        assert "nginx\n-t\n" in calls.read_text() and "systemctl\nreload\nnginx\n" in calls.read_text()


@pytest.fixture
def backend() -> Iterator[tuple[int, list[str]]]:
    """A stand-in FastAPI instance: answers every path, records what it was asked."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server API)
            seen.append(f"{self.path} proto={self.headers.get('X-Forwarded-Proto')}")
            body = b'{"status":"ok"}'
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], seen
    server.shutdown()
    thread.join(timeout=5)


def test_nginx_serves_http2_tls_and_proxies_to_the_instances(tmp_path: Path, backend: tuple[int, list[str]]) -> None:
    port, seen = backend
    tree = Tree(tmp_path)
    self_signed(Path(tree.layout.certificate_dir(DOMAIN)))
    tree.enable_tls()
    https, http_port = free_port(), free_port()
    for path, old, new in (
        (tree.layout.tls_site, "listen 443 ssl http2;", f"listen 127.0.0.1:{https} ssl http2;"),
        (tree.layout.tls_site, "listen [::]:443 ssl http2;\n", ""),
        (tree.layout.http_site, "listen 80 default_server;", f"listen 127.0.0.1:{http_port} default_server;"),
        (tree.layout.http_site, "listen [::]:80 default_server;\n", ""),
    ):
        text = Path(path).read_text()
        assert old in text
        Path(path).write_text(text.replace(old, new))
    upstream = Path(tree.layout.upstream)
    upstream.write_text(upstream.read_text().replace("10.2.0.2:8000", f"127.0.0.1:{port}"))
    challenge = Path(tree.layout.webroot) / ".well-known" / "acme-challenge" / "token-1"
    challenge.parent.mkdir(parents=True)
    challenge.write_text("token-1.thumbprint")
    nginx = subprocess.Popen([require_tool("nginx"), "-c", str(tree.main), "-p", str(tmp_path), "-g", "daemon off;"],
                             stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not _listening(https):
            time.sleep(0.1)
        assert _listening(https), "nginx did not start"
        context = ssl.create_default_context(cafile=tree.layout.certificate_dir(DOMAIN) + "/fullchain.pem")
        context.set_alpn_protocols(["h2", "http/1.1"])
        with socket.create_connection(("127.0.0.1", https), timeout=10) as raw, \
                context.wrap_socket(raw, server_hostname=DOMAIN) as tls:
            assert tls.selected_alpn_protocol() == "h2"  # HTTP/2 offered and chosen
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
        context.set_alpn_protocols(["http/1.1"])
        for path in ("/healthz", "/v1/dialogue"):
            connection = http.client.HTTPSConnection("127.0.0.1", https, context=context, timeout=10)
            connection.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", https), timeout=10),
                                                  server_hostname=DOMAIN)
            connection.request("GET", path, headers={"Host": DOMAIN})
            response = connection.getresponse()
            assert response.status == 200 and response.read() == b'{"status":"ok"}'
            assert "max-age=63072000" in (response.getheader("Strict-Transport-Security") or "")
            connection.close()
        assert seen == ["/healthz proto=https", "/v1/dialogue proto=https"]
        plain = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
        plain.request("GET", "/.well-known/acme-challenge/token-1", headers={"Host": DOMAIN})
        answer = plain.getresponse()
        assert answer.status == 200 and answer.read() == b"token-1.thumbprint"
        plain.request("GET", "/v1/dialogue?x=1", headers={"Host": DOMAIN})
        redirect = plain.getresponse()
        redirect.read()
        assert redirect.status == 301 and redirect.getheader("Location") == f"https://{DOMAIN}/v1/dialogue?x=1"
    finally:
        nginx.terminate()
        try:
            nginx.wait(timeout=15)
        except subprocess.TimeoutExpired:
            nginx.kill()
            nginx.wait(timeout=10)
        if nginx.stderr is not None:
            nginx.stderr.close()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
