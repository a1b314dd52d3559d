"""Per-stack settings (the `config:` of Pulumi.<stack>.yaml), checked like the topology.

The topology says what exists; a stack's settings say how this stack reaches it: which site
it builds, the provider and location of the local site, the hcloud ids of servers to adopt,
admin keys and CIDRs, the addresses of existing hosts."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, ip_network
from typing import Any, Literal

from .errors import Problems
from .model import HELSINKI, LOCAL, MONITORING_TASK, SECOND_MONITORING_TASK, Inventory
from .render.entry import needs_load_balancer
from .render.entry_failover import EntryDns

Provider = Literal["hcloud", "existing"]


@dataclass(frozen=True)
class ExistingHost:
    address: str
    user: str = "root"
    port: int = 22
    # What the host costs per month (EUR, excl. VAT), for `unde-infra cost`; None: not given.
    eur_month: float | None = None


@dataclass(frozen=True)
class StackSettings:
    stack: str
    site: str
    topology: str = "config/topology.yaml"
    shards: int | None = None
    import_ids: dict[str, str] = field(default_factory=dict)
    ssh_keys: tuple[str, ...] = ()
    # Keys already uploaded to the Hetzner project, adopted by id (position in sshKeys -> id):
    # Hetzner refuses a second copy of a key (uniqueness_error).
    ssh_key_import_ids: dict[int, str] = field(default_factory=dict)
    admin_cidrs: tuple[IPv4Network, ...] = ()
    vswitch_id: int | None = None
    # The Helsinki network exists already (the adopted servers are on it): its hcloud id, the
    # range it has today (only while it is being imported) and the subnets it already has.
    # First run against servers that already exist: an import fails on any difference between
    # the program and the server, so while this is set the adopted servers' other fields are
    # left as they are; the next run (without it) applies labels and protection.
    adopting: bool = False
    network_import_id: str | None = None
    network_current_range: IPv4Network | None = None
    existing_subnets: tuple[IPv4Network, ...] = ()
    provider: Provider = "hcloud"
    location: str = "sin"
    hosts: dict[str, ExistingHost] = field(default_factory=dict)
    helsinki_stack: str = "organization/unde-infra/helsinki"
    replica_location: str = "hel1"
    telegram_chat_id: int = 0
    slack_channel: str = "#unde-alerts"
    # Gateway mode routeros: the router's SSH user and its interface on the Helsinki network.
    routeros_user: str = "admin"
    routeros_private_interface: str = "ether2"
    # The public entry's DNS (local stack): the zone the program creates in Hetzner's DNS and the
    # entry record's name in it (`api` -> api.<zone>; `@` for the zone's apex).
    dns_zone: str | None = None
    entry_hostname: str = "api"
    # The public name of the API entry point (its TLS certificate): the entry record's name when
    # the stack manages the entry's DNS. And the ACME account's email.
    entry_domain: str = ""
    acme_email: str = ""


KNOWN_KEYS = {
    "site", "topology", "shards", "importIds", "sshKeys", "sshKeyImportIds", "adminCidrs", "vswitchId", "networkImport", "adopting", "provider",
    "location", "hosts", "helsinkiStack", "objectStorageAccessKey", "objectStorageSecretKey",
    "sshPrivateKey", "telegramChatId", "slackChannel", "telegramBotToken", "slackWebhookUrl", "heartbeatUrl",
    "posthogApiKey", "routerosUser", "routerosPrivateInterface", "dnsZone", "entryHostname", "dnsApiToken",
    "entryDomain", "acmeEmail",
}  # fmt: skip
# Read by the components with `require_secret`, never into StackSettings.
SECRET_KEYS = {
    "objectStorageAccessKey", "objectStorageSecretKey", "sshPrivateKey", "telegramBotToken", "slackWebhookUrl",
    "heartbeatUrl", "posthogApiKey", "dnsApiToken",
}  # fmt: skip


def parse_settings(stack: str, raw: dict[str, Any], problems: Problems) -> StackSettings:
    """`raw` maps unprefixed project keys to their values; foreign keys (hcloud:token) are skipped."""
    for key in raw:
        if ":" not in key and key not in KNOWN_KEYS:
            problems.add(key, f"unknown setting (known: {', '.join(sorted(KNOWN_KEYS))})")
    site = str(raw.get("site", stack))
    if site not in (HELSINKI, LOCAL):
        problems.add("site", f"unknown site {site!r}: a stack builds helsinki or local")
    shards = raw.get("shards")
    if shards is not None and (not isinstance(shards, int) or isinstance(shards, bool) or shards < 1):
        problems.add("shards", f"must be a whole number of at least 1 (got {shards!r})")
        shards = None
    import_ids = raw.get("importIds") or {}
    if not isinstance(import_ids, dict):
        problems.add("importIds", "must map server names to hcloud server ids")
        import_ids = {}
    for name, value in import_ids.items():
        if not str(value).isdigit():
            problems.add(f"importIds.{name}", f"hcloud server ids are numbers (got {value!r})")
    admin_cidrs = []
    for i, cidr in enumerate(raw.get("adminCidrs") or []):
        try:
            admin_cidrs.append(ip_network(str(cidr)))
        except ValueError:
            problems.add(f"adminCidrs[{i}]", f"not a CIDR: {cidr!r}")
    provider = raw.get("provider", "hcloud")
    if provider not in ("hcloud", "existing"):
        problems.add("provider", f"unknown provider {provider!r} (known: hcloud, existing)")
        provider = "hcloud"
    hosts: dict[str, ExistingHost] = {}
    for name, host in (raw.get("hosts") or {}).items():
        if not isinstance(host, dict) or "address" not in host:
            problems.add(f"hosts.{name}", "needs at least an address (and optionally user, port)")
            continue
        unknown = set(host) - {"address", "user", "port", "eurMonth"}
        if unknown:
            problems.add(f"hosts.{name}", f"unknown keys: {', '.join(sorted(unknown))}")
        hosts[name] = ExistingHost(
            str(host["address"]), str(host.get("user", "root")), int(host.get("port", 22)),
            _monthly_price(host.get("eurMonth"), f"hosts.{name}.eurMonth", problems),
        )
    ssh_keys = tuple(str(k) for k in raw.get("sshKeys") or [])
    key_imports = _ssh_key_imports(raw.get("sshKeyImportIds"), len(ssh_keys), problems)
    vswitch = raw.get("vswitchId")
    if vswitch is not None and not str(vswitch).isdigit():
        problems.add("vswitchId", f"the Robot vSwitch id is a number (got {vswitch!r})")
        vswitch = None
    dns_zone, entry_hostname = _entry_dns(raw, problems)
    network_import = raw.get("networkImport") or {}
    import_id, current_range, existing_subnets = _network_import(network_import, problems)
    return StackSettings(
        stack=stack,
        site=site,
        topology=str(raw.get("topology", "config/topology.yaml")),
        shards=shards,
        import_ids={str(k): str(v) for k, v in import_ids.items()},
        ssh_keys=ssh_keys,
        ssh_key_import_ids=key_imports,
        admin_cidrs=tuple(a for a in admin_cidrs if isinstance(a, IPv4Network)),
        vswitch_id=int(vswitch) if vswitch is not None else None,
        network_import_id=import_id,
        adopting=bool(raw.get("adopting", False)),
        network_current_range=current_range,
        existing_subnets=existing_subnets,
        provider=provider,
        location=str(raw.get("location", "sin")),
        hosts=hosts,
        helsinki_stack=str(raw.get("helsinkiStack", "organization/unde-infra/helsinki")),
        telegram_chat_id=_int_setting(raw, "telegramChatId", problems),
        slack_channel=str(raw.get("slackChannel", "#unde-alerts")),
        routeros_user=str(raw.get("routerosUser", "admin")),
        routeros_private_interface=str(raw.get("routerosPrivateInterface", "ether2")),
        dns_zone=dns_zone,
        entry_hostname=entry_hostname,
        entry_domain=_entry_domain(raw, dns_zone, entry_hostname, problems),
        acme_email=_email_setting(raw, "acmeEmail", problems),
    )


DNS_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def _entry_dns(raw: dict[str, Any], problems: Problems) -> tuple[str | None, str]:
    """The zone (a domain of at least two labels) and the entry's name relative to it, in the
    lower case Hetzner's API requires, without a trailing dot."""
    zone = raw.get("dnsZone")
    if zone is not None:
        zone = str(zone)
        labels = zone.split(".")
        if len(labels) < 2 or not all(DNS_LABEL.match(label) for label in labels):
            problems.add("dnsZone", f"not a domain name in lower case without a trailing dot: {zone!r}")
            zone = None
    hostname = str(raw.get("entryHostname", "api"))
    labels = hostname.split(".")
    if hostname != "@" and not all(DNS_LABEL.match(label) for label in labels):
        problems.add("entryHostname", f"a name inside the zone (e.g. api, or @ for its apex), got {hostname!r}")
    elif zone is not None and (hostname == zone or hostname.endswith(f".{zone}")):
        problems.add("entryHostname", f"give the name relative to the zone ({hostname.removesuffix('.' + zone)!r}), "
                                      f"not {hostname!r}")
    return zone, hostname


def _entry_domain(raw: dict[str, Any], zone: str | None, hostname: str, problems: Problems) -> str:
    """The name the entry's certificate carries. Where the stack manages the entry's DNS it is the
    entry record's name, so it is derived from dnsZone and entryHostname; a different entryDomain
    would give users a certificate for a name they do not resolve."""
    given = _hostname_setting(raw, "entryDomain", problems)
    if zone is None:
        return given
    record = EntryDns(zone, hostname).fqdn
    if given and given != record:
        problems.add("entryDomain", f"{given} is not the entry record's name {record} (entryHostname in dnsZone); "
                                    "the certificate must carry the name users resolve: remove entryDomain")
    return record


def _ssh_key_imports(raw: Any, key_count: int, problems: Problems) -> dict[int, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.add("sshKeyImportIds", "a mapping from a key's position in sshKeys (0, 1, ...) to its hcloud id")
        return {}
    found = {}
    for position, key_id in raw.items():
        where = f"sshKeyImportIds.{position}"
        if not str(position).isdigit() or int(position) >= key_count:
            problems.add(where, f"no key at position {position!r} of sshKeys ({key_count} keys)")
        elif isinstance(key_id, bool) or not str(key_id).isdigit():
            problems.add(where, f"hcloud ssh key ids are numbers (got {key_id!r}; `hcloud ssh-key list` shows them)")
        else:
            found[int(position)] = str(key_id)
    return found


def _network_import(
    raw: Any, problems: Problems
) -> tuple[str | None, IPv4Network | None, tuple[IPv4Network, ...]]:
    if not raw:
        return None, None, ()
    if not isinstance(raw, dict) or "id" not in raw:
        problems.add("networkImport", "needs the id of the existing network (and its currentRange, subnets)")
        return None, None, ()
    unknown = set(raw) - {"id", "currentRange", "subnets"}
    if unknown:
        problems.add("networkImport", f"unknown keys: {', '.join(sorted(unknown))}")
    if not str(raw["id"]).isdigit():
        problems.add("networkImport.id", f"hcloud network ids are numbers (got {raw['id']!r})")
    networks: list[IPv4Network] = []
    for i, cidr in enumerate([raw.get("currentRange"), *(raw.get("subnets") or [])]):
        if cidr is None:
            continue
        try:
            networks.append(IPv4Network(str(cidr)))
        except ValueError:
            where = "networkImport.currentRange" if i == 0 else f"networkImport.subnets[{i - 1}]"
            problems.add(where, f"not an IPv4 network: {cidr!r}")
    current = IPv4Network(str(raw["currentRange"])) if raw.get("currentRange") and networks else None
    subnets = tuple(networks[1:] if current is not None else networks)
    return str(raw["id"]), current, subnets


def _monthly_price(value: Any, where: str, problems: Problems) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        problems.add(where, f"EUR per month, a number (got {value!r})")
        return None
    try:
        price = float(value)
    except ValueError:
        problems.add(where, f"EUR per month, a number (got {value!r})")
        return None
    if not 0 <= price < 100_000 or price != price:
        problems.add(where, f"EUR per month, from 0 to 100000 (got {value!r})")
        return None
    return price


def _int_setting(raw: dict[str, Any], key: str, problems: Problems) -> int:
    value = raw.get(key, 0)
    try:
        return int(value)
    except (TypeError, ValueError):
        problems.add(key, f"must be a whole number (got {value!r})")
        return 0


_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_EMAIL_LOCAL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}")


def _is_hostname(name: str) -> bool:
    """A fully qualified DNS name (RFC 1123): two labels or more, no IP address, no trailing dot."""
    labels = name.split(".")
    return (len(name) <= 253 and len(labels) >= 2 and all(_LABEL.fullmatch(label) for label in labels)
            and not labels[-1].isdigit())


def _hostname_setting(raw: dict[str, Any], key: str, problems: Problems) -> str:
    value = raw.get(key)
    if value is None:
        return ""
    name = str(value).lower()
    if not _is_hostname(name):
        problems.add(key, f"not a DNS name such as api.example.com (got {value!r})")
        return ""
    return name


def _email_setting(raw: dict[str, Any], key: str, problems: Problems) -> str:
    value = raw.get(key)
    if value is None:
        return ""
    local, _, domain = str(value).rpartition("@")
    if not (_EMAIL_LOCAL.fullmatch(local) and _is_hostname(domain.lower())):
        problems.add(key, f"not an email address such as ops@example.com (got {value!r})")
        return ""
    return str(value)


def check_against_inventory(settings: StackSettings, inventory: Inventory, problems: Problems) -> None:
    """What the stack needs from its settings to build its servers without surprises."""
    servers = inventory.stack_servers(settings.site)
    names = {s.name for s in servers}
    for name in settings.import_ids:
        if name not in names:
            problems.add(f"importIds.{name}", f"no server {name!r} of this stack in the topology")
    for server in servers:
        if server.existing and server.dedicated is None and server.name not in settings.import_ids:
            problems.add(
                f"importIds.{server.name}",
                f"{server.name} already exists, so it is adopted, never created: set its hcloud id with "
                f"`pulumi config set --path 'importIds.{server.name}' <id> -s {settings.stack}` "
                "(`hcloud server describe " + server.name + "` shows it)",
            )
    current = settings.network_current_range
    if current is not None and current != inventory.network.ip_range:
        problems.add(
            "networkImport.currentRange",
            f"the network is at {current} and the plan needs {inventory.network.ip_range}; a range change "
            "makes Pulumi replace the network, so widen it first with Hetzner's change_ip_range action "
            f"(`hcloud network change-ip-range --ip-range {inventory.network.ip_range} {settings.network_import_id}`), "
            "then remove currentRange",
        )
    planned = {s.ip_range for s in inventory.network.subnets.values()}
    for cidr in settings.existing_subnets:
        if cidr not in planned:
            problems.add("networkImport.subnets", f"{cidr} is not a subnet of the topology's network")
    if settings.site == HELSINKI and settings.vswitch_id is None and any(s.dedicated for s in servers):
        problems.add("vswitchId", "production-db joins through a Robot vSwitch: set its id")
    if settings.site == LOCAL and settings.provider == "existing":
        for server in inventory.site_servers(LOCAL):
            if server.name not in settings.hosts:
                problems.add(f"hosts.{server.name}", "provider existing: give this server's address (and user)")
    if not settings.ssh_keys:
        problems.add("sshKeys", "at least one admin SSH public key")
    if needs_entry_dns(settings, inventory) and settings.dns_zone is None:
        problems.add(
            "dnsZone",
            "the DNS zone of the public entry point, which fails over to "
            f"{inventory.standby_entry.name if inventory.standby_entry else 'Helsinki'}: "
            f"`pulumi config set dnsZone unde.app -s {settings.stack}` (the entry is entryHostname in it, default api)",
        )
    if needs_entry_dns(settings, inventory) and settings.provider == "existing":
        entry = settings.hosts.get("local-app")
        if entry is not None and not _is_ipv4(entry.address):
            problems.add("hosts.local-app.address", f"the entry record needs the entry's public IPv4, got {entry.address!r}")
    for key, missing in entry_settings_missing(settings, inventory).items():
        problems.add(key, missing)
    if needs_telegram_chat(settings, inventory) and settings.telegram_chat_id == 0:
        problems.add(
            "telegramChatId",
            "the Telegram chat that receives the alerts (Alertmanager refuses a telegram_config without "
            f"chat_id): `pulumi config set telegramChatId -100... -s {settings.stack}`",
        )


def needs_entry_dns(settings: StackSettings, inventory: Inventory) -> bool:
    """The local stack owns the entry's DNS (it knows the local entry's address and reads the
    standby's from helsinki), whenever the topology has a standby entry to fail over to."""
    return settings.site == LOCAL and inventory.standby_entry is not None


def _is_ipv4(text: str) -> bool:
    try:
        IPv4Address(text)
    except ValueError:
        return False
    return True


def entry_settings_missing(settings: StackSettings, inventory: Inventory) -> dict[str, str]:
    """The entry point's TLS needs its domain, and, where certbot gets the certificate on the
    entry host (every case but hcloud's load balancer, whose certificate Hetzner manages), the
    ACME account's email. The local stack configures the entry's TLS wherever it is served (it
    owns the entry's name and DNS), so the helsinki stack needs neither."""
    if settings.site != LOCAL or not any(s.entry_point for s in inventory.site_servers(LOCAL)):
        return {}
    missing = {}
    # Where the stack manages the entry's DNS the name comes from dnsZone, reported on its own.
    if not settings.entry_domain and not needs_entry_dns(settings, inventory):
        missing["entryDomain"] = (
            "the public name of the API entry point, for its TLS certificate: "
            f"`pulumi config set entryDomain api.example.com -s {settings.stack}`"
        )
    # The standby entry's certbot (DNS-01) needs it even where a load balancer holds the local one.
    certbot_here = not (settings.provider == "hcloud" and needs_load_balancer(inventory))
    if not settings.acme_email and (certbot_here or needs_entry_dns(settings, inventory)):
        missing["acmeEmail"] = (
            "the email of the ACME (Let's Encrypt) account that certbot registers: "
            f"`pulumi config set acmeEmail ops@example.com -s {settings.stack}`"
        )
    return missing


def needs_telegram_chat(settings: StackSettings, inventory: Inventory) -> bool:
    """A stack that builds a monitoring server (helsinki: the main path; local: the second alert
    path) renders Alertmanager's Telegram receiver."""
    return any(s.task in (MONITORING_TASK, SECOND_MONITORING_TASK) for s in inventory.stack_servers(settings.site))


def missing_import_ids(settings: StackSettings, inventory: Inventory) -> list[str]:
    return [
        s.name
        for s in inventory.stack_servers(settings.site)
        if s.existing and s.dedicated is None and s.name not in settings.import_ids
    ]
