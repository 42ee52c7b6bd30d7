"""Capability providers a host runs in-process (docs/protocol.md#builtin-providers)."""
