"""Root filesystems of the releases the servers run, built once and kept by their inputs.

What Hetzner's `debian-12` / `debian-13` images carry that matters here (systemd, OpenSSH
with the release's default configuration, cloud-init, sudo, python3, curl, gnupg, the CA
certificates), built with mmdebstrap from Debian's archive through the lab's proxy. Three lab
facts are added on top, and nothing else:
- cloud-init reads the NoCloud seed and leaves the network alone (the lab plays the cloud's
  DHCP from outside the container);
- apt goes through the lab's archive proxy (the only way out of the lab);
- the lab's CA among the trusted ones (the S3 stand-in's certificate; lab/s3.py);
- wireguard-go, because this kernel has no WireGuard module (wg-quick falls back to it);
- systemd-networkd-wait-online masked: the lab addresses the links from outside, so networkd
  manages none and would wait its full two minutes at every boot; systemd-firstboot masked: it
  would wait on the console, which the lab copies to a file, for a locale and a timezone;
  nvmf-autoconnect masked (nvme-cli comes with node_exporter's collectors; a container has no
  NVMe fabrics to connect, and the unit fails there);
- no manual pages or translations unpacked, and man-db's index not rebuilt on every install
  (as in Debian's container images): thirty servers install their packages at once on two
  cores, and those were most of the time.
A root is kept under the cache directory under a name made of its inputs, so a change of any of
them builds a new one."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

MIRROR = "http://deb.debian.org/debian"
SECURITY = "http://security.debian.org/debian-security"
IMAGE_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "cloud-init", "sudo", "python3", "curl", "gnupg",
    "ca-certificates", "iproute2", "iputils-ping", "less", "procps", "netbase", "wireguard-go",
    # The cloud kernel, as on Hetzner's images: it provides wireguard-modules, which
    # wireguard-tools recommends (without a kernel apt would install one, initramfs and all).
    "linux-image-cloud-amd64",
)
LAB_CLOUD_CFG = "datasource_list: [NoCloud, None]\nnetwork: {config: disabled}\n"
DPKG_EXCLUDES = (
    "path-exclude=/usr/share/man/*\npath-exclude=/usr/share/locale/*/LC_MESSAGES/*.mo\n"
    "path-exclude=/usr/share/doc/*\npath-include=/usr/share/doc/*/copyright\n"
)
RELEASES = {"debian-12": "bookworm", "debian-13": "trixie"}


@dataclass(frozen=True)
class Root:
    image: str  # debian-12 or debian-13, as the program names it
    path: Path


def _key(suite: str, proxy: str, ca: str) -> str:
    inputs = {"suite": suite, "ca": ca, "packages": IMAGE_PACKAGES, "cloud": LAB_CLOUD_CFG, "proxy": proxy, "dpkg": DPKG_EXCLUDES, "v": 7}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:12]


def lab_apt_config(proxy: str) -> str:
    return f'Acquire::http::Proxy "{proxy}";\nAcquire::Retries "3";\n'


def build(image: str, cache: Path, build_proxy: str, lab_proxy: str, hosts_lines: str, ca: Path, log: Path) -> Root:
    """The root of `image`, built through `build_proxy` (the proxy as the host reaches it) and
    configured for `lab_proxy` (as the containers reach it: a name, which `hosts_lines` of
    /etc/hosts give an IPv4 and an IPv6 address, for servers that have only one of them, beside
    the lab's other names), trusting the lab's CA `ca` (its stand-ins' certificates)."""
    suite = RELEASES[image]
    path = cache / f"{image}-{_key(suite, lab_proxy + hosts_lines, ca.read_text())}"
    if (path / "etc/os-release").exists():
        return Root(image, path)
    cache.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    sources = [f"deb {MIRROR} {suite} main", f"deb {MIRROR} {suite}-updates main", f"deb {SECURITY} {suite}-security main"]
    with log.open("ab") as out:
        subprocess.run(
            ["mmdebstrap", "--variant=apt", "--include=" + ",".join(IMAGE_PACKAGES),
             f'--aptopt=Acquire::http::Proxy "{build_proxy}"',
             # The image's own packages only (the kernel's recommends would bring NVMe-over-fabrics
             # units that fail in a container); what the servers install later gets its
             # recommends as on any Debian.
             '--aptopt=APT::Install-Recommends "false"', suite, str(partial), *sources],
            stdout=out, stderr=subprocess.STDOUT, check=True, timeout=900,
        )
    # mmdebstrap leaves its own apt options (the build's proxy) in the root.
    (partial / "etc/apt/apt.conf.d/99mmdebstrap").unlink(missing_ok=True)
    (partial / "etc/cloud/cloud.cfg.d/90-unde-lab.cfg").write_text(LAB_CLOUD_CFG)
    (partial / "etc/apt/apt.conf.d/00unde-lab-proxy").write_text(lab_apt_config(lab_proxy))
    with (partial / "etc/hosts").open("a") as hosts:
        hosts.write(hosts_lines)
    shutil.copy(ca, partial / "usr/local/share/ca-certificates/unde-lab-ca.crt")
    subprocess.run(["chroot", str(partial), "update-ca-certificates"], check=True, timeout=120,
                   capture_output=True)
    (partial / "etc/dpkg/dpkg.cfg.d/90unde-lab-nodoc").write_text(DPKG_EXCLUDES)
    subprocess.run(["chroot", str(partial), "sh", "-c",
                    "echo 'man-db man-db/auto-update boolean false' | debconf-set-selections; "
                    "rm -f /var/lib/man-db/auto-update"], check=True, timeout=60)
    # Masked: networkd's wait (see above), and the first-boot wizard, which would wait on the
    # console for answers (a cloud image's first boot asks nothing).
    for unit in ("systemd-networkd-wait-online.service", "systemd-firstboot.service", "nvmf-autoconnect.service"):
        masked = partial / "etc/systemd/system" / unit
        masked.unlink(missing_ok=True)
        masked.symlink_to("/dev/null")
    # The image's machine id is made at first boot, as on a cloud image.
    (partial / "etc/machine-id").write_text("uninitialized\n")
    partial.rename(path)
    return Root(image, path)
