"""Typed async clients of the lattice APIs (control interface)."""

from wasmlattice.client.ctl import (
    CtlClient,
    CtlError,
    CtlNoHostError,
    CtlTimeoutError,
    parse_key_values,
)

__all__ = ["CtlClient", "CtlError", "CtlNoHostError", "CtlTimeoutError", "parse_key_values"]
