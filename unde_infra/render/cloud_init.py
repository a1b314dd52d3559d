"""Day-1 bootstrap of every server as cloud-config user data.

User data is small and stable on purpose: changing it would force hcloud to replace a server,
so it holds only what a server needs to be reachable and observable (admin user and keys, the
private route, node_exporter, unattended upgrades). Service configuration is day 2 and travels
with remote commands. No secret is ever rendered here: the cloud keeps user data in its
metadata service, readable from the server by any process.
"""

from __future__ import annotations

from ..files import APT_INSTALL, APT_INSTALL_SCRIPT, source
from ..model import LOCAL, Inventory, Server
from .escape import authorized_key, env_file, shell_command, systemd_word, yaml_dump

# Other renderers import the YAML dumper from here.
dump_yaml = yaml_dump

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
    lines += [f"ExecStart=/sbin/ip route replace {systemd_word(dest)} via {systemd_word(via)}" for dest, via in routes]
    lines += ["", "[Install]", "WantedBy=multi-user.target", ""]
    return "\n".join(lines)


def base_files(server: Server, inventory: Inventory) -> dict[str, str]:
    """The files every server has (absolute path -> content), in its user data at first boot and
    delivered again on day 2, so that adopted servers, whose user data never runs again, get
    them too."""
    files = {
        "/etc/apt/apt.conf.d/20auto-upgrades": 'APT::Periodic::Update-Package-Lists "1";\nAPT::Periodic::Unattended-Upgrade "1";\n',
        f"{CONFIG_DIR}/server.env": env_file(
            {
                f"UNDE_{key.upper().replace('-', '_')}": value
                for key, value in {"server": server.name, **server.labels, "private_ip": str(server.ip)}.items()
            }
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


def day2_base_files(server: Server, inventory: Inventory) -> dict[str, tuple[str, str]]:
    """What every server gets first on day 2 (absolute path -> (content, mode)): the base files,
    and the one script every package install goes through."""
    files = {path: (text, "0644") for path, text in base_files(server, inventory).items()}
    files[APT_INSTALL] = (source(APT_INSTALL_SCRIPT), "0755")
    return files


def base_setup_script(server: Server, inventory: Inventory) -> str:
    """The day-2 form of the bootstrap: install the base packages, apply the base files."""
    setup = [shell_command(command) for command in base_setup(server, inventory)]
    # The private routes first: a server without a public address reaches the archive through
    # them (found by the converge lab: the install ran before the route that leads to it).
    routes = [line for line in setup if ROUTE_UNIT in line]
    lines = ["set -e", "systemctl daemon-reload", *routes, shell_command([APT_INSTALL, *base_packages(server)]),
             *[line for line in setup if line not in routes]]
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
                "ssh_authorized_keys": [authorized_key(key) for key in ssh_keys],
            }
        ],
        "disable_root": False,
        "ssh_pwauth": False,
        # The private routes before anything else of the first boot: a server without a public
        # address installs its packages through them (found by the converge lab: the package
        # install ran before runcmd set the routes). The unit keeps them across reboots.
        **({"bootcmd": [["ip", "route", "replace", dest, "via", via] for dest, via in private_routes(server, inventory)]}
           if private_routes(server, inventory) else {}),
        "package_update": True,
        "package_upgrade": False,
        "packages": base_packages(server),
        "write_files": write_files,
        "runcmd": runcmd,
    }
    return "#cloud-config\n" + yaml_dump(config)
