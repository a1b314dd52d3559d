"""Day-1 bootstrap of every server as cloud-config user data.

User data is small and stable on purpose: changing it would force hcloud to replace a server,
so it holds only what a server needs to be reachable and observable (admin user and keys, the
private route, node_exporter, unattended upgrades). Service configuration is day 2 and travels
with remote commands. No secret is ever rendered here: the cloud keeps user data in its
metadata service, readable from the server by any process.
"""

from __future__ import annotations

import shlex

import yaml

from ..model import LOCAL, Inventory, Server

ADMIN_USER = "unde"
# Directories the day-2 deliveries write into: configuration, and secrets (root only).
CONFIG_DIR = "/etc/unde"
SECRETS_DIR = "/etc/unde/secrets"
RUNTIME_SECRETS_DIR = "/run/unde/secrets"  # tmpfs: for keys that must live in RAM only
NODE_EXPORTER_PORT = 9100
BASE_PACKAGES = ["prometheus-node-exporter", "unattended-upgrades", "apt-listchanges", "nftables"]
ROUTE_UNIT = "unde-private-route.service"


def private_routes(server: Server, inventory: Inventory) -> list[tuple[str, str]]:
    """(destination, via) routes a server needs on the Helsinki private network.

    Hetzner's DHCP gives a cloud server a /32 and an on-link route to the network gateway only,
    so the route to the rest of the network (and, for a server without a public address, the
    default route through helsinki-gw's NAT) is installed by the bootstrap and kept across
    reboots by a systemd unit."""
    if server.site == LOCAL or server.dedicated is not None:
        return []
    gateway = str(inventory.network.gateway)
    routes = [(str(inventory.network.ip_range), gateway)]
    if not server.public_ipv4:
        routes.append(("default", gateway))
    return routes


def _route_unit(routes: list[tuple[str, str]]) -> str:
    lines = [
        "[Unit]",
        "Description=Routes to the UNDE private network (unde-infra)",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=oneshot",
        "RemainAfterExit=yes",
    ]
    lines += [f"ExecStart=/sbin/ip route replace {dest} via {via}" for dest, via in routes]
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def base_files(server: Server, inventory: Inventory) -> dict[str, str]:
    """The files every server has (absolute path -> content), in its user data at first boot and
    delivered again on day 2, so that adopted servers, whose user data never runs again, get
    them too."""
    files = {
        "/etc/apt/apt.conf.d/20auto-upgrades": 'APT::Periodic::Update-Package-Lists "1";\nAPT::Periodic::Unattended-Upgrade "1";\n',
        f"{CONFIG_DIR}/server.env": "".join(
            f"UNDE_{key.upper().replace('-', '_')}={value}\n"
            for key, value in {"server": server.name, **server.labels, "private_ip": str(server.ip)}.items()
        ),
    }
    routes = private_routes(server, inventory)
    if routes:
        files[f"/etc/systemd/system/{ROUTE_UNIT}"] = _route_unit(routes)
    return files


def base_packages(server: Server) -> list[str]:
    packages = list(BASE_PACKAGES)
    if server.site == LOCAL or server.task == "gateway" or server.site == "witness":
        packages.append("wireguard-tools")
    return packages


def base_setup(server: Server, inventory: Inventory) -> list[list[str]]:
    """Commands that make the base files take effect (idempotent)."""
    commands = [
        ["install", "-d", "-m", "0700", "-o", "root", "-g", "root", SECRETS_DIR],
        ["systemctl", "enable", "--now", "prometheus-node-exporter"],
    ]
    if private_routes(server, inventory):
        commands.insert(0, ["systemctl", "enable", "--now", ROUTE_UNIT])
    return commands


def base_setup_script(server: Server, inventory: Inventory) -> str:
    """The day-2 form of the bootstrap: install the base packages, apply the base files."""
    lines = [
        "set -e",
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q " + " ".join(base_packages(server)),
        "systemctl daemon-reload",
    ]
    lines += [" ".join(shlex.quote(part) for part in command) for command in base_setup(server, inventory)]
    return "\n".join(lines)


def bootstrap_user_data(server: Server, inventory: Inventory, ssh_keys: tuple[str, ...] | list[str]) -> str:
    write_files = [
        {"path": path, "content": content, "permissions": "0644"} for path, content in base_files(server, inventory).items()
    ]
    runcmd = base_setup(server, inventory)
    config = {
        "hostname": server.name,
        "fqdn": f"{server.name}.unde.internal",
        "preserve_hostname": False,
        "users": [
            {
                "name": ADMIN_USER,
                "groups": ["sudo"],
                "shell": "/bin/bash",
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "lock_passwd": True,
                "ssh_authorized_keys": list(ssh_keys),
            }
        ],
        "disable_root": False,
        "ssh_pwauth": False,
        "package_update": True,
        "package_upgrade": False,
        "packages": base_packages(server),
        "write_files": write_files,
        "runcmd": runcmd,
    }
    return "#cloud-config\n" + dump_yaml(config)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def block_dumper(base: type[yaml.SafeDumper]) -> type[yaml.SafeDumper]:
    """Safe YAML with multi-line strings as literal blocks, so rendered files stay readable."""
    dumper: type[yaml.SafeDumper] = type(f"Block{base.__name__}", (base,), {})
    dumper.add_representer(str, _represent_str)
    return dumper


# libyaml's emitter writes the same bytes as PyYAML's pure-Python one (tests/unit compare them on
# every rendered file) in a fraction of the time; PyYAML built without libyaml falls back.
PURE_BLOCK_DUMPER = block_dumper(yaml.SafeDumper)
BLOCK_DUMPER = block_dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper))


def dump_yaml(data: object, dumper: type[yaml.SafeDumper] = BLOCK_DUMPER) -> str:
    return yaml.dump(data, Dumper=dumper, sort_keys=False, width=1000, default_flow_style=False)
