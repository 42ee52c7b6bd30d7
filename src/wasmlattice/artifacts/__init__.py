"""Component artifacts: where they come from and whether to trust them.

References (`file://`, OCI, the lattice's own store), registry clients, the on-disk cache keyed by
digest, and signed claims (docs/artifacts.md). Imports only `protocol` and the layers below it.
"""
