"""A developer's project: `wasmlattice new` writes one from a template, `wasmlattice build` builds it.

- `scaffold`: the templates (package data under `project/templates/`) and writing a new project.
- `build`: reading the project's `wasmlattice.toml` and running the guest toolchain on it.
"""
