#!/usr/bin/python3
"""acme-dns-hook: certbot's manual DNS-01 hooks for the entry's certificate on the standby entry.

The standby entry point (standby-api) serves the public entry's name only after a DNS failover,
so Let's Encrypt's HTTP-01 challenge, which follows the name to the local entry, cannot reach
it. DNS-01 can: this hook sets the challenge's TXT record `_acme-challenge.<name>` in the entry's
Hetzner zone before certbot asks Let's Encrypt to look (`auth`), and removes it afterwards
(`cleanup`). certbot stores both hooks with the certificate, so certbot.timer's renewals use
them too.

Shipped by unde-infra to /usr/local/lib/unde/acme-dns-hook with its parameters beside it
(`acme-dns-hook.json`, rendered by unde_infra/render/entry_failover.py) and the Cloud API client
it shares with the failover watcher (hcloud_dns.py). The DNS token is the watcher's root-only
file; certbot runs the hooks as root. Python 3.11 standard library only.

certbot passes the domain and the validation string in CERTBOT_DOMAIN and CERTBOT_VALIDATION.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

try:  # a module of unde_infra.files: the tests and the linters
    from . import hcloud_dns
    from .hcloud_dns import ApiError, Redactor
except ImportError:  # the script on a server: hcloud_dns.py is delivered beside it (sys.path[0])
    import hcloud_dns  # type: ignore[import-not-found,no-redef]
    from hcloud_dns import ApiError, Redactor  # type: ignore[import-not-found,no-redef]

USER_AGENT = "unde-acme-dns-hook/1"
EXIT_API, EXIT_USAGE = 1, 2
# RFC 8555, 8.4: the validation is the base64url SHA-256 digest of the key authorization.
VALIDATION = re.compile(r"[A-Za-z0-9_-]{16,128}")


@dataclass(frozen=True)
class HookConfig:
    zone: str
    api: hcloud_dns.ApiSettings
    token_file: str
    ttl: int
    publish_wait_seconds: float


class UsageError(Exception):
    pass


def load_config(path: str) -> HookConfig:
    try:
        with open(path, encoding="utf-8") as handle:
            data: Any = json.load(handle)
        api = data["api"]
        config = HookConfig(
            zone=str(data["zone"]),
            api=hcloud_dns.ApiSettings(str(api["endpoint"]), float(api["timeout_seconds"]), int(api["attempts"]),
                                       float(api["action_timeout_seconds"])),
            token_file=str(data["token_file"]), ttl=int(data["ttl"]),
            publish_wait_seconds=float(data["publish_wait_seconds"]),
        )
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{path}: not the hook's parameters: {type(exc).__name__}: {exc}") from exc
    return config


def challenge_name(domain: str, zone: str) -> str:
    """The challenge record's name relative to the zone: `_acme-challenge.api` for api.<zone>,
    `_acme-challenge` for the zone's apex. A domain outside the zone is a mistake."""
    domain = domain.lower().rstrip(".")
    if domain == zone:
        return "_acme-challenge"
    if not domain.endswith(f".{zone}") or domain.startswith("*"):
        raise UsageError(f"{domain!r} is not a name in the zone {zone!r}")
    return f"_acme-challenge.{domain.removesuffix('.' + zone)}"


def txt_value(validation: str) -> str:
    """Hetzner's API takes TXT values as quoted strings."""
    if not VALIDATION.fullmatch(validation):
        raise UsageError("CERTBOT_VALIDATION is not an ACME DNS-01 validation string")
    return f'"{validation}"'


def read_token(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            token = handle.read().strip()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the DNS API token: {exc.strerror or exc}") from exc
    if not token:
        raise UsageError(f"{path}: the DNS API token file is empty")
    return token


def run(action: str, config: HookConfig, env: Mapping[str, str], log: Redactor,
        sleep: Callable[[float], None] = time.sleep) -> None:
    domain, validation = env.get("CERTBOT_DOMAIN", ""), env.get("CERTBOT_VALIDATION", "")
    if not domain:
        raise UsageError("CERTBOT_DOMAIN is not set: certbot runs this hook")
    name, value = challenge_name(domain, config.zone), txt_value(validation)
    api = hcloud_dns.ZoneApi(config.api, config.zone, read_token(config.token_file), log, USER_AGENT, sleep)
    if action == "auth":
        api.add_records(name, "TXT", [value], config.ttl, "ACME DNS-01 challenge (certbot on the standby entry)")
        log(f"TXT {name}.{config.zone} set; waiting {config.publish_wait_seconds:g} s for Hetzner's nameservers")
        # Let's Encrypt asks the zone's authoritative nameservers, which publish a change a little
        # after the API accepted it (timings.DNS_PUBLISH_SECONDS).
        sleep(config.publish_wait_seconds)
    elif action == "cleanup":
        removed = api.remove_records(name, "TXT", [value])
        log(f"TXT {name}.{config.zone} " + ("removed" if removed else "was not there"))
    else:
        raise UsageError(f"unknown action {action!r}: auth or cleanup")


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    # certbot keeps a hook's output in its log and reports anything on stderr as an error.
    log = Redactor(sys.stdout)
    config_path = os.path.abspath(__file__) + ".json"
    if args[:1] == ["--config"] and len(args) >= 2:
        config_path, args = args[1], args[2:]
    if len(args) != 1:
        log("usage: acme-dns-hook [--config FILE] auth|cleanup (certbot's --manual-auth-hook / --manual-cleanup-hook)")
        return EXIT_USAGE
    try:
        run(args[0], load_config(config_path), os.environ if env is None else env, log)
    except UsageError as error:
        log(str(error))
        return EXIT_USAGE
    except ApiError as error:
        log(str(error))
        return EXIT_API
    return 0


if __name__ == "__main__":
    sys.exit(main())
