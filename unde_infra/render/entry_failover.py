"""The DNS failover watcher of the public entry (SPEC scenario 2): its files on each vantage point.

The watcher itself is a real file, `unde_infra/files/entry_failover.py`, shipped as it is; what
differs per server is its parameters, a small JSON file rendered here from the topology, the
timings (`unde_infra.timings`, which `unde-infra scenarios` reads too) and the two addresses the
record moves between. Two vantage points in two Hetzner locations:

* the decider on the standby entry point (hel1): probes, reads the observer, moves the record;
* the observer on the etcd witness (fsn1, when the etcd placement has one): probes and serves
  its verdict on the private network. Without a witness the decider decides alone.

Neither vantage point is the thing it checks, and both survive the loss of the local site.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .. import files, timings
from ..model import WITNESS, Inventory, Server
from .cloud_init import CONFIG_DIR, SECRETS_DIR

DECIDER, OBSERVER = "decider", "observer"
TOOLS_DIR = "/usr/local/lib/unde"
SCRIPT_PATH = f"{TOOLS_DIR}/entry-failover"
# The Cloud API client the watcher and the DNS-01 hook share (files/hcloud_dns.py), beside them.
DNS_CLIENT_PATH = f"{TOOLS_DIR}/hcloud_dns.py"
# What both share with the other Python programs on servers (files/script_support.py), beside them.
SUPPORT_PATH = f"{TOOLS_DIR}/{files.SUPPORT_MODULE}"
# certbot's manual DNS-01 hooks for the entry's certificate on the standby entry (the decider's
# server): they use the decider's token, which is why they are delivered with it.
ACME_HOOK_PATH = f"{TOOLS_DIR}/acme-dns-hook"
ACME_TXT_TTL_SECONDS = 60
EXECUTABLES = frozenset({SCRIPT_PATH, ACME_HOOK_PATH})
CONFIG_PATH = f"{CONFIG_DIR}/entry-failover.json"
TOKEN_PATH = f"{SECRETS_DIR}/dns-api-token"
UNIT = "unde-entry-failover"
UNIT_PATH = f"/etc/systemd/system/{UNIT}.service"
TEXTFILE = "/var/lib/prometheus/node-exporter/unde_entry_failover.prom"
# The observer's verdict, on its private address only (the decider reads it over the network).
STATUS_PORT = 9480
HEALTH_PATH = "/healthz"
HTTPS_PORT = 443
HCLOUD_API = "https://api.hetzner.cloud/v1"
RECORD_TYPE = "A"
API_ATTEMPTS = 3
ACTION_TIMEOUT_SECONDS = 20
# Re-read the record every minute: a change by hand (or by `pulumi up`) is noticed.
RESYNC_TICKS = 6


@dataclass(frozen=True)
class EntryDns:
    zone: str
    hostname: str  # relative to the zone; "@" for its apex

    @property
    def fqdn(self) -> str:
        return self.zone if self.hostname == "@" else f"{self.hostname}.{self.zone}"


def decider(inventory: Inventory) -> Server | None:
    return inventory.standby_entry


def observer(inventory: Inventory) -> Server | None:
    """The second vantage point: the etcd witness, in its own Hetzner location."""
    return next((m.host for m in inventory.etcd if m.site == WITNESS), None)


def watcher_config(role: str, server: Server, inventory: Inventory, dns: EntryDns, local_address: str,
                   standby_address: str) -> dict[str, object]:
    config: dict[str, object] = {
        "role": role,
        "vantage": server.name,
        "tls_name": dns.fqdn,
        "health_path": HEALTH_PATH,
        "local": {"record": local_address, "probe_host": local_address, "probe_port": HTTPS_PORT},
        "zone": dns.zone,
        "record": {"name": dns.hostname, "type": RECORD_TYPE},
        "interval_seconds": timings.ENTRY_PROBE_INTERVAL_SECONDS,
        "probe_timeout_seconds": timings.ENTRY_PROBE_TIMEOUT_SECONDS,
        "failures_to_fail_over": timings.ENTRY_FAILURES_TO_FAIL_OVER,
        "successes_to_fail_back": timings.ENTRY_SUCCESSES_TO_FAIL_BACK,
        "hold_seconds": timings.ENTRY_FAIL_BACK_HOLD_SECONDS,
        "peer_max_age_seconds": timings.ENTRY_PEER_MAX_AGE_SECONDS,
        "peer_timeout_seconds": timings.ENTRY_PEER_TIMEOUT_SECONDS,
        "resync_ticks": RESYNC_TICKS,
        "api": {
            "endpoint": HCLOUD_API,
            "timeout_seconds": timings.DNS_API_TIMEOUT_SECONDS,
            "attempts": API_ATTEMPTS,
            "action_timeout_seconds": ACTION_TIMEOUT_SECONDS,
            "token_file": TOKEN_PATH,
        },
        "ca_file": None,
        "textfile": TEXTFILE,
    }
    if role == DECIDER:
        # The standby probes its own nginx on loopback, with the entry's name for TLS.
        config["standby"] = {"record": standby_address, "probe_host": "127.0.0.1", "probe_port": HTTPS_PORT}
        peer = observer(inventory)
        config["peer_status_url"] = f"http://{peer.ip}:{STATUS_PORT}/status" if peer is not None else None
    else:
        config["listen"] = f"{server.ip}:{STATUS_PORT}"
    return config


def watcher_unit(role: str) -> str:
    """A long-running service: the streaks live in memory (a restart only delays a decision by
    N probes), and the observer serves its verdict between probes. The decider reads the API
    token as a systemd credential, so no other process of the unit's user sees the file."""
    lines = [
        "[Unit]",
        f"Description=UNDE entry DNS failover watcher ({role}) (unde-infra)",
        "After=network-online.target",
        "Wants=network-online.target",
        # Never give up restarting: this is the only thing that moves users off a dead site.
        "StartLimitIntervalSec=0",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart=/usr/bin/python3 {SCRIPT_PATH} --config {CONFIG_PATH}",
        "Restart=always",
        "RestartSec=5",
    ]
    if role == DECIDER:
        lines.append(f"LoadCredential=dns-api-token:{TOKEN_PATH}")
    lines += [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        # "-": a missing directory (no node_exporter yet) must not stop the watcher from starting.
        f"ReadWritePaths=-{TEXTFILE.rsplit('/', 1)[0]}",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)


def acme_hook_settings(dns: EntryDns) -> dict[str, object]:
    """The parameters of files/acme_dns_hook.py: the zone, the same API settings as the watcher's,
    the decider's token file, and how long Hetzner's nameservers take to publish the record."""
    return {
        "zone": dns.zone,
        "api": {"endpoint": HCLOUD_API, "timeout_seconds": timings.DNS_API_TIMEOUT_SECONDS, "attempts": API_ATTEMPTS,
                "action_timeout_seconds": ACTION_TIMEOUT_SECONDS},
        "token_file": TOKEN_PATH,
        "ttl": ACME_TXT_TTL_SECONDS,
        "publish_wait_seconds": timings.DNS_PUBLISH_SECONDS,
    }


def acme_hook_command(action: str) -> str:
    """What certbot runs (`--manual-auth-hook`, `--manual-cleanup-hook`)."""
    return f"/usr/bin/python3 {ACME_HOOK_PATH} {action}"


def watcher_files(role: str, server: Server, inventory: Inventory, dns: EntryDns, local_address: str,
                  standby_address: str) -> dict[str, str]:
    """Path -> content of everything but the token (which the decider gets as a secret file).
    The decider's server also gets certbot's DNS-01 hook, which shares the API client and token."""
    config = watcher_config(role, server, inventory, dns, local_address, standby_address)
    rendered = {
        SCRIPT_PATH: files.source("entry_failover.py"),
        DNS_CLIENT_PATH: files.source("hcloud_dns.py"),
        SUPPORT_PATH: files.source(files.SUPPORT_MODULE),
        CONFIG_PATH: json.dumps(config, indent=2) + "\n",
        UNIT_PATH: watcher_unit(role),
    }
    if role == DECIDER:
        rendered.update(files.python_script(ACME_HOOK_PATH, "acme_dns_hook.py", acme_hook_settings(dns)))
    return rendered


def watcher_apply(role: str) -> str:
    """Check the parameters (and, on the decider, that the token is there) before restarting, so
    a bad delivery leaves the running watcher alone."""
    return "\n".join([
        "set -e",
        f"/usr/bin/python3 {SCRIPT_PATH} --config {CONFIG_PATH} --check",
        "systemctl daemon-reload",
        f"systemctl enable {UNIT}",
        f"systemctl restart {UNIT}",
    ])
