"""Host identity: an nkeys *server* key pair (public key `N...`, seed `SN...`) and a friendly name.

The public key is the host ID used in every control subject and event. Without a seed a fresh key
pair is generated at each start, as the wasmCloud v1 host does.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

import nkeys

SERVER_SEED_PREFIX = "SN"
SERVER_PUBLIC_PREFIX = "N"

_ADJECTIVES = (
    "amber", "bold", "brave", "bright", "calm", "clever", "cosmic", "crisp", "dapper", "eager",
    "fancy", "gentle", "golden", "happy", "humble", "icy", "jolly", "keen", "lively", "lucky",
    "mellow", "misty", "nimble", "noble", "polished", "proud", "quiet", "rapid", "royal", "rustic",
    "shiny", "silent", "snowy", "solar", "steady", "sunny", "swift", "tidy", "vivid", "witty",
)  # fmt: skip
_NOUNS = (
    "anchor", "badger", "beacon", "breeze", "canyon", "cedar", "comet", "coral", "delta", "falcon",
    "fjord", "forest", "glacier", "harbor", "heron", "island", "lagoon", "lantern", "meadow", "mesa",
    "nebula", "orchid", "otter", "pebble", "pine", "prairie", "quartz", "raven", "reef", "river",
    "sequoia", "spruce", "summit", "thunder", "tundra", "valley", "willow", "wolf", "yarrow", "zephyr",
)  # fmt: skip


class HostIdentityError(ValueError):
    """A host seed is not a valid nkeys server seed."""


@dataclass(frozen=True)
class HostIdentity:
    """A host's server key pair; `public_key` is the host ID. The seed never appears in `repr`."""

    public_key: str
    seed: str = field(repr=False)

    @classmethod
    def from_seed(cls, seed: str) -> HostIdentity:
        """Load an identity from an nkeys server seed (`SN...`), with a clear error if it is not one."""
        text = seed.strip()
        if not text.startswith(SERVER_SEED_PREFIX):
            hint = f"it starts with {text[:2]!r}" if text else "it is empty"
            raise HostIdentityError(
                f"host seed must be an nkeys server seed starting with 'SN' ({hint}); "
                "generate one with `nk -gen server` or omit it to get a random host ID"
            )
        try:
            kp = nkeys.from_seed(text.encode())
            public = kp.public_key.decode()
        except Exception as e:  # nkeys raises its own error types for bad checksums and lengths
            raise HostIdentityError(f"host seed is not a valid nkeys seed: {type(e).__name__}") from None
        if not public.startswith(SERVER_PUBLIC_PREFIX):
            raise HostIdentityError("host seed does not encode a server key (public key must start with 'N')")
        return cls(public_key=public, seed=text)

    @classmethod
    def generate(cls) -> HostIdentity:
        """Create a fresh random server key pair."""
        seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_SERVER)
        return cls.from_seed(seed.decode())


def friendly_name(public_key: str) -> str:
    """A readable `adjective-noun-NNNN` name derived deterministically from a host's public key."""
    digest = hashlib.sha256(public_key.encode()).digest()
    adjective = _ADJECTIVES[digest[0] % len(_ADJECTIVES)]
    noun = _NOUNS[digest[1] % len(_NOUNS)]
    number = int.from_bytes(digest[2:4], "big") % 10000
    return f"{adjective}-{noun}-{number:04d}"
