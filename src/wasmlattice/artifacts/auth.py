"""Registry credentials: where they come from, in order, and how a registry host is matched.

For one registry, the first source that has an entry wins (docs/artifacts.md#credentials):

1. credentials pushed to the host with the control interface's `registry.put`;
2. the host's `--oci-registry/--oci-user/--oci-password` (all three together), or the CLI's
   `--user/--password`;
3. the user's Docker `config.json` (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`):
   `auths.<registry>.auth` (base64 `user:password`) or `username`/`password`. Credential helpers
   (`credsStore`, `credHelpers`) run other programs; they are skipped with a log line.

No source: anonymous access. Secrets are never logged.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from wasmlattice.artifacts.source import ArtifactError

log = logging.getLogger(__name__)

# A Docker config larger than this is not a config file (it is refused, not read whole).
MAX_DOCKER_CONFIG_BYTES = 1 << 20
_DOCKER_HUB_ALIASES = ("index.docker.io", "registry-1.docker.io", "docker.io", "registry.hub.docker.com")


@dataclass(frozen=True)
class Credential:
    """How to authenticate to one registry: user and password (basic, also for a token server),
    or a bearer token used as is."""

    username: str | None = None
    password: str | None = None
    token: str | None = None
    # Where it came from, for error messages ("registry.put", "--oci-user", "docker config ...").
    origin: str = ""

    def __repr__(self) -> str:  # never print the secret parts
        return f"Credential(username={self.username!r}, origin={self.origin!r})"

    @property
    def is_basic(self) -> bool:
        """Whether there is a user and password."""
        return self.username is not None and self.password is not None


CredentialSource = Callable[[str], Credential | None]


def normalize_registry(key: str) -> str:
    """A registry key as the references name it: no scheme, no path, Docker Hub as `docker.io`."""
    text = key.strip()
    if "://" in text:
        text = urlparse(text).netloc or text
    text = text.split("/", 1)[0].lower()
    return "docker.io" if text in _DOCKER_HUB_ALIASES else text


class Credentials:
    """The credential sources of a host or a CLI command, asked in order."""

    def __init__(self, sources: Sequence[CredentialSource] = ()) -> None:
        self.sources = list(sources)

    def lookup(self, registry: str) -> Credential | None:
        """The credential of the first source that has one for `registry`, or None (anonymous)."""
        key = normalize_registry(registry)
        for source in self.sources:
            cred = source(key)
            if cred is not None:
                return cred
        return None


def static_source(creds: Mapping[str, Credential]) -> CredentialSource:
    """A source answering from a fixed map keyed by registry (keys normalized)."""
    table = {normalize_registry(k): v for k, v in creds.items()}
    return table.get


def flag_credentials(
    registry: str | None, user: str | None, password: str | None, origin: str = "--oci-user"
) -> dict[str, Credential]:
    """The one-registry credential of the host flags; `ArtifactError` unless all three or none are set."""
    given = [v is not None and v != "" for v in (registry, user, password)]
    if not any(given):
        return {}
    if not all(given):
        raise ArtifactError(
            "--oci-registry, --oci-user and --oci-password (WASMCLOUD_OCI_REGISTRY, "
            "WASMCLOUD_OCI_REGISTRY_USER, WASMCLOUD_OCI_REGISTRY_PASSWORD) go together: set all three"
        )
    assert registry is not None
    return {normalize_registry(registry): Credential(user, password, origin=origin)}


def docker_config_path() -> Path:
    """`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`."""
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def load_docker_config(path: Path | None = None) -> dict[str, Credential]:
    """The `auths` entries of a Docker config file by registry; {} if there is no file.

    A file that exists but cannot be used is an `ArtifactError` naming the file and the field.
    """
    path = path or docker_config_path()
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_DOCKER_CONFIG_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise ArtifactError(f"cannot read Docker config {path}: {e.strerror}") from None
    if len(raw) > MAX_DOCKER_CONFIG_BYTES:
        raise ArtifactError(f"Docker config {path} is larger than {MAX_DOCKER_CONFIG_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise ArtifactError(f"Docker config {path} is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ArtifactError(f"Docker config {path}: expected a JSON object")
    for helper_key in ("credsStore", "credHelpers"):
        if doc.get(helper_key):
            log.info(
                "Docker config %s: %s (credential helper programs) are not used; registries that need "
                "them get no credentials from this file (use --user/--password or an `auths` entry)",
                path,
                helper_key,
            )
    auths = doc.get("auths") or {}
    if not isinstance(auths, dict):
        raise ArtifactError(f"Docker config {path}: `auths` must be an object")
    out: dict[str, Credential] = {}
    for key, entry in auths.items():
        if not isinstance(entry, dict):
            raise ArtifactError(f"Docker config {path}: auths.{key} must be an object")
        cred = _docker_entry(path, str(key), entry)
        if cred is not None:
            out[normalize_registry(str(key))] = cred
    return out


def _docker_entry(path: Path, key: str, entry: dict[str, object]) -> Credential | None:
    origin = f"Docker config {path}"
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            decoded = base64.b64decode(auth, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise ArtifactError(f"{origin}: auths.{key}.auth is not base64 of user:password") from None
        user, sep, password = decoded.partition(":")
        if not sep:
            raise ArtifactError(f"{origin}: auths.{key}.auth decodes to no `user:password` pair")
        return Credential(user, password, origin=origin)
    name, secret = entry.get("username"), entry.get("password")
    if isinstance(name, str) and isinstance(secret, str):
        return Credential(name, secret, origin=origin)
    if entry.get("identitytoken"):
        log.info("%s: auths.%s has an identity token (OAuth refresh token), not used", origin, key)
    return None


def docker_config_source(path: Path | None = None) -> CredentialSource:
    """A source reading the Docker config once, now (a broken file is logged and ignored)."""
    try:
        table = load_docker_config(path)
    except ArtifactError as e:
        log.warning("%s; continuing without its credentials", e)
        table = {}
    return table.get
