"""The lattice commands take NATS credentials and TLS from WASMLATTICE_NATS_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from wasmlattice.cli.common import cli_nats_options


def test_plain_connection_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CREDS", "JWT", "SEED", "TLS", "TLS_CA", "TLS_CERT", "TLS_KEY"):
        monkeypatch.delenv(f"WASMLATTICE_NATS_{name}", raising=False)
    opts = cli_nats_options("nats://127.0.0.1:4222", 5.0)
    assert (opts.creds_file, opts.jwt, opts.seed, opts.tls_required, opts.tls_ca) == (
        None,
        None,
        None,
        False,
        None,
    )
    assert opts.connect_timeout == 2.0


def test_credentials_and_tls_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    creds = tmp_path / "user.creds"
    monkeypatch.setenv("WASMLATTICE_NATS_CREDS", str(creds))
    monkeypatch.setenv("WASMLATTICE_NATS_TLS", "true")
    monkeypatch.setenv("WASMLATTICE_NATS_TLS_CA", str(tmp_path / "ca.pem"))
    opts = cli_nats_options("tls://nats.example:4222", 0.5)
    assert opts.creds_file == creds
    assert opts.tls_required is True
    assert opts.tls_ca == tmp_path / "ca.pem"
    assert opts.connect_timeout == 0.5
