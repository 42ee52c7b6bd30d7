"""Ed25519 nkeys for signing components: accounts (`A…`, seed `SA…`) and modules (`M…`, seed `SM…`).

An nkey is base32 (no padding) of a prefix byte, the 32-byte key and a CRC-16 (little endian); a
seed adds the seed prefix and carries the private key (https://docs.nats.io/running-a-nats-service/
configuration/securing_nats/auth_intro/nkey_auth). The `nkeys` package (0.2.1) encodes only the
NATS roles (operator, account, user, server, cluster) and refuses the module (`M`) and service
(`V`) prefixes wasmCloud signs components and providers with, so the framing is written here with
its CRC function; Ed25519 itself is `cryptography`'s. An account seed made here is an ordinary
nkeys seed (`nkeys.from_seed` reads it; the tests check that).
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from enum import Enum

import nkeys
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

_SEED_PREFIX = 18 << 3  # base32 'S'
_KEY_BYTES = 32
PUBLIC_KEY_CHARS = 56
SEED_CHARS = 58


class KeyKind(Enum):
    """The roles wasmCloud signs with, by their nkeys prefix byte."""

    ACCOUNT = 0  # 'A': the issuer of component claims
    MODULE = 12 << 3  # 'M': a component's subject
    SERVICE = 21 << 3  # 'V': a provider's subject

    @property
    def letter(self) -> str:
        """The first character of a public key of this kind."""
        return {KeyKind.ACCOUNT: "A", KeyKind.MODULE: "M", KeyKind.SERVICE: "V"}[self]

    @property
    def noun(self) -> str:
        """The kind with its article, for messages (`an account`)."""
        return {KeyKind.ACCOUNT: "an account", KeyKind.MODULE: "a module", KeyKind.SERVICE: "a service"}[self]


class NkeyError(ValueError):
    """Not a valid nkey or seed of the expected kind; the message says which check failed."""


def _b32(raw: bytes) -> str:
    return base64.b32encode(raw).decode().rstrip("=")


def _unb32(text: str, what: str) -> bytes:
    try:
        return base64.b32decode(text + "=" * (-len(text) % 8))
    except (binascii.Error, ValueError):
        raise NkeyError(f"{what} is not base32") from None


def _crc(data: bytes) -> bytes:
    return int(nkeys.crc16(bytearray(data))).to_bytes(2, "little")


def _checked(raw: bytes, what: str) -> bytes:
    body, crc = raw[:-2], raw[-2:]
    if len(raw) < 3 or _crc(body) != crc:
        raise NkeyError(f"{what} has a bad checksum (mistyped or truncated?)")
    return body


def _kind_of(prefix: int, what: str) -> KeyKind:
    try:
        return KeyKind(prefix)
    except ValueError:
        raise NkeyError(f"{what} is not an account (A), module (M) or service (V) key") from None


@dataclass(frozen=True)
class SigningKey:
    """A seed's key pair: its kind, public key (`A…`/`M…`) and the private key."""

    kind: KeyKind
    public_key: str
    seed: str
    _private: Ed25519PrivateKey

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of `data`."""
        return self._private.sign(data)

    def __repr__(self) -> str:
        return f"SigningKey({self.kind.name.lower()}, {self.public_key})"


def generate(kind: KeyKind) -> SigningKey:
    """A new random key pair of `kind`."""
    return _from_raw(kind, os.urandom(_KEY_BYTES))


def _from_raw(kind: KeyKind, raw: bytes) -> SigningKey:
    private = Ed25519PrivateKey.from_private_bytes(raw)
    public_raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    header = bytes([_SEED_PREFIX | kind.value >> 5, (kind.value & 31) << 3])
    seed = _b32(header + raw + _crc(header + raw))
    public = bytes([kind.value]) + public_raw
    return SigningKey(kind, _b32(public + _crc(public)), seed, private)


def from_seed(seed: str, kind: KeyKind | None = None) -> SigningKey:
    """The key pair of a seed (`SA…`, `SM…`, `SV…`), of `kind` if given; `NkeyError` otherwise."""
    seed = seed.strip()
    if len(seed) != SEED_CHARS or not seed.startswith("S"):
        raise NkeyError(f"not an nkey seed: expected {SEED_CHARS} characters starting with 'S'")
    body = _checked(_unb32(seed, "the seed"), "the seed")
    if body[0] & 0xF8 != _SEED_PREFIX:
        raise NkeyError("not an nkey seed (wrong prefix)")
    found = _kind_of(((body[0] & 7) << 5) | (body[1] >> 3), "the seed")
    if kind is not None and found is not kind:
        raise NkeyError(
            f"the seed is of a {found.name.lower()} key; a {kind.name.lower()} seed (S{kind.letter}…) "
            "is needed"
        )
    return _from_raw(found, body[2:])


def check_public_key(key: str, kind: KeyKind) -> str:
    """`key` if it is a well-formed public key of `kind`; `NkeyError` naming the problem otherwise."""
    raw = _public_raw(key, kind)
    del raw
    return key


def _public_raw(key: str, kind: KeyKind) -> bytes:
    if len(key) != PUBLIC_KEY_CHARS or not key.startswith(kind.letter):
        raise NkeyError(
            f"{key[:60]!r} is not {kind.noun} public key ({PUBLIC_KEY_CHARS} characters "
            f"starting with {kind.letter!r})"
        )
    body = _checked(_unb32(key, "the public key"), "the public key")
    if body[0] != kind.value or len(body) != 1 + _KEY_BYTES:
        raise NkeyError(f"{key[:60]!r} is not {kind.noun} public key")
    return body[1:]


def is_public_key(key: str, kind: KeyKind) -> bool:
    """Whether `key` is a well-formed public key of `kind`."""
    try:
        _public_raw(key, kind)
    except NkeyError:
        return False
    return True


def verify(public_key: str, kind: KeyKind, data: bytes, signature: bytes) -> bool:
    """Whether `signature` is `public_key`'s Ed25519 signature of `data` (`NkeyError`: bad key)."""
    raw = _public_raw(public_key, kind)
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(signature, data)
    except InvalidSignature:
        return False
    return True
