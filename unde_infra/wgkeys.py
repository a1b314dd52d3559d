"""WireGuard key material: Curve25519 keys as WireGuard's tools encode them (base64 of 32 bytes).

A private key is 32 random bytes. `generate_private_key` clamps them exactly as `wg genkey` does,
so that a key shown by `wg show` is byte-for-byte the one we rendered. Clamping is not needed for
correctness: X25519 clamps the scalar itself (RFC 7748), so `public_key` gives the same answer as
`wg pubkey` for any 32 bytes, including unclamped bytes from `pulumi_random` in the Pulumi stacks.
"""

from __future__ import annotations

import base64
import binascii
import secrets

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

KEY_BYTES = 32


def _clamp(raw: bytes) -> bytes:
    key = bytearray(raw)
    key[0] &= 248
    key[31] = (key[31] & 127) | 64
    return bytes(key)


def decode_key(key_b64: str, what: str = "key") -> bytes:
    """The 32 bytes of a base64 key. The error never repeats the value: it may be a secret."""
    try:
        raw = base64.b64decode(key_b64.strip(), validate=True)
    except (binascii.Error, ValueError, AttributeError):
        raise ValueError(f"{what} is not valid base64") from None
    if len(raw) != KEY_BYTES:
        raise ValueError(f"{what} must decode to {KEY_BYTES} bytes, not {len(raw)}")
    return raw


def encode_key(raw: bytes) -> str:
    if len(raw) != KEY_BYTES:
        raise ValueError(f"a WireGuard key is {KEY_BYTES} bytes, not {len(raw)}")
    return base64.b64encode(raw).decode("ascii")


def private_key_from_bytes(raw: bytes) -> str:
    """A private key from 32 bytes of any origin (e.g. a secret random resource), clamped."""
    return encode_key(_clamp(raw))


def generate_private_key() -> str:
    """Like `wg genkey`: 32 bytes from the OS CSPRNG, clamped, base64."""
    return private_key_from_bytes(secrets.token_bytes(KEY_BYTES))


def public_key(private_b64: str) -> str:
    """Like `wg pubkey`: the X25519 public key of a private key (clamped or not)."""
    private = X25519PrivateKey.from_private_bytes(decode_key(private_b64, "private key"))
    return encode_key(private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def generate_preshared_key() -> str:
    """Like `wg genpsk`: 32 random bytes, base64 (a symmetric key, never clamped)."""
    return encode_key(secrets.token_bytes(KEY_BYTES))
