"""Secrets at rest: AES-GCM round trip, tamper detection, the key's sources, redaction, references."""

from __future__ import annotations

import base64
import logging
import os
import pickle
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from wasmlattice.capabilities import secrets as sec
from wasmlattice.capabilities.secrets import (
    SecretDecryptError,
    SecretReference,
    SecretResolveError,
    SecretsKeyError,
    SecretValue,
    decrypt,
    encrypt,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
PLAIN = "correct horse battery staple"


@pytest.mark.parametrize("value", [PLAIN, "", "ünïcødé ✓", b"\x00\xff\x80binary", b""])
def test_round_trip_keeps_value_and_kind(value: str | bytes) -> None:
    stored = encrypt(KEY, "lat", "api", value)
    got = decrypt(KEY, "lat", "api", stored)
    assert got.reveal() == value
    assert type(got.reveal()) is type(value)
    assert got.is_text == isinstance(value, str)


def test_stored_form_hides_the_value_and_differs_per_write() -> None:
    a = encrypt(KEY, "lat", "api", PLAIN)
    b = encrypt(KEY, "lat", "api", PLAIN)
    assert PLAIN.encode() not in a
    assert a != b  # a fresh nonce per write
    assert decrypt(KEY, "lat", "api", a) == decrypt(KEY, "lat", "api", b)


def test_every_altered_byte_is_detected() -> None:
    stored = encrypt(KEY, "lat", "api", PLAIN)
    for i in range(len(stored)):
        tampered = bytearray(stored)
        tampered[i] ^= 0x01
        with pytest.raises(SecretDecryptError):
            decrypt(KEY, "lat", "api", bytes(tampered))


@pytest.mark.parametrize(
    ("key", "lattice", "name"),
    [(OTHER_KEY, "lat", "api"), (KEY, "other", "api"), (KEY, "lat", "api2")],
    ids=["wrong-key", "other-lattice", "other-name"],
)
def test_value_is_bound_to_key_lattice_and_name(key: bytes, lattice: str, name: str) -> None:
    stored = encrypt(KEY, "lat", "api", PLAIN)
    with pytest.raises(SecretDecryptError) as info:
        decrypt(key, lattice, name, stored)
    assert PLAIN not in str(info.value)


@pytest.mark.parametrize("stored", [b"", b"\x01short", b"\x02" + bytes(40), b"plain text secret value"])
def test_garbage_is_refused(stored: bytes) -> None:
    with pytest.raises(SecretDecryptError):
        decrypt(KEY, "lat", "api", stored)


def test_truncated_value_is_refused() -> None:
    stored = encrypt(KEY, "lat", "api", PLAIN)
    with pytest.raises(SecretDecryptError):
        decrypt(KEY, "lat", "api", stored[:-1])


def test_secret_value_never_shows_itself(caplog: pytest.LogCaptureFixture) -> None:
    value = SecretValue(PLAIN)
    for text in (repr(value), str(value), f"{value}", f"{value!r}", str([value]), str({"k": value})):
        assert PLAIN not in text
        assert "redacted" in text
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("test").info("value %s %r", value, value)
    assert "redacted" in caplog.text and PLAIN not in caplog.text
    with pytest.raises(TypeError):
        pickle.dumps(value)
    assert value.reveal() == PLAIN
    assert value == SecretValue(PLAIN) and value != SecretValue("other")


# -- the key -----------------------------------------------------------------------------------


def test_key_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(sec.KEY_ENV, base64.b64encode(KEY).decode())
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert sec.load_key() == KEY


@pytest.mark.parametrize(
    ("text", "needle"),
    [("not base64!", "not valid base64"), (base64.b64encode(b"short").decode(), "must be 32")],
)
def test_bad_key_is_explained(monkeypatch: pytest.MonkeyPatch, text: str, needle: str) -> None:
    monkeypatch.setenv(sec.KEY_ENV, text)
    with pytest.raises(SecretsKeyError) as info:
        sec.load_key()
    assert needle in str(info.value)
    assert sec.KEY_ENV in str(info.value)


def test_keygen_writes_an_owner_only_key_the_host_reads(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(sec.KEY_ENV, raising=False)
    monkeypatch.delenv(sec.KEY_FILE_ENV, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    path = sec.default_key_path()
    assert path == tmp_path / "wasmlattice" / "secrets.key"
    with pytest.raises(SecretsKeyError) as info:
        sec.load_key()
    assert str(path) in str(info.value) and "wasmlattice secret keygen" in str(info.value)

    sec.generate_key_file(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    key = sec.load_key()
    assert len(key) == 32
    with pytest.raises(SecretsKeyError) as info:
        sec.generate_key_file(path)
    assert "already exists" in str(info.value)
    assert sec.load_key() == key  # not replaced
    sec.generate_key_file(path, force=True)
    assert sec.load_key() != key


def test_key_file_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(sec.KEY_ENV, raising=False)
    path = tmp_path / "k"
    path.write_text(base64.b64encode(OTHER_KEY).decode() + "\n")
    monkeypatch.setenv(sec.KEY_FILE_ENV, str(path))
    assert sec.load_key() == OTHER_KEY
    # An explicit path (the CLI's --key-file) wins over the environment.
    with pytest.raises(SecretsKeyError) as info:
        sec.load_key(tmp_path / "missing")
    assert str(tmp_path / "missing") in str(info.value)


# -- references --------------------------------------------------------------------------------


def test_reference_round_trip() -> None:
    ref = SecretReference.parse("SECRET_api", sec.reference("api"))
    assert (ref.name, ref.backend, ref.key, ref.field, ref.version) == ("api", "nats-kv", "api", None, None)
    assert sec.reference_name("api") == "SECRET_api"


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"backend": "nats-kv", "key": "k"}, "lacks name"),
        ({"name": "n", "backend": "nats-kv", "key": "k", "type": "something/else"}, "has type"),
    ],
)
def test_bad_reference_is_explained(data: dict[str, str], needle: str) -> None:
    with pytest.raises(SecretResolveError) as info:
        SecretReference.parse("SECRET_x", data)
    assert needle in str(info.value) and "SECRET_x" in str(info.value)


@pytest.mark.parametrize("name", ["", "a.b", "a b", "a/b", "ü"])
def test_bad_secret_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        sec.check_name(name)


# -- grants ------------------------------------------------------------------------------------


def test_grants_are_sealed_with_the_value() -> None:
    grants = sec.SecretGrants.of(["a", "billing-api"])
    stored = encrypt(KEY, "lat", "api", PLAIN, grants)
    opened = sec.open_entry(KEY, "lat", "api", stored)
    assert opened.value.reveal() == PLAIN and opened.grants == grants and not opened.legacy
    assert opened.grants.allows("a") and not opened.grants.allows("b")
    # No grants given: granted to no component.
    assert sec.open_entry(KEY, "lat", "api", encrypt(KEY, "lat", "api", PLAIN)).grants.components == set()


def test_rewritten_grants_do_not_decrypt() -> None:
    # The grants are readable in the stored entry but authenticated: whoever rewrites them without
    # the key (anyone who can write the KV bucket) gets an entry no host will open.
    stored = encrypt(KEY, "lat", "api", PLAIN, sec.SecretGrants.of(["a"]))
    forged = stored.replace(b'"a"', b'"b"')
    assert forged != stored
    with pytest.raises(SecretDecryptError) as info:
        sec.open_entry(KEY, "lat", "api", forged)
    assert PLAIN not in str(info.value)
    # Nor does an entry whose grants were sealed with another key.
    with pytest.raises(SecretDecryptError):
        sec.open_entry(KEY, "lat", "api", encrypt(OTHER_KEY, "lat", "api", PLAIN, sec.SecretGrants.of(["b"])))


def test_first_format_entries_decrypt_but_grant_nothing() -> None:
    # An entry written before grants existed: 0x01 || nonce || AES-GCM(kind || value).
    nonce = os.urandom(12)
    aad = b"wasmlattice-secret:v1:lat/api"
    stored = b"\x01" + nonce + AESGCM(KEY).encrypt(nonce, b"s" + PLAIN.encode(), aad)
    opened = sec.open_entry(KEY, "lat", "api", stored)
    assert opened.value.reveal() == PLAIN and opened.legacy
    assert not opened.grants.allows("a") and opened.grants.components == set()


@pytest.mark.parametrize(
    ("ids", "needle"),
    [
        ([""], "1 to 256"),
        (["x" * 257], "1 to 256"),
        (["a b"], "whitespace"),
        (["a\x00"], "control"),
        (["\ud800"], "control"),
        ([f"c{i}" for i in range(257)], "at most 256"),
    ],
)
def test_bad_grants_are_refused(ids: list[str], needle: str) -> None:
    with pytest.raises(ValueError) as info:
        sec.SecretGrants.of(ids)
    assert needle in str(info.value)
