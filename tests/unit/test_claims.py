"""Component claims: nkeys, the JWT layout (golden), custom sections, the module hash, validation.

The layout is wascap's (docs/claims.md), pinned byte for byte: header and claims JSON with their key
order, base64url without padding, an Ed25519 signature that the `nkeys` package verifies.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time

import nkeys
import pytest

from tests.support.components import WAT_DIR, parse_wat
from wasmlattice.artifacts import claims as cl
from wasmlattice.artifacts import nkey
from wasmlattice.artifacts import wasm_sections as ws
from wasmlattice.capabilities.secrets import SecretDecryptError, SecretGrants
from wasmlattice.protocol.state import claims_map

# Fixed keys (made from the bytes 0..31 and 32..63) so that the JWT below is reproducible.
ACCOUNT_SEED = "SAAAAAICAMCAKBQHBAEQUCYMBUHA6EARCIJRIFIWC4MBSGQ3DQOR4HYMHI"
ACCOUNT = "AAB2CB576PHBBPQ5ODORRZ2LYCMWPZGWGCN2KDK7DXOIMZASKUY3QPZV"
MODULE_SEED = "SMACAIJCEMSCKJRHFAUSUKZMFUXC6MBRGIZTINJWG44DSOR3HQ6T4P5C3E"
MODULE = "MAU2ZOXBIG6MV4FSFYNJJU2NBPDTMHSSNUF74EWIS6KLZEZCSZW5PMMJ"

GOLDEN_HEADER = b'{"typ":"jwt","alg":"Ed25519"}'
GOLDEN_CLAIMS = (
    '{"exp":1900000000,"jti":"8Zt3Xq1YbC2dE4fG5hJ6kL","iat":1700000000,'
    f'"iss":"{ACCOUNT}","sub":"{MODULE}","nbf":1700000000,'
    '"wascap":{"name":"Echo","hash":"' + "AB" * 32 + '","tags":["a","b"],"rev":7,"ver":"1.2.3",'
    '"call_alias":"echo","prov":false},"wascap_revision":3}'
).encode()
HS256_HEADER = b'{"typ":"jwt","alg":"HS256"}'
NUMERIC_JTI = b'{"jti":1}'
GOLDEN_SIGNATURE = "o83ZizGqpfdNis-rtRkjlCHHsCBrxT7YUyCBHOtqn8F_Tr_8nO3iWDc4zK3XEb4za35EmdKJ9B6hol2kwhy7CQ"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def golden_claims() -> cl.JwtClaims:
    return cl.JwtClaims(
        exp=1900000000,
        jti="8Zt3Xq1YbC2dE4fG5hJ6kL",
        iat=1700000000,
        iss=ACCOUNT,
        sub=MODULE,
        nbf=1700000000,
        wascap=cl.ComponentMetadata(
            name="Echo", hash="AB" * 32, tags=["a", "b"], rev=7, ver="1.2.3", call_alias="echo"
        ),
        wascap_revision=3,
    )


@pytest.fixture(scope="module")
def component(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A small real component (a nested core module) assembled by wasm-tools."""
    out = tmp_path_factory.mktemp("wat") / "no_export.wasm"
    return parse_wat(WAT_DIR / "no_export.wat", out).read_bytes()


def sign(wasm: bytes, **kw: object) -> bytes:
    account = nkey.from_seed(ACCOUNT_SEED)
    claims = cl.new_claims(issuer=ACCOUNT, subject=MODULE, name="t", module_hash="", **kw)  # type: ignore[arg-type]
    return cl.sign_component(wasm, claims, account)


# -- keys --------------------------------------------------------------------------------------


def test_fixed_keys_and_nkeys_interop() -> None:
    account = nkey.from_seed(ACCOUNT_SEED, nkey.KeyKind.ACCOUNT)
    assert account.public_key == ACCOUNT
    # An account seed of ours is an ordinary nkeys seed.
    assert nkeys.from_seed(ACCOUNT_SEED.encode()).public_key.decode() == ACCOUNT
    module = nkey.from_seed(MODULE_SEED)
    assert (module.kind, module.public_key) == (nkey.KeyKind.MODULE, MODULE)


def test_generated_keys_have_their_prefixes() -> None:
    a, m = nkey.generate(nkey.KeyKind.ACCOUNT), nkey.generate(nkey.KeyKind.MODULE)
    assert a.seed.startswith("SA") and a.public_key.startswith("A") and len(a.public_key) == 56
    assert m.seed.startswith("SM") and m.public_key.startswith("M") and len(m.seed) == 58
    assert nkeys.from_seed(a.seed.encode()).public_key.decode() == a.public_key
    assert nkey.from_seed(m.seed).public_key == m.public_key
    assert "S" not in repr(m).split("(")[1][:2]  # the seed never shows in repr


def test_bad_keys_are_named() -> None:
    with pytest.raises(nkey.NkeyError, match="module seed"):
        nkey.from_seed(ACCOUNT_SEED, nkey.KeyKind.MODULE)
    typo = ACCOUNT_SEED[:10] + ("B" if ACCOUNT_SEED[10] != "B" else "C") + ACCOUNT_SEED[11:]
    with pytest.raises(nkey.NkeyError, match="checksum"):
        nkey.from_seed(typo)
    with pytest.raises(nkey.NkeyError, match="58 characters"):
        nkey.from_seed("SAshort")
    with pytest.raises(nkey.NkeyError, match="account public key"):
        nkey.check_public_key(MODULE, nkey.KeyKind.ACCOUNT)
    assert nkey.is_public_key(MODULE, nkey.KeyKind.MODULE)
    assert not nkey.is_public_key(MODULE[:-1] + "A", nkey.KeyKind.MODULE)


# -- the JWT -----------------------------------------------------------------------------------


def test_golden_jwt_layout() -> None:
    jwt = cl.encode_jwt(golden_claims(), nkey.from_seed(ACCOUNT_SEED))
    assert jwt == f"{b64(GOLDEN_HEADER)}.{b64(GOLDEN_CLAIMS)}.{GOLDEN_SIGNATURE}"
    assert "=" not in jwt
    header, claims, sig = jwt.split(".")
    raw_sig = base64.urlsafe_b64decode(sig + "==")
    assert len(raw_sig) == 64
    # The signature is the issuer's over `header.claims`, verifiable by the nkeys package.
    assert nkeys.from_seed(ACCOUNT_SEED.encode()).verify(f"{header}.{claims}".encode(), raw_sig)
    decoded = cl.decode_jwt(jwt)
    assert decoded.claims == golden_claims() and decoded.signature_valid()


def test_optional_claims_are_omitted() -> None:
    claims = cl.JwtClaims(jti="x", iat=1, iss=ACCOUNT, sub=MODULE, wascap=cl.ComponentMetadata(hash="H"))
    assert (
        claims.to_wire()
        == (
            f'{{"jti":"x","iat":1,"iss":"{ACCOUNT}","sub":"{MODULE}","wascap":{{"hash":"H","prov":false}}}}'
        ).encode()
    )


def test_new_claims_are_wascap_revision_3_with_a_normalized_alias() -> None:
    c = cl.new_claims(
        issuer=ACCOUNT, subject=MODULE, name="n", module_hash="", call_alias="My Echo-App.v1", tags=["x"]
    )
    assert c.wascap_revision == 3 and c.wascap is not None
    assert c.wascap.call_alias == "my_echo_app_v1" and c.wascap.prov is False
    assert len(c.jti) == 22 and abs(c.iat - time.time()) < 60
    with pytest.raises(cl.ClaimsError, match="account public key"):
        cl.new_claims(issuer=MODULE, subject=MODULE, name="n", module_hash="")


@pytest.mark.parametrize(
    ("jwt", "reason"),
    [
        ("a.b", "2 segments"),
        (f"{b64(b'{}')}.{b64(GOLDEN_CLAIMS)}.AA", "missing required field 'typ'"),
        (f"{b64(HS256_HEADER)}.{b64(GOLDEN_CLAIMS)}.AA", "alg='HS256'"),
        (f"{b64(GOLDEN_HEADER)}.{b64(NUMERIC_JTI)}.AA", "jti"),
        (f"{b64(GOLDEN_HEADER)}.{b64(GOLDEN_CLAIMS)}.AA==", "without padding"),
        (f"{b64(GOLDEN_HEADER)}.!!.AA", "not base64url"),
        ("x" * (cl.MAX_JWT_BYTES + 1), "at most"),
    ],
)
def test_malformed_jwts_are_named(jwt: str, reason: str) -> None:
    with pytest.raises(cl.ClaimsError, match=reason):
        cl.decode_jwt(jwt)


# -- sections and the module hash --------------------------------------------------------------


def padded(value: int) -> bytes:
    """A 5-byte (non-minimal) LEB128, as wasm-ld writes section sizes."""
    out = bytearray()
    for _ in range(4):
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


def test_hash_reencodes_nested_modules_and_drops_jwt_sections_at_every_depth() -> None:
    type_section = b"\x01\x60\x00\x00"  # one type: () -> ()
    inner_jwt = ws.custom_section("jwt", b"old")
    nested = ws.MODULE_HEADER + b"\x01" + padded(len(type_section)) + type_section + inner_jwt
    component = ws.COMPONENT_HEADER + b"\x01" + ws.encode_u32(len(nested)) + nested
    signed = component + ws.custom_section("wasmcloud_jwt", b"a.b.c")
    canonical_nested = ws.MODULE_HEADER + b"\x01\x04" + type_section
    expected = ws.COMPONENT_HEADER + b"\x01" + bytes([len(canonical_nested)]) + canonical_nested
    assert ws.canonical_without(signed, cl.JWT_SECTIONS) == expected
    assert cl.module_hash(signed) == hashlib.sha256(expected).hexdigest().upper()
    # Only top-level sections are read as the component's JWT.
    assert ws.custom_sections(signed, cl.JWT_SECTIONS) == [("wasmcloud_jwt", b"a.b.c")]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x7fELF\x02\x01\x01\x00", "no WebAssembly preamble"),
        (ws.MODULE_HEADER + b"\x01\x05\x00", "claims 5 bytes, but only 1 remain"),
        (ws.MODULE_HEADER + b"\x01\x80\x80\x80\x80\x80\x00", "longer than 5 bytes"),
        (ws.MODULE_HEADER + b"\x00\x03\x7f\x00\x00", "name overruns"),
        (ws.WASM_MAGIC + b"\x0d\x00\x02\x00", "unknown WebAssembly layer"),
    ],
)
def test_misframed_binaries_are_named(data: bytes, reason: str) -> None:
    with pytest.raises(ws.WasmFormatError, match=reason):
        ws.canonical_without(data, cl.JWT_SECTIONS)
    with pytest.raises(cl.ClaimsError, match=reason):
        cl.embedded_jwt(data)


def test_nesting_is_bounded() -> None:
    binary = ws.COMPONENT_HEADER
    for _ in range(ws.MAX_NESTING + 2):
        binary = ws.COMPONENT_HEADER + b"\x04" + ws.encode_u32(len(binary)) + binary
    with pytest.raises(ws.WasmFormatError, match="nested more than"):
        ws.canonical_without(binary, cl.JWT_SECTIONS)


# -- signing and validation --------------------------------------------------------------------


def test_sign_validate_round_trip(component: bytes) -> None:
    signed = sign(component, version="0.1.0", revision=4, tags=["x", "y"])
    claims = cl.validate(signed)
    assert claims is not None
    assert (claims.issuer, claims.subject, claims.name, claims.revision) == (ACCOUNT, MODULE, "t", 4)
    assert claims.metadata is not None and claims.metadata.hash == cl.module_hash(component)
    # The signature is the last section; everything before it is the unsigned component's bytes
    # (this one has minimal sizes already, so re-encoding changes nothing).
    assert signed.startswith(component)
    assert cl.validate(component) is None


def test_resigning_replaces_every_jwt_section(component: bytes) -> None:
    legacy = component + ws.custom_section("jwt", b"legacy.jwt.here")
    again = sign(sign(legacy), revision=2)
    assert [name for name, _ in ws.custom_sections(again, cl.JWT_SECTIONS)] == ["wasmcloud_jwt"]
    claims = cl.validate(again)
    assert claims is not None and claims.revision == 2


def test_legacy_section_name_is_read(component: bytes) -> None:
    signed = sign(component)
    found = cl.embedded_jwt(signed)
    assert found is not None
    legacy = component + ws.custom_section("jwt", found[1].encode())
    claims = cl.validate(legacy)
    assert claims is not None and claims.subject == MODULE


def with_jwt(component: bytes, jwt: str) -> bytes:
    return component + ws.custom_section(cl.JWT_SECTION, jwt.encode())


def test_refusals_name_their_reason(component: bytes) -> None:
    now = int(time.time())
    with pytest.raises(cl.ClaimsError, match="expired at"):
        cl.validate(sign(component, expires=now - 3600))
    with pytest.raises(cl.ClaimsError, match="not valid before"):
        cl.validate(sign(component, not_before=now + 3600))
    # Still valid at its last second, and from its first.
    assert cl.validate(sign(component, expires=now + 5, not_before=now - 5)) is not None

    signed = sign(component)
    jwt = cl.embedded_jwt(signed)
    assert jwt is not None
    head, body, sig = jwt[1].split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=="))
    raw[10] ^= 0x01
    with pytest.raises(cl.ClaimsError, match="signature is not valid"):
        cl.validate(with_jwt(component, f"{head}.{body}.{b64(bytes(raw))}"))

    tampered = bytearray(signed)
    add = component.index(b"\x6a")  # the i32.add opcode in the nested module's code
    tampered[add] = 0x6B  # i32.sub
    with pytest.raises(cl.ClaimsError, match="module hash mismatch"):
        cl.validate(bytes(tampered))

    with pytest.raises(cl.ClaimsError, match="2 JWT sections"):
        cl.validate(signed + ws.custom_section("jwt", b"x.y.z"))

    account = nkey.from_seed(ACCOUNT_SEED)
    bare = cl.JwtClaims(jti="j", iat=now, iss=ACCOUNT, sub=MODULE, wascap_revision=3)
    with pytest.raises(cl.ClaimsError, match="no wascap metadata"):
        cl.validate(with_jwt(component, cl.encode_jwt(bare, account)))
    old = bare.model_copy(
        update={"wascap": cl.ComponentMetadata(hash=cl.module_hash(component)), "wascap_revision": 2}
    )
    with pytest.raises(cl.ClaimsError, match="wascap revision 2"):
        cl.validate(with_jwt(component, cl.encode_jwt(old, account)))
    named = bare.model_copy(update={"sub": "test.wasm", "wascap": old.wascap})
    with pytest.raises(cl.ClaimsError, match="subject is not a module key"):
        cl.validate(with_jwt(component, cl.encode_jwt(named, account)))


def test_allowed_issuers(component: bytes) -> None:
    signed = sign(component)
    assert cl.ClaimsPolicy().check(component) is None
    assert cl.ClaimsPolicy.of([ACCOUNT]).check(signed) is not None
    other = nkey.generate(nkey.KeyKind.ACCOUNT).public_key
    with pytest.raises(cl.ClaimsError, match=f"issuer {ACCOUNT} is not allowed"):
        cl.ClaimsPolicy.of([other]).check(signed)
    with pytest.raises(cl.ClaimsError, match="not signed"):
        cl.ClaimsPolicy.of([ACCOUNT]).check(component)
    with pytest.raises(cl.ClaimsError, match="allowed issuer"):
        cl.ClaimsPolicy.of([MODULE])


def test_inspection_reports_every_check(component: bytes) -> None:
    found = cl.inspect(sign(component, expires=int(time.time()) - 10))
    assert found is not None
    assert found.signature_valid and found.hash_valid and found.expired and not found.not_yet_valid
    assert found.section == "wasmcloud_jwt"
    assert [p.split(" at ")[0] for p in found.problems()] == ["the claims expired"]


# -- what the lattice sees ---------------------------------------------------------------------


def test_stored_event_and_policy_shapes() -> None:
    claims = cl.ComponentClaims(golden_claims(), "jwt")
    stored = claims.stored()
    assert (
        stored.to_wire()
        == (
            f'{{"call_alias":"echo","issuer":"{ACCOUNT}","name":"Echo","revision":"7",'
            f'"subject":"{MODULE}","tags":["a","b"],"version":"1.2.3"}}'
        ).encode()
    )
    assert claims_map(stored.to_json_obj()) == {
        "call_alias": "echo",
        "iss": ACCOUNT,
        "issuer": ACCOUNT,
        "name": "Echo",
        "rev": "7",
        "revision": "7",
        "sub": MODULE,
        "subject": MODULE,
        "tags": "a,b",
        "version": "1.2.3",
    }
    assert claims.event_claims().to_json_obj() == {
        "issuer": ACCOUNT,
        "call_alias": "echo",
        "tags": ["a", "b"],
        "name": "Echo",
        "version": "1.2.3",
        "revision": 7,
        "not_before_human": "1700000000",
        "expires_human": "1900000000",
    }
    assert claims.policy_claims(now=1800000000) == {
        "publicKey": MODULE,
        "issuer": ACCOUNT,
        "issuedAt": "1700000000",
        "expiresAt": 1900000000,
        "expired": False,
    }
    assert claims.policy_claims(now=1900000001)["expired"] is True
    # No `rev`/`ver`/`call_alias`: empty strings and "0" in KV, as the v1 host stores them.
    plain = cl.ComponentClaims(
        golden_claims().model_copy(update={"wascap": cl.ComponentMetadata(hash="H")}), "jwt"
    )
    assert json.loads(plain.stored().to_wire()) == {
        "call_alias": "",
        "issuer": ACCOUNT,
        "name": "",
        "revision": "0",
        "subject": MODULE,
        "tags": [],
        "version": "",
    }


# -- secrets granted by signing key ------------------------------------------------------------


def test_secret_grants_by_signing_key() -> None:
    grants = SecretGrants.of(["web", MODULE])
    assert grants.components == {"web"} and grants.signers == {MODULE}
    assert grants.allows("web") and grants.allows("other", MODULE)
    # A component whose ID is the key, but unsigned (no verified subject), is not granted.
    assert not grants.allows(MODULE) and not grants.allows("other", None)
    assert grants.encode() == f'{{"components":["web"],"signers":["{MODULE}"]}}'.encode()
    assert SecretGrants.decode(grants.encode()) == grants
    # Entries without keys keep the exact bytes older hosts sealed.
    assert SecretGrants.of(["web"]).encode() == b'{"components":["web"]}'
    with pytest.raises(SecretDecryptError):
        SecretGrants.decode(b'{"components":[],"signers":["not-a-key"]}')


def test_fixture_component_is_a_component(component: bytes) -> None:
    assert ws.binary_kind(component) == "component"
