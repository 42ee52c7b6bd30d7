"""`wasmlattice keys gen` and `claims sign` / `claims inspect` as a user runs them (subprocesses)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import nkeys
import pytest

from tests.support.cli import cli, cli_ok
from tests.support.components import WAT_DIR, parse_wat
from wasmlattice.artifacts import claims as cl

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def component(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return parse_wat(WAT_DIR / "no_export.wat", tmp_path_factory.mktemp("wat") / "adder.wasm")


def test_keys_gen_writes_private_seeds_and_never_overwrites(tmp_path: Path) -> None:
    seed_file = tmp_path / "issuer.nk"
    out = cli_ok("keys", "gen", "account", "-o", str(seed_file), "--json")
    shown = json.loads(out.stdout)
    seed = seed_file.read_text().strip()
    assert stat.S_IMODE(os.stat(seed_file).st_mode) == 0o600
    assert seed.startswith("SA") and seed not in out.stdout
    assert nkeys.from_seed(seed.encode()).public_key.decode() == shown["public_key"]

    again = cli("keys", "gen", "account", "-o", str(seed_file))
    assert again.returncode == 1 and "already exists" in again.stderr
    assert seed_file.read_text().strip() == seed
    forced = cli_ok("keys", "gen", "component", "-o", str(seed_file), "--force")
    assert seed_file.read_text().startswith("SM") and "Public key: M" in forced.stdout

    printed = cli_ok("keys", "gen", "component").stdout
    assert "Public key: M" in printed and "Seed:       SM" in printed


def test_sign_inspect_round_trip(component: Path, tmp_path: Path) -> None:
    issuer = tmp_path / "issuer.nk"
    account = json.loads(cli_ok("keys", "gen", "account", "-o", str(issuer), "--json").stdout)["public_key"]
    out = tmp_path / "adder_s.wasm"
    signed = cli_ok(
        "claims", "sign", str(component), "--issuer", str(issuer), "--name", "Adder", "--ver", "0.2.0",
        "--rev", "2", "--tag", "math", "--tag", "demo", "--expires", "30d", "-o", str(out), "--json",
    )  # fmt: skip
    result = json.loads(signed.stdout)
    subject_seed = Path(result["subject_seed_file"])
    assert subject_seed == tmp_path / "adder_s.module.nk"
    assert stat.S_IMODE(os.stat(subject_seed).st_mode) == 0o600
    assert result["issuer"] == account and result["subject"].startswith("M")

    shown = json.loads(cli_ok("claims", "inspect", str(out), "--json").stdout)
    assert shown["valid"] and shown["signature_valid"] and shown["hash_valid"]
    assert (shown["issuer"], shown["subject"]) == (account, result["subject"])
    assert (shown["name"], shown["version"], shown["revision"]) == ("Adder", "0.2.0", 2)
    assert shown["tags"] == ["math", "demo"] and shown["section"] == "wasmcloud_jwt"
    assert 29 * 86400 < shown["expires"] - shown["issued_at"] <= 30 * 86400
    assert shown["hash"] == cl.module_hash(component.read_bytes())
    text = cli_ok("claims", "inspect", str(out)).stdout
    assert "Signature:   valid" in text and "Name:        Adder" in text

    # Re-signing with the same subject seed keeps the identity and replaces the signature.
    resigned = tmp_path / "adder_s2.wasm"
    cli_ok(
        "claims", "sign", str(out), "-i", str(issuer), "-s", str(subject_seed), "-n", "Adder", "--rev", "3",
        "-o", str(resigned),
    )  # fmt: skip
    again = json.loads(cli_ok("claims", "inspect", str(resigned), "--json").stdout)
    assert again["subject"] == result["subject"] and again["revision"] == 3 and again["valid"]

    # A changed byte of code: inspect says so and exits 1.
    data = bytearray(out.read_bytes())
    data[component.read_bytes().index(b"\x6a")] = 0x6B
    tampered = tmp_path / "tampered.wasm"
    tampered.write_bytes(bytes(data))
    bad = cli("claims", "inspect", str(tampered))
    assert (
        bad.returncode == 1 and "Hash:        INVALID" in bad.stdout and "module hash mismatch" in bad.stdout
    )

    unsigned = cli("claims", "inspect", str(component))
    assert unsigned.returncode == 1 and "not signed" in unsigned.stdout


def test_sign_refuses_bad_input(component: Path, tmp_path: Path) -> None:
    module_seed = tmp_path / "m.nk"
    cli_ok("keys", "gen", "component", "-o", str(module_seed))
    out = str(tmp_path / "x.wasm")
    wrong = cli("claims", "sign", str(component), "-i", str(module_seed), "-n", "x", "-o", out)
    assert wrong.returncode == 2 and "--issuer" in wrong.stderr and "account seed" in wrong.stderr
    missing = cli("claims", "sign", str(component), "-i", str(tmp_path / "nope"), "-n", "x", "-o", out)
    assert missing.returncode == 2 and "neither a seed" in missing.stderr
    issuer = tmp_path / "a.nk"
    cli_ok("keys", "gen", "account", "-o", str(issuer))
    bad_date = cli(
        "claims", "sign", str(component), "-i", str(issuer), "-n", "x", "-o", out, "--expires", "soon"
    )
    assert bad_date.returncode == 2 and "--expires" in bad_date.stderr
    not_wasm = tmp_path / "notes.txt"
    not_wasm.write_text("hello")
    refused = cli("claims", "sign", str(not_wasm), "-i", str(issuer), "-n", "x", "-o", out)
    assert refused.returncode == 1 and "no WebAssembly preamble" in refused.stderr
    assert not Path(out).exists()
