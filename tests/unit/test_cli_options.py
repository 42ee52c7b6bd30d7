"""CLI options: NATS credentials and TLS from WASMLATTICE_NATS_* variables, or from the data dir of
the `up` that started the NATS; wasmCloud variable names; listen addresses, defaults and docs a
newcomer reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from wasmlattice.cli.common import STATE_FILE, cli_nats_options


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No NATS credential variables, and `up`'s default data dir an empty one of this test's."""
    for name in ("CREDS", "JWT", "SEED", "TLS", "TLS_CA", "TLS_CERT", "TLS_KEY"):
        monkeypatch.delenv(f"WASMLATTICE_NATS_{name}", raising=False)
    monkeypatch.delenv("WASMCLOUD_NATS_CREDS", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def write_up_state(data_dir: Path, nats_url: str, creds: Path | None) -> None:
    """The state file `up` leaves in its data dir, and its credentials file."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if creds is not None:
        creds.write_text("SUAAAA\n")
    state = {"pid": 1, "nats_url": nats_url, "nats_creds": str(creds) if creds else None}
    (data_dir / STATE_FILE).write_text(json.dumps(state))


def test_plain_connection_by_default(clean_env: None) -> None:
    opts = cli_nats_options("nats://127.0.0.1:4222", 5.0)
    assert (opts.creds_file, opts.jwt, opts.seed, opts.tls_required, opts.tls_ca) == (
        None,
        None,
        None,
        False,
        None,
    )
    assert opts.connect_timeout == 2.0


def test_the_credentials_of_up_go_to_its_nats_only(clean_env: None, tmp_path: Path) -> None:
    data_dir = tmp_path / "up"
    creds = data_dir / "nats-user.nk"
    write_up_state(data_dir, "nats://127.0.0.1:4555", creds)
    # Its server, under any loopback name.
    for url in (
        "nats://127.0.0.1:4555",
        "nats://localhost:4555",
        "127.0.0.1:4555",
        "nats://a:1,nats://[::1]:4555",
    ):
        assert cli_nats_options(url, 2.0, data_dir=data_dir).creds_file == creds, url
    # Another server, or another data dir, gets nothing.
    assert cli_nats_options("nats://127.0.0.1:4556", 2.0, data_dir=data_dir).creds_file is None
    assert cli_nats_options("nats://10.0.0.1:4555", 2.0, data_dir=data_dir).creds_file is None
    assert cli_nats_options("nats://127.0.0.1:4555", 2.0, data_dir=tmp_path / "other").creds_file is None
    # The default data dir is `up`'s default.
    default = tmp_path / "xdg" / "wasmlattice"
    write_up_state(default, "nats://127.0.0.1:4222", default / "nats-user.nk")
    assert cli_nats_options("nats://127.0.0.1:4222", 2.0).creds_file == default / "nats-user.nk"


def test_up_that_joined_a_nats_has_no_credentials_to_give(clean_env: None, tmp_path: Path) -> None:
    data_dir = tmp_path / "up"
    write_up_state(data_dir, "nats://127.0.0.1:4555", None)
    (data_dir / "nats-user.nk").write_text("SUAAAA\n")  # left by an earlier `up` with its own NATS
    assert cli_nats_options("nats://127.0.0.1:4555", 2.0, data_dir=data_dir).creds_file is None


def test_explicit_credentials_win_over_those_of_up(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data_dir = tmp_path / "up"
    write_up_state(data_dir, "nats://127.0.0.1:4555", data_dir / "nats-user.nk")
    mine = tmp_path / "mine.creds"
    opts = cli_nats_options("nats://127.0.0.1:4555", 2.0, creds=mine, data_dir=data_dir)
    assert opts.creds_file == mine
    monkeypatch.setenv("WASMCLOUD_NATS_CREDS", str(mine))
    assert cli_nats_options("nats://127.0.0.1:4555", 2.0, data_dir=data_dir).creds_file == mine
    monkeypatch.delenv("WASMCLOUD_NATS_CREDS")
    monkeypatch.setenv("WASMLATTICE_NATS_SEED", "SUABC")
    opts = cli_nats_options("nats://127.0.0.1:4555", 2.0, data_dir=data_dir)
    assert (opts.creds_file, opts.seed) == (None, "SUABC")


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


# --- what a newcomer reads: addresses, values, defaults, docs ---


@pytest.mark.parametrize(
    ("listen", "needles"),
    [
        ("127.0.0.1:99999", ["99999", "1-65535"]),
        ("[::1]:65536", ["65536", "1-65535"]),
        ("127.0.0.1:0", ["port 0", "1-65535"]),
        ("nowhere", ["HOST:PORT", "'nowhere'"]),
        (":8000", ["HOST:PORT"]),
        ("127.0.0.1:८०", ["HOST:PORT"]),  # Devanagari digits: isdigit(), but not a port
    ],
)
def test_listen_addresses_outside_the_port_range_are_named(listen: str, needles: list[str]) -> None:
    from wasmlattice.host.standalone import ServeOptions, parse_host_port

    with pytest.raises(ValueError) as e:
        ServeOptions(listen=listen).host_port()
    for needle in needles:
        assert needle in str(e.value)
    assert parse_host_port("[::1]:8000") == ("::1", 8000)
    assert parse_host_port("127.0.0.1:65535") == ("127.0.0.1", 65535)


def test_call_argument_errors_show_json_not_python() -> None:
    from wasmlattice.client.values import JsonValueError, from_json
    from wasmlattice.runtime.witypes import Prim, RecordT

    record = RecordT((("name", Prim("string")), ("ok", Prim("bool"))))
    with pytest.raises(JsonValueError) as e:
        from_json(record, {"name": "a", "ok": True, "x": None}, "argument 1")
    assert '{"name": "a", "ok": true, "x": null}' in str(e.value)
    assert "True" not in str(e.value) and "None" not in str(e.value)
    with pytest.raises(JsonValueError) as e:
        from_json(Prim("u8"), "é", "argument 2")
    assert str(e.value) == 'argument 2: expected u8, got "é"'


def _command(*path: str) -> object:
    import typer.main

    from wasmlattice.cli.main import app

    cmd: object = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]  # type: ignore[attr-defined]
    return cmd


def test_up_logs_at_info_by_default() -> None:
    # `up --detach` writes its log to up.log: at `warning` a deploy left no line there.
    (level,) = [p for p in _command("up").params if p.name == "log_level"]  # type: ignore[attr-defined]
    assert level.default == "info"


def test_scale_component_keeps_the_running_count_unless_told() -> None:
    # Without --count the CLI sends each host the count it runs with (`current_counts`): a scale
    # that only adds `--config SECRET_x` must not reset it to 1.
    (count,) = [p for p in _command("scale", "component").params if p.name == "count"]  # type: ignore[attr-defined]
    assert count.default is None and count.required is False


def test_the_app_commands_the_docs_list_exist_and_are_described_truly() -> None:
    import re

    docs = (Path(__file__).parents[2] / "docs" / "apps.md").read_text()
    rows = re.findall(r"^\| `app ([a-z-]+).*?` \| (.*) \|$", docs, flags=re.M)
    assert len(rows) >= 8, rows
    commands = _command("app").commands  # type: ignore[attr-defined]
    for name, does in rows:
        assert name in commands, f"docs/apps.md lists `app {name}`, which the CLI does not have"
        assert "not supported" not in does, f"docs/apps.md says `app {name}` is not supported; it is"


def _all_commands() -> list[list[str]]:
    """Every `wasmlattice` command path (`["scale", "component"]`, ...), groups included."""
    import typer.main

    from wasmlattice.cli.main import app

    def walk(cmd: Any, path: list[str]) -> list[list[str]]:
        out = [path]
        for name, sub in getattr(cmd, "commands", {}).items():
            out += walk(sub, [*path, name])
        return out

    return walk(typer.main.get_command(app), [])


def test_help_is_plain_and_fits_80_columns() -> None:
    from typer.testing import CliRunner

    from wasmlattice.cli.main import app

    paths = _all_commands()
    assert ["scale", "component"] in paths and ["up"] in paths
    for path in paths:
        r = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
        where = f"wasmlattice {' '.join(path)} --help"
        assert r.exit_code == 0, (where, r.output)
        # Flags take no value: a type after one (`--no-wait <bool>`) reads as if it took one, and
        # a repeatable option takes one value each time, not a `<list[str]>`.
        options = [line for line in r.output.splitlines() if line.lstrip().startswith("-")]
        assert not [line for line in options if "<bool>" in line or "<list[" in line], (where, r.output)
        assert not any(c in r.output for c in "╭│╰"), (where, r.output)  # no Rich panels
        long = [line for line in r.output.splitlines() if len(line) > 80]
        assert not long, (where, long)
