"""An S3 stand-in for Hetzner's Object Storage: moto's S3 server (PyPI `moto[server]`) behind a
small TLS terminator, with a certificate from the lab's own CA for the endpoint's name.
pgBackRest talks to S3 over TLS only and verifies the certificate, so the lab's roots trust the
lab's CA (as the servers trust the public CA that signs Hetzner's endpoint). The restore drill
(tests/integration/test_restore_drill.py) uses the same pieces on loopback."""

from __future__ import annotations

import datetime as dt
import ipaddress
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

# werkzeug (moto's server) closes TLS connections without close_notify, which pgBackRest's
# OpenSSL 3 reports as an error: a terminator that closes them properly stands in front.
TLS_TERMINATOR = r"""
import asyncio, ssl, sys
cert, key, listen_host, listen_port, backend_port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])

async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()  # on the TLS side this sends close_notify, which OpenSSL 3 insists on

async def handle(client_reader, client_writer):
    try:
        backend_reader, backend_writer = await asyncio.open_connection("127.0.0.1", backend_port)
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(pipe(client_reader, backend_writer), pipe(backend_reader, client_writer))

async def main():
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = await asyncio.start_server(handle, listen_host.split(","), listen_port, ssl=context)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""


def write_ca(directory: Path, name: str, days: int) -> tuple[Path, Path]:
    """A throw-away CA (certificate, key) in `directory`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "ca.pem", directory / "ca.key"
    paths[0].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    paths[1].chmod(0o600)
    return paths


def write_server_cert(directory: Path, ca: tuple[Path, Path], names: list[str], ips: list[str]) -> tuple[Path, Path]:
    """A server certificate for `names` and `ips`, signed by `ca`: (certificate, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca_cert = x509.load_pem_x509_certificate(ca[0].read_bytes())
    ca_key = serialization.load_pem_private_key(ca[1].read_bytes(), password=None)
    now = dt.datetime.now(dt.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    alt = [x509.DNSName(n) for n in names] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    paths = directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def moto_server() -> str:
    found = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    if found is None:
        raise RuntimeError("moto_server is not installed; `make test` installs moto[server]")
    return found


@dataclass
class S3StandIn:
    """moto on the namespace's loopback, its TLS terminator on each of `addresses`, port 443."""

    namespace: str
    addresses: list[str]
    names: list[str]
    buckets: list[str]
    work: Path
    ca: tuple[Path, Path]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, backend_port: int = 5000) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        cert, key = write_server_cert(self.work, self.ca, self.names, self.addresses)
        log = (self.work / "s3.log").open("ab")
        exec_in = ["ip", "netns", "exec", self.namespace]
        # The endpoint's name is no bucket: requests to it are path-style (pgBackRest's
        # repo1-s3-uri-style=path), which moto takes for a bucket's subdomain unless told.
        endpoints = ",".join(f"https://{name}" for name in self.names)
        self.processes = [
            subprocess.Popen([*exec_in, "env", f"MOTO_S3_CUSTOM_ENDPOINTS={endpoints}", moto_server(), "-H", "127.0.0.1",
                              "-p", str(backend_port)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True),
            subprocess.Popen([*exec_in, sys.executable, "-c", TLS_TERMINATOR, str(cert), str(key), ",".join(self.addresses), "443",
                              str(backend_port)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True),
        ]
        deadline = time.monotonic() + 60
        for bucket in self.buckets:
            while True:
                # moto takes unsigned requests: the bucket the stack's object storage would hold.
                made = subprocess.run([*exec_in, "curl", "-fsS", "-X", "PUT", f"http://127.0.0.1:{backend_port}/{bucket}"],
                                      capture_output=True, text=True, timeout=20)
                if made.returncode == 0:
                    break
                if time.monotonic() > deadline or any(p.poll() is not None for p in self.processes):
                    raise RuntimeError(f"the S3 stand-in did not start: {(self.work / 's3.log').read_text()[-800:]}")
                time.sleep(0.5)

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


