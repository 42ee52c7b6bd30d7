"""Fail on any import that points up the layer order, or on any cycle between modules.

The layers of `src/wasmlattice/` are listed in docs/architecture.md; a package may import only
packages below it. Every import counts: top-level, lazy (inside a function) and `TYPE_CHECKING`
ones, since each is a dependency a reader has to hold in their head. Run: `python
tools/check_layers.py` (exit 1 with one line per violation).
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

# Top to bottom. A package may import itself and anything after it in this list.
LAYERS = [
    "cli",
    "ui",
    "lattice",
    "apps",
    "host",
    # record and replay of invocations (docs/record-replay.md): wraps capabilities at link time.
    "replay",
    "capabilities",
    "client",
    "artifacts",
    "protocol",
    # `wasmlattice new` and `build`: templates and the guest toolchain (above runtime, to inspect).
    "project",
    "wasi",
    "runtime",
    "observability",
    # Leaves: modules directly under wasmlattice/ that import nothing of ours above them.
    "devbuild",
    "nats_server",
    # `/livez` and `/readyz` (aiohttp only); hosts and app managers add their readiness checks.
    "probes",
    "supervision",
    "aio",
    "<root>",
]
PACKAGE = "wasmlattice"


def module_name(path: Path, src: Path) -> str:
    """The dotted module name of a file under `src`."""
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, module: str) -> list[tuple[str, int]]:
    """Every `wasmlattice` module `path` imports, with the line, wherever the import stands."""
    found: list[tuple[str, int]] = []
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from pkg import mod` imports the module pkg.mod when there is one.
            found += [(f"{target}.{alias.name}", node.lineno) for alias in node.names]
            found.append((target, node.lineno))
    return [(name, line) for name, line in found if name == PACKAGE or name.startswith(PACKAGE + ".")]


def layer_of(module: str) -> str:
    """The layer a module belongs to: its first package under wasmlattice, or a leaf module."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<root>"


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def check(src: Path) -> list[str]:
    """Every violation in the package under `src`, as printable lines."""
    rank = {name: i for i, name in enumerate(LAYERS)}
    files = {module_name(p, src): p for p in sorted((src / PACKAGE).rglob("*.py"))}
    problems: list[str] = []
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in files.items():
        here = layer_of(module)
        if here not in rank:
            problems.append(f"{path}: package `{here}` is not in the layer list of tools/check_layers.py")
            continue
        for target, line in imported_modules(path, module):
            if target not in files:
                continue  # `from pkg import name` where name is not a module
            if target != module and not module.startswith(target + "."):
                graph[module].add(target)
            there = layer_of(target)
            if there in rank and rank[there] < rank[here]:
                problems.append(f"{path}:{line}: `{here}` imports `{target}`, which is above it")
    for cycle in find_cycles(graph):
        problems.append("import cycle between modules: " + " -> ".join(cycle))
    return problems


def main() -> int:
    """Check the package and print what is wrong; the exit status says whether anything is."""
    src = Path(__file__).resolve().parent.parent / "src"
    problems = check(src)
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} layer violation(s); the layers are described in docs/architecture.md")
        return 1
    print("layers: every import points down, no cycles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
