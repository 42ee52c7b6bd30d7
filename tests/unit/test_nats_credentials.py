"""The NATS user key `up` keeps in its data dir (`ensure_user_seed`), and how a connection reads a
credentials file: a `.creds` file (user JWT + seed) or a user nkey seed file."""

from __future__ import annotations

import stat
from pathlib import Path

import nkeys
import pytest

from wasmlattice.nats_server import EmbeddedNatsError, ensure_user_seed, user_public_key
from wasmlattice.protocol.connection import NatsConnectionError, NatsOptions, _auth_kwargs


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_seed_is_a_user_key_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "dir" / "nats-user.nk"
    seed = ensure_user_seed(path)
    assert seed.startswith("SU") and user_public_key(seed).startswith("U")
    assert mode(path) == 0o600
    assert seed in path.read_text().splitlines()
    assert [p.name for p in path.parent.iterdir()] == ["nats-user.nk"]  # no temporary file left


def test_the_seed_is_kept_across_starts_and_its_mode_restored(tmp_path: Path) -> None:
    path = tmp_path / "nats-user.nk"
    seed = ensure_user_seed(path)
    path.chmod(0o644)
    assert ensure_user_seed(path) == seed
    assert mode(path) == 0o600


def test_a_file_without_a_user_seed_is_refused_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "nats-user.nk"
    server_seed = nkeys.encode_seed(b"\x01" * 32, nkeys.PREFIX_BYTE_SERVER).decode()
    for text in ("", "not a key\n", server_seed + "\n"):
        path.write_text(text)
        with pytest.raises(EmbeddedNatsError, match="holds no NATS user nkey seed"):
            ensure_user_seed(path)
        assert path.read_text() == text


def test_a_seed_file_authenticates_with_its_nkey(tmp_path: Path) -> None:
    path = tmp_path / "nats-user.nk"
    seed = ensure_user_seed(path)
    assert _auth_kwargs(NatsOptions(creds_file=path)) == {"nkeys_seed_str": seed}
    bare = tmp_path / "bare.nk"
    bare.write_text(seed + "\n")  # as `nk -gen user` prints it
    assert _auth_kwargs(NatsOptions(creds_file=bare)) == {"nkeys_seed_str": seed}


def test_a_creds_file_authenticates_with_its_jwt(tmp_path: Path) -> None:
    path = tmp_path / "user.creds"
    path.write_text("-----BEGIN NATS USER JWT-----\neyJ0eXAi.e30.sig\n------END NATS USER JWT------\n")
    assert _auth_kwargs(NatsOptions(creds_file=path)) == {"user_credentials": str(path)}


def test_a_file_of_neither_kind_is_an_error_that_does_not_quote_it(tmp_path: Path) -> None:
    path = tmp_path / "secrets.key"
    path.write_text("c2VjcmV0LWtleS1tYXRlcmlhbA==\n")
    with pytest.raises(NatsConnectionError) as e:
        _auth_kwargs(NatsOptions(creds_file=path))
    assert str(path) in str(e.value) and "c2VjcmV0" not in str(e.value)
