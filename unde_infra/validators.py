"""Values checked by their kind, at the model boundary: before anything is registered or rendered.

Each kind is a function that returns the value in its canonical form or raises ValueError with
a message for people; `Annotated` aliases make the same functions pydantic field types, so the
topology's schema and the stack settings check a value of one kind the same way. The config
loader (config_files) has already refused control characters everywhere; these kinds check
what a value of each role may be: a server name is a DNS label, a public address is global,
a key is a key.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import (
    AddressValueError,
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    NetmaskValueError,
    ip_address,
    ip_network,
)
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, rsa
from pydantic import PlainValidator

from .config_files import forbidden_character
from .errors import shown

T = TypeVar("T")

# RFC 1123 labels; server names start with a letter (they are hostnames and hcloud names).
DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
SERVER_NAME = re.compile(r"^[a-z][a-z0-9-]{0,61}[a-z0-9]$")
HOST_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
# A Linux interface name (wg-quick takes the file name as the interface): at most 15 bytes.
INTERFACE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,14}$")
# POSIX portable user names (useradd's default rule, without a trailing $).
USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
PRIVATE_V4 = tuple(IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
ASCII_DIGITS = re.compile(r"^[0-9]{1,19}$")  # str.isdigit() is true for "²", which int() refuses
MIN_RSA_BITS = 2048
MAX_KEY_COMMENT = 200


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} is written as text, not {_kind(value)} (got {shown(value)})")
    reason = forbidden_character(value)
    if reason:
        raise ValueError(f"holds {reason}")
    return value


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "true/false"
    return {int: "a number", float: "a number", list: "a list", dict: "a mapping", type(None): "nothing"}.get(
        type(value), f"a {type(value).__name__}"
    )


def dns_label(value: object) -> str:
    text = _text(value, "a name")
    if not DNS_LABEL.match(text):
        raise ValueError(f"{shown(text)} is not a DNS label: lowercase letters, digits and '-', 1-63 characters")
    return text


def server_name(value: object) -> str:
    text = _text(value, "a server name")
    if not SERVER_NAME.match(text):
        raise ValueError(
            f"invalid server name {shown(text)}: a DNS label of lowercase letters, digits and '-', "
            "2-63 characters, starting with a letter"
        )
    return text


def hostname(value: object) -> str:
    """A DNS name (RFC 1123): dot-separated labels, 253 characters at most."""
    text = _text(value, "a host name")
    labels = text.rstrip(".").split(".")
    if not text or len(text) > 253 or not all(HOST_LABEL.match(label) for label in labels):
        raise ValueError(f"{shown(text)} is not a host name (letters, digits, '-' and '.')")
    if ASCII_DIGITS.match(labels[-1]):
        raise ValueError(f"{shown(text)} looks like an address, not a host name")
    return text


def host(value: object) -> str:
    """An IP address or a host name, as an SSH target."""
    text = _text(value, "an address")
    try:
        return str(ip_address(text))
    except ValueError:
        pass
    try:
        return hostname(text)
    except ValueError:
        raise ValueError(f"{shown(text)} is neither an IP address nor a host name") from None


def endpoint(value: object) -> str:
    """`host` or `host:port` of a service reached over HTTPS (the object storage endpoint), parsed
    as a URL's authority: no scheme, path, query or credentials."""
    text = _text(value, "an endpoint")
    parts = urlsplit(f"https://{text}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{shown(text)}: the port is not a number from 1 to 65535") from None
    if parts.path or parts.query or parts.fragment or parts.username or parts.password or not parts.hostname:
        raise ValueError(f"{shown(text)} is not host[:port] (no scheme, path or credentials)")
    if "[" in text:
        raise ValueError(f"{shown(text)}: give a host name, not an address")
    hostname(parts.hostname)
    if port == 0:
        raise ValueError(f"{shown(text)}: the port is not a number from 1 to 65535")
    return text


def https_url_problem(text: str, what: str) -> str:
    """Why `text` is not an https URL with a host name (a secret: never quoted back), or ""."""
    problem = ""
    if not text.isprintable() or any(c.isspace() or c in "\"'<>`" for c in text):
        problem = "it holds spaces, quotes or unprintable characters"
    else:
        parts = urlsplit(text)
        try:
            parts.port  # noqa: B018 - parsing it is the check
        except ValueError:
            problem = "its port is not a number"
        if not problem and parts.scheme != "https":
            problem = "it does not start with https://" if parts.scheme else "it is not a URL"
        elif not problem and (parts.username or parts.password):
            problem = "it carries a user name or password before the host"
        elif not problem:
            try:
                hostname(parts.hostname or "")
            except ValueError:
                problem = "it has no host name"
    return f"not {what} as an https URL: {problem} (the value is not shown)" if problem else ""


def bucket_name(value: object) -> str:
    """An S3 bucket name by S3's rules for general purpose buckets: 3-63 characters of lowercase
    letters, digits, '.' and '-', starting and ending with a letter or digit, no '..', not an
    IPv4 address, none of the prefixes and suffixes S3 reserves."""
    text = _text(value, "a bucket name")
    problems = []
    if not 3 <= len(text) <= 63:
        problems.append("3-63 characters")
    if not re.fullmatch(r"[a-z0-9.-]*", text):
        problems.append("only lowercase letters, digits, '.' and '-'")
    if text and not (text[0].isalnum() and text[-1].isalnum()):
        problems.append("starts and ends with a letter or digit")
    if ".." in text:
        problems.append("no two adjacent periods")
    if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", text):
        problems.append("not formatted as an IP address")
    if text.startswith(("xn--", "sthree-", "amzn-s3-demo-")):
        problems.append("not starting with xn--, sthree- or amzn-s3-demo-")
    if text.endswith(("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")):
        problems.append("not ending with a suffix S3 reserves (-s3alias, --ol-s3, .mrap, --x-s3, --table-s3)")
    if problems:
        raise ValueError(f"{shown(text)} is not an S3 bucket name: {'; '.join(problems)}")
    return text


def ssh_public_key(value: object) -> str:
    """An OpenSSH public key, parsed as a key and written back canonically (`type base64`, and
    the comment when there is one): anything else on the line, such as authorized_keys options
    (`command="..."`) or a second key, is refused."""
    if isinstance(value, str) and "PRIVATE KEY" in value:
        # Never echo it: a private key in a config file is a leaked secret already.
        raise ValueError("this is a private key; never put one in a config file. Give its public key (ssh-keygen -y -f KEY)")
    text = _text(value, "an SSH public key").strip()
    fields = text.split(None, 2)
    if len(fields) < 2:
        raise ValueError(f"not an OpenSSH public key (`type base64 [comment]`): {shown(text, 40)}")
    try:
        key = serialization.load_ssh_public_key(f"{fields[0]} {fields[1]}".encode())
    except Exception as exc:  # noqa: BLE001 - cryptography raises ValueError or UnsupportedAlgorithm
        raise ValueError(f"not an OpenSSH public key ({exc}): {shown(text, 40)}") from None
    if isinstance(key, dsa.DSAPublicKey):
        raise ValueError("a DSA key: OpenSSH no longer accepts them; use ed25519")
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise ValueError(f"an RSA key of {key.key_size} bits; at least {MIN_RSA_BITS}")
    canonical = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    comment = fields[2].strip() if len(fields) == 3 else ""
    if len(comment) > MAX_KEY_COMMENT:
        raise ValueError(f"the key's comment is longer than {MAX_KEY_COMMENT} characters")
    return f"{canonical} {comment}" if comment else canonical


def _address(value: object, what: str) -> IPv4Address | IPv6Address:
    text = _text(value, what)
    try:
        return ip_address(text)
    except ValueError:
        raise ValueError(f"{shown(text)} is not {what}") from None


def ipv4_address(value: object) -> IPv4Address:
    address = _address(value, "an IPv4 address")
    if not isinstance(address, IPv4Address):
        raise ValueError(f"{address} is not an IPv4 address")
    return address


def private_ipv4_address(value: object) -> IPv4Address:
    address = ipv4_address(value)
    if not any(address in net for net in PRIVATE_V4):
        raise ValueError(f"{address} is not a private address (10/8, 172.16/12, 192.168/16)")
    return address


def public_ipv4_address(value: object) -> IPv4Address:
    """A server's public address: globally routable unicast (not private, shared, reserved,
    loopback, link-local, documentation or multicast)."""
    address = ipv4_address(value)
    if not address.is_global or address.is_multicast:
        raise ValueError(f"{address} is not a public address (a private, reserved or documentation range)")
    return address


def ip_any_address(value: object) -> IPv4Address | IPv6Address:
    return _address(value, "an IP address")


def _network(value: object, what: str) -> IPv4Network | IPv6Network:
    text = _text(value, what)
    try:
        return ip_network(text, strict=True)
    except (AddressValueError, NetmaskValueError, ValueError):
        try:
            loose = ip_network(text, strict=False)
        except ValueError:
            raise ValueError(f"{shown(text)} is not {what}") from None
        raise ValueError(f"{text} has host bits set; the network is {loose}") from None


def private_ipv4_network(value: object) -> IPv4Network:
    """A private range (hcloud networks and subnets are RFC 1918 ranges)."""
    net = _network(value, "an IPv4 network (CIDR)")
    if not isinstance(net, IPv4Network):
        raise ValueError(f"{net} is not an IPv4 network")
    if not any(net.subnet_of(p) for p in PRIVATE_V4):
        raise ValueError(f"{net} is not a private range (10/8, 172.16/12, 192.168/16)")
    return net


def admin_network(value: object) -> IPv4Network | IPv6Network:
    """Where SSH may come from: an IPv4 or IPv6 network, never the whole internet, never an
    address that cannot be a source (loopback, multicast, link-local, unspecified)."""
    net = _network(value, "a CIDR (an IPv4 or IPv6 network)")
    if net.prefixlen == 0:
        raise ValueError(f"{net} is the whole internet: SSH never comes from anywhere; give the admin networks")
    first = net.network_address
    if first.is_loopback or first.is_multicast or first.is_link_local or first.is_unspecified:
        raise ValueError(f"{net} cannot be where SSH comes from (loopback, multicast, link-local or unspecified)")
    return net


def port(value: object) -> int:
    return bounded_int(value, 1, 65535, "a port")


def bounded_int(value: object, low: int, high: int, what: str = "a whole number") -> int:
    """A whole number from `low` to `high`: never true/false (YAML's yes/no), never text."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} is a whole number from {low} to {high}, not {_kind(value)} (got {shown(value)})")
    if not low <= value <= high:
        raise ValueError(f"{what} is a whole number from {low} to {high} (got {shown(value)})")
    return value


def digits(value: object, what: str) -> str:
    """A numeric id (hcloud ids): a whole number, or text of digits; never true/false."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not ASCII_DIGITS.match(str(value)):
        raise ValueError(f"{what} are numbers (got {shown(value)})")
    return str(int(value))


def _match(value: object, pattern: re.Pattern[str], what: str, rule: str) -> str:
    text = _text(value, what)
    if not pattern.match(text):
        raise ValueError(f"{shown(text)} is not {what}: {rule}")
    return text


def interface_name(value: object) -> str:
    return _match(value, INTERFACE_NAME, "an interface name", "lowercase letters, digits and '-', at most 15, starting with a letter")


def user_name(value: object) -> str:
    return _match(value, USER_NAME, "a user name", "lowercase letters, digits, '_' and '-', at most 32, not starting with a digit or '-'")


def public_ip_or_true(value: object) -> bool | IPv4Address | None:
    """`public_ipv4:` true/false, or the known address of an existing server."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return public_ipv4_address(value)
    raise ValueError(f"true, false or the server's public IPv4 address (got {shown(value)})")


def _field(check: Callable[[object], T]) -> Any:
    def validate(value: object) -> T:
        return check(value)

    return PlainValidator(validate)


@dataclass(frozen=True)
class Kind:
    """What a value of a kind is, in words: the type column of the generated reference
    (docs/reference/), next to the function that checks it."""

    name: str


# pydantic field types of these kinds (the schema of config/topology.yaml uses them).
DnsLabel = Annotated[str, _field(dns_label), Kind("DNS label (lowercase letters, digits, '-'; 1-63 characters)")]
ServerName = Annotated[str, _field(server_name), Kind("server name (a DNS label of 2-63 characters, starting with a letter)")]
Endpoint = Annotated[str, _field(endpoint), Kind("host[:port] (no scheme, path or credentials)")]
BucketName = Annotated[str, _field(bucket_name), Kind("S3 bucket name (S3's rules for general purpose buckets)")]
PrivateIPv4 = Annotated[IPv4Address, _field(private_ipv4_address), Kind("private IPv4 address (RFC 1918)")]
PrivateIPv4Network = Annotated[IPv4Network, _field(private_ipv4_network),
                               Kind("private IPv4 network, CIDR without host bits (RFC 1918)")]
InterfaceName = Annotated[str, _field(interface_name), Kind("interface name (lowercase letters, digits, '-'; at most 15)")]
PublicIPv4OrFlag = Annotated[bool | IPv4Address | None, _field(public_ip_or_true),
                             Kind("true, false, or the public IPv4 address (globally routable) of an existing server")]
