"""Rendered WireGuard artifacts through the real tools: wg pubkey, wg-quick strip, wg setconf (on a
wireguard-go interface inside a throwaway network namespace), sysctl and nft -c."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_tool
from unde_infra import wgkeys
from unde_infra.model import Inventory
from unde_infra.render import wireguard as wg

ADMIN = ["192.0.2.250/32", "2001:db8:1::/48"]


def _run(args: list[str], *, stdin: str | None = None, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)


def test_public_keys_match_wg_pubkey() -> None:
    wg_tool = require_tool("wg")
    samples = [wgkeys.generate_private_key() for _ in range(5)]
    # Unclamped raw bytes too: pulumi_random gives those, and wg clamps before deriving.
    samples += [base64.b64encode(secrets.token_bytes(32)).decode() for _ in range(5)]
    for private in samples:
        result = _run([wg_tool, "pubkey"], stdin=private + "\n")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == wgkeys.public_key(private)


def test_generated_keys_are_accepted_by_wg_genkey_format() -> None:
    wg_tool = require_tool("wg")
    reference = _run([wg_tool, "genkey"]).stdout.strip()
    ours = wgkeys.generate_private_key()
    assert len(reference) == len(ours) == 44 and ours.endswith("=")
    psk = _run([wg_tool, "genpsk"]).stdout.strip()
    assert len(wgkeys.generate_preshared_key()) == len(psk)


def _all_configs(inventory: Inventory) -> dict[str, str]:
    """Every wg-quick file the program renders, keyed by a unique label."""
    keys = {s.name: wg.TunnelKeys.generate() for s, _ in inventory.tunnels()}
    configs: dict[str, str] = {}
    for server, _ in inventory.tunnels():
        for path, text in wg.local_tunnel_files(server, inventory, keys[server.name]).items():
            configs[f"{server.name}:{path}"] = text
    for path, text in wg.gateway_files(inventory, keys, ADMIN, "linux").items():
        if path.startswith(wg.WG_DIR):
            configs[f"gateway:{path}"] = text
    for name, files in wg.witness_files(inventory, wg.TunnelKeys.generate(), endpoint_host="192.0.2.3").items():
        for path, text in files.items():
            configs[f"{name}:{path}"] = text
    return configs


def _peer_allowed(conf: str) -> set[str]:
    line = next(line for line in conf.splitlines() if line.startswith("AllowedIPs"))
    return {v.strip() for v in line.split("=", 1)[1].split(",")}


@pytest.fixture
def scratch_netns() -> Iterator[str]:
    name = f"uwg-art-{os.getpid()}"
    ip = require_tool("ip")
    subprocess.run([ip, "netns", "add", name], check=True, timeout=10)
    try:
        yield name
    finally:
        pids = _run([ip, "netns", "pids", name]).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), 15)
            except ProcessLookupError:
                pass
        subprocess.run([ip, "netns", "del", name], check=False, timeout=10)


def test_wg_quick_strip_and_wg_setconf_accept_every_config(
    inventory: Inventory, tmp_path: Path, scratch_netns: str
) -> None:
    wg_quick, wg_tool, wg_go = require_tool("wg-quick"), require_tool("wg"), require_tool("wireguard-go")
    ip = require_tool("ip")
    configs = _all_configs(inventory)
    assert len(configs) == 2 * len(inventory.tunnels()) + 2
    stripped_dir = tmp_path / "stripped"
    stripped_dir.mkdir(mode=0o700)
    expected: dict[str, set[str]] = {}
    for i, (label, text) in enumerate(sorted(configs.items())):
        # wg-quick takes the interface name from the file name, as it would from /etc/wireguard.
        src_dir = tmp_path / f"c{i}"
        src_dir.mkdir(mode=0o700)
        conf = src_dir / Path(label.split(":", 1)[1]).name
        conf.write_text(text)
        conf.chmod(0o600)
        result = _run([wg_quick, "strip", str(conf)])
        assert result.returncode == 0, f"{label}: {result.stderr}"
        # wg-quick's own keys are gone (matched as keys: a base64 key may hold "MTU").
        keys = {line.split("=", 1)[0].strip() for line in result.stdout.splitlines() if "=" in line}
        assert not keys & {"Address", "PostUp", "PostDown", "MTU", "DNS", "Table"}, (label, keys)
        out = stripped_dir / f"{i}.conf"
        out.write_text(result.stdout)
        out.chmod(0o600)
        expected[str(out)] = _peer_allowed(text)
    # One userspace interface in a private namespace (and a private /run/wireguard for its socket);
    # each stripped config is set on it and read back.
    script = "\n".join(
        [
            "set -e",
            "mount -t tmpfs -o mode=0700 tmpfs /run/wireguard",
            f"{wg_go} wgcheck >/dev/null 2>&1",
            *(
                f"{wg_tool} setconf wgcheck {path} && echo '== {path}' && {wg_tool} show wgcheck allowed-ips"
                for path in expected
            ),
        ]
    )
    os.makedirs("/run/wireguard", exist_ok=True)
    result = _run(
        [ip, "netns", "exec", scratch_netns, "unshare", "--mount", "--propagation", "private", "bash", "-c", script],
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    blocks = result.stdout.split("== ")[1:]
    assert len(blocks) == len(expected)
    for block in blocks:
        path, _, rest = block.partition("\n")
        shown = {ip_ for line in rest.splitlines() for ip_ in line.split()[1:]}
        assert shown == expected[path], path


def test_sysctl_file_enables_forwarding(inventory: Inventory, tmp_path: Path, scratch_netns: str) -> None:
    ip, sysctl = require_tool("ip"), require_tool("sysctl")
    files = wg.gateway_files(inventory, {s.name: wg.TunnelKeys.generate() for s, _ in inventory.tunnels()}, ADMIN)
    path = tmp_path / "90-unde-gateway.conf"
    path.write_text(files[wg.SYSCTL_PATH])
    result = _run([ip, "netns", "exec", scratch_netns, sysctl, "-p", str(path)])
    assert result.returncode == 0, result.stderr
    value = _run([ip, "netns", "exec", scratch_netns, sysctl, "-n", "net.ipv4.ip_forward"]).stdout.strip()
    assert value == "1"


@pytest.mark.parametrize("shards", [1, 16])
def test_nft_accepts_the_ruleset(tmp_path: Path, scratch_netns: str, shards: int) -> None:
    from unde_infra.model import load_topology

    ip, nft = require_tool("ip"), require_tool("nft")
    inventory = load_topology(shards=shards)
    files = wg.gateway_files(inventory, {s.name: wg.TunnelKeys.generate() for s, _ in inventory.tunnels()}, ADMIN)
    path = tmp_path / "nftables.conf"
    path.write_text(files[wg.NFTABLES_PATH])
    check = _run([ip, "netns", "exec", scratch_netns, nft, "-c", "-f", str(path)])
    assert check.returncode == 0, check.stderr
    # Loaded for real (inside the throwaway namespace) and read back.
    load = _run([ip, "netns", "exec", scratch_netns, nft, "-f", str(path)])
    assert load.returncode == 0, load.stderr
    listed = _run([ip, "netns", "exec", scratch_netns, nft, "list", "ruleset"]).stdout
    assert "counter tunnel_to_tunnel" in listed and "masquerade" in listed
    assert (
        f"udp dport {{ {', '.join(str(51820 + t.index) for _, t in sorted(inventory.tunnels(), key=lambda p: p[1].index))} }}"
        in listed
    )


def test_nft_rejects_a_broken_ruleset(inventory: Inventory, tmp_path: Path, scratch_netns: str) -> None:
    # The check above can fail: a ruleset with an undefined variable is refused.
    ip, nft = require_tool("ip"), require_tool("nft")
    files = wg.gateway_files(inventory, {s.name: wg.TunnelKeys.generate() for s, _ in inventory.tunnels()}, ADMIN)
    path = tmp_path / "nftables.conf"
    path.write_text(files[wg.NFTABLES_PATH].replace("$WG_PORTS", "$NO_SUCH_SET"))
    assert _run([ip, "netns", "exec", scratch_netns, nft, "-c", "-f", str(path)]).returncode != 0
