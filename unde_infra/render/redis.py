"""Redis on local-redis, the hot-path Redis of SPEC's Redis topology, and what the adopted batch
Redis on push receives (its exporter's login, nothing else).

local-redis holds the shard routing cache (user_id -> shard), the catalog cache, mood/context
frames (TTL 5 min), per-user rate limits, debounce keys, the persona LRU (100 profiles) and
session metadata. What follows from that:

* **Memory.** `maxmemory` comes from the server's RAM (`maxmemory_bytes`): the OS, the exporter
  and the copy-on-write of a snapshot's fork must fit beside the data set.
* **Eviction: volatile-lfu.** Only keys with a TTL are ever evicted, the least frequently used
  first. The routing cache has no TTL (an entry changes only when its shard fails over), so it is
  never evicted; rate-limit and debounce counters do have TTLs, but a counter in use is hit on
  every request, so LFU keeps them while cold catalog entries and frames go first. When nothing
  evictable is left, writes fail with OOM instead of dropping routing entries: RedisMemoryHigh
  (80 % of maxmemory) fires long before that.
* **Persistence: RDB snapshots, no AOF.** A restart comes back warm (routing cache, sessions,
  catalog) instead of sending every request's routing lookup to production-db across the
  120 ms link at once; expired keys are dropped on load. Nothing here must survive to the last
  second: rate-limit windows and debounce keys live for seconds, and every cache rebuilds from
  its source, so AOF's write cost buys nothing. A failed snapshot does not stop writes (the hot
  path keeps working); RedisSnapshotFailing says so instead.
* **Access.** ACL users per client with least privilege on key prefixes (`KEY_PREFIXES`, the
  contract with the application), the default user disabled, passwords generated per stack and
  stored only as SHA-256 hashes in the ACL file. Redis binds to loopback (the exporter), the
  private address and the tunnel address (the routing sync from Helsinki), protected mode on.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from ..files import setup_settings as script_parameters
from ..files import source
from ..model import Server
from .cloud_init import SECRETS_DIR
from .escape import env_file
from .patroni import RenderedFile
from .systemd import timer_unit

REDIS_PORT = 6379
REDIS_TASK = "redis"
CONF_PATH = "/etc/redis/unde-redis.conf"
ACL_PATH = "/etc/redis/users.acl"
DATA_DIR = "/var/lib/redis"  # Debian's unit allows writes here (ReadWritePaths)
UNIT_DROPIN = "/etc/systemd/system/redis-server.service.d/unde.conf"
EXPORTER_ENV = f"{SECRETS_DIR}/redis-exporter.env"
EXPORTER_DROPIN = "/etc/systemd/system/prometheus-redis-exporter.service.d/unde.conf"
ADMIN_ENV = f"{SECRETS_DIR}/redis-admin.env"  # REDISCLI_AUTH for the setup step's ACL LOAD
CLIENT_ENV = f"{SECRETS_DIR}/redis.env"  # the app's and the orchestrator's connection
TOOLS_DIR = "/usr/local/lib/unde"
SETUP_PATH = f"{TOOLS_DIR}/redis-setup"
EXPORTER_USER_PATH = f"{TOOLS_DIR}/redis-exporter-user"
EXPORTER_USER_HASH = f"{SECRETS_DIR}/redis-exporter.sha256"
EXPORTER_USER_UNIT = "unde-redis-exporter-user"

MIB = 1024**2
# maxmemory = (RAM - OS - exporter) / (1 + copy-on-write + fragmentation):
#   OS: the kernel, sshd, node_exporter, WireGuard and the page cache a snapshot writes through;
#   exporter: redis_exporter's resident memory with headroom;
#   copy-on-write: while BGSAVE's child writes the snapshot, every page the parent changes is
#     copied; with rate-limit counters and frames rewritten constantly, assume half the data set;
#   fragmentation: jemalloc's overhead above used_memory, ~10 % for small values.
OS_RESERVE_BYTES = 512 * MIB
EXPORTER_RESERVE_BYTES = 64 * MIB
COPY_ON_WRITE_FRACTION = 0.5
FRAGMENTATION_FRACTION = 0.1
EVICTION_POLICY = "volatile-lfu"
# RDB: after 5 min if 100 keys changed, after 1 min if 10,000 did (a cache being refilled).
SNAPSHOT_RULES = ("300 100", "60 10000")


def maxmemory_bytes(ram_gb: float) -> int:
    """maxmemory of a Redis server with `ram_gb` of RAM, whole MiB (redis.conf's `mb` is 2^20)."""
    ram = int(ram_gb * 1024**3)
    usable = ram - OS_RESERVE_BYTES - EXPORTER_RESERVE_BYTES
    if usable <= 0:
        raise ValueError(f"{ram_gb:g} GB of RAM leaves nothing for Redis")
    return math.floor(usable / (1 + COPY_ON_WRITE_FRACTION + FRAGMENTATION_FRACTION) / MIB) * MIB


@dataclass(frozen=True)
class KeyPrefix:
    prefix: str
    holds: str
    ttl: str  # the contract: whether the application sets a TTL, so whether the key can be evicted


ENDPOINT_PREFIX = "endpoint:"


def endpoint_key(scope: str) -> str:
    """The routing entry of one shard (its Patroni scope, shardN): where its writable primary is."""
    return f"{ENDPOINT_PREFIX}{scope}"


# The key prefixes the application uses: ACLs grant access by prefix, and eviction depends on
# whether a key has a TTL. docs/architecture.md ("Redis on local-redis") lists them as the contract.
KEY_PREFIXES = (
    KeyPrefix("route:", "shard routing cache, user_id -> shard index", "none: never evicted"),
    # Written only by the shard's writable primary (files/shard_routing.py), never by the application.
    KeyPrefix(ENDPOINT_PREFIX, "each shard's writable endpoint (endpoint:shardN, a hash: host, port, member, "
              "timeline), written by the shard's primary", "none: never evicted"),
    KeyPrefix("catalog:", "catalog cache", "yes (hours): evicted first when cold"),
    KeyPrefix("frame:", "mood and context frames", "5 min"),
    KeyPrefix("persona:", "persona LRU, 100 profiles", "yes"),
    KeyPrefix("session:", "session metadata", "the session's idle timeout"),
    KeyPrefix("ratelimit:", "per-user rate-limit windows", "the window"),
    KeyPrefix("debounce:", "debounce markers", "the debounce interval"),
)

# Commands a cache client needs: reads, writes, MULTI/EXEC, Lua for atomic rate limits; never
# the dangerous ones (FLUSHALL, KEYS, CONFIG, DEBUG, ...), which -@dangerous takes away again.
CLIENT_COMMANDS = (
    "-@all", "+@read", "+@write", "+@transaction", "+@connection",
    "+eval", "+evalsha", "+eval_ro", "+evalsha_ro", "+script|load", "+script|exists",
    "-@dangerous", "-@admin",
)
# What redis_exporter 1.45 asks: INFO, CONFIG GET (maxmemory, maxclients), SLOWLOG, LATENCY;
# no key and no channel.
EXPORTER_COMMANDS = (
    "-@all", "+auth", "+hello", "+ping", "+info", "+config|get", "+slowlog|get", "+slowlog|len",
    "+latency|latest", "+cluster|info", "+client|setname",
)


@dataclass(frozen=True)
class RedisUser:
    name: str
    keys: tuple[str, ...]  # ACL key selectors: ~pattern (read-write) or %R~pattern (read-only)
    commands: tuple[str, ...]
    why: str


def _keys(rw: tuple[str, ...], ro: tuple[str, ...] = ()) -> tuple[str, ...]:
    return tuple(f"~{p}*" for p in rw) + tuple(f"%R~{p}*" for p in ro)


# What the shard nodes' routing watcher sends: one script (files/shard_routing.py,
# ROUTING_SCRIPT) that reads and sets its shard's endpoint hash. Redis checks every command a
# script calls against the caller's ACL, keys included, so HMGET and HSET on `endpoint:*` are
# all it can ever do.
ROUTER_COMMANDS = ("-@all", "+eval", "+hmget", "+hset")
ROUTER_USER = "router"

USERS = (
    # local-app (FastAPI): rate limits, debounce and sessions; it reads routing, never writes it.
    RedisUser("app", _keys(("ratelimit:", "debounce:", "session:"), ("route:", ENDPOINT_PREFIX)), CLIENT_COMMANDS,
              "local-app: rate limit, debounce, session metadata; reads the routing cache and shard endpoints"),
    # local-orchestrator: fills the routing cache on a miss, the catalog cache, frames, personas.
    RedisUser("orchestrator", _keys(("route:", "catalog:", "frame:", "persona:"), ("session:", ENDPOINT_PREFIX)),
              CLIENT_COMMANDS,
              "local-orchestrator: routing and catalog caches, frames, persona LRU; reads sessions and shard endpoints"),
    # Every shard node (primary and replica): the one that is its shard's writable primary writes
    # the shard's endpoint; nothing else.
    RedisUser(ROUTER_USER, _keys((ENDPOINT_PREFIX,)), ROUTER_COMMANDS,
              "the shard nodes' routing watcher: writes endpoint:<shard>, through one compare-and-set script"),
    RedisUser("exporter", (), EXPORTER_COMMANDS, "redis_exporter: server statistics, no key"),
    # The setup step's ACL LOAD, and people in a maintenance window.
    RedisUser("admin", ("~*",), ("+@all",), "operations: ACL LOAD, CONFIG; its password stays on the server"),
)
CLIENT_USERS = {"api": "app", "orchestrator": "orchestrator"}  # task -> the user its service logs in as


def redis_conf(server: Server, *, data_dir: str = DATA_DIR, acl_path: str = ACL_PATH) -> str:
    if server.tunnel is None:
        raise ValueError(f"{server.name}: the hot-path Redis has a tunnel (the routing sync from Helsinki)")
    maxmemory = maxmemory_bytes(server.ram_gb)
    lines = [
        f"# Redis on {server.name}, rendered by unde-infra; edits are overwritten.",
        "# Loopback for the exporter and the setup step, the private address for the hot path, the",
        "# tunnel address for the routing sync from Helsinki ('-': optional, so that Redis still",
        "# starts while the tunnel is down; the unit orders itself after the tunnel).",
        f"bind 127.0.0.1 {server.ip} -{server.tunnel.local_ip}",
        "protected-mode yes",
        f"port {REDIS_PORT}",
        "tcp-backlog 511",
        "tcp-keepalive 300",
        "timeout 0",
        "daemonize no",
        "supervised systemd",
        "pidfile /run/redis/redis-server.pid",
        "loglevel notice",
        'logfile ""',
        # One database: key prefixes separate the contents, and ACLs grant by prefix.
        "databases 1",
        "",
        "# Users: the ACL file (root-managed, owned by redis, 0600) holds only password hashes.",
        f"aclfile {acl_path}",
        "",
        f"# maxmemory = (RAM {server.ram_gb:g} GiB - OS {OS_RESERVE_BYTES // MIB} MiB - exporter "
        f"{EXPORTER_RESERVE_BYTES // MIB} MiB)",
        f"#             / (1 + copy-on-write {COPY_ON_WRITE_FRACTION:g} + fragmentation {FRAGMENTATION_FRACTION:g})"
        f" = {maxmemory // MIB} MiB",
        f"maxmemory {maxmemory // MIB}mb",
        "# Only keys with a TTL are evicted, least frequently used first: the routing cache has",
        "# none and stays; live rate-limit counters are hit on every request and stay too.",
        f"maxmemory-policy {EVICTION_POLICY}",
        "maxmemory-samples 10",
        "lazyfree-lazy-eviction yes",
        "lazyfree-lazy-expire yes",
        "",
        "# RDB snapshots so that a restart comes back warm; no AOF (nothing here must survive to",
        "# the last second). A failed snapshot must not stop the hot path's writes: the",
        "# RedisSnapshotFailing alert reports it.",
        *(f"save {rule}" for rule in SNAPSHOT_RULES),
        "stop-writes-on-bgsave-error no",
        "rdbcompression yes",
        "rdbchecksum yes",
        "dbfilename dump.rdb",
        f"dir {data_dir}",
        "appendonly no",
        "",
        "slowlog-log-slower-than 10000",
        "slowlog-max-len 128",
        "latency-monitor-threshold 100",
        "",
    ]
    return "\n".join(lines)


def _one_word(password: str) -> str:
    """A password that reaches a line-based file or a URL: one word, nothing else."""
    if not password or any(c.isspace() for c in password):
        raise ValueError("a Redis password must be one word")
    return password


def password_hash(password: str) -> str:
    return hashlib.sha256(_one_word(password).encode()).hexdigest()


def acl_file(passwords: Mapping[str, str]) -> str:
    """SECRET (hashes only): every user with its key selectors and commands; `default` disabled."""
    missing = {u.name for u in USERS} - set(passwords)
    if missing:
        raise ValueError(f"no password for {', '.join(sorted(missing))}")
    lines = ["user default off resetpass resetkeys resetchannels -@all"]
    for user in USERS:
        channels = "&*" if user.name == "admin" else "resetchannels"
        lines.append(" ".join(["user", user.name, "on", f"#{password_hash(passwords[user.name])}", "resetkeys",
                               *user.keys, channels, *user.commands]))
    return "\n".join(lines) + "\n"


def client_env(server: Server, user: str, password: str) -> str:
    """SECRET: how a service connects (systemd EnvironmentFile), for the user of its task."""
    url = f"redis://{quote(user)}:{quote(_one_word(password), safe='')}@{server.ip}:{REDIS_PORT}/0"
    return env_file({
        "REDIS_HOST": str(server.ip), "REDIS_PORT": str(REDIS_PORT), "REDIS_USERNAME": user,
        "REDIS_PASSWORD": password, "REDIS_URL": url,
    })


def exporter_env(password: str, port: int = REDIS_PORT) -> str:
    """SECRET: redis_exporter's login (its REDIS_* environment variables)."""
    return env_file({"REDIS_ADDR": f"redis://127.0.0.1:{port}", "REDIS_USER": "exporter",
                     "REDIS_PASSWORD": _one_word(password)})


def exporter_dropin() -> str:
    # systemd reads the root-only file before it starts the exporter as its own user.
    return f"[Service]\nEnvironmentFile={EXPORTER_ENV}\n"


def unit_dropin(server: Server, conf_path: str = CONF_PATH) -> str:
    tunnel = f"wg-quick@{server.tunnel.interface}.service" if server.tunnel else ""
    return "\n".join([
        "# Rendered by unde-infra: Redis runs the rendered configuration, after the private network",
        "# and the tunnel are up (the tunnel address is an optional bind).",
        "[Unit]",
        f"After=network-online.target {tunnel}".rstrip(),
        "Wants=network-online.target",
        "",
        "[Service]",
        "ExecStart=",
        f"ExecStart=/usr/bin/redis-server {conf_path} --daemonize no",
        "",
    ])


def setup_settings() -> str:
    return script_parameters({
        "REDIS_CONF": CONF_PATH, "REDIS_ACL": ACL_PATH, "REDIS_PORT": REDIS_PORT, "ADMIN_ENV": ADMIN_ENV,
        "DATA_DIR": DATA_DIR, "STAMP": "/var/lib/unde/redis.conf.sha256",
    })


def redis_server_files(server: Server, passwords: Mapping[str, str]) -> dict[str, RenderedFile]:
    """Everything local-redis receives for Redis: passwords are the users' (USERS)."""

    def secret(content: str) -> RenderedFile:
        return RenderedFile(content, mode="0600", secret=True)

    # Written as Redis reads them, redis.conf for its group and the ACL file its own (0600): the
    # delivery installs redis-server first, which creates the account. A setup that handed them
    # over after the write made every delivery write them again and restart Redis (found by the
    # converge lab).
    return {
        CONF_PATH: RenderedFile(redis_conf(server), mode="0640", group="redis"),
        ACL_PATH: RenderedFile(acl_file(passwords), mode="0600", secret=True, owner="redis", group="redis"),
        UNIT_DROPIN: RenderedFile(unit_dropin(server)),
        EXPORTER_ENV: secret(exporter_env(passwords["exporter"])),
        EXPORTER_DROPIN: RenderedFile(exporter_dropin()),
        ADMIN_ENV: secret(env_file({"REDISCLI_AUTH": passwords["admin"]})),
        SETUP_PATH: RenderedFile(source("redis_setup.sh"), mode="0755"),
        f"{SETUP_PATH}.env": RenderedFile(setup_settings()),
    }


# --------------------------------------------------------------------------------------------
# push: an adopted, running Redis (Celery's broker). Nothing of its configuration changes; only
# the exporter gets a user of its own, created at run time (ACL SETUSER), which disturbs nothing.


def exporter_user_settings(port: int = REDIS_PORT) -> str:
    return script_parameters({
        "REDIS_PORT": port, "EXPORTER_USER": "exporter", "HASH_FILE": EXPORTER_USER_HASH,
        "RULES": " ".join(["resetkeys", "resetchannels", *EXPORTER_COMMANDS]),
        "TIMER": f"{EXPORTER_USER_UNIT}.timer",
    })


def adopted_redis_exporter_files(password: str) -> dict[str, RenderedFile]:
    service = "\n".join([
        "[Unit]",
        "Description=The exporter's ACL user on this Redis (unde-infra)",
        "After=redis-server.service",
        "",
        "[Service]",
        "Type=oneshot",
        f"ExecStart={EXPORTER_USER_PATH}",
        "",
    ])
    # A user created at run time is gone after Redis restarts: the timer puts it back.
    timer = timer_unit("Keep the exporter's ACL user on this Redis (unde-infra)",
                       ["OnBootSec=60s", "OnUnitActiveSec=5min"])
    return {
        EXPORTER_ENV: RenderedFile(exporter_env(password), mode="0600", secret=True),
        EXPORTER_USER_HASH: RenderedFile(password_hash(password) + "\n", mode="0600", secret=True),
        EXPORTER_DROPIN: RenderedFile(exporter_dropin()),
        EXPORTER_USER_PATH: RenderedFile(source("redis_exporter_user.sh"), mode="0755"),
        f"{EXPORTER_USER_PATH}.env": RenderedFile(exporter_user_settings()),
        f"/etc/systemd/system/{EXPORTER_USER_UNIT}.service": RenderedFile(service),
        f"/etc/systemd/system/{EXPORTER_USER_UNIT}.timer": RenderedFile(timer),
    }


def adopted_redis_exporter_setup() -> str:
    return f"{EXPORTER_USER_PATH} install"
