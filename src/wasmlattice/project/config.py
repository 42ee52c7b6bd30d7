"""What every guest build shares: the checked project config, the result and the build errors.

A module of its own so that `build` (which dispatches by language) and each language's builder
(`jsbuild`) import it, and not each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIG_FILE = "wasmlattice.toml"


class BuildError(Exception):
    """A build that failed; the message is for the user as is (no traceback of ours)."""


class ToolchainMissing(BuildError):
    """The guest toolchain (the `build` extra, or Node.js for JavaScript) is not installed."""


@dataclass(frozen=True)
class ProjectConfig:
    """A project's `wasmlattice.toml`, checked, with paths resolved against the project folder."""

    root: Path
    name: str
    language: str
    source: Path
    world: str
    wit: Path | None
    output: Path


@dataclass(frozen=True)
class BuildResult:
    """A finished build: the project, where the component is, the tool and how long it took."""

    config: ProjectConfig
    output: Path
    seconds: float
    tool: str = "componentize-py"
