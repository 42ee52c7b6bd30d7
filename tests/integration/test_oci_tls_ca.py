"""`--tls-ca-path`: a registry serving HTTPS with a certificate from a private CA is refused with a
certificate error, and pulled once the CA is passed (the system's CAs stay trusted too)."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.registry import registry_server
from wasmlattice.artifacts.oci import OciClient, registry_ssl_context
from wasmlattice.artifacts.push import push_component, wasm_config
from wasmlattice.artifacts.reference import parse_oci_ref
from wasmlattice.artifacts.source import ArtifactError

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def make_ca_and_server_cert(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate for 127.0.0.1 it signed: (ca.pem, server.pem, server-key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "wasmlattice test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem, cert_pem, key_pem = directory / "ca.pem", directory / "server.pem", directory / "server-key.pem"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return ca_pem, cert_pem, key_pem


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "DOCKER_CONFIG": str(cwd / "docker")}
    env["WASMLATTICE_ARTIFACT_CACHE_DIR"] = str(cwd / "cache")
    env.pop("WASMCLOUD_TLS_CA_PATH", None)
    return subprocess.run(
        [sys.executable, "-m", "wasmlattice.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=60,
    )


async def test_pull_from_a_registry_with_a_private_ca(tmp_path: Path) -> None:
    ca, cert, key = make_ca_and_server_cert(tmp_path)
    data = b"\0asm\x01\x00\x00\x00" + os.urandom(3 << 20)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    with registry_server(tmp_path / "registry", tls=(cert, key)) as reg:
        ref = f"{reg.host}/test/tls:1.0"
        async with OciClient(ssl_context=registry_ssl_context([ca])) as client:
            await push_component(client, parse_oci_ref(ref), data, wasm_config(data))

        # Without the CA: refused, saying it is the certificate and which flag helps.
        out = cli("pull", ref, "-o", "no-ca.wasm", cwd=tmp_path)
        assert out.returncode != 0
        assert f"TLS certificate of registry {reg.host} was not accepted" in out.stderr
        assert "certificate verify failed" in out.stderr and "--tls-ca-path" in out.stderr
        assert not (tmp_path / "no-ca.wasm").exists()

        # With it: pulled and checked against its digest.
        out = cli("pull", ref, "-o", "with-ca.wasm", "--tls-ca-path", str(ca), cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert digest in out.stdout and (tmp_path / "with-ca.wasm").read_bytes() == data

        # A CA file that is missing, or not PEM: a usage error naming the flag and the file.
        out = cli("pull", ref, "--tls-ca-path", str(tmp_path / "missing.pem"), cwd=tmp_path)
        assert out.returncode == 2 and f"--tls-ca-path {tmp_path / 'missing.pem'}: no such file" in out.stderr
        (tmp_path / "junk.pem").write_text("not a certificate\n")
        out = cli("pull", ref, "--tls-ca-path", str(tmp_path / "junk.pem"), cwd=tmp_path)
        assert out.returncode == 2 and f"--tls-ca-path {tmp_path / 'junk.pem'}: not a PEM file" in out.stderr

    with pytest.raises(ArtifactError, match=r"--tls-ca-path .*missing\.pem: cannot read the CA file"):
        registry_ssl_context([tmp_path / "missing.pem"])


def test_a_host_refuses_to_start_with_a_bad_ca_file(tmp_path: Path) -> None:
    """The host checks `--tls-ca-path` before it connects anywhere: exit 2 naming the flag and file."""
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    for name, why in (("missing.pem", "no such file"), ("junk.pem", "not a PEM file")):
        # Port 1 on loopback: nothing answers there, so only the check can end the command at once.
        out = cli(
            "host", "--nats-url", "nats://127.0.0.1:1", "--tls-ca-path", str(tmp_path / name), cwd=tmp_path
        )
        assert out.returncode == 2, (out.returncode, out.stderr)
        assert f"--tls-ca-path {tmp_path / name}: {why}" in out.stderr, out.stderr
