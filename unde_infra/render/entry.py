"""The local entry point when the API gateway scales out (SPEC: local-app-2 and a load balancer).

On hcloud a Load Balancer forwards HTTPS to every local-app instance. On existing hosts the
entry host (local-app, the address users reach) spreads requests with its own nginx over the
instances' FastAPI backends on the private network."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from ..files import setup_settings, source
from ..firewall import HTTP_PORT
from ..model import Inventory, Server
from .patroni import RenderedFile
from .systemd import timer_unit

API_TASK = "api"
HTTPS_PORT = 443
API_BACKEND_PORT = 8000  # FastAPI behind each instance's nginx
UPSTREAM_PATH = "/etc/nginx/conf.d/unde-api-upstream.conf"


def api_instances(inventory: Inventory) -> list[Server]:
    return sorted((s for s in inventory.site_servers("local") if s.task == API_TASK), key=lambda s: s.instance)


def needs_load_balancer(inventory: Inventory) -> bool:
    return len(api_instances(inventory)) >= 2


def nginx_upstream(inventory: Inventory, servers: list[Server] | None = None) -> str:
    """An nginx `upstream` over every API instance (or `servers`: the standby entry's own
    FastAPI); the entry host's server block proxies to it. A failed backend is skipped for 10 s
    after 3 failures."""
    lines = [
        "# Rendered by unde-infra from config/topology.yaml; changes are overwritten.",
        "upstream unde_api {",
        "    least_conn;",
    ]
    lines += [
        f"    server {s.ip}:{API_BACKEND_PORT} max_fails=3 fail_timeout=10s;  # {s.name}"
        for s in (api_instances(inventory) if servers is None else servers)
    ]
    lines += ["    keepalive 32;", "}", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# TLS on the entry host: nginx with HTTP/2 in front of the API instances, a certificate from
# Let's Encrypt (certbot, HTTP-01 through the webroot), renewed by Debian's certbot.timer.

HEALTH_PATH = "/healthz"
CLIENT_MAX_BODY = "20m"  # photo uploads (recognition, try-on)


@dataclass(frozen=True)
class EntryLayout:
    """Where the entry host's files live; `root` prefixes every path, so that a test runs nginx
    on the whole tree under a temp dir."""

    root: str = "/"

    def _p(self, path: str) -> str:
        return str(PurePosixPath(self.root) / path.lstrip("/"))

    @property
    def http_site(self) -> str:
        return self._p("/etc/nginx/conf.d/unde-api.conf")

    @property
    def upstream(self) -> str:
        return self._p(UPSTREAM_PATH)

    @property
    def tls_site(self) -> str:
        return self._p("/etc/nginx/unde/api-tls.conf")

    @property
    def tls_enabled(self) -> str:  # the TLS site is linked here once its certificate exists
        return self._p("/etc/nginx/unde/enabled")

    @property
    def webroot(self) -> str:
        return self._p("/var/lib/unde/acme")

    @property
    def letsencrypt(self) -> str:
        return self._p("/etc/letsencrypt")

    def certificate_dir(self, domain: str) -> str:
        return f"{self.letsencrypt}/live/{domain}"

    @property
    def tools_dir(self) -> str:
        return self._p("/usr/local/lib/unde")

    @property
    def systemd_dir(self) -> str:
        return self._p("/etc/systemd/system")


DEFAULT_ENTRY_LAYOUT = EntryLayout()
CERTIFICATE_UNIT = "unde-entry-certificate"
CERTIFICATE_RETRY = "15min"


def _check_domain(domain: str) -> None:
    # settings.py validated it; the check here keeps any other caller from writing nginx syntax.
    if not domain or not all(c.isalnum() or c in ".-" for c in domain):
        raise ValueError(f"not a DNS name: {domain!r}")


def nginx_http_site(domain: str, layout: EntryLayout = DEFAULT_ENTRY_LAYOUT) -> str:
    """Port 80 answers ACME's challenges and redirects the rest; the TLS site is included once
    certbot has its certificate (nginx refuses to start on a missing one)."""
    _check_domain(domain)
    return "\n".join([
        "# Rendered by unde-infra: the API entry point (local-app); changes are overwritten.",
        "map $http_upgrade $unde_connection_upgrade {",
        "    default upgrade;",
        "    ''      '';",
        "}",
        "",
        "server {",
        f"    listen {HTTP_PORT} default_server;",
        f"    listen [::]:{HTTP_PORT} default_server;",
        f"    server_name {domain};",
        "    location /.well-known/acme-challenge/ {",
        f"        root {layout.webroot};",
        "    }",
        "    location / {",
        f"        return 301 https://{domain}$request_uri;",
        "    }",
        "}",
        "",
        f"include {layout.tls_enabled}/*.conf;",
        "",
    ])


def nginx_tls_site(domain: str, layout: EntryLayout = DEFAULT_ENTRY_LAYOUT) -> str:
    """TLS with HTTP/2 (nginx 1.22's `listen ... http2`), Mozilla's intermediate profile, every
    request to the FastAPI instances (`upstream unde_api`), WebSockets included."""
    _check_domain(domain)
    certificates = layout.certificate_dir(domain)
    proxy = [
        "        proxy_pass http://unde_api;",
        "        proxy_http_version 1.1;",
        "        proxy_set_header Host $host;",
        "        proxy_set_header X-Real-IP $remote_addr;",
        "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        "        proxy_set_header X-Forwarded-Proto https;",
    ]
    return "\n".join([
        "# Rendered by unde-infra: HTTPS for the API; enabled by the setup once the certificate exists.",
        "server {",
        f"    listen {HTTPS_PORT} ssl http2;",
        f"    listen [::]:{HTTPS_PORT} ssl http2;",
        f"    server_name {domain};",
        f"    ssl_certificate {certificates}/fullchain.pem;",
        f"    ssl_certificate_key {certificates}/privkey.pem;",
        "    ssl_protocols TLSv1.2 TLSv1.3;",
        "    ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
        "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305;",
        "    ssl_prefer_server_ciphers off;",
        "    ssl_session_cache shared:unde_tls:10m;",
        "    ssl_session_timeout 1d;",
        "    ssl_session_tickets off;",
        '    add_header Strict-Transport-Security "max-age=63072000" always;',
        f"    client_max_body_size {CLIENT_MAX_BODY};",
        # A failed or overloaded instance is skipped for the request (and, with max_fails, for a while).
        "    proxy_next_upstream error timeout http_502 http_503 http_504;",
        "    proxy_next_upstream_tries 2;",
        "",
        # The instances' health endpoint, for the team's checks and monitoring; not logged.
        f"    location = {HEALTH_PATH} {{",
        *proxy,
        '        proxy_set_header Connection "";',
        "        access_log off;",
        "    }",
        "    location / {",
        *proxy,
        # Keep-alive to the instances, or an upgrade for WebSockets (voice streaming).
        "        proxy_set_header Upgrade $http_upgrade;",
        "        proxy_set_header Connection $unde_connection_upgrade;",
        "        proxy_read_timeout 120s;",
        "    }",
        "}",
        "",
    ])


@dataclass(frozen=True)
class DnsChallenge:
    """certbot's manual DNS-01 hooks (the commands it runs before and after Let's Encrypt looks)."""

    auth_hook: str
    cleanup_hook: str


def entry_settings(domain: str, email: str, layout: EntryLayout = DEFAULT_ENTRY_LAYOUT,
                   dns_challenge: DnsChallenge | None = None) -> str:
    """The parameters of files/entry_setup.sh and files/entry_certificate.sh. The certificate
    comes by HTTP-01 through the webroot, or, with `dns_challenge`, by DNS-01 (the standby
    entry, which the entry's name reaches only after a failover)."""
    _check_domain(domain)
    return setup_settings({
        "DOMAIN": domain, "EMAIL": email, "WEBROOT": layout.webroot, "CERT_DIR": layout.certificate_dir(domain),
        "TLS_SITE": layout.tls_site, "TLS_ENABLED": layout.tls_enabled,
        "CERTIFICATE_SCRIPT": f"{layout.tools_dir}/entry-certificate",
        "CERTIFICATE_TIMER": f"{CERTIFICATE_UNIT}.timer",
        "CHALLENGE": "dns-01" if dns_challenge else "http-01",
        "DNS_AUTH_HOOK": dns_challenge.auth_hook if dns_challenge else "",
        "DNS_CLEANUP_HOOK": dns_challenge.cleanup_hook if dns_challenge else "",
    })


def entry_files(inventory: Inventory, domain: str, email: str, layout: EntryLayout = DEFAULT_ENTRY_LAYOUT, *,
                api_servers: list[Server] | None = None,
                dns_challenge: DnsChallenge | None = None) -> dict[str, RenderedFile]:
    """Everything the entry host receives for nginx and its certificate (none of it secret:
    certbot makes the private key on the server itself). `api_servers`: the FastAPI instances
    behind it (default: the local site's); `dns_challenge`: DNS-01 instead of HTTP-01."""
    tools = layout.tools_dir
    settings = entry_settings(domain, email, layout, dns_challenge)
    service = "\n".join([
        "[Unit]",
        f"Description=Obtain the TLS certificate of {domain} until it exists (unde-infra)",
        "After=network-online.target nginx.service",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=oneshot",
        f"ExecStart={tools}/entry-certificate",
        "",
    ])
    timer = timer_unit(f"Obtain the TLS certificate of {domain} (unde-infra)",
                       ["OnBootSec=2min", f"OnUnitActiveSec={CERTIFICATE_RETRY}"])
    files = {
        layout.upstream: nginx_upstream(inventory, api_servers),
        layout.http_site: nginx_http_site(domain, layout),
        layout.tls_site: nginx_tls_site(domain, layout),
        f"{tools}/entry-setup.env": settings,
        f"{tools}/entry-certificate.env": settings,
        f"{layout.systemd_dir}/{CERTIFICATE_UNIT}.service": service,
        f"{layout.systemd_dir}/{CERTIFICATE_UNIT}.timer": timer,
    }
    scripts = {
        f"{tools}/entry-setup": source("entry_setup.sh"),
        f"{tools}/entry-certificate": source("entry_certificate.sh"),
        # certbot runs every deploy hook after a renewal: nginx then serves the new certificate.
        f"{layout.letsencrypt}/renewal-hooks/deploy/unde-reload-nginx": source("certbot_reload_nginx.sh"),
    }
    return {**{path: RenderedFile(text) for path, text in files.items()},
            **{path: RenderedFile(text, mode="0755") for path, text in scripts.items()}}


def entry_setup_command(layout: EntryLayout = DEFAULT_ENTRY_LAYOUT) -> str:
    return f"{layout.tools_dir}/entry-setup"
