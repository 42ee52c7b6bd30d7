"""OCI references: the forms wasmCloud accepts, parsed into registry, repository, tag and digest.

Accepted (docs/artifacts.md#references): `registry/repo:tag`, `registry/repo@sha256:<hex>`,
`registry/repo:tag@sha256:<hex>`, each optionally prefixed with `oci://`, `http://` or `https://`
(the prefix is stripped, as the wasmCloud host does: whether a registry is spoken to over plain
HTTP is the host's `--allowed-insecure` decision, never the reference's). Docker's defaults apply
to a reference without a registry: `hello:1` is `docker.io/library/hello:1`, the way `docker pull`
and the wasmCloud host (through its OCI client) read it. A reference with neither tag nor digest
means `latest`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from wasmlattice.artifacts.source import ArtifactError

DOCKER_HUB = "docker.io"
# Where Docker Hub's registry API answers (docker.io itself only redirects browsers).
DOCKER_HUB_API = "registry-1.docker.io"
LATEST = "latest"
# Longest reference we parse: the distribution spec caps a repository name at 255 characters.
MAX_REF_LEN = 512
_PREFIXES = ("oci://", "https://", "http://")
# The distribution spec's grammar (https://github.com/distribution/distribution/blob/main/reference/reference.go).
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
)
_IPV6 = re.compile(r"\[[0-9A-Fa-f:.]+\]")
# Schemes that are not OCI: the host loads these itself or through another source.
NON_OCI_SCHEMES = ("file", "wasmcloud+builtin", "lattice")


def is_digest(text: str) -> bool:
    """Whether `text` is a `sha256:<64 lowercase hex>` digest."""
    return _DIGEST.fullmatch(text) is not None


def scheme_of(ref: str) -> str:
    """The scheme a reference is fetched by: `file`, `lattice`, ..., or `oci` (also for no scheme)."""
    head, sep, _ = ref.partition("://")
    if not sep or head in ("oci", "http", "https"):
        return "oci"
    return head.lower()


@dataclass(frozen=True)
class OciReference:
    """One parsed OCI reference (`registry/repository[:tag][@digest]`)."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str:
        """What names the manifest in the registry API: the digest when pinned, else the tag."""
        return self.digest or self.tag or LATEST

    @property
    def is_latest(self) -> bool:
        """Whether this reference floats on `latest` (tag `latest`, or neither tag nor digest)."""
        return self.digest is None and (self.tag or LATEST) == LATEST

    @property
    def api_host(self) -> str:
        """The host:port the registry API answers on (Docker Hub's differs from its name)."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def hostname(self) -> str:
        """The registry's host name without port (what `--allowed-insecure` may also list)."""
        if self.registry.startswith("["):
            return self.registry.partition("]")[0] + "]"
        return self.registry.rpartition(":")[0] if ":" in self.registry else self.registry

    def with_tag(self, tag: str) -> OciReference:
        """The same repository at another tag (no digest)."""
        return OciReference(self.registry, self.repository, tag, None)

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_oci_ref(ref: str) -> OciReference:
    """Parse an OCI reference; `ArtifactError` naming the part that is wrong."""
    if len(ref) > MAX_REF_LEN:
        raise ArtifactError(f"OCI reference of {len(ref)} characters is too long (at most {MAX_REF_LEN})")
    text = ref.strip()
    for prefix in _PREFIXES:
        if text.lower().startswith(prefix):
            text = text[len(prefix) :]
            break
    if "://" in text:
        raise ArtifactError(f"invalid OCI reference {ref!r}: unsupported scheme {text.partition('://')[0]!r}")
    if not text:
        raise ArtifactError("invalid OCI reference: it is empty")
    name, at, digest = text.partition("@")
    if at and not is_digest(digest):
        raise ArtifactError(
            f"invalid OCI reference {ref!r}: digest {digest!r} is not sha256:<64 lowercase hex digits>"
        )
    # A tag follows the last `:` after the last `/` (a `:` before it is the registry's port).
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag: str | None = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if _TAG.fullmatch(tag) is None:
            raise ArtifactError(
                f"invalid OCI reference {ref!r}: tag {tag!r} must be 1-128 of [A-Za-z0-9_.-], "
                "not starting with . or -"
            )
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        registry, repository = first, rest
        host, _, port = registry.rpartition(":") if not registry.endswith("]") else (registry, "", "")
        if not host:
            host, port = registry, ""
        if (_HOST.fullmatch(host) is None and _IPV6.fullmatch(host) is None) or (
            port and not (port.isdigit() and 0 < int(port) < 65536)
        ):
            raise ArtifactError(f"invalid OCI reference {ref!r}: registry {registry!r} is not host[:port]")
    else:
        registry, repository = DOCKER_HUB, name
        if "/" not in repository:
            repository = f"library/{repository}"
    if registry in ("index.docker.io", DOCKER_HUB_API):
        registry = DOCKER_HUB
    if _REPOSITORY.fullmatch(repository) is None or len(repository) > 255:
        raise ArtifactError(
            f"invalid OCI reference {ref!r}: repository {repository!r} must be lowercase path "
            "components of [a-z0-9] separated by ., _, __ or - (at most 255 characters)"
        )
    return OciReference(registry, repository, tag, digest or None)
