"""`wasmcloud:secrets@0.1.0-draft`: secrets resolved at scale time, revealed only on request.

How a component gets a secret (docs/protocol.md#secrets, docs/protocol.md#kv-layout):

1. `wasmlattice secret put NAME VALUE` (or `--file F` for bytes) encrypts the value and stores it in
   the JetStream KV bucket `SECRETS_<lattice>` under key NAME, and stores the *secret reference*
   `SECRET_NAME` in `CONFIGDATA_<lattice>`: a string map `{name, type, backend, key, policy}` in
   wasmCloud's layout (`type` = `secret.wasmcloud.dev/v1alpha1`, `backend` = `nats-kv`, optional
   `field` and `version`). References written by other tools (`wash config put SECRET_x ...`)
   work the same way if their backend is `nats-kv`.
2. A scale command lists `SECRET_NAME` among its config names. The host reads each reference,
   fetches and decrypts the value, and keeps it in the component's context under the reference's
   `name` (`resolve_secrets`). A missing reference, a missing or undecryptable value, or another
   backend fails the scale with a message naming the secret (never its value).
3. The guest calls `store.get(name)` (an opaque handle; `not-found` if the component has no such
   secret) and `reveal.reveal(handle)` for the value.

Encryption at rest: AES-256-GCM with a random 96-bit nonce per write. The stored value is
`0x01 || nonce || ciphertext+tag`; the plaintext is one kind byte (`s` text, `b` bytes) and the
value; the associated data binds it to its lattice and key, so an entry copied under another key
or lattice does not decrypt. The 32-byte key comes from, in order:

- `WASMLATTICE_SECRETS_KEY`: the key, base64;
- `WASMLATTICE_SECRETS_KEY_FILE`: a file holding the key, base64;
- `$XDG_DATA_HOME/wasmlattice/secrets.key` (default `~/.local/share/wasmlattice/secrets.key`),
  created by `wasmlattice secret keygen` (mode 0600).

Every host of the lattice and the CLI that writes secrets need the same key. Policies (`policy`)
are stored but not enforced: the only backend is the host's own.

Secret values are held in `SecretValue`, whose `repr`/`str` are redacted, so a value cannot reach
a log line, event, inventory or error message by accident; only `reveal` and the guest see it.

Not yet like wasmCloud: wasmCloud gives secrets only to *signed* components and providers (their
JWT is sent to the secrets backend, which checks the policy). This host verifies no component
claims yet, so any component scaled with a secret reference receives that secret: restrict who
may send scale commands (NATS permissions on the control subjects) accordingly.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from wasmlattice.capabilities.base import CapabilityError, HostServices, component
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

_FORMAT_V1 = b"\x01"
_NONCE_BYTES = 12
_KIND_TEXT, _KIND_BYTES = b"s", b"b"
_AAD_PREFIX = b"wasmlattice-secret:v1:"
# Secret names are KV keys and parts of config names: keep them plain.
_VALID_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


class SecretsKeyError(RuntimeError):
    """No usable encryption key: the message says where one was looked for and how to make one."""


class SecretDecryptError(ValueError):
    """A stored secret does not decrypt with this key (wrong key, or the value was altered)."""


class SecretResolveError(RuntimeError):
    """A secret reference of a component cannot be resolved; the message names the secret only."""


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


def encrypt(secret_key: bytes, lattice: str, key: str, value: str | bytes) -> bytes:
    """The stored form of `value` under KV key `key` of `lattice`'s secrets bucket."""
    plain = _KIND_TEXT + value.encode() if isinstance(value, str) else _KIND_BYTES + value
    nonce = os.urandom(_NONCE_BYTES)
    return _FORMAT_V1 + nonce + AESGCM(secret_key).encrypt(nonce, plain, _aad(lattice, key))


def decrypt(secret_key: bytes, lattice: str, key: str, stored: bytes) -> SecretValue:
    """The value `encrypt` stored; `SecretDecryptError` if the key is wrong or the data was altered."""
    if len(stored) < 1 + _NONCE_BYTES + 16 + 1 or stored[:1] != _FORMAT_V1:
        raise SecretDecryptError("the stored value is not a wasmlattice encrypted secret")
    nonce, sealed = stored[1 : 1 + _NONCE_BYTES], stored[1 + _NONCE_BYTES :]
    try:
        plain = AESGCM(secret_key).decrypt(nonce, sealed, _aad(lattice, key))
    except InvalidTag:
        raise SecretDecryptError(
            "it does not decrypt with this host's secrets key (another key was used, or the stored "
            "value was altered)"
        ) from None
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


async def resolve_secrets(services: HostServices, config_names: Iterable[str]) -> dict[str, SecretValue]:
    """Fetch and decrypt the secrets that the `SECRET*` names refer to, keyed by reference `name`.

    `SecretResolveError` naming the first secret that cannot be had, and why.
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
    out: dict[str, SecretValue] = {}
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
            value = decrypt(secret_key, services.lattice, ref.key, stored)
        except SecretDecryptError as e:
            raise SecretResolveError(f"cannot decrypt {what}: {e}") from None
        if ref.field is not None:
            value = _field(value, ref.field, what)
        out[ref.name] = value
    return out


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


async def put_secret(js: Any, lattice: str, name: str, value: str | bytes, secret_key: bytes) -> int:
    """Store `value` encrypted under `name` and its `SECRET_<name>` reference; the value's KV revision."""
    check_name(name)
    bucket = await open_secrets_bucket(js, lattice, create=True)
    revision = await bucket.put(name, encrypt(secret_key, lattice, name, value))
    config = await open_bucket(js, sj.config_data_bucket(lattice))
    await config.put(sj.config_key(reference_name(name)), json.dumps(reference(name)).encode())
    return revision


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

SECRETS_ERROR = variant(("upstream", STRING), ("io", STRING), "not-found")
SECRET_VALUE = variant(("string", STRING), ("bytes", BYTES))

STORE_SIGNATURES = {"get": func(STRING, returns=result(own("secret"), SECRETS_ERROR))}
REVEAL_SIGNATURES = {"reveal": func(borrow("secret"), returns=SECRET_VALUE)}


def get(key: str) -> SecretValue:
    """`store.get`: a handle to the calling component's secret `key`; `not-found` if it has none."""
    try:
        comp = component()
    except CapabilityError as e:
        raise Err(("upstream", str(e))) from None
    found = comp.secrets.get(key)
    if not isinstance(found, SecretValue):
        raise Err("not-found")
    return found


def reveal(secret: SecretValue) -> tuple[str, str | bytes]:
    """`reveal.reveal`: the value behind a handle that `get` returned."""
    value = secret.reveal()
    return ("string", value) if isinstance(value, str) else ("bytes", value)


def interfaces() -> list[HostInterface]:
    """`wasmcloud:secrets/store` and `reveal` at `0.1.0-draft`."""
    return [
        HostInterface(
            "wasmcloud:secrets/store", {"get": get}, versions=("0.1.0-draft",), signatures=STORE_SIGNATURES
        ),
        HostInterface(
            "wasmcloud:secrets/reveal",
            {"reveal": reveal},
            versions=("0.1.0-draft",),
            signatures=REVEAL_SIGNATURES,
        ),
    ]
