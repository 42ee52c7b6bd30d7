"""Capability providers a host runs in-process (the builtin providers of reference §5.5)."""
