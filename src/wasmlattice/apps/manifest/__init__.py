"""wadm-compatible application manifests (OAM `core.oam.dev/v1beta1`), one job per module.

`model` holds the validated types; `load` reads YAML or JSON (`yaml_dialect` is the YAML flavour wadm
reads) and hands the document to `check`, which reports every problem with its field path (generic
shapes in `check_fields`, what components carry in `check_traits`). Where instances go is decided in
`wasmlattice.apps.placement`.
"""
