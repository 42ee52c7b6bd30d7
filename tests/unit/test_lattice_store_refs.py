"""`lattice://` references, digests and bucket names of the lattice artifact store (no server needed)."""

from __future__ import annotations

import json

import pytest

from wasmlattice.artifacts.lattice_store import (
    MAX_BUCKET_LEN,
    StoredArtifact,
    blob_bucket,
    check_digest,
    digest_of,
    is_lattice_ref,
    parse_lattice_ref,
    tag_bucket,
)
from wasmlattice.artifacts.source import ArtifactError

HEX = "ab" * 32
DIGEST = f"sha256:{HEX}"


@pytest.mark.parametrize(
    ("ref", "name", "tag", "digest", "latest"),
    [
        ("lattice://hello", "hello", None, None, True),
        ("lattice://hello:latest", "hello", "latest", None, True),
        ("lattice://hello:1.0", "hello", "1.0", None, False),
        ("lattice://team/hello-world:v1_2", "team/hello-world", "v1_2", None, False),
        (f"lattice://hello@{DIGEST}", "hello", None, DIGEST, False),
        (f"lattice://hello:latest@{DIGEST}", "hello", "latest", DIGEST, False),
        ("lattice://a.b__c--d/e:_x-Y.9", "a.b__c--d/e", "_x-Y.9", None, False),
    ],
)
def test_parse_good_refs(ref: str, name: str, tag: str | None, digest: str | None, latest: bool) -> None:
    parsed = parse_lattice_ref(ref)
    assert (parsed.name, parsed.tag, parsed.digest) == (name, tag, digest)
    assert parsed.is_latest is latest
    assert str(parsed) == ref  # the canonical form is the input
    assert parsed.effective_tag == (tag or "latest")
    assert parsed.key == f"{name}={tag or 'latest'}"


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("oci://hello:1.0", "not a lattice:// reference"),
        ("lattice://", "artifact name is empty"),
        ("lattice://:1.0", "artifact name is empty"),
        ("lattice://Hello:1.0", "artifact name 'Hello': use lower-case letters"),
        ("lattice://hello/:1.0", "artifact name 'hello/'"),
        ("lattice://-hello", "artifact name '-hello'"),
        ("lattice://he llo", "artifact name 'he llo'"),
        ("lattice://hello=x:1", "artifact name 'hello=x'"),
        ("lattice://" + "a" * 256, "artifact name is longer than 255 characters"),
        ("lattice://hello:", "tag is empty"),
        ("lattice://hello:.1", "tag '.1': use letters"),
        ("lattice://hello:1..0", "tag '1..0': no '..'"),
        ("lattice://hello:1.", "no trailing '.'"),
        ("lattice://hello:a/b", "artifact name 'hello:a/b'"),
        ("lattice://hello:" + "1" * 129, "tag is longer than 128 characters"),
        ("lattice://hello@", "expected 'sha256:' and 64 hex digits"),
        ("lattice://hello@md5:abc", "unsupported algorithm 'md5'; use sha256"),
        ("lattice://hello@sha256:abc", "expected 64 hex digits after 'sha256:', got 3"),
        (f"lattice://hello@sha256:{HEX.upper()}", "only lower-case hex digits"),
        (f"lattice://hello@{DIGEST}@{DIGEST}", "expected 64 hex digits after 'sha256:', got 136"),
        ("lattice://hello\x00:1", "control character U+0000"),
        ("lattice://" + "a" * 5000, "longer than 4096 characters"),
    ],
)
def test_parse_bad_refs(ref: str, message: str) -> None:
    with pytest.raises(ArtifactError, match=None) as err:
        parse_lattice_ref(ref)
    assert message in str(err.value)


def test_error_names_the_reference() -> None:
    with pytest.raises(ArtifactError) as err:
        parse_lattice_ref("lattice://hello:1..0")
    expected = "tag '1..0': no '..' and no trailing '.' (it becomes part of a NATS subject)"
    assert str(err.value) == f"'lattice://hello:1..0': {expected}"


def test_scheme_and_digests() -> None:
    assert is_lattice_ref("lattice://x") and not is_lattice_ref("oci://x") and not is_lattice_ref("x")
    assert digest_of(b"") == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert check_digest(DIGEST) == DIGEST
    with pytest.raises(ArtifactError, match="expected 'sha256:'"):
        check_digest(HEX)


def test_bucket_names() -> None:
    assert blob_bucket("default") == "ARTIFACTS_default"
    assert tag_bucket("my-lattice_2") == "ARTIFACTTAGS_my-lattice_2"
    # Lattice names the host accepts but bucket names cannot hold get a hashed, still distinct name.
    odd = blob_bucket("team/a=b")
    assert odd.startswith("ARTIFACTS-team-a-b-") and len(odd) == len("ARTIFACTS-team-a-b-") + 32
    assert blob_bucket("team/a=b") != blob_bucket("team=a/b")
    long_name = "x" * 256
    assert len(blob_bucket(long_name)) <= MAX_BUCKET_LEN and len(tag_bucket(long_name)) <= MAX_BUCKET_LEN
    assert blob_bucket(long_name) != blob_bucket("x" * 255)
    for bad in ("", "a.b", "a b", "a*"):
        with pytest.raises(ArtifactError, match="invalid lattice name"):
            blob_bucket(bad)


def test_record_round_trip_and_malformed() -> None:
    rec = StoredArtifact("hello", "1.0", DIGEST, 12, annotations={"a": "b"}, created="2026-01-01T00:00:00Z")
    assert StoredArtifact.from_json("hello=1.0", rec.to_json()) == rec
    assert rec.as_dict()["ref"] == "lattice://hello:1.0"
    with pytest.raises(ArtifactError, match=r"names lattice://hello:1\.0 instead"):
        StoredArtifact.from_json("hello=2.0", rec.to_json())
    with pytest.raises(ArtifactError, match=r"'hello=1\.0' in the lattice store is malformed"):
        StoredArtifact.from_json("hello=1.0", json.dumps({"name": "hello"}).encode())
    with pytest.raises(ArtifactError, match="malformed"):
        StoredArtifact.from_json("hello=1.0", b"[1]")
