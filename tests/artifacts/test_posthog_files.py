"""The posthog server's rendered files, checked by the real tools: `docker-compose config` (Debian's
docker-compose, which validates a compose file without an engine) on the compose file with its
env file, `caddy validate` on the Caddyfile, and apt itself on Docker's source and version pins
(a newer Docker in the repository is not what apt would install)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_tool
from unde_infra.model import Inventory
from unde_infra.render import posthog as p

SECRETS = p.PosthogSecrets("dbPassw0rdKnown", "djangoSecretKnown", p.SAMPLE_SECRETS.encryption_salt, "minioPassw0rdKnown")


@pytest.fixture
def rendered(inventory: Inventory, tmp_path: Path) -> dict[str, Path]:
    # Debian 12's files: the only ones with Docker's apt source and pin (an adopted posthog server).
    files = p.posthog_files(inventory.servers["posthog"], SECRETS, "debian-12")
    paths = {}
    for name, source in (("compose", p.COMPOSE_PATH), ("env", p.ENV_PATH), ("caddy", p.CADDYFILE_PATH),
                         ("source", p.DOCKER_SOURCE_PATH), ("pin", p.DOCKER_PIN_PATH)):
        paths[name] = tmp_path / Path(source).name
        paths[name].write_text(files[source].content)
    return paths


def compose(rendered: dict[str, Path], compose_file: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_tool("docker-compose"), "--env-file", str(rendered["env"]), "-f",
                           str(compose_file or rendered["compose"]), "config"], capture_output=True, text=True,
                          timeout=60, cwd=rendered["compose"].parent)


def test_docker_compose_accepts_the_compose_file_and_its_env(rendered: dict[str, Path], inventory: Inventory) -> None:
    result = compose(rendered)
    assert result.returncode == 0, result.stderr
    assert "not set" not in result.stderr, result.stderr  # every variable comes from the env file
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    assert set(services) == {"db", "redis7", "clickhouse", "zookeeper", "kafka", "objectstorage", "web", "worker",
                             "plugins", "capture", "replay-capture", "feature-flags", "proxy"}
    # The secrets reach the services from the env file, resolved by compose itself.
    assert services["db"]["environment"]["POSTGRES_PASSWORD"] == SECRETS.db_password
    assert services["web"]["environment"]["DATABASE_URL"] == f"postgres://posthog:{SECRETS.db_password}@db:5432/posthog"
    assert services["worker"]["environment"]["SECRET_KEY"] == SECRETS.secret_key
    assert services["objectstorage"]["environment"]["MINIO_ROOT_PASSWORD"] == SECRETS.object_storage_password
    assert services["plugins"]["environment"]["ENCRYPTION_SALT_KEYS"] == p.fernet_key(SECRETS.encryption_salt)
    # No port on any address but the private one (Caddy) and loopback (ClickHouse for the collector).
    published = {name: spec["ports"] for name, spec in services.items() if spec.get("ports")}
    private = inventory.servers["posthog"].ip
    assert published == {"proxy": [f"{private}:80:80/tcp"], "clickhouse": ["127.0.0.1:8123:8123/tcp"]}
    # Data on the server's own disk: every bind mount under /var/lib/posthog or PostHog's checkout.
    for name, spec in services.items():
        for volume in spec.get("volumes", []):
            host = volume["source"] if isinstance(volume, dict) else volume.split(":", 1)[0]
            assert host.startswith((p.DATA_DIR + "/", p.SOURCE_DIR + "/", p.CADDYFILE_PATH)), (name, host)
    mounted = {v.split(":", 1)[0].removeprefix(p.DATA_DIR + "/") for s in yaml.safe_load(
        rendered["compose"].read_text())["services"].values() for v in s.get("volumes", []) if v.startswith(p.DATA_DIR)}
    assert mounted == set(p.DATA_DIRS)  # the setup step creates exactly the directories compose mounts


def test_docker_compose_rejects_a_broken_file(rendered: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(rendered["compose"].read_text().replace("restart: unless-stopped", "restart: sometimes", 1)
                      .replace("    healthcheck:\n", "    healthcheck: [1, 2]\n    x:\n", 1))
    assert compose(rendered, broken).returncode != 0


def test_no_secret_in_the_compose_file_and_every_image_pinned(inventory: Inventory) -> None:
    files = p.posthog_files(inventory.servers["posthog"], SECRETS)
    text = files[p.COMPOSE_PATH].content
    for secret in (SECRETS.db_password, SECRETS.secret_key, SECRETS.object_storage_password):
        assert secret not in text
        assert all(secret not in f.content for path, f in files.items() if path != p.ENV_PATH)
    env = files[p.ENV_PATH]
    assert (env.mode, env.owner, env.secret) == ("0600", "root", True)
    assert not any(f.secret for path, f in files.items() if path != p.ENV_PATH)
    images = re.findall(r"^    image: (\S+)$", text, re.M)
    assert len(images) == 13
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and tag and tag not in ("latest", "master", "main"), image
    assert {i.rpartition(":")[2] for i in images if i.startswith(("posthog/", "ghcr.io/posthog/posthog/"))} == {
        p.POSTHOG_COMMIT}


def test_caddy_accepts_the_caddyfile(rendered: dict[str, Path], tmp_path: Path) -> None:
    caddy = require_tool("caddy")
    result = subprocess.run([caddy, "validate", "--config", str(rendered["caddy"]), "--adapter", "caddyfile"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid configuration" in result.stdout + result.stderr
    broken = tmp_path / "Caddyfile.broken"
    broken.write_text(rendered["caddy"].read_text().replace("reverse_proxy web:8000", "reverse_proxi web:8000"))
    assert subprocess.run([caddy, "validate", "--config", str(broken), "--adapter", "caddyfile"],
                          capture_output=True, text=True, timeout=60).returncode != 0


def test_apt_installs_the_pinned_docker_even_when_a_newer_one_is_offered(rendered: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    """apt-cache with the rendered source and pin, and a repository index that offers each package
    at the pinned version and a newer one: the candidate is the pinned version."""
    apt_cache = require_tool("apt-cache")
    lists, prefs = tmp_path / "lists", tmp_path / "preferences.d"
    (lists / "partial").mkdir(parents=True)
    prefs.mkdir()
    (prefs / "unde-docker").write_text(rendered["pin"].read_text())
    (tmp_path / "status").write_text("")
    stanzas = []
    for package, version in p.DOCKER_PACKAGES.items():
        epoch = "5:" if version.startswith("5:") else ""
        for offered in (version, f"{epoch}99.0.0-1~debian.12~bookworm"):
            stanzas.append(f"Package: {package}\nVersion: {offered}\nArchitecture: amd64\n"
                           f"Filename: pool/{package}.deb\nSize: 1\nDescription: {package}\n")
    index = "download.docker.com_linux_debian_dists_bookworm_stable_binary-amd64_Packages"
    (lists / index).write_text("\n".join(stanzas) + "\n")
    options = [f"-oDir::Etc::SourceList={rendered['source']}", "-oDir::Etc::SourceParts=/nonexistent",
               "-oDir::Etc::Preferences=/nonexistent", f"-oDir::Etc::PreferencesParts={prefs}",
               f"-oDir::State::Lists={lists}", f"-oDir::State::status={tmp_path / 'status'}",
               f"-oDir::Cache={tmp_path / 'cache'}", "-oAPT::Architecture=amd64"]
    result = subprocess.run([apt_cache, *options, "policy", *p.DOCKER_PACKAGES], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    candidates = dict(re.findall(r"^(\S+):\n  Installed: \(none\)\n  Candidate: (\S+)$", result.stdout, re.M))
    assert candidates == p.DOCKER_PACKAGES, result.stdout
    assert "500 https://download.docker.com/linux/debian bookworm/stable amd64 Packages" in result.stdout
    # The same check on a pin file apt cannot read says so.
    (prefs / "unde-docker").write_text("Package: docker-ce\nPin: versio 1\nPin-Priority: 1001\n")
    broken = subprocess.run([apt_cache, *options, "policy", "docker-ce"], capture_output=True, text=True, timeout=60)
    assert "Did not understand pin type" in broken.stderr


def test_docker_key_and_packages_are_pinned_in_the_setup_parameters(inventory: Inventory) -> None:
    files = p.posthog_files(inventory.servers["posthog"], SECRETS, "debian-12")
    settings = files[f"{p.SETUP_PATH}.env"].content
    assert re.fullmatch(r"[0-9A-F]{40}", p.DOCKER_KEY_FINGERPRINT)
    assert f"DOCKER_KEY_FINGERPRINT={p.DOCKER_KEY_FINGERPRINT}\n" in settings
    for package, version in p.DOCKER_PACKAGES.items():
        assert f"{package}={version}" in settings
    assert files[p.DOCKER_SOURCE_PATH].content == (
        "deb [arch=amd64 signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/debian bookworm stable\n")


def test_on_debian_13_docker_comes_from_debian_with_no_other_source(inventory: Inventory) -> None:
    """The server the program creates runs Debian 13: Docker Engine and Compose v2 from Debian's
    archive; no key is fetched, no repository or pin is written."""
    server = inventory.servers["posthog"]
    assert server.os == "debian-13"
    files = p.posthog_files(server, SECRETS)
    assert p.DOCKER_SOURCE_PATH not in files and p.DOCKER_PIN_PATH not in files
    settings = dict(line.split("=", 1) for line in files[f"{p.SETUP_PATH}.env"].content.splitlines())
    assert settings["CODENAME"] == "trixie"
    assert settings["DOCKER_PACKAGES"] == "'docker.io docker-cli docker-compose'"
    assert settings["DOCKER_KEY_URL"] == "''"
    assert "download.docker.com" not in "".join(f.content for f in files.values())
    script = files[p.SETUP_PATH].content
    assert 'if [ -n "$DOCKER_KEY_URL" ]; then' in script
    assert p.posthog_files(server, SECRETS, "debian-12")[f"{p.SETUP_PATH}.env"].content.count("bookworm") >= 1
