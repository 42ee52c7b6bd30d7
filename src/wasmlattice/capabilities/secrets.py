"""`wasmcloud:secrets@0.1.0-draft`: secrets resolved at scale time, revealed only on request, and
only to the components the secret's owner granted it to.

How a component gets a secret (docs/protocol.md#secrets, docs/protocol.md#kv-layout):

1. `wasmlattice secret put NAME VALUE --allow COMPONENT_ID` (or `--file F` for bytes) encrypts the
   value, together with its *grants* (the component IDs that may read it), and stores it in the
   JetStream KV bucket `SECRETS_<lattice>` under key NAME, and stores the *secret reference*
   `SECRET_NAME` in `CONFIGDATA_<lattice>`: a string map `{name, type, backend, key, policy}` in
   wasmCloud's layout (`type` = `secret.wasmcloud.dev/v1alpha1`, `backend` = `nats-kv`, optional
   `field` and `version`). References written by other tools (`wash config put SECRET_x ...`, a
   wadm manifest's secret) read the same values if their backend is `nats-kv`.
2. A scale command lists `SECRET_NAME` among its config names. The host reads each reference,
   fetches and decrypts the value, and checks the grants sealed with it (`resolve_secrets`). A
   missing reference, a missing or undecryptable value, or another backend fails the scale with a
   message naming the secret (never its value). A secret that is not granted to the component does
   not fail the scale: the host logs the refusal once and the component's `store.get(name)`
   answers `upstream` naming the secret and the component (`SecretDenied`), never the value.
3. The guest calls `store.get(name)` (an opaque handle; `not-found` if the component has no such
   secret) and `reveal.reveal(handle)` for the value.

Who may read a secret is decided only by the grants inside the encrypted entry. Naming
`SECRET_NAME` in a scale command, or a `policy` in the CONFIGDATA reference (which any NATS client
can rewrite with `config.put`), grants nothing: the grants are authenticated by AES-GCM with the
secrets key, so only a holder of the key (`wasmlattice secret put/allow/deny`) can change them.
Like wasmCloud's nats-kv backend, which keeps its own mapping of who may read what, the grant
lives with the backend, not with the reference.

Encryption at rest: AES-256-GCM with a random 96-bit nonce per write. The stored value is
`0x02 || u16 length || grants || nonce || ciphertext+tag`; `grants` is canonical JSON
(`{"components": [...]}`) kept readable but authenticated as associated data, together with the
lattice and the KV key, so an entry copied under another key or lattice, or with altered grants,
does not decrypt. The plaintext is one kind byte (`s` text, `b` bytes) and the value. Entries of
the first format (`0x01 || nonce || ciphertext+tag`, no grants) still decrypt but grant nothing:
store them again with `--allow`. The 32-byte key comes from, in order:

- `WASMLATTICE_SECRETS_KEY`: the key, base64;
- `WASMLATTICE_SECRETS_KEY_FILE`: a file holding the key, base64;
- `$XDG_DATA_HOME/wasmlattice/secrets.key` (default `~/.local/share/wasmlattice/secrets.key`),
  created by `wasmlattice secret keygen` (mode 0600).

Every host of the lattice and the CLI that writes secrets need the same key.

Secret values are held in `SecretValue`, whose `repr`/`str` are redacted, so a value cannot reach
a log line, event, inventory or error message by accident; only `reveal` and the guest see it.

Grants name component IDs or signing keys (docs/claims.md). A grant to a component key (`M…`,
the subject of its verified claims) follows the signed component whatever ID it runs under, and
cannot be had by an image signed by someone else: a component gets the secret only if its
embedded claims verified at load and their subject is granted. A grant to a component ID holds
for any image scaled under that ID, so whoever may send scale commands can run another image
under it: prefer keys, or restrict who may send scale commands (NATS credentials and permissions
on the control subjects). wasmCloud gives secrets only to signed components; here unsigned
components may be granted by ID.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from wasmlattice.artifacts.nkey import KeyKind, is_public_key
from wasmlattice.capabilities.base import CapabilityError, HostServices, component, traced
from wasmlattice.protocol import subjects as sj
from wasmlattice.protocol.kv import KvBucket, KvError, open_bucket
from wasmlattice.protocol.models import NamedConfig, PayloadError, StrMap, parse_payload
from wasmlattice.runtime.linking import HostInterface
from wasmlattice.runtime.witypes import BYTES, STRING, Err, borrow, func, own, result, variant

KEY_ENV = "WASMLATTICE_SECRETS_KEY"
KEY_FILE_ENV = "WASMLATTICE_SECRETS_KEY_FILE"
KEY_FILE_NAME = "secrets.key"
KEY_BYTES = 32
BACKEND = "nats-kv"
REFERENCE_TYPE = "secret.wasmcloud.dev/v1alpha1"
POLICY_TYPE = "properties.secret.wasmcloud.dev/v1alpha1"
BUCKET_PREFIX = "SECRETS_"

# Limits on the grants sealed with a secret: they are read by every host that resolves it.
MAX_GRANTS = 256
MAX_GRANT_ID_CHARS = 256

log = logging.getLogger(__name__)

_FORMAT_V1 = b"\x01"  # no grants: decrypts, grants nothing
_FORMAT_V2 = b"\x02"  # grants sealed as associated data
_NONCE_BYTES = 12
_TAG_BYTES = 16
_KIND_TEXT, _KIND_BYTES = b"s", b"b"
_AAD_PREFIX = b"wasmlattice-secret:v1:"
_AAD_PREFIX_V2 = b"wasmlattice-secret:v2:"
# Secret names are KV keys and parts of config names: keep them plain.
_VALID_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


class SecretsKeyError(RuntimeError):
    """No usable encryption key: the message says where one was looked for and how to make one."""


class SecretDecryptError(ValueError):
    """A stored secret does not decrypt with this key (wrong key, or the value was altered)."""


class SecretResolveError(RuntimeError):
    """A secret reference of a component cannot be resolved; the message names the secret only."""


def check_grant(component_id: str) -> str:
    """`component_id` if it can be granted a secret; `ValueError` naming the limit otherwise."""
    if not component_id or len(component_id) > MAX_GRANT_ID_CHARS:
        raise ValueError(
            f"invalid component ID {component_id[:40]!r} to grant: it must have 1 to "
            f"{MAX_GRANT_ID_CHARS} characters"
        )
    if any(not c.isprintable() or c.isspace() for c in component_id):
        raise ValueError(
            f"invalid component ID {component_id!r} to grant: no whitespace or control characters"
        )
    return component_id


def is_signer(grant: str) -> bool:
    """Whether a grant names a component signing key (`M…`) rather than a component ID."""
    return is_public_key(grant, KeyKind.MODULE)


@dataclass(frozen=True)
class SecretGrants:
    """Who may read a secret: component IDs, and component signing keys (`M…` claim subjects)."""

    components: frozenset[str] = frozenset()
    signers: frozenset[str] = frozenset()

    @classmethod
    def of(cls, grants: Iterable[str]) -> SecretGrants:
        """Grants to component IDs and `M…` keys, each checked (`ValueError` naming the bad one)."""
        checked = {check_grant(c) for c in grants}
        if len(checked) > MAX_GRANTS:
            raise ValueError(
                f"a secret can be granted to at most {MAX_GRANTS} components or keys, not {len(checked)}"
            )
        signers = frozenset(g for g in checked if is_signer(g))
        return cls(frozenset(checked - signers), signers)

    @property
    def all(self) -> frozenset[str]:
        """Every grant, IDs and keys alike (as `of` takes them)."""
        return self.components | self.signers

    def allows(self, component_id: str, subject: str | None = None) -> bool:
        """Whether a component may read the secret: its ID is granted, or the subject of its
        verified claims (None if unsigned) is."""
        # The one place a grant is decided. `subject` comes only from claims the host verified
        # (artifacts/claims.py), as wasmCloud's backends check the entity JWT.
        return component_id in self.components or (subject is not None and subject in self.signers)

    def encode(self) -> bytes:
        """The canonical JSON that is sealed (as associated data) with the secret."""
        obj: dict[str, list[str]] = {"components": sorted(self.components)}
        if self.signers:
            # Only when there are any: entries without keys keep the exact bytes older hosts wrote,
            # and an older host reading this ignores `signers` (it grants less, never more).
            obj["signers"] = sorted(self.signers)
        return json.dumps(obj, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> SecretGrants:
        """Grants from `encode`'s JSON; `SecretDecryptError` if it is not that shape."""
        try:
            obj = json.loads(data)
            components, signers = obj["components"], obj.get("signers", [])
            for grants in (components, signers):
                if not isinstance(grants, list) or not all(isinstance(c, str) for c in grants):
                    raise TypeError
            if not all(is_signer(s) for s in signers):
                raise TypeError
            # A component ID that looks like a key was granted by ID (an older writer): keep it so.
            return cls(frozenset(check_grant(c) for c in components), frozenset(signers))
        except (ValueError, TypeError, KeyError, AttributeError):
            raise SecretDecryptError("its grants are not lists of component IDs and keys") from None


@dataclass(frozen=True)
class StoredSecret:
    """A decrypted secret entry: its value, who may read it, and whether it predates grants."""

    value: SecretValue
    grants: SecretGrants
    legacy: bool = False


@dataclass(frozen=True)
class SecretDenied:
    """A secret named by a component that it is not granted: `store.get` answers `message`."""

    name: str
    message: str


class SecretValue:
    """A secret's value (text or bytes) that never shows itself in `repr`, `str` or formatting."""

    __slots__ = ("_value",)

    def __init__(self, value: str | bytes) -> None:
        self._value = value

    def reveal(self) -> str | bytes:
        """The value itself (for `wasmcloud:secrets/reveal` and the CLI's own checks only)."""
        return self._value

    @property
    def is_text(self) -> bool:
        """Whether the value is text (else bytes)."""
        return isinstance(self._value, str)

    def __repr__(self) -> str:
        return "SecretValue(<redacted>)"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretValue) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("secret", self._value))

    def __reduce__(self) -> Any:
        raise TypeError("secret values are not serializable")


# -- the encryption key ------------------------------------------------------------------------


def default_key_path() -> Path:
    """`$XDG_DATA_HOME/wasmlattice/secrets.key` (default `~/.local/share/wasmlattice/secrets.key`)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "wasmlattice" / KEY_FILE_NAME


def key_file_path() -> Path:
    """Where the key file is read (and `secret keygen` writes): `$WASMLATTICE_SECRETS_KEY_FILE`, else
    the default path."""
    env_file = os.environ.get(KEY_FILE_ENV)
    return Path(env_file) if env_file else default_key_path()


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SecretsKeyError(f"the secrets key in {where} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise SecretsKeyError(
            f"the secrets key in {where} is {len(key)} bytes; it must be {KEY_BYTES} (base64 of 32 random "
            "bytes, as `wasmlattice secret keygen` writes)"
        )
    return key


def load_key(key_file: Path | None = None) -> bytes:
    """The secrets key from `key_file`, else `WASMLATTICE_SECRETS_KEY`, `..._KEY_FILE`, the default file."""
    if key_file is None:
        text = os.environ.get(KEY_ENV)
        if text:
            return _decode_key(text, f"${KEY_ENV}")
        key_file = key_file_path()
    try:
        text = key_file.read_text()
    except FileNotFoundError:
        raise SecretsKeyError(
            f"no secrets key: set {KEY_ENV} (base64 of 32 bytes) or create the key file {key_file} "
            "with `wasmlattice secret keygen`; every host and the CLI need the same key"
        ) from None
    except OSError as e:
        raise SecretsKeyError(f"cannot read the secrets key file {key_file}: {e.strerror or e}") from None
    return _decode_key(text, str(key_file))


def generate_key_file(path: Path, *, force: bool = False) -> Path:
    """Write a new random key (base64) to `path`, readable by its owner only; refuses to overwrite."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise SecretsKeyError(
            f"{path} already exists; secrets stored with it would become unreadable if it were replaced "
            "(use --force to replace it anyway)"
        ) from None
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(AESGCM.generate_key(bit_length=256)).decode() + "\n")
    os.chmod(path, 0o600)
    return path


# -- encryption at rest ------------------------------------------------------------------------


def _aad(lattice: str, key: str) -> bytes:
    return _AAD_PREFIX + lattice.encode() + b"/" + key.encode()


def _aad_v2(lattice: str, key: str, header: bytes) -> bytes:
    return _AAD_PREFIX_V2 + lattice.encode() + b"/" + key.encode() + b"\x00" + header


def encrypt(
    secret_key: bytes, lattice: str, key: str, value: str | bytes, grants: SecretGrants | None = None
) -> bytes:
    """The stored form of `value` under KV key `key` of `lattice`'s secrets bucket, with its grants."""
    plain = _KIND_TEXT + value.encode() if isinstance(value, str) else _KIND_BYTES + value
    header = (grants or SecretGrants()).encode()
    nonce = os.urandom(_NONCE_BYTES)
    sealed = AESGCM(secret_key).encrypt(nonce, plain, _aad_v2(lattice, key, header))
    return _FORMAT_V2 + struct.pack(">H", len(header)) + header + nonce + sealed


def open_entry(secret_key: bytes, lattice: str, key: str, stored: bytes) -> StoredSecret:
    """The value and grants `encrypt` stored; `SecretDecryptError` if the key is wrong or data altered."""
    if stored[:1] == _FORMAT_V2 and len(stored) >= 3:
        (size,) = struct.unpack(">H", stored[1:3])
        header, rest = stored[3 : 3 + size], stored[3 + size :]
        if len(header) != size or len(rest) < _NONCE_BYTES + _TAG_BYTES + 1:
            raise SecretDecryptError("the stored value is not a wasmlattice encrypted secret")
        plain = _open(secret_key, rest, _aad_v2(lattice, key, header))
        # The grants are authenticated by the tag just checked: only a key holder wrote them.
        return StoredSecret(_value(plain), SecretGrants.decode(header))
    if stored[:1] == _FORMAT_V1 and len(stored) >= 1 + _NONCE_BYTES + _TAG_BYTES + 1:
        plain = _open(secret_key, stored[1:], _aad(lattice, key))
        return StoredSecret(_value(plain), SecretGrants(), legacy=True)
    raise SecretDecryptError("the stored value is not a wasmlattice encrypted secret")


def decrypt(secret_key: bytes, lattice: str, key: str, stored: bytes) -> SecretValue:
    """The value `encrypt` stored; `SecretDecryptError` if the key is wrong or the data was altered."""
    return open_entry(secret_key, lattice, key, stored).value


def _open(secret_key: bytes, nonce_and_sealed: bytes, aad: bytes) -> bytes:
    nonce, sealed = nonce_and_sealed[:_NONCE_BYTES], nonce_and_sealed[_NONCE_BYTES:]
    try:
        return AESGCM(secret_key).decrypt(nonce, sealed, aad)
    except InvalidTag:
        raise SecretDecryptError(
            "it does not decrypt with this host's secrets key (another key was used, or the stored "
            "value or its grants were altered)"
        ) from None


def _value(plain: bytes) -> SecretValue:
    kind, data = plain[:1], plain[1:]
    if kind == _KIND_TEXT:
        try:
            return SecretValue(data.decode())
        except UnicodeDecodeError:
            raise SecretDecryptError("its text is not valid UTF-8") from None
    if kind == _KIND_BYTES:
        return SecretValue(data)
    raise SecretDecryptError("its value kind is unknown")


# -- references and the nats-kv backend --------------------------------------------------------


def bucket_name(lattice: str) -> str:
    """The KV bucket of `lattice`'s encrypted secrets: `SECRETS_<lattice>`."""
    return f"{BUCKET_PREFIX}{lattice}"


def check_name(name: str) -> str:
    """`name` if it is a usable secret name (letters, digits, `_`, `-`); `ValueError` otherwise."""
    if not _VALID_NAME.match(name):
        raise ValueError(f"invalid secret name {name!r}: use letters, digits, '_' and '-'")
    return name


def reference_name(name: str) -> str:
    """The config name of the reference to secret `name`: `SECRET_<name>`."""
    return f"{sj.SECRET_PREFIX}_{name}"


def reference(name: str) -> StrMap:
    """The secret reference map that `secret put` stores for the builtin backend."""
    policy = {"type": POLICY_TYPE, "properties": {}}
    return {
        "name": name,
        "type": REFERENCE_TYPE,
        "backend": BACKEND,
        "key": name,
        "policy": json.dumps(policy, separators=(",", ":")),
    }


@dataclass(frozen=True)
class SecretReference:
    """A parsed secret reference (one `SECRET_*` entry of `CONFIGDATA`)."""

    config_name: str
    name: str
    backend: str
    key: str
    field: str | None = None
    version: str | None = None

    @classmethod
    def parse(cls, config_name: str, data: Mapping[str, str]) -> SecretReference:
        """Validate a stored reference map; `SecretResolveError` naming what is wrong."""
        missing = [f for f in ("name", "backend", "key") if not data.get(f)]
        if missing:
            raise SecretResolveError(
                f"secret reference {config_name} lacks {', '.join(missing)}; store it with "
                "`wasmlattice secret put`"
            )
        kind = data.get("type", REFERENCE_TYPE)
        if kind != REFERENCE_TYPE:
            raise SecretResolveError(
                f"secret reference {config_name} has type {kind!r}; this host reads {REFERENCE_TYPE!r}"
            )
        return cls(
            config_name,
            data["name"],
            data["backend"],
            data["key"],
            data.get("field") or None,
            data.get("version") or None,
        )


async def open_secrets_bucket(js: Any, lattice: str, *, create: bool) -> KvBucket:
    """The lattice's secrets bucket (`create`: make it if absent, as the CLI does on put)."""
    return await open_bucket(js, bucket_name(lattice), create=create, description="wasmlattice secrets")


async def resolve_secrets(
    services: HostServices,
    config_names: Iterable[str],
    component_id: str,
    *,
    subject: str | None = None,
) -> dict[str, SecretValue | SecretDenied]:
    """Fetch and decrypt the secrets that the `SECRET*` names refer to, keyed by reference `name`.

    `subject` is the `M…` key of the component's verified claims (None if unsigned). A secret
    granted neither to `component_id` nor to `subject` is a `SecretDenied` (logged here, once per
    resolution), never its value. `SecretResolveError` naming the first secret that cannot be had, and why.
    """
    refs: list[SecretReference] = []
    for cname in config_names:
        raw = await services.state.config_data.get(sj.config_key(cname))
        if raw is None:
            raise SecretResolveError(
                f"secret reference {cname} not found in config store; create it with "
                f"`wasmlattice secret put {cname.removeprefix(sj.SECRET_PREFIX).lstrip('_')} ...`"
            )
        try:
            data = parse_payload(NamedConfig, raw).root
        except PayloadError:
            raise SecretResolveError(f"secret reference {cname} is not a string map") from None
        ref = SecretReference.parse(cname, data)
        if ref.backend != BACKEND:
            raise SecretResolveError(
                f"secret {ref.name!r} ({cname}) uses backend {ref.backend!r}, which this host does not "
                f"have; use backend {BACKEND!r} (`wasmlattice secret put`)"
            )
        refs.append(ref)
    if not refs:
        return {}
    try:
        secret_key = load_key()
    except SecretsKeyError as e:
        raise SecretResolveError(
            f"cannot read secret {refs[0].name!r} ({refs[0].config_name}): {e}"
        ) from None
    bucket: KvBucket | None = None
    out: dict[str, SecretValue | SecretDenied] = {}
    for ref in refs:
        what = f"secret {ref.name!r} ({ref.config_name})"
        if bucket is None:
            try:
                bucket = await open_secrets_bucket(services.js, services.lattice, create=False)
            except KvError:
                raise SecretResolveError(
                    f"{what} not found: the secrets bucket {bucket_name(services.lattice)} does not exist; "
                    f"put it with `wasmlattice secret put {ref.key} ...`"
                ) from None
        try:
            entry = await bucket.get_entry(ref.key)
        except KvError as e:
            raise SecretResolveError(f"{what}: reading key {ref.key!r} failed: {e}") from None
        if entry is None:
            raise SecretResolveError(
                f"{what} not found: no key {ref.key!r} in {bucket.name}; put it with "
                f"`wasmlattice secret put {ref.key} ...`"
            )
        stored, revision = entry
        if ref.version is not None and ref.version != str(revision):
            raise SecretResolveError(
                f"{what}: version {ref.version} is not available; the {BACKEND} backend keeps only the "
                f"latest (version {revision})"
            )
        try:
            entry_value = open_entry(secret_key, services.lattice, ref.key, stored)
        except SecretDecryptError as e:
            raise SecretResolveError(f"cannot decrypt {what}: {e}") from None
        if not entry_value.grants.allows(component_id, subject):
            denied = _denied(ref, component_id, subject, entry_value)
            log.warning("component %s: %s", component_id, denied.message)
            out[ref.name] = denied
            continue
        value = entry_value.value
        if ref.field is not None:
            value = _field(value, ref.field, what)
        out[ref.name] = value
    return out


def _denied(
    ref: SecretReference, component_id: str, subject: str | None, entry: StoredSecret
) -> SecretDenied:
    # Said to the guest and the host log: the secret's name and the component, never the value.
    who = f"component {component_id!r}" + (f" (signed as {subject})" if subject else " (unsigned)")
    if entry.legacy:
        how = (
            f"it was stored without grants; store it again with "
            f"`wasmlattice secret put {ref.key} ... --allow {component_id}`"
        )
    else:
        how = f"its owner can grant it with `wasmlattice secret allow {ref.key} {subject or component_id}`"
    return SecretDenied(ref.name, f"secret {ref.name!r} ({ref.config_name}) is not granted to {who}; {how}")


def _field(value: SecretValue, field_name: str, what: str) -> SecretValue:
    # A reference with `field` selects one member of a secret that holds a JSON object.
    try:
        obj = json.loads(value.reveal())
    except (ValueError, TypeError):
        raise SecretResolveError(f"{what} names field {field_name!r}, but it is not a JSON object") from None
    if not isinstance(obj, dict) or field_name not in obj:
        raise SecretResolveError(f"{what} has no field {field_name!r}")
    member = obj[field_name]
    return SecretValue(member if isinstance(member, str) else json.dumps(member))


async def put_secret(
    js: Any,
    lattice: str,
    name: str,
    value: str | bytes,
    secret_key: bytes,
    allow: Iterable[str] | None = None,
) -> tuple[int, SecretGrants]:
    """Store `value` encrypted under `name`, granted to `allow`, and its `SECRET_<name>` reference.

    `allow` None keeps the grants of the secret already stored under `name` (none if there is none,
    or it does not decrypt with `secret_key`). The value's KV revision and the grants stored.
    """
    check_name(name)
    bucket = await open_secrets_bucket(js, lattice, create=True)
    if allow is None:
        grants = SecretGrants()
        current = await bucket.get_entry(name)
        if current is not None:
            try:
                grants = open_entry(secret_key, lattice, name, current[0]).grants
            except SecretDecryptError:
                pass  # an entry this key cannot read vouches for nobody
    else:
        grants = SecretGrants.of(allow)
    revision = await bucket.put(name, encrypt(secret_key, lattice, name, value, grants))
    config = await open_bucket(js, sj.config_data_bucket(lattice))
    await config.put(sj.config_key(reference_name(name)), json.dumps(reference(name)).encode())
    return revision, grants


async def change_grants(
    js: Any,
    lattice: str,
    name: str,
    secret_key: bytes,
    *,
    allow: Iterable[str] = (),
    deny: Iterable[str] = (),
) -> SecretGrants:
    """Grant secret `name` to `allow` and take it from `deny`; the grants now stored.

    The value is re-encrypted with the new grants (its reference is untouched). `SecretResolveError`
    if there is no such secret or it does not decrypt with `secret_key`.
    """
    check_name(name)
    added, removed = SecretGrants.of(allow), SecretGrants.of(deny)
    try:
        bucket = await open_secrets_bucket(js, lattice, create=False)
    except KvError:
        raise SecretResolveError(f"no secret {name!r}: the lattice has no secrets yet") from None
    entry = await bucket.get_entry(name)
    if entry is None:
        raise SecretResolveError(
            f"no secret {name!r} in {bucket.name}; store it with `wasmlattice secret put`"
        )
    try:
        current = open_entry(secret_key, lattice, name, entry[0])
    except SecretDecryptError as e:
        raise SecretResolveError(f"cannot change the grants of secret {name!r}: {e}") from None
    grants = SecretGrants.of((current.grants.all | added.all) - removed.all)
    await bucket.put(name, encrypt(secret_key, lattice, name, current.value.reveal(), grants))
    return grants


@dataclass(frozen=True)
class SecretListing:
    """One stored secret as `secret list` shows it: name, version, grants (None: undecryptable)."""

    name: str
    version: int
    grants: SecretGrants | None
    problem: str | None = None


async def list_secrets(js: Any, lattice: str, secret_key: bytes) -> list[SecretListing]:
    """Every secret of the lattice with its grants, checked with `secret_key` (never the values)."""
    try:
        bucket = await open_secrets_bucket(js, lattice, create=False)
    except KvError:
        return []
    out: list[SecretListing] = []
    for key in sorted(await bucket.keys()):
        entry = await bucket.get_entry(key)
        if entry is None:
            continue
        try:
            opened = open_entry(secret_key, lattice, key, entry[0])
        except SecretDecryptError as e:
            out.append(SecretListing(key, entry[1], None, str(e)))
            continue
        problem = "stored without grants: granted to no component" if opened.legacy else None
        out.append(SecretListing(key, entry[1], opened.grants, problem))
    return out


async def delete_secret(js: Any, lattice: str, name: str) -> None:
    """Remove secret `name` and its reference (idempotent)."""
    check_name(name)
    config = await open_bucket(js, sj.config_data_bucket(lattice))
    await config.purge(sj.config_key(reference_name(name)))
    try:
        bucket = await open_secrets_bucket(js, lattice, create=False)
    except KvError:
        return  # no secrets bucket: nothing stored
    await bucket.purge(name)


# -- the guest interfaces ----------------------------------------------------------------------

# The span attribute naming the secret a `get` asked for (its name only; docs/observability.md).
SECRET_NAME = "wasmlattice.secret.name"

SECRETS_ERROR = variant(("upstream", STRING), ("io", STRING), "not-found")
SECRET_VALUE = variant(("string", STRING), ("bytes", BYTES))

STORE_SIGNATURES = {"get": func(STRING, returns=result(own("secret"), SECRETS_ERROR))}
REVEAL_SIGNATURES = {"reveal": func(borrow("secret"), returns=SECRET_VALUE)}


def get(key: str) -> SecretValue:
    """`store.get`: a handle to the component's secret `key`; `not-found` if none, `upstream` if denied."""
    try:
        comp = component()
    except CapabilityError as e:
        raise Err(("upstream", str(e))) from None
    found = comp.secrets.get(key)
    if isinstance(found, SecretDenied):
        # Refused by the secret's grants: the guest learns which secret and why, not the value.
        raise Err(("upstream", found.message))
    if not isinstance(found, SecretValue):
        raise Err("not-found")
    return found


def reveal(secret: SecretValue) -> tuple[str, str | bytes]:
    """`reveal.reveal`: the value behind a handle that `get` returned."""
    value = secret.reveal()
    return ("string", value) if isinstance(value, str) else ("bytes", value)


def interfaces() -> list[HostInterface]:
    """`wasmcloud:secrets/store` and `reveal` at `0.1.0-draft`.

    Both are traced; a `get` span names the secret (`wasmlattice.secret.name`), and no span ever
    carries a value: `reveal`'s span has no attributes of its argument or its result.
    """
    return [
        traced(
            HostInterface(
                "wasmcloud:secrets/store",
                {"get": get},
                versions=("0.1.0-draft",),
                signatures=STORE_SIGNATURES,
            ),
            backend=BACKEND,
            describe={"get": lambda key: {SECRET_NAME: key}},
        ),
        traced(
            HostInterface(
                "wasmcloud:secrets/reveal",
                {"reveal": reveal},
                versions=("0.1.0-draft",),
                signatures=REVEAL_SIGNATURES,
            ),
            backend=BACKEND,
        ),
    ]
