"""A caching HTTP proxy for Debian's archive: the lab's only way out.

The containers have no route off their namespaces; apt in them talks to this proxy, which fetches
from Debian's archive on the host's side and keeps what it fetched under the lab's cache, so
repeated runs download nothing twice. Any other host is refused (403): an apt source or a
download the program adds that is not Debian's shows up in the converge report as a failure,
as it would on a server without that network path.

Why not apt-cacher-ng (Debian's own caching proxy): it resolves names with c-ares, which on
these machines cannot resolve the archive's name, so every request ends in 503 "Host not found".
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

ALLOWED_HOSTS = frozenset({"deb.debian.org", "security.debian.org"})
# Index files change upstream; within this many seconds a cached copy is served again, so that
# the containers of one run (and the runs of one day) see one consistent archive.
INDEX_TTL_SECONDS = 6 * 3600
# Package files and by-hash indexes never change under their name.
IMMUTABLE_SUFFIXES = (".deb", ".udeb", ".dsc", ".tar.xz", ".tar.gz")
UPSTREAM_TIMEOUT = 60


def _immutable(path: str) -> bool:
    return path.endswith(IMMUTABLE_SUFFIXES) or "/by-hash/" in path


class ArchiveProxy(BaseHTTPRequestHandler):
    cache_dir: Path
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
        self._serve(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        url = self.path
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname not in ALLOWED_HOSTS:
            self._reply(403, b"the lab reaches Debian's archive only\n", head)
            return
        cached = self.cache_dir / hashlib.sha256(url.encode()).hexdigest()
        fresh = cached.exists() and (_immutable(parts.path) or time.time() - cached.stat().st_mtime < INDEX_TTL_SECONDS)
        if not fresh:
            status = self._fetch(url, cached)
            if status != 200:
                self._reply(status, f"upstream answered {status}\n".encode(), head)
                return
        size = cached.stat().st_size
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if not head:
            with cached.open("rb") as source:
                shutil.copyfileobj(source, self.wfile)

    def _fetch(self, url: str, cached: Path) -> int:
        partial = cached.with_name(f"{cached.name}.{threading.get_ident()}.part")
        try:
            with urllib.request.urlopen(url, timeout=UPSTREAM_TIMEOUT) as response, partial.open("wb") as sink:
                shutil.copyfileobj(response, sink)
        except urllib.error.HTTPError as error:
            partial.unlink(missing_ok=True)
            return error.code
        except (OSError, urllib.error.URLError):
            partial.unlink(missing_ok=True)
            return 502
        partial.replace(cached)
        return 200

    def _reply(self, status: int, body: bytes, head: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)


def serve(sock: socket.socket, cache_dir: Path) -> ThreadingHTTPServer:
    """Serve on an already bound and listening socket (the lab binds it inside its namespace)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    handler = type("Handler", (ArchiveProxy,), {"cache_dir": cache_dir})
    server = ThreadingHTTPServer(sock.getsockname()[:2], handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    server.daemon_threads = True
    return server


def main() -> None:
    host, port, cache = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    print(f"apt proxy on {host}:{port}, cache {cache}", file=sys.stderr, flush=True)
    serve(sock, cache).serve_forever()


if __name__ == "__main__":
    os.umask(0o022)
    main()
