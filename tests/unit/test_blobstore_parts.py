"""Name confinement of the directory blobstore backend, bucket naming, ranges and listing pages."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from wasmlattice.capabilities.blobstore import StreamObjectNames
from wasmlattice.capabilities.blobstore_backend import BlobError, object_range
from wasmlattice.capabilities.blobstore_fs import (
    FsBlobBackend,
    check_container_name,
    check_object_name,
    confined,
)
from wasmlattice.capabilities.blobstore_nats import bucket_name


@pytest.mark.parametrize("name", ["", "..", ".", ".hidden", "a/b", "/abs", "a\\b", "x\0y", "../up"])
def test_bad_container_names_are_refused(name: str) -> None:
    with pytest.raises(BlobError, match="invalid container name"):
        check_container_name(name)


@pytest.mark.parametrize("name", ["photos", "a b", "ü-2024", "a.b", "a.."])
def test_good_container_names(name: str) -> None:
    check_container_name(name)


@pytest.mark.parametrize(
    "name", ["", "/etc/passwd", "../x", "a/../../x", "a/..", "./a", "a//b", "a/", "a\0b", "..", "."]
)
def test_bad_object_names_are_refused(name: str) -> None:
    with pytest.raises(BlobError, match="invalid object name"):
        check_object_name(name)


def test_object_names_become_path_components() -> None:
    assert check_object_name("a/b/c.txt") == ["a", "b", "c.txt"]
    assert check_object_name(".config") == [".config"]
    assert check_object_name("..dots..") == ["..dots.."]


def test_confined_follows_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "c").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "c" / "out")
    os.symlink(root / "c", root / "alias")
    assert confined(root, root / "c" / "file")
    assert confined(root, root / "alias" / "file")  # a link that stays inside is fine
    assert not confined(root, root / "c" / "out" / "file")
    assert not confined(root, root / ".." / "outside")
    assert not confined(root / "c", root / "c-sibling")  # a name prefix is not containment


def test_backend_refuses_escapes_and_touches_nothing_outside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    backend = FsBlobBackend(root)

    async def run() -> None:
        await backend.create_container("c")
        os.symlink(outside, root / "c" / "out")
        os.symlink(outside, root / "evil")
        for name in ("out/secret", "out/new", "../evil/secret"):
            with pytest.raises(BlobError, match="object"):
                await backend.check_write("c", name)
            with pytest.raises(BlobError, match="object"):
                await backend.open_read("c", name, 0, 10)
            with pytest.raises(BlobError, match="object"):
                await backend.delete_object("c", name)
        with pytest.raises(BlobError, match="outside the blobstore root"):
            await backend.container_exists("evil")
        with pytest.raises(BlobError, match="outside the blobstore root"):
            await backend.delete_container("evil")
        assert await backend.list_objects("c") == []

    asyncio.run(run())
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_bytes() == b"secret"


def test_object_over_a_directory_of_objects_is_a_clear_error(tmp_path: Path) -> None:
    backend = FsBlobBackend(tmp_path / "root")

    async def run() -> None:
        await backend.create_container("c")
        (tmp_path / "root" / "c" / "a").mkdir()
        (tmp_path / "root" / "c" / "a" / "b").write_bytes(b"x")
        with pytest.raises(BlobError, match="other objects' names start with `a/`"):
            await backend.copy_object(("c", "a/b"), ("c", "a"))
        with pytest.raises(BlobError, match="a prefix of its name is an object"):
            await backend.copy_object(("c", "a/b"), ("c", "a/b/c"))

    asyncio.run(run())


def test_ranges_are_inclusive_and_clipped() -> None:
    assert object_range(100, 0, 2**64 - 1) == object_range(100, 0, 99)
    assert object_range(100, 10, 19).length == 10
    assert object_range(100, 99, 99).length == 1
    assert object_range(100, 100, 200).length == 0
    assert object_range(0, 0, 0).length == 0
    with pytest.raises(BlobError, match="before start"):
        object_range(100, 5, 4)


def test_bucket_names_are_an_injective_encoding() -> None:
    assert bucket_name("p_", "photos") == "p_photos"
    assert bucket_name("", "photos.2024") == "photos-2e2024"
    assert bucket_name("", "a-b") == "a-2db"
    assert bucket_name("", "ü") == "-c3-bc"
    names = ["a-2db", "a-b", "a.b", "a_b", "A-B", "ü", "-c3-bc"]
    assert len({bucket_name("", n) for n in names}) == len(names)
    with pytest.raises(BlobError, match="empty"):
        bucket_name("p_", "")


def test_listing_pages_and_skips() -> None:
    s = StreamObjectNames(["a", "b", "c", "d", "e"])
    assert s.skip(2) == (2, False)
    assert s.read(2) == (["c", "d"], False)
    assert s.read(10) == (["e"], True)
    assert s.read(10) == ([], True)
    assert s.skip(3) == (0, True)
    assert StreamObjectNames([]).read(5) == ([], True)
