"""Signed components: wasmCloud claims (a JWT in a custom section), signing, and the host's check.

A signed component carries a JWT in its top-level custom section `wasmcloud_jwt` (older wascap
wrote `jwt`; both are read). The layout is wascap's, so components signed by `wash` run here and
ours run there (docs/claims.md):

- header `{"typ":"jwt","alg":"Ed25519"}`; segments base64url without padding; the signature is the
  issuer's Ed25519 signature of `header.claims`;
- claims, in this key order: `exp`?, `jti`, `iat`, `iss` (account key `A…`), `sub` (module key
  `M…`), `nbf`?, `wascap` (metadata: `name`?, `hash`, `tags`?, `rev`?, `ver`?, `call_alias`?,
  `prov`), `wascap_revision` (3);
- `hash`: uppercase hex SHA-256 of the binary re-encoded without its JWT sections
  (`wasm_sections.canonical_without`).

The host (`ClaimsPolicy.check`) refuses a component whose embedded claims are malformed, whose
signature does not verify, whose module hash differs (the code changed after signing), that has
expired or is not valid yet, or (with `--allowed-issuer`) that is unsigned or signed by another
issuer. Unsigned components run otherwise: claims are optional since wasmCloud 1.0.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from nats.nuid import NUID

from wasmlattice.artifacts import wasm_sections as ws
from wasmlattice.artifacts.nkey import KeyKind, NkeyError, SigningKey, check_public_key, verify
from wasmlattice.artifacts.source import ArtifactError
from wasmlattice.protocol.events import ComponentClaimsData, human_epoch
from wasmlattice.protocol.models import I32, U32, U64, PayloadError, StoredComponentClaims, parse_payload
from wasmlattice.protocol.wire import WireModel

JWT_SECTION = "wasmcloud_jwt"
LEGACY_JWT_SECTION = "jwt"
JWT_SECTIONS = (JWT_SECTION, LEGACY_JWT_SECTION)
HEADER_TYPE = "jwt"
HEADER_ALGORITHM = "Ed25519"
# wascap's internal revision: 3 is the first whose `hash` is the one computed here.
WASCAP_REVISION = 3
MIN_WASCAP_REVISION = 3
# A JWT is a few hundred bytes; tags and names make it grow, never to this.
MAX_JWT_BYTES = 64 * 1024
MAX_TAGS = 64
MAX_TEXT_CHARS = 512

_nuid = NUID()


class ClaimsError(ArtifactError):
    """Embedded claims are malformed, invalid, or refused by this host; the message says why."""


class JwtHeader(WireModel):
    """The JWT header wascap writes and requires."""

    payload_name = "JWT header"

    typ: str
    alg: str


class ComponentMetadata(WireModel):
    """The `wascap` object of component claims."""

    omit_if_none = frozenset({"name", "tags", "rev", "ver", "call_alias"})
    payload_name = "JWT claims.wascap"

    name: str | None = None
    hash: str
    tags: list[str] | None = None
    rev: I32 | None = None
    ver: str | None = None
    call_alias: str | None = None
    prov: bool = False


class JwtClaims(WireModel):
    """The claims of a component JWT, fields in wascap's serialization order."""

    omit_if_none = frozenset({"exp", "nbf", "wascap", "wascap_revision"})
    payload_name = "JWT claims"

    exp: U64 | None = None
    jti: str
    iat: U64
    iss: str
    sub: str
    nbf: U64 | None = None
    wascap: ComponentMetadata | None = None
    wascap_revision: U32 | None = None


@dataclass(frozen=True)
class ComponentClaims:
    """Verified claims of a component (what the host keeps for a running signed component)."""

    claims: JwtClaims
    jwt: str

    @property
    def subject(self) -> str:
        """The component's signing key (`M…`): its `public_key` in events."""
        return self.claims.sub

    @property
    def issuer(self) -> str:
        """The account key (`A…`) that signed it."""
        return self.claims.iss

    @property
    def metadata(self) -> ComponentMetadata | None:
        """The `wascap` metadata (always present on claims that passed `validate`)."""
        return self.claims.wascap

    @property
    def name(self) -> str | None:
        """The inventory `name` (JWT metadata)."""
        return self.metadata.name if self.metadata is not None else None

    @property
    def revision(self) -> int:
        """The inventory `revision` (JWT `rev`, 0 when absent)."""
        rev = self.metadata.rev if self.metadata is not None else None
        return rev or 0

    def stored(self) -> StoredComponentClaims:
        """The value of `CLAIMS_<subject>` in LATTICEDATA: every field a string (or tag list), as the
        v1 host stores them (docs/protocol.md#kv-layout)."""
        meta = self.metadata
        return StoredComponentClaims(
            call_alias=(meta.call_alias if meta is not None else None) or "",
            issuer=self.issuer,
            name=(meta.name if meta is not None else None) or "",
            revision=str(self.revision),
            subject=self.subject,
            tags=list((meta.tags if meta is not None else None) or []),
            version=(meta.ver if meta is not None else None) or "",
        )

    def event_claims(self) -> ComponentClaimsData:
        """The `claims` object of `component_scaled` (docs/protocol.md#events)."""
        meta = self.metadata
        return ComponentClaimsData(
            issuer=self.issuer,
            call_alias=meta.call_alias if meta is not None else None,
            tags=meta.tags if meta is not None else None,
            name=meta.name if meta is not None else None,
            version=meta.ver if meta is not None else None,
            revision=meta.rev if meta is not None else None,
            not_before_human=human_epoch(self.claims.nbf),
            expires_human=human_epoch(self.claims.exp),
            has_metadata=meta is not None,
        )

    def policy_claims(self, now: float | None = None) -> dict[str, Any]:
        """The `claims` of a policy request: `{publicKey, issuer, issuedAt, expiresAt, expired}`."""
        exp = self.claims.exp
        moment = time.time() if now is None else now
        return {
            "publicKey": self.subject,
            "issuer": self.issuer,
            "issuedAt": str(self.claims.iat),
            "expiresAt": exp,
            "expired": exp is not None and moment > exp,
        }


# -- JWT encoding ------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str, what: str) -> bytes:
    if "=" in text:
        raise ClaimsError(f"the JWT {what} is not base64url without padding")
    try:
        # validate=True: the default silently drops characters outside the alphabet.
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise ClaimsError(f"the JWT {what} is not base64url") from None


def encode_jwt(claims: JwtClaims, issuer: SigningKey) -> str:
    """The compact JWT of `claims`, signed by `issuer` (which must be the claims' `iss`)."""
    if issuer.public_key != claims.iss:
        raise ClaimsError(f"the signing key {issuer.public_key} is not the claims' issuer {claims.iss}")
    header = JwtHeader(typ=HEADER_TYPE, alg=HEADER_ALGORITHM)
    signed = f"{_b64(header.to_wire())}.{_b64(claims.to_wire())}"
    return f"{signed}.{_b64(issuer.sign(signed.encode()))}"


@dataclass(frozen=True)
class DecodedJwt:
    """A parsed JWT before any check but its shape: claims, signed bytes and signature."""

    claims: JwtClaims
    signed: bytes
    signature: bytes
    jwt: str

    def signature_valid(self) -> bool:
        """Whether the issuer's key verifies the signature (False for a malformed issuer key too)."""
        try:
            return verify(self.claims.iss, KeyKind.ACCOUNT, self.signed, self.signature)
        except NkeyError:
            return False


def decode_jwt(jwt: str) -> DecodedJwt:
    """Parse a compact JWT; `ClaimsError` naming the part that is malformed."""
    if len(jwt) > MAX_JWT_BYTES:
        raise ClaimsError(f"the JWT has {len(jwt)} bytes; at most {MAX_JWT_BYTES} are read")
    parts = jwt.split(".")
    if len(parts) != 3:
        raise ClaimsError(f"the JWT has {len(parts)} segments, not 3 (header.claims.signature)")
    try:
        header = parse_payload(JwtHeader, _unb64(parts[0], "header"))
        claims = parse_payload(JwtClaims, _unb64(parts[1], "claims"))
    except PayloadError as e:
        raise ClaimsError(str(e)) from None
    if header.alg != HEADER_ALGORITHM or header.typ != HEADER_TYPE:
        raise ClaimsError(
            f"the JWT header is typ={header.typ!r}, alg={header.alg!r}; "
            f"expected typ={HEADER_TYPE!r}, alg={HEADER_ALGORITHM!r}"
        )
    signed = f"{parts[0]}.{parts[1]}".encode()
    return DecodedJwt(claims, signed, _unb64(parts[2], "signature"), jwt)


# -- components --------------------------------------------------------------------------------


def module_hash(wasm: bytes) -> str:
    """wascap's module hash: uppercase hex SHA-256 of the binary re-encoded without JWT sections."""
    try:
        canonical = ws.canonical_without(wasm, JWT_SECTIONS)
    except ws.WasmFormatError as e:
        raise ClaimsError(f"cannot hash the component: {e}") from None
    return hashlib.sha256(canonical).hexdigest().upper()


def embedded_jwt(wasm: bytes) -> tuple[str, str] | None:
    """The (section name, JWT) embedded at top level, or None if unsigned; `ClaimsError` if unreadable."""
    try:
        found = ws.custom_sections(wasm, JWT_SECTIONS)
    except ws.WasmFormatError as e:
        raise ClaimsError(f"cannot read the component's sections: {e}") from None
    if not found:
        return None
    if len(found) > 1:
        names = ", ".join(name for name, _ in found)
        raise ClaimsError(f"the component carries {len(found)} JWT sections ({names}); re-sign it")
    name, payload = found[0]
    if len(payload) > MAX_JWT_BYTES:
        raise ClaimsError(f"the {name} section has {len(payload)} bytes; at most {MAX_JWT_BYTES} are read")
    try:
        return name, payload.decode("ascii")
    except UnicodeDecodeError:
        raise ClaimsError(f"the {name} section is not an ASCII JWT") from None


def _check_text(value: str | None, what: str) -> None:
    if value is not None and (len(value) > MAX_TEXT_CHARS or not value.isprintable()):
        raise ClaimsError(f"{what}: at most {MAX_TEXT_CHARS} printable characters")


def normalize_call_alias(alias: str) -> str:
    """wascap's call-alias form: lowercase ASCII, spaces, dashes and dots as underscores."""
    out = "".join(c for c in alias.lower().strip() if c.isascii())
    for c in " -.":
        out = out.replace(c, "_")
    return out


def new_claims(
    *,
    issuer: str,
    subject: str,
    name: str,
    module_hash: str,
    version: str | None = None,
    revision: int | None = None,
    tags: Sequence[str] = (),
    call_alias: str | None = None,
    expires: int | None = None,
    not_before: int | None = None,
    issued_at: int | None = None,
) -> JwtClaims:
    """Component claims as wascap makes them (a fresh `jti`, `iat` now, `wascap_revision` 3)."""
    try:
        check_public_key(issuer, KeyKind.ACCOUNT)
        check_public_key(subject, KeyKind.MODULE)
    except NkeyError as e:
        raise ClaimsError(str(e)) from None
    _check_text(name, "name")
    _check_text(version, "version")
    if len(tags) > MAX_TAGS:
        raise ClaimsError(f"at most {MAX_TAGS} tags, not {len(tags)}")
    for tag in tags:
        _check_text(tag, "tag")
    if revision is not None and not -(2**31) <= revision < 2**31:
        raise ClaimsError(f"revision {revision} does not fit in a signed 32-bit integer")
    return JwtClaims(
        exp=expires,
        jti=_nuid.next().decode(),
        iat=int(time.time()) if issued_at is None else issued_at,
        iss=issuer,
        sub=subject,
        nbf=not_before,
        wascap=ComponentMetadata(
            name=name,
            hash=module_hash,
            tags=list(tags),
            rev=revision,
            ver=version,
            call_alias=normalize_call_alias(call_alias) if call_alias is not None else None,
            prov=False,
        ),
        wascap_revision=WASCAP_REVISION,
    )


def sign_component(wasm: bytes, claims: JwtClaims, issuer: SigningKey) -> bytes:
    """`wasm` signed: re-encoded without any JWT section (as wascap does) plus a new `wasmcloud_jwt`
    section holding `claims` with the module hash filled in."""
    try:
        canonical = ws.canonical_without(wasm, JWT_SECTIONS)
    except ws.WasmFormatError as e:
        raise ClaimsError(f"cannot sign: {e}") from None
    digest = hashlib.sha256(canonical).hexdigest().upper()
    meta = claims.wascap or ComponentMetadata(hash=digest)
    filled = claims.model_copy(update={"wascap": meta.model_copy(update={"hash": digest})})
    jwt = encode_jwt(filled, issuer)
    return canonical + ws.custom_section(JWT_SECTION, jwt.encode())


@dataclass(frozen=True)
class Inspection:
    """What `claims inspect` shows: the claims and every check's outcome (nothing is refused)."""

    section: str
    decoded: DecodedJwt
    computed_hash: str
    signature_valid: bool
    now: float

    @property
    def claims(self) -> JwtClaims:
        """The claims as embedded."""
        return self.decoded.claims

    @property
    def hash_valid(self) -> bool:
        """Whether the embedded `hash` is the binary's module hash."""
        meta = self.claims.wascap
        return meta is not None and meta.hash == self.computed_hash

    @property
    def expired(self) -> bool:
        """Whether `exp` has passed."""
        return self.claims.exp is not None and self.now > self.claims.exp

    @property
    def not_yet_valid(self) -> bool:
        """Whether `nbf` is still ahead."""
        return self.claims.nbf is not None and self.now < self.claims.nbf

    def problems(self) -> list[str]:
        """Why the host would refuse these claims, most fundamental first (empty: valid)."""
        c = self.claims
        out: list[str] = []
        try:
            check_public_key(c.iss, KeyKind.ACCOUNT)
        except NkeyError as e:
            out.append(f"the issuer is not an account key: {e}")
        try:
            check_public_key(c.sub, KeyKind.MODULE)
        except NkeyError as e:
            out.append(f"the subject is not a module key: {e}")
        if not self.signature_valid:
            out.append(
                f"the signature is not valid: the JWT was not signed by its issuer {c.iss[:60]} or was "
                "altered"
            )
        if c.wascap is None:
            out.append("the claims have no wascap metadata (not component claims)")
        elif (c.wascap_revision or 0) < MIN_WASCAP_REVISION:
            out.append(
                f"the claims are of wascap revision {c.wascap_revision or 0}, which does not bind the module "
                f"hash (at least {MIN_WASCAP_REVISION} is needed); sign the component again"
            )
        elif not self.hash_valid:
            out.append(
                f"module hash mismatch: the claims say {c.wascap.hash[:64]}, the module hashes to "
                f"{self.computed_hash} (the code changed after signing)"
            )
        if self.expired:
            out.append(f"the claims expired at {epoch_text(c.exp)}")
        if self.not_yet_valid:
            out.append(f"the claims are not valid before {epoch_text(c.nbf)}")
        return out


def epoch_text(seconds: int | None) -> str:
    """An epoch timestamp as `2024-05-01T12:00:00Z (1714564800)`, or `never`."""
    if seconds is None:
        return "never"
    try:
        when = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return str(seconds)
    return f"{when} ({seconds})"


def inspect(wasm: bytes, now: float | None = None) -> Inspection | None:
    """The embedded claims and the outcome of every check, or None if the component is unsigned."""
    found = embedded_jwt(wasm)
    if found is None:
        return None
    section, jwt = found
    decoded = decode_jwt(jwt)
    return Inspection(
        section=section,
        decoded=decoded,
        computed_hash=module_hash(wasm),
        signature_valid=decoded.signature_valid(),
        now=time.time() if now is None else now,
    )


def validate(wasm: bytes, now: float | None = None) -> ComponentClaims | None:
    """The component's verified claims, None if unsigned; `ClaimsError` with the first reason to refuse."""
    found = inspect(wasm, now)
    if found is None:
        return None
    problems = found.problems()
    if problems:
        raise ClaimsError(f"invalid component claims: {problems[0]}")
    return ComponentClaims(found.claims, found.decoded.jwt)


@dataclass(frozen=True)
class ClaimsPolicy:
    """What a host requires of component claims: valid when present, and (if any are configured)
    signed by one of `allowed_issuers`."""

    allowed_issuers: frozenset[str] = frozenset()
    ENV: ClassVar[str] = "WASMLATTICE_ALLOWED_ISSUERS"

    @classmethod
    def of(cls, issuers: Iterable[str]) -> ClaimsPolicy:
        """A policy allowing `issuers` (account keys); `ClaimsError` naming a malformed one."""
        keys = set()
        for issuer in issuers:
            issuer = issuer.strip()
            if not issuer:
                continue
            try:
                keys.add(check_public_key(issuer, KeyKind.ACCOUNT))
            except NkeyError as e:
                raise ClaimsError(f"allowed issuer: {e}") from None
        return cls(frozenset(keys))

    def check(self, wasm: bytes, now: float | None = None) -> ComponentClaims | None:
        """The component's verified claims (None if unsigned and allowed); `ClaimsError` to refuse it."""
        claims = validate(wasm, now)
        if not self.allowed_issuers:
            return claims
        allowed = ", ".join(sorted(self.allowed_issuers))
        if claims is None:
            raise ClaimsError(
                f"the component is not signed, and this host runs only components signed by an allowed "
                f"issuer ({allowed}); sign it with `wasmlattice claims sign`"
            )
        if claims.issuer not in self.allowed_issuers:
            raise ClaimsError(
                f"the component's issuer {claims.issuer} is not allowed on this host (allowed: {allowed})"
            )
        return claims
