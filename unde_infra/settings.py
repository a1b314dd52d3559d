"""Per-stack settings (the `config:` of Pulumi.<stack>.yaml), checked like the topology.

The topology says what exists; a stack's settings say how this stack reaches it: which site
it builds, the provider and location of the local site, the hcloud ids of servers to adopt,
admin keys and CIDRs, the addresses of existing hosts. Every value is checked by its kind
(`unde_infra.validators`) and every problem is reported at once, `key: message`."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Network
from pathlib import Path, PurePosixPath
from typing import Any, Literal, TypeVar

from . import validators
from .config_files import join_path, load_config, unsafe_values
from .errors import Problems, shown
from .model import (
    ADOPTED_OS,
    HELSINKI,
    LOCAL,
    MONITORING_TASK,
    OS_CODENAMES,
    ROOT,
    SECOND_MONITORING_TASK,
    Inventory,
    Server,
)
from .render.entry import api_instances, needs_load_balancer
from .render.entry_failover import EntryDns
from .sizing import HCLOUD_NETWORK_ZONES, cheapest_type

Provider = Literal["hcloud", "existing"]
T = TypeVar("T")
# The Pulumi project (Pulumi.yaml): its stack configs prefix their keys with it.
PROJECT = "unde-infra"
DEFAULT_TOPOLOGY_SETTING = "config/topology.yaml"
# The most shards a stack config (or --shards) may ask for; the address plan may hold fewer.
MAX_SHARDS = 1024
# The operator's own choice of topology file for one run (`unde-infra preview --topology`, or
# `UNDE_INFRA_TOPOLOGY=... pulumi preview`): any path on their machine. The stack config's
# `topology`, committed in a merge request, must stay inside the project.
TOPOLOGY_OVERRIDE_ENV = "UNDE_INFRA_TOPOLOGY"
# The helsinki stack of this project, as a StackReference names it: helsinki, org/helsinki or
# org/unde-infra/helsinki.
HELSINKI_STACK_REFERENCE = re.compile(r"^(?:[A-Za-z0-9_.-]{1,100}/(?:unde-infra/)?)?helsinki$")
SLACK_CHANNEL = re.compile(r"^[#@]?[a-z0-9][a-z0-9._-]{0,79}$")
ROUTEROS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
TELEGRAM_CHAT_ID = re.compile(r"^-?[0-9]{1,16}$")


@dataclass(frozen=True)
class ExistingHost:
    address: str
    user: str = "root"
    port: int = 22
    # What the host costs per month (EUR, excl. VAT), for `unde-infra cost`; None: not given.
    eur_month: float | None = None
    # The system it runs (docs/architecture.md, "Operating system and where packages come from"); the program
    # never re-images it, so this says what is there, and the setup steps check it.
    os: str = ADOPTED_OS


AdminNetwork = IPv4Network | IPv6Network


@dataclass(frozen=True)
class StackSettings:
    stack: str
    site: str
    topology: str = DEFAULT_TOPOLOGY_SETTING
    shards: int | None = None
    import_ids: dict[str, str] = field(default_factory=dict)
    ssh_keys: tuple[str, ...] = ()
    # Keys already uploaded to the Hetzner project, adopted by id (position in sshKeys -> id):
    # Hetzner refuses a second copy of a key (uniqueness_error).
    ssh_key_import_ids: dict[int, str] = field(default_factory=dict)
    # Keys the operator says are not uploaded yet (sshKeyImportIds.<i>: new): the stack creates them.
    new_ssh_keys: frozenset[int] = frozenset()
    admin_cidrs: tuple[AdminNetwork, ...] = ()
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
    # The zone's hcloud id where it exists at Hetzner already (adopted), or "new" (created).
    dns_zone_import: str | None = None
    entry_hostname: str = "api"
    # The public name of the API entry point (its TLS certificate): the entry record's name when
    # the stack manages the entry's DNS. And the ACME account's email.
    entry_domain: str = ""
    acme_email: str = ""

    def topology_path(self, project_dir: Path = ROOT) -> Path:
        return project_dir / self.topology


# The hcloud provider takes its token from this variable where the stack config has none.
HCLOUD_TOKEN_ENV = "HCLOUD_TOKEN"


@dataclass(frozen=True)
class Setting:
    """One key of a stack config (`config:` of Pulumi.<stack>.yaml, written `unde-infra:<key>`; a
    provider's own keys keep their namespace, `hcloud:token`), described for the generated
    reference (docs/reference/stack-config.md). A key with a dot is a part of another key's value
    (`hosts.<name>.address`)."""

    kind: str  # what a value is
    description: str
    default: str | bool | None = None  # the value the program takes when the key is not set
    default_note: str = ""  # or, where the default is not one value, what it is in words
    allowed: tuple[str, ...] = ()
    stacks: tuple[str, ...] = (HELSINKI, LOCAL)
    secret: bool = False  # stored encrypted (`pulumi config set --secret`); plain text is refused


_BOTH_ALERT_PATHS = ("Both stacks: the local stack's second alert path (local-monitoring) keeps its own copy, so that "
                     "it alerts while Helsinki is out of reach.")
SETTINGS: dict[str, Setting] = {
    "site": Setting(
        "text", "The site the stack builds.", default_note="the stack's name", allowed=(HELSINKI, LOCAL)),
    "topology": Setting(
        "path", "The topology file: a relative `.yaml` path inside the project (no `..`, no absolute path, no "
        "symbolic link that leads out), since a merge request cannot point a stack at a file elsewhere on the "
        f"machine that runs it. `--topology FILE` (or `{TOPOLOGY_OVERRIDE_ENV}=FILE pulumi preview`) is the "
        "operator's own choice for one run and may name any file.", default=DEFAULT_TOPOLOGY_SETTING),
    "shards": Setting(f"whole number, 1-{MAX_SHARDS}", "Overrides the topology's `shards.count` for this stack.",
                      default_note="the topology's `shards.count`"),
    "importIds": Setting(
        "mapping: server name -> hcloud id", "The hcloud id of every server of the stack that runs already "
        "(`hcloud server list`): each is adopted, never created a second time. A real run stops while any is "
        "missing. The record of what the stack adopted: a server with an import id that leaves the topology "
        "without a `retired` entry is a mandatory policy violation (`adopted-servers-kept`).", default_note="none"),
    "sshKeys": Setting(
        "list of OpenSSH public keys", "The admins' keys, installed for root (hcloud) and the `unde` user "
        "(cloud-init). Each is parsed as a key and written back canonically (`type base64 comment`): "
        "authorized_keys options, a second key on the line, DSA and RSA below 2048 bits are refused, a private "
        "key without being echoed. The helsinki stack owns them in the Hetzner project (one copy of a key per "
        "project) and exports their ids; the local stack's servers use those. A placeholder (a comment like "
        "`replace-with-...`, or this repository's sample key) blocks a real run.", default_note="none: at least one"),
    "sshKeyImportIds": Setting(
        "mapping: position in `sshKeys` (0, 1, ...) -> hcloud id, or `new`", "For each key of `sshKeys`: the id of the key uploaded already "
        "(`hcloud ssh-key list`; its text in `sshKeys` must be the uploaded text exactly), or `new` for a key "
        "the stack uploads. Needed where the project has servers already.", stacks=(HELSINKI,)),
    "adminCidrs": Setting(
        "list of IPv4 or IPv6 networks", "Where SSH may come from (the team's VPN or office egress): the "
        "firewalls keep SSH open from these only, from the first run on. Never `0.0.0.0/0` or `::/0`, nor "
        "loopback, multicast, link-local or unspecified; at most as wide as config/policy.yaml's "
        "`ssh_max_prefix`. IPv6 networks are applied on the hcloud firewalls and helsinki-gw's nftables; in "
        "gateway mode routeros (IPv4 firewall only) an IPv6 one is refused. Documentation, private and "
        "reserved ranges block a real run.", default_note="none: at least one"),
    "vswitchId": Setting("hcloud id", "The Robot vSwitch production-db is attached to (Robot > vSwitches); "
                                      "required where the topology has a dedicated server.", stacks=(HELSINKI,)),
    "networkImport": Setting(
        "mapping", "The private network the running servers are on, adopted (never created a second time).",
        default_note="none: the network is created", stacks=(HELSINKI,)),
    "networkImport.id": Setting("hcloud id", "Its hcloud id (`hcloud network list`).", stacks=(HELSINKI,)),
    "networkImport.currentRange": Setting(
        "private IPv4 network", "Its range today, if it is not the topology's `network.ip_range` yet: the run then "
        "stops and names the one-time `hcloud network change-ip-range` that widens it (a range change through "
        "Pulumi would replace the network); widen it, then remove this key.", stacks=(HELSINKI,)),
    "networkImport.subnets": Setting(
        "list of private IPv4 networks", "The subnets it already has, each a subnet of the topology's network: "
        "they are imported, the others created.", stacks=(HELSINKI,)),
    "adopting": Setting(
        "true or false", "True for the first run against the servers that exist only: an import fails on any "
        "difference between the program and what the provider reads, so the adopted key, network, subnets and "
        "servers are taken as they are; the next run, without it, brings them in line (docs/first-real-run.md).",
        default=False),
    "provider": Setting(
        "text", "How the local site is built: hcloud (servers on Hetzner Cloud in `location`) or existing (hosts "
        "that already run, listed under `hosts`, bootstrapped over SSH with the same cloud-config; they need "
        "cloud-init installed).", default="hcloud", allowed=("hcloud", "existing"), stacks=(LOCAL,)),
    "location": Setting(
        "hcloud location", "Where the local site's hcloud servers are ordered: the stack chooses for each the "
        "cheapest type of this location that fits its size.", default="sin", allowed=tuple(HCLOUD_NETWORK_ZONES),
        stacks=(LOCAL,)),
    "hosts": Setting(
        "mapping: server name -> host", "Provider existing: each local server's host, by server name (every local server needs one).",
        stacks=(LOCAL,)),
    "hosts.<name>.address": Setting(
        "IP address or host name", "Where SSH reaches it. The entry host's must be its public IPv4 where the "
        "stack manages the entry's DNS.", default_note="required", stacks=(LOCAL,)),
    "hosts.<name>.user": Setting(
        "POSIX user name", "The login; a login other than root runs every step through `sudo -n` (passwordless "
        "sudo for that user).", default="root", stacks=(LOCAL,)),
    "hosts.<name>.port": Setting("port, 1-65535", "SSH's port.", default="22", stacks=(LOCAL,)),
    "hosts.<name>.eurMonth": Setting(
        "number, 0-100000", "What the host costs, EUR per month excluding VAT, for `unde-infra cost`.",
        default_note="unpriced", stacks=(LOCAL,)),
    "hosts.<name>.os": Setting(
        "text", "The system it runs (it is never re-imaged): what its setup installs from, and what the setup "
        "steps check before they touch anything.", default=ADOPTED_OS, allowed=tuple(sorted(OS_CODENAMES)),
        stacks=(LOCAL,)),
    "helsinkiStack": Setting(
        "stack name", "The helsinki stack this stack reads its outputs from (network id, gateway addresses, "
        "`sshKeyIds`, the standby entry's address) through a StackReference: helsinki, org/helsinki or "
        "org/unde-infra/helsinki.", default="organization/unde-infra/helsinki", stacks=(LOCAL,)),
    "objectStorageAccessKey": Setting(
        "S3 access key", "Hetzner Object Storage's access key (the Cloud Console: Hetzner has no API for keys). "
        "helsinki: the buckets; local: pgBackRest writes the shards' backups.", secret=True),
    "objectStorageSecretKey": Setting("S3 secret key", "Its secret key.", secret=True),
    "sshPrivateKey": Setting(
        "OpenSSH private key", "The admin key the remote commands log in with (a CI runner); without it, the key "
        "in your ssh-agent.", default_note="the ssh-agent's key", secret=True),
    "telegramChatId": Setting(
        "whole number", "The Telegram chat that receives the alerts. A real run of a stack that builds a "
        "monitoring server stops until it is set (Alertmanager refuses a receiver without a chat). "
        + _BOTH_ALERT_PATHS, default_note="none (the offline preview stands one in)"),
    "slackChannel": Setting("Slack channel", "The Slack channel of the alerts. " + _BOTH_ALERT_PATHS,
                            default="#unde-alerts"),
    "telegramBotToken": Setting("Telegram bot token", "The alerts' Telegram bot (<digits>:<35 characters>, as "
                                "@BotFather gives it). " + _BOTH_ALERT_PATHS, secret=True),
    "slackWebhookUrl": Setting("https URL", "Slack's incoming webhook of the alerts' channel. " + _BOTH_ALERT_PATHS,
                               secret=True),
    "heartbeatUrl": Setting(
        "https URL", "The dead man's switch: the ping URL of a check at the heartbeat service (healthchecks.io, "
        "say) that alerts when the Watchdog alert stops arriving. A check of its own per stack (\"unde "
        "monitoring\", \"unde local-monitoring\"), each with the Watchdog's 1-minute period and a grace of a few "
        "minutes, so the service tells which monitoring server went quiet.", secret=True),
    "posthogApiKey": Setting("PostHog project API key", "PostHog's project key (phc_...).", stacks=(LOCAL,),
                             secret=True),
    "routerosUser": Setting("RouterOS user name", "Gateway mode routeros: the router's SSH user.", default="admin",
                            stacks=(LOCAL,)),
    "routerosPrivateInterface": Setting(
        "RouterOS interface name", "Gateway mode routeros: the router's interface on the Helsinki network.",
        default="ether2", stacks=(LOCAL,)),
    "dnsZone": Setting(
        "domain name", "The public entry's zone, which the program creates (protected) in Hetzner's DNS; delegate "
        "the domain to the nameservers the zone lists. A real run stops without it (the offline preview stands in "
        "`unde.example`). The entry fails over by moving its record (docs/failures.md).",
        default_note="none", stacks=(LOCAL,)),
    "dnsZoneImport": Setting(
        "hcloud zone id, or `new`", "Whether the zone exists in the DNS project already: its id adopts it (with "
        "the labels it has), `new` lets the run create it. A real run stops until one is set.", stacks=(LOCAL,)),
    "entryHostname": Setting(
        "name inside the zone", "The entry record's name relative to `dnsZone` (`api` -> api.<zone>; `@` for the "
        "zone's apex): the API entry point's public name and its certificate's.", default="api", stacks=(LOCAL,)),
    "dnsApiToken": Setting(
        "hcloud API token", "A read-write token of a Hetzner Cloud project that holds nothing but the DNS zone. "
        "The failover watcher on standby-api, a server that faces the internet, uses it to move the entry record "
        "and to set the standby certificate's DNS-01 records; a Cloud API token cannot be limited to DNS, so a "
        "token of the main project there could delete servers. (`hcloud:token` works too, but then that server "
        "holds the keys to everything.)", stacks=(LOCAL,), secret=True),
    "entryDomain": Setting(
        "DNS name", "The API entry point's public name, for its TLS certificate. Where the stack manages the "
        "entry's DNS (the topology has a standby entry) it is derived from `dnsZone` and `entryHostname` and may "
        "only be set to that same name (without `dnsZone` it is refused); otherwise a real run stops until it is "
        "set.",
        default_note="`entryHostname`.`dnsZone`", stacks=(LOCAL,)),
    "acmeEmail": Setting(
        "email address", "The ACME (Let's Encrypt) account's email that certbot registers, wherever certbot gets "
        "the certificate: the local entry host (unless the hcloud load balancer holds a managed certificate) and "
        "always the standby entry (DNS-01). A real run stops until it is set.", stacks=(LOCAL,)),
    "hcloud:token": Setting(
        "hcloud API token", "The hcloud provider's token (64 letters and digits; Cloud Console > Security > API "
        f"tokens), or the `{HCLOUD_TOKEN_ENV}` environment variable.", secret=True),
}
# The top-level keys of the project (`unde-infra:<key>`).
KNOWN_KEYS = frozenset(key for key in SETTINGS if ":" not in key and "." not in key)
# Read by the components with `require_secret`, never into StackSettings.
SECRET_KEYS = frozenset(key for key in KNOWN_KEYS if SETTINGS[key].secret)
# Secrets of the providers the program uses, set in the same stack config.
PROVIDER_SECRET_KEYS = frozenset(key for key in SETTINGS if ":" in key and SETTINGS[key].secret)
# The keys of an entry of `hosts` and of `networkImport`.
HOST_KEYS = tuple(key.rpartition(".")[2] for key in SETTINGS if key.startswith("hosts.<name>."))
NETWORK_IMPORT_KEYS = tuple(key.rpartition(".")[2] for key in SETTINGS if key.startswith("networkImport."))
# The config secrets each stack's program requires (`require_secret`).
PROGRAM_SECRETS = {
    HELSINKI: ("objectStorageAccessKey", "objectStorageSecretKey", "telegramBotToken", "slackWebhookUrl", "heartbeatUrl"),
    LOCAL: ("objectStorageAccessKey", "objectStorageSecretKey", "posthogApiKey", "dnsApiToken", "telegramBotToken",
            "slackWebhookUrl", "heartbeatUrl"),
}


def required_secrets(settings: StackSettings, inventory: Inventory) -> tuple[str, ...]:
    """What a real run of the stack reads from its encrypted config: the program's secrets, and
    the hcloud token wherever the stack talks to Hetzner Cloud."""
    program = PROGRAM_SECRETS.get(settings.site, ())
    if settings.site == LOCAL and not needs_entry_dns(settings, inventory):
        program = tuple(k for k in program if k != "dnsApiToken")
    return (*program, "hcloud:token")


# The shape of each secret, checked where the real run reads it (the program, before anything is
# registered): a value of the wrong kind fails far later and further away (Alertmanager refuses
# its whole configuration over one URL). The message never quotes the value.
_HCLOUD_TOKEN = (re.compile(r"[A-Za-z0-9]{64}"), "an hcloud API token (64 letters and digits; Cloud Console > Security > API tokens)")
_ACCESS_KEY = (re.compile(r"[A-Za-z0-9]{16,128}"), "an S3 access key (letters and digits, as the Cloud Console shows it)")
SECRET_SHAPES: dict[str, tuple[re.Pattern[str], str]] = {
    "telegramBotToken": (re.compile(r"[0-9]{5,16}:[A-Za-z0-9_-]{30,64}"), "a Telegram bot token as @BotFather gives it (<digits>:<35 characters>)"),
    "posthogApiKey": (re.compile(r"phc_[A-Za-z0-9_-]{20,80}"), "a PostHog project API key (phc_...)"),
    "objectStorageAccessKey": _ACCESS_KEY,
    "objectStorageSecretKey": (re.compile(r"[A-Za-z0-9+/=]{16,128}"), "an S3 secret key (as the Cloud Console shows it)"),
    "dnsApiToken": _HCLOUD_TOKEN,
    "hcloud:token": _HCLOUD_TOKEN,
}
HTTPS_URL_SECRETS = {"slackWebhookUrl": "Slack's incoming webhook URL", "heartbeatUrl": "the dead man's switch's ping URL"}


def secret_shape_problem(key: str, value: str) -> str:
    """Why `value` cannot be the secret `key`, or ""; never the value itself."""
    if key in HTTPS_URL_SECRETS:
        return validators.https_url_problem(value, HTTPS_URL_SECRETS[key])
    shape = SECRET_SHAPES.get(key)
    if shape is not None and not shape[0].fullmatch(value):
        return f"not {shape[1]} (the value is not shown; {len(value)} characters)"
    return ""


def stand_in_secret(key: str, marker: str) -> str:
    """An offline stand-in for the secret `key` of its real shape, carrying `marker` (as much of
    it as the shape allows) so that a test can find it wherever it ends up."""
    letters = re.sub(r"[^A-Za-z0-9]", "", f"{marker}{key}")
    if key in HTTPS_URL_SECRETS:
        return f"https://{key.lower()}.unde.invalid/{marker}-{key}"
    if key == "telegramBotToken":
        return f"1000000000:{marker}-{key}".ljust(45, "0")[:75]
    if key == "posthogApiKey":
        return f"phc_{marker}-{key}".ljust(30, "0")
    if SECRET_SHAPES.get(key) is _HCLOUD_TOKEN:
        return letters.ljust(64, "0")[:64]
    if key in SECRET_SHAPES:
        return letters.ljust(20, "0")[:128]
    return f"{marker}-{key}"


def is_encrypted(value: Any) -> bool:
    """How Pulumi writes an encrypted value into Pulumi.<stack>.yaml: `{secure: <ciphertext>}`."""
    return isinstance(value, dict) and set(value) == {"secure"} and isinstance(value["secure"], str)


def plaintext_secret_problems(stack: str, present: dict[str, bool], problems: Problems) -> None:
    """`present`: each secret key the stack config sets -> whether it is encrypted. A secret in
    plain text is refused; the message names the command that stores it encrypted and never
    the value itself."""
    for key, encrypted in sorted(present.items()):
        if not encrypted:
            problems.add(
                key,
                f"a secret in plain text in Pulumi.{stack}.yaml: remove it from the file and store it encrypted "
                f"with `pulumi config set --secret {key} <value> -s {stack}`",
            )


def parse_settings(stack: str, raw: dict[str, Any], problems: Problems, *, project_dir: Path = ROOT) -> StackSettings:
    """`raw` maps unprefixed project keys to their values; provider keys (hcloud:token) are
    checked for plain-text secrets only."""
    # A value that is not plain one-line data is reported, whichever way it arrived (a file
    # offline, the engine's config in a real run), and read no further.
    safe = {}
    for key, value in raw.items():
        unsafe = list(unsafe_values({key: value}))
        for problem in unsafe:
            problems.add(problem.path, problem.message)
        if not unsafe:
            safe[key] = value
    raw = safe
    for key in raw:
        if not isinstance(key, str):
            problems.add(join_path("", key), "a setting's name is text")
        elif ":" not in key and key not in KNOWN_KEYS:
            problems.add(join_path("", key), f"unknown setting (known: {', '.join(sorted(KNOWN_KEYS))})")
    secrets = {k: is_encrypted(v) for k, v in raw.items() if k in SECRET_KEYS | PROVIDER_SECRET_KEYS}
    plaintext_secret_problems(stack, secrets, problems)
    get = _Reader(raw, problems)
    site = get.choice("site", (HELSINKI, LOCAL), stack if stack in (HELSINKI, LOCAL) else HELSINKI,
                      "unknown site {}: a stack builds helsinki or local")
    ssh_keys = get.items("sshKeys", validators.ssh_public_key)
    for i, ssh_key in enumerate(ssh_keys):
        if ssh_key is not None and ssh_keys.index(ssh_key) != i:
            problems.add(f"sshKeys[{i}]", f"the same key as sshKeys[{ssh_keys.index(ssh_key)}]; Hetzner holds a key once")
    admin = get.items("adminCidrs", validators.admin_network)
    for i, net in enumerate(admin):
        if net is not None and admin.index(net) != i:
            problems.add(f"adminCidrs[{i}]", f"{net} is given twice")
    network_import = _network_import(raw.get("networkImport"), problems)
    dns_zone, entry_hostname = _entry_dns(raw, problems)
    key_imports = _ssh_key_imports(raw.get("sshKeyImportIds"), len(ssh_keys), problems)
    return StackSettings(
        stack=stack,
        site=site,
        topology=get.value("topology", lambda v: topology_setting(v, project_dir), DEFAULT_TOPOLOGY_SETTING),
        shards=get.value("shards", lambda v: validators.bounded_int(v, 1, MAX_SHARDS, "the shard count"), None),
        import_ids=get.mapping("importIds", validators.server_name, lambda v: validators.digits(v, "hcloud server ids")),
        ssh_keys=tuple(k for k in ssh_keys if k is not None),
        ssh_key_import_ids=key_imports[0],
        new_ssh_keys=key_imports[1],
        admin_cidrs=tuple(a for a in admin if a is not None),
        vswitch_id=get.value("vswitchId", lambda v: int(validators.digits(v, "Robot vSwitch ids")), None),
        network_import_id=network_import[0],
        adopting=get.value("adopting", _flag, False),
        network_current_range=network_import[1],
        existing_subnets=network_import[2],
        provider=get.choice("provider", ("hcloud", "existing"), "hcloud", "unknown provider {}"),
        location=get.choice("location", tuple(HCLOUD_NETWORK_ZONES), "sin", "unknown hcloud location {}"),
        hosts=get.mapping("hosts", validators.server_name, _existing_host),
        helsinki_stack=get.text("helsinkiStack", HELSINKI_STACK_REFERENCE, "organization/unde-infra/helsinki",
                                "the helsinki stack of this project: organization/unde-infra/helsinki"),
        telegram_chat_id=get.value("telegramChatId", _chat_id, 0),
        slack_channel=get.text("slackChannel", SLACK_CHANNEL, "#unde-alerts", "a Slack channel like #unde-alerts"),
        routeros_user=get.text("routerosUser", ROUTEROS_NAME, "admin", "a RouterOS user name"),
        routeros_private_interface=get.text("routerosPrivateInterface", ROUTEROS_NAME, "ether2",
                                            "a RouterOS interface name like ether2"),
        dns_zone=dns_zone,
        dns_zone_import=get.value("dnsZoneImport", _import_or_new("hcloud zone ids"), None),
        entry_hostname=entry_hostname,
        entry_domain=_entry_domain(raw, dns_zone, entry_hostname, problems),
        acme_email=_email_setting(raw, "acmeEmail", problems),
    )


class FieldProblems(ValueError):
    """Problems of the fields of one entry, each reported at its own path."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{key}: {message}" for key, message in items))
        self.items = items


class _Reader:
    """Reads one setting at a time; a bad value is reported at its key and the default is used,
    so that every problem of the file is found in one pass."""

    def __init__(self, raw: dict[str, Any], problems: Problems) -> None:
        self.raw, self.problems = raw, problems

    def value(self, key: str, check: Callable[[Any], T], default: T) -> T:
        if self.raw.get(key) is None:
            return default
        try:
            return check(self.raw[key])
        except ValueError as exc:
            self.problems.add(key, str(exc))
            return default

    def choice(self, key: str, allowed: tuple[str, ...], default: str, message: str) -> Any:
        value = self.raw.get(key)
        if value is None:
            return default
        if value not in allowed or not isinstance(value, str):
            self.problems.add(key, message.format(shown(value)) + f" (known: {', '.join(allowed)})")
            return default
        return value

    def text(self, key: str, pattern: re.Pattern[str], default: str, what: str) -> str:
        def check(value: Any) -> str:
            if not isinstance(value, str) or not pattern.fullmatch(value):
                raise ValueError(f"not {what} (got {shown(value)})")
            return value

        return self.value(key, check, default)

    def items(self, key: str, check: Callable[[Any], T]) -> list[T | None]:
        value = self.raw.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self.problems.add(key, f"a list (- one entry a line), not {shown(value, 40)}")
            return []
        found: list[T | None] = []
        for i, item in enumerate(value):
            try:
                found.append(check(item))
            except ValueError as exc:
                self.problems.add(f"{key}[{i}]", str(exc))
                found.append(None)
        return found

    def mapping(self, key: str, check_key: Callable[[Any], str], check_value: Callable[[Any], T]) -> dict[str, T]:
        value = self.raw.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problems.add(key, f"a mapping of server name to its setting, not {shown(value, 40)}")
            return {}
        found: dict[str, T] = {}
        for name, item in value.items():
            where = join_path(key, name)
            try:
                found[check_key(name)] = check_value(item)
            except FieldProblems as exc:
                for key, message in exc.items:
                    self.problems.add(join_path(where, key), message)
            except ValueError as exc:
                self.problems.add(where, str(exc))
        return found


def topology_setting(value: Any, project_dir: Path) -> str:
    """The stack config's topology: a relative path inside the project. A merge request cannot
    point a stack at a file elsewhere on the machine that runs it (the CLI's --topology, the
    operator's choice for one run, can)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"a path relative to the project, like {DEFAULT_TOPOLOGY_SETTING} (got {shown(value)})")
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or "\\" in value:
        raise ValueError(f"{shown(value)} is outside the project: give a path relative to it, like {DEFAULT_TOPOLOGY_SETTING}")
    if path.suffix not in (".yaml", ".yml"):
        raise ValueError(f"{shown(value)} is not a YAML file (.yaml)")
    root = project_dir.resolve()
    if not (root / path).resolve().is_relative_to(root):
        raise ValueError(f"{shown(value)} leads outside the project (through a symbolic link)")
    return value


def _flag(value: Any) -> bool:
    # `pulumi config set adopting true` stores the text "true".
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise ValueError(f"true or false (got {shown(value)})")


def _chat_id(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not TELEGRAM_CHAT_ID.fullmatch(str(value)):
        raise ValueError(f"a Telegram chat id is a whole number like -1001234567890 (got {shown(value)})")
    return int(value)


def _existing_host(value: Any) -> ExistingHost:
    if not isinstance(value, dict) or "address" not in value:
        raise ValueError("needs at least an address (and optionally user, port)")
    unknown = sorted(str(k) for k in value if k not in HOST_KEYS)
    if unknown:
        raise ValueError(f"unknown keys: {', '.join(unknown)} (known: {', '.join(HOST_KEYS)})")
    problems: list[tuple[str, str]] = []
    checks = {
        "address": (validators.host, "address"),
        "user": (validators.user_name, "root"),
        "port": (validators.port, 22),
        "eurMonth": (_monthly_price, None),
        "os": (_host_os, ADOPTED_OS),
    }
    parsed: dict[str, Any] = {}
    for key, (check, default) in checks.items():
        try:
            parsed[key] = check(value[key]) if key in value else default
        except ValueError as exc:
            problems.append((key, str(exc)))
    if problems:
        raise FieldProblems(problems)
    return ExistingHost(parsed["address"], parsed["user"], parsed["port"], parsed["eurMonth"], parsed["os"])


def _host_os(value: Any) -> str:
    """The operating system an existing host runs (what its setup steps install from)."""
    if value not in OS_CODENAMES:
        raise ValueError(f"{value!r} is not a known system; use one of {', '.join(sorted(OS_CODENAMES))}")
    return str(value)


def _monthly_price(value: Any) -> float:
    """What an existing host costs, EUR per month (for `unde-infra cost`)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"EUR per month, a number (got {shown(value)})")
    price = float(value)
    if not 0 <= price < 100_000:
        raise ValueError(f"EUR per month, from 0 to 100000 (got {shown(value)})")
    return price


def _entry_dns(raw: dict[str, Any], problems: Problems) -> tuple[str | None, str]:
    """The zone (a domain of at least two labels) and the entry's name relative to it, in the
    lower case Hetzner's API requires, without a trailing dot."""
    zone = raw.get("dnsZone")
    if zone is not None:
        labels = zone.split(".") if isinstance(zone, str) else []
        if len(labels) < 2 or not all(validators.DNS_LABEL.match(label) for label in labels):
            problems.add("dnsZone", f"not a domain name in lower case without a trailing dot: {shown(zone)}")
            zone = None
    hostname = raw.get("entryHostname", "api")
    if not isinstance(hostname, str) or (
        hostname != "@" and not all(validators.DNS_LABEL.match(label) for label in hostname.split("."))
    ):
        problems.add("entryHostname", f"a name inside the zone (e.g. api, or @ for its apex), got {shown(hostname)}")
        hostname = "api"
    elif zone is not None and (hostname == zone or hostname.endswith(f".{zone}")):
        problems.add("entryHostname", f"give the name relative to the zone ({shown(hostname.removesuffix('.' + zone))}), "
                                      f"not {shown(hostname)}")
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


NEW = "new"


def _import_or_new(what: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value == NEW:
            return NEW
        try:
            return validators.digits(value, what)
        except ValueError as exc:
            raise ValueError(f"{exc}, or `{NEW}` for one the stack creates") from None

    return check


def _ssh_key_imports(raw: Any, key_count: int, problems: Problems) -> tuple[dict[int, str], frozenset[int]]:
    """sshKeyImportIds: position in sshKeys -> the uploaded key's hcloud id, or `new` for a key
    the stack uploads."""
    if raw is None:
        return {}, frozenset()
    if not isinstance(raw, dict):
        problems.add("sshKeyImportIds", "a mapping from a key's position in sshKeys (0, 1, ...) to its hcloud id")
        return {}, frozenset()
    found: dict[int, str] = {}
    new: set[int] = set()
    check = _import_or_new("hcloud ssh key ids")
    for position, key_id in raw.items():
        where = join_path("sshKeyImportIds", position)
        if isinstance(position, bool) or not validators.ASCII_DIGITS.match(str(position)) or int(position) >= key_count:
            problems.add(where, f"no key at position {shown(position)} of sshKeys ({key_count} keys)")
            continue
        try:
            value = check(key_id)
        except ValueError as exc:
            problems.add(where, f"{exc}; `hcloud ssh-key list` shows them")
            continue
        if value == NEW:
            new.add(int(position))
        else:
            found[int(position)] = value
    return found, frozenset(new)


def _network_import(raw: Any, problems: Problems) -> tuple[str | None, IPv4Network | None, tuple[IPv4Network, ...]]:
    if not raw:
        return None, None, ()
    if not isinstance(raw, dict) or "id" not in raw:
        problems.add("networkImport", "needs the id of the existing network (and its currentRange, subnets)")
        return None, None, ()
    unknown = sorted(str(k) for k in raw if k not in NETWORK_IMPORT_KEYS)
    if unknown:
        problems.add("networkImport", f"unknown keys: {', '.join(unknown)}")
    network_id = None
    try:
        network_id = validators.digits(raw["id"], "hcloud network ids")
    except ValueError as exc:
        problems.add("networkImport.id", str(exc))
    current = None
    if raw.get("currentRange") is not None:
        try:
            current = validators.private_ipv4_network(raw["currentRange"])
        except ValueError as exc:
            problems.add("networkImport.currentRange", str(exc))
    subnets: list[IPv4Network] = []
    listed = raw.get("subnets") or []
    if not isinstance(listed, list):
        problems.add("networkImport.subnets", f"a list of the subnets the network has, not {shown(listed, 40)}")
        listed = []
    for i, cidr in enumerate(listed):
        try:
            subnets.append(validators.private_ipv4_network(cidr))
        except ValueError as exc:
            problems.add(f"networkImport.subnets[{i}]", str(exc))
    return network_id, current, tuple(subnets)


def local_type(server: Server, settings: StackSettings, inventory: Inventory) -> str | None:
    """The hcloud type of a local server: the cheapest of the stack's location that fits."""
    return cheapest_type(server.vcpu, server.ram_gb, settings.location, inventory.server_types, inventory.local_limit)


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
    name = value.lower() if isinstance(value, str) else ""
    if not _is_hostname(name):
        problems.add(key, f"not a DNS name such as api.example.com (got {shown(value)})")
        return ""
    return name


def _email_setting(raw: dict[str, Any], key: str, problems: Problems) -> str:
    value = raw.get(key)
    if value is None:
        return ""
    local, _, domain = value.rpartition("@") if isinstance(value, str) else ("", "", "")
    if not (_EMAIL_LOCAL.fullmatch(local) and _is_hostname(domain.lower())):
        problems.add(key, f"not an email address such as ops@example.com (got {shown(value)})")
        return ""
    return local + "@" + domain


def check_against_inventory(settings: StackSettings, inventory: Inventory, problems: Problems) -> None:
    """What the stack's settings must agree with in the topology, whatever the run. (What only a
    real run needs, import ids and the names and chats it cannot stand in, is in
    `readiness.blockers`; an import id that names no server of the stack is a policy violation,
    `adopted-servers-kept`: a removed adopted server.)"""
    servers = inventory.stack_servers(settings.site)
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
    local_names = {s.name for s in inventory.site_servers(LOCAL)}
    for name in settings.hosts:
        if name not in local_names:
            problems.add(f"hosts.{name}", f"no local server {name!r} in the topology")
    if settings.site == LOCAL and settings.provider == "hcloud":
        for server in inventory.site_servers(LOCAL):
            if local_type(server, settings, inventory) is None:
                problems.add(
                    "location",
                    f"no hcloud type in {settings.location} fits {server.name} "
                    f"({server.vcpu} vCPU / {server.ram_gb:g} GB) within the local limit",
                )
    if not settings.ssh_keys:
        problems.add("sshKeys", "at least one admin SSH public key")
    if not settings.admin_cidrs:
        problems.add(
            "adminCidrs",
            "at least one network SSH may come from: with none, SSH is closed on every server, to the remote "
            "commands that deliver the configuration too",
        )
    if inventory.network.wireguard.mode == "routeros":
        for i, net in enumerate(settings.admin_cidrs):
            if net.version == 6:
                problems.add(
                    f"adminCidrs[{i}]",
                    f"{net}: the RouterOS gateway script applies IPv4 admin CIDRs only (it does not manage "
                    "RouterOS's IPv6 firewall); give the admins' IPv4 networks",
                )
    if needs_entry_dns(settings, inventory) and settings.dns_zone is None and settings.entry_domain:
        # Checked here, not only once dnsZone is set: else the name is refused only in the real run.
        problems.add("entryDomain", "the stack manages the entry's DNS (the topology has a standby entry), so the "
                                    "entry's name is its record's, entryHostname in dnsZone: set dnsZone (and "
                                    "entryHostname, default api) and remove entryDomain")
    if needs_entry_dns(settings, inventory) and settings.provider == "existing":
        name = api_instances(inventory)[0].name
        entry = settings.hosts.get(name)
        if entry is not None and not _is_ipv4(entry.address):
            problems.add(f"hosts.{name}.address", f"the entry record needs the entry's public IPv4, got {shown(entry.address)}")


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


def entry_settings_missing(settings: StackSettings, inventory: Inventory) -> dict[str, tuple[str, str]]:
    """The entry point's TLS needs its domain, and, where certbot gets the certificate on the
    entry host (every case but hcloud's load balancer, whose certificate Hetzner manages), the
    ACME account's email. The local stack configures the entry's TLS wherever it is served (it
    owns the entry's name and DNS), so the helsinki stack needs neither. Each missing key -> what
    it is, the command that sets it."""
    if settings.site != LOCAL or not any(s.entry_point for s in inventory.site_servers(LOCAL)):
        return {}
    missing = {}
    # Where the stack manages the entry's DNS the name comes from dnsZone, reported on its own.
    if not settings.entry_domain and not needs_entry_dns(settings, inventory):
        missing["entryDomain"] = (
            "the public name of the API entry point, for its TLS certificate",
            f"pulumi config set entryDomain api.example.com -s {settings.stack}",
        )
    # The standby entry's certbot (DNS-01) needs it even where a load balancer holds the local one.
    certbot_here = not (settings.provider == "hcloud" and needs_load_balancer(inventory))
    if not settings.acme_email and (certbot_here or needs_entry_dns(settings, inventory)):
        missing["acmeEmail"] = (
            "the email of the ACME (Let's Encrypt) account that certbot registers",
            f"pulumi config set acmeEmail ops@example.com -s {settings.stack}",
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


def read_stack_config(stack: str, project_dir: Path = ROOT) -> dict[str, Any]:
    """The `config:` mapping of Pulumi.<stack>.yaml, keys without the project prefix."""
    path = project_dir / f"Pulumi.{stack}.yaml"
    # Values are checked by parse_settings, under the names the messages use (sshKeys[0], not
    # config['unde-infra:sshKeys'][0]); a real run's values never pass this loader.
    data = load_config(path, check_values=False)
    config = data.get("config") if isinstance(data, dict) else None
    problems = Problems()
    if not isinstance(config, dict):
        problems.add("config", "the stack's settings: a mapping of `unde-infra:<key>: <value>`")
        config = {}
    for problem in unsafe_values({k: v for k, v in data.items() if k != "config"} if isinstance(data, dict) else {}):
        problems.add(problem.path, problem.message)
    result = {}
    for key, value in config.items():
        if not isinstance(key, str):
            problems.add(f"config.{key}", "a setting's name is text: `unde-infra:<key>`")
            continue
        namespace, _, name = key.partition(":")
        result[key if namespace != PROJECT else name] = value
    problems.raise_if_any(path.name)
    return result


def stack_settings(stack: str, project_dir: Path = ROOT) -> StackSettings:
    """A stack's settings from Pulumi.<stack>.yaml, every problem at once (TopologyError)."""
    problems = Problems()
    config = read_stack_config(stack, project_dir)
    settings = parse_settings(stack, {k: v for k, v in config.items() if ":" not in k}, problems,
                              project_dir=project_dir)
    problems.raise_if_any(f"Pulumi.{stack}.yaml")
    return settings
