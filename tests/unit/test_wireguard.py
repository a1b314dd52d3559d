"""Rendered WireGuard artifacts, checked value by value (no tools, no Pulumi)."""

from __future__ import annotations

import base64
import re
from ipaddress import IPv4Address, IPv4Network, ip_network
from itertools import combinations

import pytest

from unde_infra import wgkeys
from unde_infra.model import Inventory, load_topology
from unde_infra.render import wireguard as wg

ADMIN = ["192.0.2.250/32", "2001:db8:1::/48"]


def _keys(inventory: Inventory) -> dict[str, wg.TunnelKeys]:
    return {s.name: wg.TunnelKeys.generate() for s, _ in inventory.tunnels()}


def _parse(conf: str) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """[Interface] and [Peer] of a one-peer wg-quick file as key -> values."""
    sections: list[dict[str, list[str]]] = []
    for line in conf.splitlines():
        if line.startswith("["):
            sections.append({})
        elif "=" in line and not line.startswith("#"):
            key, value = (part.strip() for part in line.split("=", 1))
            sections[-1].setdefault(key, []).append(value)
    assert len(sections) == 2, "one [Interface] and exactly one [Peer]"
    return sections[0], sections[1]


def _allowed(peer: dict[str, list[str]]) -> list[IPv4Network]:
    return [IPv4Network(v.strip()) for v in peer["AllowedIPs"][0].split(",")]


# --- keys ----------------------------------------------------------------------------------


def test_public_key_matches_rfc7748_vector() -> None:
    # RFC 7748 section 6.1, Alice's key pair.
    private = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    public = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    assert wgkeys.public_key(base64.b64encode(private).decode()) == base64.b64encode(public).decode()


def test_generated_private_keys_are_clamped_and_distinct() -> None:
    keys = {wgkeys.generate_private_key() for _ in range(20)}
    assert len(keys) == 20
    for key in keys:
        raw = base64.b64decode(key)
        assert len(raw) == 32 and raw[0] & 7 == 0 and raw[31] & 128 == 0 and raw[31] & 64 == 64


def test_clamping_does_not_change_the_public_key() -> None:
    raw = bytes(range(200, 232))  # deliberately unclamped
    assert wgkeys.public_key(base64.b64encode(raw).decode()) == wgkeys.public_key(wgkeys.private_key_from_bytes(raw))


def test_bad_key_is_rejected_without_echoing_it() -> None:
    secret = base64.b64encode(b"x" * 31).decode()
    with pytest.raises(ValueError) as excinfo:
        wgkeys.public_key(secret)
    assert secret not in str(excinfo.value) and "32 bytes" in str(excinfo.value)
    with pytest.raises(ValueError, match="not valid base64"):
        wg.TunnelKeys(wgkeys.generate_private_key(), wgkeys.generate_private_key(), "not base64!")


def test_tunnel_keys_repr_hides_private_values() -> None:
    keys = wg.TunnelKeys.generate()
    shown = repr(keys)
    assert keys.local_private not in shown and keys.remote_private not in shown and keys.preshared not in shown
    assert keys.local_public in shown and keys.local_public == wgkeys.public_key(keys.local_private)


# --- local side ----------------------------------------------------------------------------


def test_local_config_values(inventory: Inventory) -> None:
    keys = _keys(inventory)
    net = inventory.network.wireguard
    for server, tunnel in inventory.tunnels():
        files = wg.local_tunnel_files(server, inventory, keys[server.name])
        assert list(files) == [f"/etc/wireguard/{tunnel.interface}.conf"]
        iface, peer = _parse(files[f"/etc/wireguard/{tunnel.interface}.conf"])
        assert iface["Address"] == [f"{tunnel.local_ip}/32"]
        assert iface["PrivateKey"] == [keys[server.name].local_private]
        assert iface["MTU"] == [str(net.mtu)] == ["1420"]
        assert "ListenPort" not in iface  # the local side dials out
        assert peer["PublicKey"] == [keys[server.name].remote_public]
        assert peer["PresharedKey"] == [keys[server.name].preshared]
        assert peer["Endpoint"] == [f"46.62.233.30:{51820 + tunnel.index}"]
        assert peer["PersistentKeepalive"] == ["25"]
        assert _allowed(peer) == [IPv4Network("10.1.0.0/16"), IPv4Network(f"{tunnel.helsinki_ip}/32")]
        # Routes come from PostUp with the private source address, one per AllowedIPs entry.
        assert iface["Table"] == ["off"]
        assert iface["PostUp"] == [f"ip -4 route replace {n} dev %i src {server.ip}" for n in _allowed(peer)]


def test_table_tunnel_addresses_from_spec(inventory: Inventory) -> None:
    spec = {
        "local-app": ("wg-app", "10.3.0.1", "10.3.0.100"),
        "local-orchestrator": ("wg-orch", "10.3.1.1", "10.3.1.100"),
        "local-shard-0": ("wg-shard0", "10.3.10.1", "10.3.10.100"),
        "local-etcd-1": ("wg-etcd", "10.3.50.1", "10.3.50.100"),
    }
    for name, (interface, local_ip, helsinki_ip) in spec.items():
        text = wg.local_tunnel_files(inventory.server(name), inventory, wg.TunnelKeys.generate())[
            f"/etc/wireguard/{interface}.conf"
        ]
        iface, peer = _parse(text)
        assert iface["Address"] == [f"{local_ip}/32"] and IPv4Network(f"{helsinki_ip}/32") in _allowed(peer)


def test_endpoint_override_and_ipv6(inventory: Inventory) -> None:
    server = inventory.server("local-app")
    keys = wg.TunnelKeys.generate()
    text = wg.local_tunnel_files(server, inventory, keys, endpoint_host="192.0.2.1")["/etc/wireguard/wg-app.conf"]
    assert "Endpoint = 192.0.2.1:51820\n" in text
    text = wg.local_tunnel_files(server, inventory, keys, endpoint_host="2001:db8::1")["/etc/wireguard/wg-app.conf"]
    assert "Endpoint = [2001:db8::1]:51820\n" in text


# --- gateway, mode linux -------------------------------------------------------------------


@pytest.mark.parametrize("shards", [1, 16])
def test_gateway_peers_cover_each_local_server_once(shards: int) -> None:
    inventory = load_topology(shards=shards)
    keys = _keys(inventory)
    files = wg.gateway_files(inventory, keys, ADMIN, "linux")
    tunnels = inventory.tunnels()
    assert len(tunnels) == 9 + shards  # SPEC's eight agents and the second alert path, then the shards
    allowed: dict[str, list[IPv4Network]] = {}
    ports = set()
    for server, tunnel in tunnels:
        iface, peer = _parse(files[f"/etc/wireguard/{tunnel.interface}.conf"])
        assert iface["Address"] == [f"{tunnel.helsinki_ip}/32"]
        assert iface["ListenPort"] == [str(51820 + tunnel.index)]
        assert iface["MTU"] == ["1420"] and "Table" not in iface  # wg-quick's AllowedIPs routes
        assert iface["PrivateKey"] == [keys[server.name].remote_private]
        assert peer["PublicKey"] == [keys[server.name].local_public]
        assert "Endpoint" not in peer and "PersistentKeepalive" not in peer
        allowed[server.name] = _allowed(peer)
        assert allowed[server.name] == [IPv4Network(f"{tunnel.local_ip}/32"), IPv4Network(f"{server.ip}/32")]
        ports.add(int(iface["ListenPort"][0]))
    assert len(ports) == len(tunnels)
    for a, b in combinations(allowed, 2):
        assert not any(x.overlaps(y) for x in allowed[a] for y in allowed[b]), (a, b)
    # Every local private address is reachable through exactly one tunnel.
    for server in inventory.site_servers("local"):
        owners = [n for n, nets in allowed.items() if any(server.ip in net for net in nets)]
        assert owners == [server.name]


def test_gateway_linux_files_and_secrets(inventory: Inventory) -> None:
    files = wg.gateway_files(inventory, _keys(inventory), ADMIN)
    wg_files = sorted(p for p in files if p.startswith("/etc/wireguard/"))
    assert wg_files == sorted(f"/etc/wireguard/{t.interface}.conf" for _, t in inventory.tunnels())
    assert set(files) - set(wg_files) == {wg.SYSCTL_PATH, wg.NFTABLES_PATH}
    assert "net.ipv4.ip_forward = 1" in files[wg.SYSCTL_PATH]
    assert all(wg.is_secret(p) for p in wg_files)
    assert not wg.is_secret(wg.SYSCTL_PATH) and not wg.is_secret(wg.NFTABLES_PATH)
    assert "PrivateKey" not in files[wg.NFTABLES_PATH] + files[wg.SYSCTL_PATH]


def test_nftables_ruleset_values(inventory: Inventory) -> None:
    text = wg.gateway_files(inventory, _keys(inventory), ADMIN)[wg.NFTABLES_PATH]
    ports = sorted(51820 + t.index for _, t in inventory.tunnels())
    assert f"define WG_PORTS = {{ {', '.join(map(str, ports))} }}" in text
    names = re.search(r"define TUNNELS = \{ (.*) \}", text)
    assert names and sorted(n.strip('"') for n in names.group(1).split(", ")) == sorted(
        t.interface for _, t in inventory.tunnels()
    )
    assert "define ADMIN4 = { 192.0.2.250/32 }" in text and "define ADMIN6 = { 2001:db8:1::/48 }" in text
    assert "tcp dport 22 ip saddr $ADMIN4 accept" in text and "tcp dport 22 ip6 saddr $ADMIN6 accept" in text
    assert "define HELSINKI = { 10.1.0.0/16 }" in text and "define LOCAL = { 10.2.0.0/24, 10.3.0.0/16 }" in text
    forward = text[text.index("chain forward") : text.index("chain output")]
    assert "policy drop" in forward
    # The tunnel-to-tunnel drop comes before any accept that a tunnel packet could match.
    drop = forward.index("iifname $TUNNELS oifname $TUNNELS counter name tunnel_to_tunnel drop")
    assert drop < forward.index("iifname $TUNNELS ip saddr $LOCAL ip daddr $HELSINKI accept")
    assert "policy drop" in text[text.index("chain input") : text.index("chain forward")]
    assert (
        "masquerade" not in forward and "oifname != $TUNNELS ip saddr $HELSINKI ip daddr != $PRIVATE masquerade" in text
    )


def test_admin_cidrs_required_and_validated(inventory: Inventory) -> None:
    keys = _keys(inventory)
    with pytest.raises(ValueError, match="admin_cidrs is empty"):
        wg.gateway_files(inventory, keys, [])
    with pytest.raises(ValueError):
        wg.gateway_files(inventory, keys, ["192.0.2.1/24"])  # host bits set: a typo, not a network


def test_missing_keys_are_named(inventory: Inventory) -> None:
    keys = _keys(inventory)
    del keys["local-mood"]
    with pytest.raises(ValueError, match="local-mood"):
        wg.gateway_files(inventory, keys, ADMIN)


# --- witness tunnel ------------------------------------------------------------------------


def test_witness_tunnel_addresses_and_files(inventory: Inventory) -> None:
    direct = wg.witness_tunnel(inventory)
    assert direct is not None
    assert (direct.local.name, direct.remote.name) == ("local-etcd-1", "etcd-witness")
    assert (direct.local_ip, direct.remote_ip) == (IPv4Address("10.3.50.2"), IPv4Address("10.3.50.200"))
    keys = wg.TunnelKeys.generate()
    files = wg.witness_files(inventory, keys, endpoint_host="192.0.2.3")
    assert set(files) == {"local-etcd-1", "etcd-witness"}
    local_iface, local_peer = _parse(files["local-etcd-1"]["/etc/wireguard/wg-witness.conf"])
    remote_iface, remote_peer = _parse(files["etcd-witness"]["/etc/wireguard/wg-witness.conf"])
    assert local_peer["Endpoint"] == ["192.0.2.3:51820"] and remote_iface["ListenPort"] == ["51820"]
    assert _allowed(local_peer) == [IPv4Network("10.3.50.200/32"), IPv4Network("10.1.3.2/32")]
    assert _allowed(remote_peer) == [IPv4Network("10.3.50.2/32"), IPv4Network("10.2.0.50/32")]
    assert local_peer["PersistentKeepalive"] == ["25"] and "PersistentKeepalive" not in remote_peer
    assert local_peer["PublicKey"] == [keys.remote_public] and remote_peer["PublicKey"] == [keys.local_public]
    assert local_iface["PostUp"][-1] == "ip -4 route replace 10.1.3.2/32 dev %i src 10.2.0.50"
    assert remote_iface["PostUp"][-1] == "ip -4 route replace 10.2.0.50/32 dev %i src 10.1.3.2"
    # More specific than the /16 through helsinki-gw, so etcd traffic takes the direct tunnel.
    assert IPv4Network("10.1.3.2/32").prefixlen > IPv4Network("10.1.0.0/16").prefixlen


@pytest.mark.parametrize("shards", [1, 16, 127])
def test_witness_addresses_never_collide_with_a_tunnel(shards: int) -> None:
    inventory = load_topology(shards=shards)
    direct = wg.witness_tunnel(inventory)
    assert direct is not None
    used = {ip for _, t in inventory.tunnels() for ip in (t.local_ip, t.helsinki_ip)}
    assert direct.local_ip not in used and direct.remote_ip not in used
    assert direct.local_ip in inventory.network.tunnel_range and direct.remote_ip in inventory.network.tunnel_range
    # Inside the /24 that only local-etcd-1's tunnel index owns.
    own = ip_network(f"{direct.local.tunnel.local_ip}/24", strict=False) if direct.local.tunnel else None
    others = [
        ip_network(f"{t.local_ip}/24", strict=False) for s, t in inventory.tunnels() if s.name != direct.local.name
    ]
    assert own is not None and direct.remote_ip in own and own not in others


def test_no_witness_tunnel_under_plan_placement() -> None:
    inventory = load_topology(placement="plan")
    assert wg.witness_tunnel(inventory) is None
    assert wg.witness_files(inventory, wg.TunnelKeys.generate(), endpoint_host="192.0.2.3") == {}


# --- gateway, mode routeros ----------------------------------------------------------------


def _script(inventory: Inventory, keys: dict[str, wg.TunnelKeys] | None = None) -> str:
    keys = keys or _keys(inventory)
    files = wg.gateway_files(inventory, keys, ADMIN, "routeros", routeros_private_interface="vlan4000")
    assert list(files) == [wg.ROUTEROS_SCRIPT_PATH] and wg.is_secret(wg.ROUTEROS_SCRIPT_PATH)
    return files[wg.ROUTEROS_SCRIPT_PATH]


def test_routeros_needs_private_interface(inventory: Inventory) -> None:
    with pytest.raises(ValueError, match="routeros_private_interface"):
        wg.gateway_files(inventory, _keys(inventory), ADMIN, "routeros")


def test_routeros_script_is_find_or_add_then_set(inventory: Inventory) -> None:
    lines = [line for line in _script(inventory).splitlines() if line and not line.startswith("#")]
    ensure = re.compile(r"^:if \(\[:len \[(/[\w/-]+)/find where (.+?)\]\] = 0\) do=\{ \1/add (.+) \}$")
    adds = 0
    for i, line in enumerate(lines):
        # Every command names its full menu path; none relies on a context line.
        assert line.startswith((":if ", ":foreach ", "/")), line
        assert not re.fullmatch(r"/[\w/-]+", line), f"context-only line: {line}"
        if "/add " in line:
            match = ensure.match(line)
            assert match, f"unguarded add: {line[:80]}"
            adds += 1
            menu, where = match.group(1), match.group(2)
            if menu not in ("/ip/firewall/filter", "/ip/firewall/nat", "/ip/firewall/mangle"):
                assert lines[i + 1].startswith(f"{menu}/set [{menu}/find where {where}] "), line[:80]
    tunnels = len(inventory.tunnels())
    # interface, peer, address, 2 routes, list member per tunnel; the list; address lists; 13+1+1 rules
    assert adds == 1 + 6 * tunnels + 5 + 15


def test_routeros_script_values(inventory: Inventory) -> None:
    keys = _keys(inventory)
    script = _script(inventory, keys)
    for server, tunnel in inventory.tunnels():
        k = keys[server.name]
        assert (
            f"/interface/wireguard/add name={tunnel.interface} listen-port={51820 + tunnel.index} mtu=1420 "
            f'private-key="{k.remote_private}"'
        ) in script
        assert (
            f'public-key="{k.local_public}" preshared-key="{k.preshared}" '
            f"allowed-address={tunnel.local_ip}/32,{server.ip}/32"
        ) in script
        assert f"address={tunnel.helsinki_ip}/32" in script
        assert f"dst-address={server.ip}/32 gateway={tunnel.interface}" in script
    assert "in-interface-list=unde-tunnels out-interface-list=unde-tunnels action=drop" in script
    assert "dst-port=22,8291 src-address-list=unde-admin action=accept" in script
    assert "list=unde-admin address=192.0.2.250 " in script


def test_routeros_rules_are_ordered_and_prunable(inventory: Inventory) -> None:
    script = _script(inventory)
    filters = re.findall(r'/ip/firewall/filter/add comment="unde-infra: ([\w-]+) #[0-9a-f]{8}"', script)
    assert filters[-1] == "fwd-drop" and filters.index("in-drop") == filters.index("fwd-established") - 1
    moves = [line for line in script.splitlines() if line.startswith("/ip/firewall/filter/move ")]
    assert len(moves) == len(filters) and "destination=" not in moves[0] and "fwd-drop" in moves[0]
    for menu in ("/interface/wireguard", "/interface/wireguard/peers", "/ip/route", "/ip/address"):
        assert f':foreach i in=[{menu}/find where comment~"^unde-infra:"]' in script


def test_routeros_rule_comment_changes_with_the_rule(inventory: Inventory) -> None:
    a = wg._rule_comment("x", {"chain": "input", "action": "drop"})
    b = wg._rule_comment("x", {"chain": "input", "action": "accept"})
    assert a != b and a.startswith("unde-infra: x #")


def test_apply_commands(inventory: Inventory) -> None:
    linux = wg.gateway_apply_command(inventory, "linux")
    assert linux.index(f"nft -c -f {wg.NFTABLES_PATH}") < linux.index(f"nft -f {wg.NFTABLES_PATH}")
    assert all(f"systemctl restart wg-quick@{t.interface}" in linux for _, t in inventory.tunnels())
    assert "/import file-name=unde-wireguard.rsc" in wg.gateway_apply_command(inventory, "routeros")
