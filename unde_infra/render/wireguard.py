"""WireGuard between the sites: every local server's own tunnel to helsinki-gw, the gateway's side
of all of them, and the direct tunnel from the local etcd member to the etcd witness.

Pure functions from the inventory and key material to file contents (absolute path -> text). Keys
are parameters (`TunnelKeys`); the local stack generates both ends of every tunnel and a preshared
key per tunnel, so the helsinki stack only consumes them and no stack depends on the other twice.

Addresses and routing
---------------------
Tunnel index X (from the topology) gives 10.3.X.1 on the local server and 10.3.X.100 on the
gateway; on the gateway each tunnel is its own interface, named like the local one (wg-app),
listening on UDP `listen_port_base + X`.

* Local side (`/etc/wireguard/<interface>.conf`): address 10.3.X.1/32; one peer, the gateway's
  public endpoint, AllowedIPs = the Helsinki ranges (every non-local site range, 10.1.0.0/16) and
  the gateway's tunnel address; PersistentKeepalive from this side, so tunnels stay open through
  NAT; MTU from the topology. `Table = off` and explicit `PostUp` routes with `src <private
  address>`: traffic a local server sends to Helsinki carries its private address (10.2.0.x), so
  Helsinki's firewalls, pg_hba and etcd see one identity per server whichever path it took. The
  local server must therefore hold its private address (the local network gives it); if it does
  not, `wg-quick up` fails loudly instead of silently sending from the tunnel address.
* Gateway side: address 10.3.X.100/32, one peer with AllowedIPs = that server's tunnel address/32
  and private address/32 (Helsinki reaches every local private address; no two peers overlap, so
  a local server can only ever send as itself). wg-quick's own AllowedIPs routes are kept.
* MTU 1420: the inner packet leaves the gateway into Hetzner's private network (MTU 1450), and the
  outer packet (inner + 80 bytes of IPv6/UDP/WireGuard overhead; 60 over IPv4) crosses the public
  internet at 1500. TCP MSS is additionally clamped to the route MTU on the gateway.

Gateway firewall (mode linux, `/etc/nftables.conf`, the gateway's whole ruleset)
-------------------------------------------------------------------------------
Input: WireGuard UDP on the tunnels' listen ports, SSH only from the admin CIDRs, node_exporter
from the Helsinki ranges, ICMP; everything else is dropped. Forward: local (tunnel) <-> Helsinki
network both ways; Helsinki private servers -> internet with masquerade (the Helsinki network
routes 0.0.0.0/0 to helsinki-gw); **tunnel <-> tunnel is dropped**: local servers talk to each
other over their own private network, never through Helsinki, so a packet from one tunnel to
another can only be a mistake or an attack (it is counted, for alerting). Everything else is
dropped. Sources are checked by reverse-path lookup (`fib saddr . iif`), so a packet that claims a
Helsinki source but arrives from the internet is dropped without naming interfaces (Hetzner's
private NIC is ens10 or enp7s0 depending on the server type). No NAT applies to tunnel traffic.

The etcd witness tunnel
-----------------------
Under etcd placement three-sites, losing Helsinki must leave etcd-1 (local) and the witness
(another Hetzner location) in quorum, so local-etcd-1 also has a direct tunnel `wg-witness` to
etcd-witness that does not pass helsinki-gw. Its addresses live in local-etcd-1's own tunnel /24
(the model gives every tunnel index's 10.3.X.0/24 to exactly one server, and only .1 and .100 of
it are used): 10.3.X.2 on local-etcd-1 and 10.3.X.200 on the witness, so no collision with any
other tunnel index is possible and no topology change is needed. The witness listens on
`listen_port_base` (it is a different host from the gateway); each side routes only the other's
private address/32 and tunnel address/32 through it, which is more specific than the /16 through
the gateway. The witness's public address is known only once it exists, hence a parameter.

Secrets
-------
Every `/etc/wireguard/*.conf` and the RouterOS script contain private and preshared keys: deliver
them root-only (0600, owner root) and never in user data. `SECRET_PATHS` / `is_secret(path)` say
which rendered files these are. The sysctl file and the nftables ruleset are not secret.

RouterOS mode, and why CHR cannot be a KVM guest on helsinki-gw
---------------------------------------------------------------
The plan runs MikroTik CHR as a KVM guest on the Debian host helsinki-gw. A Hetzner Cloud server
is itself a KVM guest and Hetzner Cloud offers no nested virtualisation (no VT-x/AMD-V inside the
server), so CHR would run only under software emulation (QEMU TCG): far too slow to route
tunnels. Mode `linux` (the default) therefore terminates the tunnels on Debian itself with
wg-quick and nftables. Mode `routeros` renders a RouterOS v7 script (`/unde-wireguard.rsc`) for a
RouterOS router that runs natively, for example:

* CHR installed as the operating system of a Hetzner server (the raw CHR image written to the disk
  from the rescue system; no nesting involved), which replaces Debian on that machine; or
* CHR under KVM on a dedicated (Robot) server, which has hardware virtualisation, joined to the
  Helsinki cloud network through the vSwitch subnet; the hcloud network routes for 10.2.0.0/24,
  10.3.0.0/16 and 0.0.0.0/0 must then point at its address on that subnet; or
* any RouterOS v7 device reachable from the internet and attached to the Helsinki network.

What the script expects: RouterOS v7 (WireGuard exists from v7.1; the script uses v7's slash
paths and was not run on a RouterOS here: no RouterOS image is available to the tests);
SSH reachable from the machine running Pulumi (pulumi_command uploads the script, runs
`/import file-name=unde-wireguard.rsc verbose=yes`, then removes the file because it holds
private keys), as a user with write/policy rights and an SSH key; the name of the interface facing
the Helsinki private network (`routeros_private_interface`); the public interface and default
route already configured, and the licence (P1 or better: the free CHR tier is limited to 1 Mbit/s)
applied. The script owns everything it tags with the comment prefix `unde-infra:` (WireGuard
interfaces and peers, addresses, routes, the interface list `unde-tunnels`, address lists
`unde-*`, filter/NAT/mangle rules): it adds what is missing, `set`s what exists so it converges,
removes tagged items that are no longer wanted, and orders its filter rules at the end of the
filter table (ending with a drop in the input and forward chains). Rules that someone adds
outside the script stay in front of them and are not touched. Only IPv4 admin CIDRs are applied
(the script does not manage the IPv6 firewall; keep IPv6 off on the router's public side or firewall it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Network, collapse_addresses, ip_address, ip_network
from typing import Literal

from ..model import LOCAL, SECOND_MONITORING_TASK, Inventory, Server, Tunnel
from ..wgkeys import decode_key, generate_preshared_key, generate_private_key, public_key
from . import escape

Mode = Literal["linux", "routeros"]

WG_DIR = "/etc/wireguard"
SYSCTL_PATH = "/etc/sysctl.d/90-unde-gateway.conf"
NFTABLES_PATH = "/etc/nftables.conf"
ROUTEROS_SCRIPT_PATH = "/unde-wireguard.rsc"  # RouterOS has one flat file store; the name is what /import takes
WITNESS_INTERFACE = "wg-witness"
# Hosts of local-etcd-1's own tunnel /24 used by the witness tunnel (.1 and .100 are the gateway tunnel's).
WITNESS_LOCAL_HOST = 2
WITNESS_REMOTE_HOST = 200
SSH_PORT = 22
WINBOX_PORT = 8291
NODE_EXPORTER_PORT = 9100
NFT_TABLE = "unde"
TUNNEL_DROP_COUNTER = "tunnel_to_tunnel"
ROS_TAG = "unde-infra:"
ROS_TUNNEL_LIST = "unde-tunnels"
HEADER = "Rendered by unde-infra from config/topology.yaml; local changes are overwritten."


# --------------------------------------------------------------------------------------------
# Key material


@dataclass(frozen=True)
class TunnelKeys:
    """Both ends of one tunnel: `local` is the local server's end, `remote` the gateway's (or, for
    the witness tunnel, the witness's). Private values never appear in repr()."""

    local_private: str = field(repr=False)
    remote_private: str = field(repr=False)
    preshared: str = field(repr=False)
    local_public: str = field(init=False)
    remote_public: str = field(init=False)

    def __post_init__(self) -> None:
        decode_key(self.preshared, "preshared key")
        object.__setattr__(self, "local_public", public_key(self.local_private))
        object.__setattr__(self, "remote_public", public_key(self.remote_private))

    @classmethod
    def generate(cls) -> TunnelKeys:
        return cls(generate_private_key(), generate_private_key(), generate_preshared_key())


def is_secret(path: str) -> bool:
    """Whether a rendered file holds private or preshared keys (deliver 0600 root:root)."""
    return (path.startswith(f"{WG_DIR}/") and path.endswith(".conf")) or path == ROUTEROS_SCRIPT_PATH


# --------------------------------------------------------------------------------------------
# Address plan of the tunnels


@dataclass(frozen=True)
class DirectTunnel:
    """A tunnel between a local server and a server of another site that bypasses helsinki-gw."""

    interface: str
    local: Server
    remote: Server
    local_ip: IPv4Address
    remote_ip: IPv4Address
    listen_port: int


def config_path(interface: str) -> str:
    return f"{WG_DIR}/{interface}.conf"


def listen_port(inventory: Inventory, tunnel: Tunnel) -> int:
    return inventory.network.wireguard.listen_port_base + tunnel.index


def helsinki_ranges(inventory: Inventory) -> list[IPv4Network]:
    """The private ranges behind helsinki-gw: every site on the Helsinki network (not the local one)."""
    return list(collapse_addresses(site.range for name, site in inventory.sites.items() if name != LOCAL))


def local_allowed_ips(server: Server, inventory: Inventory) -> list[IPv4Network]:
    tunnel = _tunnel_of(server)
    return [*helsinki_ranges(inventory), IPv4Network(f"{tunnel.helsinki_ip}/32")]


def gateway_allowed_ips(server: Server) -> list[IPv4Network]:
    tunnel = _tunnel_of(server)
    return [IPv4Network(f"{tunnel.local_ip}/32"), IPv4Network(f"{server.ip}/32")]


def local_tunnels(inventory: Inventory) -> list[tuple[Server, Tunnel]]:
    """Every local server's tunnel, in tunnel index order (a stable order for rendered files)."""
    return sorted(inventory.tunnels(), key=lambda pair: pair[1].index)


def witness_tunnel(inventory: Inventory) -> DirectTunnel | None:
    """The direct tunnel between the local etcd member and the etcd member of a third site, when the
    placement has one (three-sites); None under placements without a third site (plan)."""
    hosts = inventory.etcd_hosts()
    local = next((h for h in hosts if h.site == LOCAL and h.tunnel is not None), None)
    remote = next((h for h in hosts if h.site not in (LOCAL, "helsinki")), None)
    if local is None or remote is None or local.tunnel is None:
        return None
    base = IPv4Network(f"{local.tunnel.local_ip}/24", strict=False).network_address
    return DirectTunnel(
        interface=WITNESS_INTERFACE,
        local=local,
        remote=remote,
        local_ip=base + WITNESS_LOCAL_HOST,
        remote_ip=base + WITNESS_REMOTE_HOST,
        listen_port=inventory.network.wireguard.listen_port_base,
    )


def _tunnel_of(server: Server) -> Tunnel:
    if server.tunnel is None:
        raise ValueError(f"{server.name} has no tunnel in the topology")
    return server.tunnel


def _csv(items: Iterable[object]) -> str:
    return ", ".join(str(i) for i in items)


# --------------------------------------------------------------------------------------------
# wg-quick configurations


def _wg_quick(
    *,
    comment: str,
    address: IPv4Address,
    private_key: str,
    mtu: int,
    peer_public: str,
    preshared: str,
    allowed: Sequence[IPv4Network],
    listen: int | None = None,
    endpoint: str | None = None,
    keepalive: int | None = None,
    routes_src: IPv4Address | None = None,
) -> str:
    lines = [escape.comment(HEADER), escape.comment(comment), "# Holds private keys: root only (0600).", "[Interface]"]
    lines.append(escape.wg_line("Address", f"{address}/32"))
    if listen is not None:
        lines.append(escape.wg_line("ListenPort", listen))
    lines += [escape.wg_line("PrivateKey", private_key), escape.wg_line("MTU", mtu)]
    if routes_src is not None:
        # Routes come from PostUp, not from AllowedIPs, so that they carry the private source address.
        # wg-quick runs PostUp through bash: every argument is a shell word.
        lines.append("Table = off")
        lines += [
            escape.wg_line("PostUp", f"{escape.shell_command(['ip', '-4', 'route', 'replace', net])} dev %i src "
                           f"{escape.shell_word(routes_src)}")
            for net in allowed
        ]
    lines += ["", "[Peer]", escape.wg_line("PublicKey", peer_public), escape.wg_line("PresharedKey", preshared)]
    if endpoint is not None:
        lines.append(escape.wg_line("Endpoint", endpoint))
    lines.append(escape.wg_line("AllowedIPs", _csv(allowed)))
    if keepalive:
        lines.append(escape.wg_line("PersistentKeepalive", keepalive))
    return "\n".join(lines) + "\n"


def _endpoint(host: str, port: int) -> str:
    # The far end's address comes from the other stack's outputs: an address, never anything else.
    address = ip_address(host)
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def gateway_endpoint_host(inventory: Inventory, endpoint_host: str | None = None) -> str:
    if endpoint_host:
        return endpoint_host
    if inventory.gateway.public_address is None:
        raise ValueError(f"{inventory.gateway.name} has no known public address; pass endpoint_host")
    return str(inventory.gateway.public_address)


def local_tunnel_files(
    server: Server, inventory: Inventory, keys: TunnelKeys, *, endpoint_host: str | None = None
) -> dict[str, str]:
    """The local server's side of its own tunnel: `/etc/wireguard/<interface>.conf` (secret).

    `endpoint_host` defaults to helsinki-gw's public address from the topology."""
    tunnel = _tunnel_of(server)
    wg = inventory.network.wireguard
    port = listen_port(inventory, tunnel)
    text = _wg_quick(
        comment=f"{server.name}: own tunnel {tunnel.interface} (index {tunnel.index}) to {inventory.gateway.name}",
        address=tunnel.local_ip,
        private_key=keys.local_private,
        mtu=wg.mtu,
        peer_public=keys.remote_public,
        preshared=keys.preshared,
        allowed=local_allowed_ips(server, inventory),
        endpoint=_endpoint(gateway_endpoint_host(inventory, endpoint_host), port),
        keepalive=wg.keepalive_seconds,
        routes_src=server.ip,
    )
    return {config_path(tunnel.interface): text}


def gateway_tunnel_config(server: Server, inventory: Inventory, keys: TunnelKeys) -> str:
    tunnel = _tunnel_of(server)
    return _wg_quick(
        comment=f"{inventory.gateway.name}: end of {server.name}'s tunnel {tunnel.interface} (index {tunnel.index})",
        address=tunnel.helsinki_ip,
        listen=listen_port(inventory, tunnel),
        private_key=keys.remote_private,
        mtu=inventory.network.wireguard.mtu,
        peer_public=keys.local_public,
        preshared=keys.preshared,
        allowed=gateway_allowed_ips(server),
    )


def witness_files(inventory: Inventory, keys: TunnelKeys, *, endpoint_host: str) -> dict[str, dict[str, str]]:
    """Both ends of the direct etcd witness tunnel: {server name: {path: content}} (all secret).
    Empty when the etcd placement has no third site. `endpoint_host`: the witness's public address."""
    direct = witness_tunnel(inventory)
    if direct is None:
        return {}
    wg = inventory.network.wireguard
    path = config_path(direct.interface)
    local_side = _wg_quick(
        comment=f"{direct.local.name}: direct tunnel to {direct.remote.name}, bypassing {inventory.gateway.name}",
        address=direct.local_ip,
        private_key=keys.local_private,
        mtu=wg.mtu,
        peer_public=keys.remote_public,
        preshared=keys.preshared,
        allowed=[IPv4Network(f"{direct.remote_ip}/32"), IPv4Network(f"{direct.remote.ip}/32")],
        endpoint=_endpoint(endpoint_host, direct.listen_port),
        keepalive=wg.keepalive_seconds,
        routes_src=direct.local.ip,
    )
    remote_side = _wg_quick(
        comment=f"{direct.remote.name}: direct tunnel from {direct.local.name}, bypassing {inventory.gateway.name}",
        address=direct.remote_ip,
        listen=direct.listen_port,
        private_key=keys.remote_private,
        mtu=wg.mtu,
        peer_public=keys.local_public,
        preshared=keys.preshared,
        allowed=[IPv4Network(f"{direct.local_ip}/32"), IPv4Network(f"{direct.local.ip}/32")],
        routes_src=direct.remote.ip,
    )
    return {direct.local.name: {path: local_side}, direct.remote.name: {path: remote_side}}


# --------------------------------------------------------------------------------------------
# The gateway


def gateway_files(
    inventory: Inventory,
    keys_by_server: Mapping[str, TunnelKeys],
    admin_cidrs: Sequence[str | IPv4Network | IPv6Network],
    mode: Mode | None = None,
    *,
    routeros_private_interface: str | None = None,
) -> dict[str, str]:
    """helsinki-gw's side of every tunnel. `mode` defaults to the topology's.

    linux: `/etc/wireguard/<interface>.conf` per tunnel (secret), `SYSCTL_PATH`, `NFTABLES_PATH`.
    routeros: `ROUTEROS_SCRIPT_PATH` (secret), which needs `routeros_private_interface`."""
    mode = mode or inventory.network.wireguard.mode
    tunnels = local_tunnels(inventory)
    missing = [s.name for s, _ in tunnels if s.name not in keys_by_server]
    if missing:
        raise ValueError(f"no tunnel keys for {', '.join(missing)}")
    admins = _admin_networks(admin_cidrs)
    if mode == "linux":
        files = {
            config_path(t.interface): gateway_tunnel_config(s, inventory, keys_by_server[s.name]) for s, t in tunnels
        }
        files[SYSCTL_PATH] = gateway_sysctl()
        files[NFTABLES_PATH] = gateway_nftables(inventory, admins)
        return files
    if mode == "routeros":
        if not routeros_private_interface:
            raise ValueError("mode routeros needs routeros_private_interface (the interface on the Helsinki network)")
        return {ROUTEROS_SCRIPT_PATH: routeros_script(inventory, keys_by_server, admins, routeros_private_interface)}
    raise ValueError(f"unknown wireguard mode {mode!r} (known: linux, routeros)")


def _admin_networks(cidrs: Sequence[str | IPv4Network | IPv6Network]) -> list[IPv4Network | IPv6Network]:
    # An empty list would lock everyone (and Pulumi's remote commands) out of the gateway.
    if not cidrs:
        raise ValueError("admin_cidrs is empty: SSH to the gateway would be closed to everyone")
    return [ip_network(c) if isinstance(c, str) else c for c in cidrs]


def gateway_sysctl() -> str:
    return "\n".join(
        [
            f"# {HEADER}",
            "# helsinki-gw routes between the local tunnels and the Helsinki private network.",
            "net.ipv4.ip_forward = 1",
            "",
        ]
    )


def _nft_set(items: Iterable[object], quote: bool = False) -> str:
    values = [escape.nft_string(str(i)) if quote else str(i) for i in items]
    return "{ " + ", ".join(values) + " }"


def gateway_nftables(inventory: Inventory, admin_cidrs: Sequence[IPv4Network | IPv6Network]) -> str:
    tunnels = local_tunnels(inventory)
    ports = [listen_port(inventory, t) for _, t in tunnels]
    helsinki = helsinki_ranges(inventory)
    local_side = list(collapse_addresses([inventory.sites[LOCAL].range, inventory.network.tunnel_range]))
    admin4 = [c for c in admin_cidrs if c.version == 4]
    admin6 = [c for c in admin_cidrs if c.version == 6]
    ssh = []
    if admin4:
        ssh.append(f'tcp dport {SSH_PORT} ip saddr $ADMIN4 accept comment "SSH from the admin networks only"')
    if admin6:
        ssh.append(f'tcp dport {SSH_PORT} ip6 saddr $ADMIN6 accept comment "SSH from the admin networks only"')
    defines = [
        f"define TUNNELS = {_nft_set((t.interface for _, t in tunnels), quote=True)}",
        f"define WG_PORTS = {_nft_set(ports)}",
        f"define HELSINKI = {_nft_set(helsinki)}",
        f"define LOCAL = {_nft_set(local_side)}",
        f"define PRIVATE = {_nft_set([inventory.network.ip_range])}",
    ]
    if admin4:
        defines.append(f"define ADMIN4 = {_nft_set(admin4)}")
    if admin6:
        defines.append(f"define ADMIN6 = {_nft_set(admin6)}")
    indent = "\t\t"
    # The local site's second alert path probes Helsinki's reachability at the gateway's
    # node_exporter, through its own tunnel only.
    second_path = "".join(
        f'{indent}iifname "{s.tunnel.interface}" ip saddr {s.ip} tcp dport {NODE_EXPORTER_PORT} accept '
        f'comment "node_exporter for the second alert path ({s.name})"\n'
        for s in sorted(inventory.servers.values(), key=lambda s: s.name)
        if s.task == SECOND_MONITORING_TASK and s.tunnel is not None
    )
    body = f"""#!/usr/sbin/nft -f
# {HEADER}
# helsinki-gw's whole firewall (mode linux): tunnels <-> Helsinki network, NAT for Helsinki's
# private servers, nothing between two tunnels.

flush ruleset

{chr(10).join(defines)}

table inet {NFT_TABLE} {{
	counter {TUNNEL_DROP_COUNTER} {{
		comment "packets from one local tunnel to another (never legitimate: alert on it)"
	}}

	chain prerouting {{
		type filter hook prerouting priority raw; policy accept;
		# Reverse-path check: a source is accepted only on the interface its route leaves by,
		# so no internet packet can claim a Helsinki or tunnel address.
		fib saddr . iif oif missing drop
	}}

	chain input {{
		type filter hook input priority filter; policy drop;
		iif lo accept
		ct state established,related accept
		ct state invalid drop
		# PMTU discovery and tunnel RTT probes need ICMP.
		meta l4proto {{ icmp, ipv6-icmp }} accept
		udp dport $WG_PORTS accept comment "WireGuard: one port per local server"
{indent}{f"{chr(10)}{indent}".join(ssh)}
		tcp dport {NODE_EXPORTER_PORT} ip saddr $HELSINKI accept comment "node_exporter for monitoring"
{second_path}	}}

	chain forward {{
		type filter hook forward priority filter; policy drop;
		tcp flags syn / syn,rst tcp option maxseg size set rt mtu
		ct state established,related accept
		ct state invalid drop
		iifname $TUNNELS oifname $TUNNELS counter name {TUNNEL_DROP_COUNTER} drop
		iifname $TUNNELS ip saddr $LOCAL ip daddr $HELSINKI accept comment "local -> Helsinki"
		iifname != $TUNNELS oifname $TUNNELS ip saddr $HELSINKI ip daddr $LOCAL accept comment "Helsinki -> local"
		iifname != $TUNNELS oifname != $TUNNELS ip saddr $HELSINKI ip daddr != $PRIVATE accept comment "Helsinki private servers -> internet (NAT)"
	}}

	chain output {{
		type filter hook output priority filter; policy accept;
	}}

	chain postrouting {{
		type nat hook postrouting priority srcnat; policy accept;
		oifname != $TUNNELS ip saddr $HELSINKI ip daddr != $PRIVATE masquerade
	}}
}}
"""
    return body


# --------------------------------------------------------------------------------------------
# RouterOS v7


_ros_quote = escape.routeros_string
_ros_value = escape.routeros_value
_ros_props = escape.routeros_props


def _ros_where(find: Mapping[str, object]) -> str:
    return " and ".join(f"{k}={_ros_value(v)}" for k, v in find.items())


def _ros_ensure(
    menu: str, find: Mapping[str, object], props: Mapping[str, object], *, converge: bool = True
) -> list[str]:
    """Find-or-add, then set: the item exists once and converges to `props` on every run. Every
    command carries its full menu path, so no line depends on the context a previous one set."""
    where = _ros_where(find)
    lines = [f":if ([:len [{menu}/find where {where}]] = 0) do={{ {menu}/add {_ros_props({**find, **props})} }}"]
    if converge:
        lines.append(f"{menu}/set [{menu}/find where {where}] {_ros_props(props)}")
    return lines


def _ros_prune(menu: str, wanted_comments: Sequence[str]) -> str:
    """Remove items this script tagged earlier that are no longer wanted (e.g. a removed server)."""
    wanted = ";".join(_ros_quote(c) for c in wanted_comments)
    return (
        f':foreach i in=[{menu}/find where comment~"^{ROS_TAG}"] do={{ '
        f':if ([:typeof [:find {{{wanted}}} [{menu}/get $i comment]]] = "nil") do={{ {menu}/remove $i }} }}'
    )


def _rule_comment(rule_id: str, props: Mapping[str, object]) -> str:
    # The comment carries a digest of the rule, so a changed rule is a new item (added, the old one
    # pruned) rather than an old item whose dropped matchers `set` could never unset.
    digest = hashlib.sha256(_ros_props(props).encode()).hexdigest()[:8]
    return f"{ROS_TAG} {rule_id} #{digest}"


def _ros_rules(menu: str, rules: Sequence[tuple[str, dict[str, object]]], *, ordered: bool) -> list[str]:
    comments = [_rule_comment(rid, props) for rid, props in rules]
    lines: list[str] = []
    for comment, (_, props) in zip(comments, rules, strict=True):
        lines += _ros_ensure(menu, {"comment": comment}, props, converge=False)
    lines.append(_ros_prune(menu, comments))
    if ordered:
        # Each managed rule directly before the next, the last at the end: the drops close the chains.
        def find(comment: str) -> str:
            return f"[{menu}/find where comment={_ros_quote(comment)}]"

        lines.append(f"{menu}/move {find(comments[-1])}")
        for before, after in reversed(list(zip(comments, comments[1:], strict=False))):
            lines.append(f"{menu}/move {find(before)} destination={find(after)}")
    return lines


def _ros_address(net: IPv4Network | IPv6Network) -> str:
    # RouterOS shows a host entry without its prefix length; match what it stores.
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def routeros_script(
    inventory: Inventory,
    keys_by_server: Mapping[str, TunnelKeys],
    admin_cidrs: Sequence[IPv4Network | IPv6Network],
    private_interface: str,
) -> str:
    wg = inventory.network.wireguard
    tunnels = local_tunnels(inventory)
    out: list[str] = [
        f"# {HEADER}",
        "# RouterOS v7 script for helsinki-gw (mode routeros). Idempotent: every run converges to this",
        "# state. Holds private keys: upload, `/import file-name=unde-wireguard.rsc`, then remove it.",
        "",
        "# Interface list of all tunnels, used by the firewall rules below.",
        *_ros_ensure("/interface/list", {"name": ROS_TUNNEL_LIST}, {"comment": f"{ROS_TAG} tunnels"}),
    ]
    wanted: dict[str, list[str]] = {
        "/interface/wireguard": [],
        "/interface/wireguard/peers": [],
        "/ip/address": [],
        "/ip/route": [],
        "/interface/list/member": [],
        "/ip/firewall/address-list": [],
    }
    for server, tunnel in tunnels:
        keys = keys_by_server[server.name]
        name = tunnel.interface
        tag = f"{ROS_TAG} {server.name}"
        out += ["", f"# --- {name}: {server.name}, tunnel index {tunnel.index}"]
        out += _ros_ensure(
            "/interface/wireguard",
            {"name": name},
            {
                "listen-port": listen_port(inventory, tunnel),
                "mtu": wg.mtu,
                "private-key": keys.remote_private,
                "comment": tag,
            },
        )
        out += _ros_ensure(
            "/interface/wireguard/peers",
            {"interface": name, "comment": tag},
            {
                "public-key": keys.local_public,
                "preshared-key": keys.preshared,
                "allowed-address": ",".join(str(n) for n in gateway_allowed_ips(server)),
            },
        )
        # One peer per tunnel interface: anything else on it was not put there by this program.
        out.append(
            f"/interface/wireguard/peers/remove [/interface/wireguard/peers/find where interface={_ros_value(name)}"
            f" and comment!={_ros_quote(tag)}]"
        )
        out += _ros_ensure("/ip/address", {"interface": name, "comment": tag}, {"address": f"{tunnel.helsinki_ip}/32"})
        for net in gateway_allowed_ips(server):
            route_tag = f"{tag} {net}"
            out += _ros_ensure("/ip/route", {"comment": route_tag}, {"dst-address": str(net), "gateway": name})
            wanted["/ip/route"].append(route_tag)
        out += _ros_ensure("/interface/list/member", {"list": ROS_TUNNEL_LIST, "interface": name}, {"comment": tag})
        for menu in ("/interface/wireguard", "/interface/wireguard/peers", "/ip/address", "/interface/list/member"):
            wanted[menu].append(tag)

    lists = {
        "unde-helsinki": helsinki_ranges(inventory),
        "unde-local": list(collapse_addresses([inventory.sites[LOCAL].range, inventory.network.tunnel_range])),
        "unde-private": [inventory.network.ip_range],
        "unde-admin": [c for c in admin_cidrs if c.version == 4],
    }
    out += ["", "# Address lists the firewall rules refer to."]
    for list_name, nets in lists.items():
        for net in nets:
            tag = f"{ROS_TAG} {list_name} {_ros_address(net)}"
            out += _ros_ensure(
                "/ip/firewall/address-list", {"list": list_name, "address": _ros_address(net)}, {"comment": tag}
            )
            wanted["/ip/firewall/address-list"].append(tag)

    ports = ",".join(str(listen_port(inventory, t)) for _, t in tunnels)
    tl = ROS_TUNNEL_LIST
    filter_rules: list[tuple[str, dict[str, object]]] = [
        ("in-established", {"chain": "input", "connection-state": "established,related", "action": "accept"}),
        ("in-invalid", {"chain": "input", "connection-state": "invalid", "action": "drop"}),
        ("in-icmp", {"chain": "input", "protocol": "icmp", "action": "accept"}),
        ("in-wireguard", {"chain": "input", "protocol": "udp", "dst-port": ports, "action": "accept"}),
        (
            "in-admin",
            {
                "chain": "input",
                "protocol": "tcp",
                "dst-port": f"{SSH_PORT},{WINBOX_PORT}",
                "src-address-list": "unde-admin",
                "action": "accept",
            },
        ),
        ("in-drop", {"chain": "input", "action": "drop"}),
        ("fwd-established", {"chain": "forward", "connection-state": "established,related", "action": "accept"}),
        ("fwd-invalid", {"chain": "forward", "connection-state": "invalid", "action": "drop"}),
        (
            "fwd-tunnel-to-tunnel",
            {"chain": "forward", "in-interface-list": tl, "out-interface-list": tl, "action": "drop"},
        ),
        (
            "fwd-local-to-helsinki",
            {
                "chain": "forward",
                "in-interface-list": tl,
                "src-address-list": "unde-local",
                "dst-address-list": "unde-helsinki",
                "action": "accept",
            },
        ),
        (
            "fwd-helsinki-to-local",
            {
                "chain": "forward",
                "in-interface": private_interface,
                "out-interface-list": tl,
                "src-address-list": "unde-helsinki",
                "dst-address-list": "unde-local",
                "action": "accept",
            },
        ),
        (
            "fwd-helsinki-to-internet",
            {
                "chain": "forward",
                "in-interface": private_interface,
                "out-interface-list": f"!{tl}",
                "src-address-list": "unde-helsinki",
                "dst-address-list": "!unde-private",
                "action": "accept",
            },
        ),
        ("fwd-drop", {"chain": "forward", "action": "drop"}),
    ]
    nat_rules: list[tuple[str, dict[str, object]]] = [
        (
            "nat-helsinki-to-internet",
            {
                "chain": "srcnat",
                "src-address-list": "unde-helsinki",
                "dst-address-list": "!unde-private",
                "out-interface-list": f"!{tl}",
                "action": "masquerade",
            },
        ),
    ]
    mangle_rules: list[tuple[str, dict[str, object]]] = [
        (
            "mss-clamp",
            {
                "chain": "forward",
                "protocol": "tcp",
                "tcp-flags": "syn",
                "action": "change-mss",
                "new-mss": "clamp-to-pmtu",
                "passthrough": "yes",
            },
        ),
    ]
    out += ["", "# Firewall: tunnels <-> Helsinki only, never tunnel <-> tunnel; SSH/Winbox from admins only."]
    out += _ros_rules("/ip/firewall/filter", filter_rules, ordered=True)
    out += ["", "# NAT for Helsinki's private servers (the Helsinki network routes 0.0.0.0/0 here)."]
    out += _ros_rules("/ip/firewall/nat", nat_rules, ordered=False)
    out += ["", "# TCP MSS clamped to the path MTU (tunnel MTU is below the private network's 1450)."]
    out += _ros_rules("/ip/firewall/mangle", mangle_rules, ordered=False)

    out += ["", "# Remove what an earlier run created for servers that are no longer in the topology."]
    for menu in (
        "/ip/firewall/address-list",
        "/ip/route",
        "/ip/address",
        "/interface/list/member",
        "/interface/wireguard/peers",
        "/interface/wireguard",
    ):
        out.append(_ros_prune(menu, wanted[menu]))
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# Applying (for the components' remote commands)


def local_apply_command(interfaces: Sequence[str]) -> str:
    """Shell that enables the tunnels and (re)starts them. Run it only when a config changed (the
    components trigger on the content hash): a restart re-applies addresses and routes too, which
    `wg syncconf` would not, and costs one handshake (well under a second)."""
    return "\n".join(
        ["set -e", *(f"systemctl enable wg-quick@{n} && systemctl restart wg-quick@{n}" for n in interfaces)]
    )


def gateway_apply_command(inventory: Inventory, mode: Mode | None = None) -> str:
    mode = mode or inventory.network.wireguard.mode
    if mode == "routeros":
        name = ROUTEROS_SCRIPT_PATH.lstrip("/")
        return f"/import file-name={name} verbose=yes; /file/remove [find name={name}]"
    interfaces = [t.interface for _, t in local_tunnels(inventory)]
    return "\n".join([gateway_base_apply_command(), local_apply_command(interfaces)])


def gateway_base_apply_command() -> str:
    """Forwarding and the ruleset of helsinki-gw (linux mode), without the tunnels: the helsinki
    stack applies these before any local server exists; each tunnel is applied with its peer."""
    return "\n".join(
        [
            "set -e",
            f"sysctl -q -p {SYSCTL_PATH}",
            # Checked before loading: a broken ruleset must never replace a working one.
            f"nft -c -f {NFTABLES_PATH}",
            f"nft -f {NFTABLES_PATH}",
            "systemctl enable nftables",
        ]
    )
