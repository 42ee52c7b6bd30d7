"""CLI options: NATS credentials and TLS from WASMLATTICE_NATS_* variables; wasmCloud variable names."""

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


def test_client_certificate_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WASMLATTICE_NATS_TLS_CERT", str(tmp_path / "c.pem"))
    monkeypatch.setenv("WASMLATTICE_NATS_TLS_KEY", str(tmp_path / "c.key"))
    opts = cli_nats_options("tls://nats.example:4222", 1.0)
    assert (opts.tls_cert, opts.tls_key) == (tmp_path / "c.pem", tmp_path / "c.key")


def test_host_options_pass_the_client_certificate_to_the_connection(tmp_path: Path) -> None:
    from wasmlattice.lattice.run import HostOptions

    opts = HostOptions(nats_tls_cert=tmp_path / "c.pem", nats_tls_key=tmp_path / "c.key").nats_options()
    assert (opts.tls_cert, opts.tls_key) == (tmp_path / "c.pem", tmp_path / "c.key")


def _envvars(command: str) -> dict[str, list[str]]:
    """Option name -> environment variables of a `wasmlattice` command, in lookup order."""
    import typer.main

    from wasmlattice.cli.main import app

    group = typer.main.get_command(app)
    cmd = group.commands[command]  # type: ignore[attr-defined]
    out = {}
    for param in cmd.params:
        env = param.envvar
        if env:
            out[param.opts[0]] = [env] if isinstance(env, str) else list(env)
    return out


@pytest.mark.parametrize("command", ["host", "up"])
def test_wasmcloud_variable_names_after_ours(command: str) -> None:
    env = _envvars(command)
    # docs/protocol.md#host-settings: the wasmCloud host's variable for each setting we share.
    wasmcloud = {
        "--lattice": "WASMCLOUD_LATTICE",
        "--host-seed": "WASMCLOUD_HOST_SEED",
        "--nats-creds": "WASMCLOUD_NATS_CREDS",
        "--nats-jwt": "WASMCLOUD_NATS_JWT",
        "--nats-seed": "WASMCLOUD_NATS_SEED",
        "--js-domain": "WASMCLOUD_JS_DOMAIN",
        "--heartbeat-interval": "WASMCLOUD_HEARTBEAT_INTERVAL",
        "--log-level": "WASMCLOUD_LOG_LEVEL",
        "--allow-file-load": "WASMCLOUD_ALLOW_FILE_LOAD",
    }
    for option, theirs in wasmcloud.items():
        ours = "WASMLATTICE_" + theirs.removeprefix("WASMCLOUD_")
        assert env[option] == [ours, theirs], option
    # TLS: the same variables the other commands read (cli_nats_options).
    for option in ("--nats-tls", "--nats-tls-ca", "--nats-tls-cert", "--nats-tls-key"):
        assert env[option] == ["WASMLATTICE_" + option.removeprefix("--").upper().replace("-", "_")]


def test_log_levels_accept_wasmcloud_names() -> None:
    import typer

    from wasmlattice.cli.host_options import check_log_level

    assert [check_log_level(v) for v in ("trace", "DEBUG", "Info", "warn", "warning", "error")] == [
        "debug",
        "debug",
        "info",
        "warning",
        "warning",
        "error",
    ]
    with pytest.raises(typer.BadParameter, match="'loud' is not a log level"):
        check_log_level("loud")
