"""Applications: wadm-compatible manifests, their storage and API, and the reconciler that runs them."""
