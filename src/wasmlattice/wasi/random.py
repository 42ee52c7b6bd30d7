"""`wasi:random` 0.2: secure and insecure random numbers, and the insecure seed."""

from __future__ import annotations

import os
import random as _random

from wasmlattice.runtime.linking import HostInterface

_insecure = _random.Random()


def _secure_u64() -> int:
    return int.from_bytes(os.urandom(8), "little")


def interfaces() -> list[HostInterface]:
    """The `wasi:random` interfaces."""
    return [
        HostInterface(
            "wasi:random/random",
            {"get-random-bytes": os.urandom, "get-random-u64": _secure_u64},
        ),
        HostInterface(
            "wasi:random/insecure",
            {
                "get-insecure-random-bytes": _insecure.randbytes,
                "get-insecure-random-u64": lambda: _insecure.getrandbits(64),
            },
        ),
        HostInterface(
            "wasi:random/insecure-seed",
            {"insecure-seed": lambda: (_insecure.getrandbits(64), _insecure.getrandbits(64))},
        ),
    ]
