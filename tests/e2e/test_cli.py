"""The `wasmlattice` command as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.cli import cli
from wasmlattice import __version__

# Each test runs the CLI as a subprocess: a second or more.
pytestmark = pytest.mark.slow


def test_version() -> None:
    r = cli("version")
    assert r.returncode == 0
    assert r.stdout.strip() == __version__


def test_inspect_lists_imports_and_exports_with_versions(http_echo_wasm: Path) -> None:
    r = cli("inspect", str(http_echo_wasm), "--output", "json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    imports = {i["name"]: i for i in doc["imports"]}
    exports = {e["name"] for e in doc["exports"]}
    assert any(n.startswith("wasi:http/types@0.2.") for n in imports)
    assert any(n.startswith("wasi:http/incoming-handler@0.2.") for n in exports)
    types = next(v for k, v in imports.items() if k.startswith("wasi:http/types@"))
    assert "[static]response-outparam.set" in types["functions"]
    text = cli("inspect", str(http_echo_wasm))
    assert text.returncode == 0
    assert "imports:" in text.stdout and "exports:" in text.stdout


def test_inspect_refuses_a_non_component(tmp_path: Path) -> None:
    f = tmp_path / "x.wasm"
    f.write_bytes(b"\0asm\x01\0\0\0")
    r = cli("inspect", str(f))
    assert r.returncode == 2
    assert "is a core WebAssembly module, not a component" in r.stderr


def test_run_refuses_bad_arguments_with_the_option_named(http_echo_wasm: Path) -> None:
    r = cli("run", str(http_echo_wasm), "--listen", "nowhere")
    assert r.returncode != 0
    assert "--listen" in r.stderr and "HOST:PORT" in r.stderr
    r = cli("run", str(http_echo_wasm), "--env", "NOEQUALS")
    assert r.returncode != 0
    assert "KEY=VALUE" in r.stderr
    r = cli("run", str(http_echo_wasm), "--max-memory", "lots")
    assert r.returncode != 0
    assert "64MiB" in r.stderr
    r = cli("run", str(Path("/nonexistent/app.wasm")))
    assert r.returncode == 2
    assert "does not exist" in r.stderr


@pytest.mark.parametrize("listen", ["127.0.0.1:99999", "[::1]:70000", "127.0.0.1:0"])
def test_run_refuses_a_port_out_of_range_without_a_traceback(http_echo_wasm: Path, listen: str) -> None:
    r = cli("run", str(http_echo_wasm), "--listen", listen)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert "--listen" in r.stderr and listen in r.stderr and "1-65535" in r.stderr


def test_run_refuses_a_host_it_cannot_encode_without_a_traceback(http_echo_wasm: Path) -> None:
    listen = "ü" * 70 + ".example:8000"  # a label IDNA cannot encode: `bind` raises TypeError
    r = cli("run", str(http_echo_wasm), "--listen", listen)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and f"cannot listen on {listen}" in r.stderr


def test_run_refuses_a_port_another_process_listens_on(http_echo_wasm: Path) -> None:
    import socket

    # With SO_REUSEPORT alone the kernel would split requests between us and the stranger at random.
    with socket.socket() as stranger:
        stranger.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        stranger.bind(("127.0.0.1", 0))
        stranger.listen()
        listen = f"127.0.0.1:{stranger.getsockname()[1]}"
        r = cli("run", str(http_echo_wasm), "--listen", listen)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert f"cannot listen on {listen}: another process already listens there" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_call_errors_are_one_text_line_or_json() -> None:
    nowhere = ("--nats-url", "nats://127.0.0.1:1", "--timeout", "1")
    cases = [
        (("echo", "judge"), "is not ns:pkg/interface.function"),
        (("echo", "test:chain/judge.slow", "five"), "a string needs JSON quotes: '\"five\"'"),
        (("echo", "test:chain/judge.slow", "1", *nowhere), "cannot reach NATS"),
    ]
    for args, needle in cases:
        text = cli("call", *args)
        assert text.returncode == 1, (text.stdout, text.stderr)
        assert text.stdout == "" and text.stderr.startswith("error: ") and needle in text.stderr
        assert text.stderr.strip().count("\n") == 0 and "Traceback" not in text.stderr
        js = cli("call", *args, "-o", "json")
        assert js.returncode == 1, (js.stdout, js.stderr)
        doc = json.loads(js.stdout)
        assert doc["success"] is False and needle in doc["error"], doc
