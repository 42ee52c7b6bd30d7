"""`wasmlattice new`: write a project from a template shipped inside the package.

A template is a folder under `project/templates/`; every file in it ends in `.tmpl` (so linters and
packagers leave the guest sources alone) and `{{name}}` stands for the project's name.
"""

from __future__ import annotations

from pathlib import Path

from wasmlattice.project.build import check_name
from wasmlattice.project.config import BuildError

TEMPLATES = Path(__file__).resolve().parent / "templates"
SUFFIX = ".tmpl"
DESCRIPTIONS = {
    "python-http": "an HTTP hello component (wasi:http/proxy)",
    "python-kv": "an HTTP component backed by key-value storage (wasi:keyvalue)",
    "python-messaging": "a message handler that publishes (wasmcloud:messaging)",
    "python-custom": "two components: one exports a custom WIT interface, the other calls it over HTTP",
    "js-http": "an HTTP hello component in JavaScript, built with jco (needs Node.js and npm)",
}


def templates() -> dict[str, str]:
    """The templates this package ships, name -> one-line description."""
    found = sorted(p.name for p in TEMPLATES.iterdir() if p.is_dir()) if TEMPLATES.is_dir() else []
    return {name: DESCRIPTIONS.get(name, "") for name in found}


def new_project(name: str, template: str, dest: Path) -> list[Path]:
    """Write template `template` for project `name` into `dest` (absent or empty); the files written."""
    check_name(name, "project name")
    known = templates()
    if template not in known:
        raise BuildError(f"no template named {template!r}; choose one of: {', '.join(known)}")
    if dest.exists():
        if not dest.is_dir():
            raise BuildError(f"{dest} exists and is not a folder")
        if any(dest.iterdir()):
            raise BuildError(f"{dest} exists and is not empty; choose a new folder")
    src = TEMPLATES / template
    written = []
    for f in sorted(src.rglob(f"*{SUFFIX}")):
        rel = f.relative_to(src)
        out = dest / rel.with_name(rel.name.removesuffix(SUFFIX))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(f.read_text().replace("{{name}}", name))
        written.append(out)
    return written
