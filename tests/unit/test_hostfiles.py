"""What a control message may make the host read on its machine (`runtime.hostfiles.HostFiles`).

Real files, directories, symbolic links, a FIFO and `/dev/zero`: each refusal is checked for its
message, and for not blocking or reading what it refuses.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from wasmlattice.runtime.hostfiles import MSG_NOT_ALLOWED, SETTLED_NS, FileIdentity, HostFileError, HostFiles

WASM = b"\0asm\x0d\x00\x01\x00" + b"\0" * 100


def ref(path: Path | str) -> str:
    return f"file://{path}"


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """An allowed directory holding `c.wasm`, and a directory outside it holding `secret.wasm`."""
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "c.wasm").write_bytes(WASM)
    (outside / "secret.wasm").write_bytes(WASM)
    return allowed, outside


def load(files: HostFiles, path: Path | str) -> bytes:
    data, _ = files.read_component(ref(path), str(path))
    assert data is not None
    return data


def refusal(files: HostFiles, path: Path | str) -> str:
    with pytest.raises(HostFileError) as e:
        load(files, path)
    return str(e.value)


def test_file_loading_is_off_unless_the_host_allows_it(dirs: tuple[Path, Path]) -> None:
    allowed, _ = dirs
    message = refusal(HostFiles.of(allowed_dirs=[allowed]), allowed / "c.wasm")
    assert "file loading is disabled" in message and "--allow-file-load" in message
    assert load(HostFiles.of(True, [allowed]), allowed / "c.wasm") == WASM


def test_outside_the_allowed_dirs_existing_or_not_gets_one_message(dirs: tuple[Path, Path]) -> None:
    allowed, outside = dirs
    files = HostFiles.of(True, [allowed])
    os.symlink(outside / "secret.wasm", allowed / "link.wasm")
    os.symlink(outside, allowed / "linked-dir")
    paths = [
        outside / "secret.wasm",
        outside / "missing.wasm",
        Path("/nonexistent/x.wasm"),
        allowed / ".." / "outside" / "secret.wasm",
        allowed / "link.wasm",
        allowed / "linked-dir" / "secret.wasm",
        "/etc/passwd",
        f"{allowed}/c\0.wasm",
    ]
    for path in paths:
        assert refusal(files, path) == f"cannot load {ref(path)!r}: {MSG_NOT_ALLOWED}", path
    # Without any allowed directory, everything is outside.
    assert refusal(HostFiles.of(True), allowed / "c.wasm").endswith(MSG_NOT_ALLOWED)
    # Inside, a missing file may say so.
    assert "does not exist" in refusal(files, allowed / "missing.wasm")


def test_devices_and_fifos_are_refused_without_reading_or_blocking(dirs: tuple[Path, Path]) -> None:
    allowed, _ = dirs
    fifo = allowed / "pipe.wasm"
    os.mkfifo(fifo)
    # Even where the directory is allowed, only a regular file is read.
    files = HostFiles.of(True, [allowed, "/dev"])
    done: list[str] = []
    worker = threading.Thread(target=lambda: done.append(refusal(files, fifo)), daemon=True)
    worker.start()
    worker.join(5)
    assert done == [f"cannot load {ref(fifo)!r}: not a regular file"]
    started = time.monotonic()
    assert refusal(files, "/dev/zero") == f"cannot load {ref('/dev/zero')!r}: not a regular file"
    assert time.monotonic() - started < 1
    # Outside the allowed directories it is not even opened.
    assert refusal(HostFiles.of(True, [allowed]), "/dev/zero").endswith(MSG_NOT_ALLOWED)


def test_size_cap(dirs: tuple[Path, Path]) -> None:
    allowed, _ = dirs
    big = allowed / "big.wasm"
    big.write_bytes(WASM + b"\0" * 1000)
    message = refusal(HostFiles.of(True, [allowed], max_component_size=1000), big)
    assert "1108 bytes" in message and "at most 1000 bytes (--max-component-size)" in message
    assert load(HostFiles.of(True, [allowed], max_component_size=1108), big) == big.read_bytes()


def test_blob_roots_only_inside_allowed_dirs_and_never_around_the_host_secrets(
    dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    allowed, outside = dirs
    key = allowed / "keys" / "secrets.key"
    key.parent.mkdir()
    key.write_text("k")
    files = HostFiles.of(False, [allowed], protected=[("secrets key", key)])
    assert files.check_blob_root(str(allowed / "blobs")) == (allowed / "blobs").resolve()
    for root in (outside, tmp_path, allowed / ".." / "outside", Path("/")):
        with pytest.raises(HostFileError, match=r"is not inside a directory this host allows \(--allow-dir"):
            files.check_blob_root(str(root))
    os.symlink(outside, allowed / "escape")
    with pytest.raises(HostFileError, match="not inside"):
        files.check_blob_root(str(allowed / "escape" / "sub"))
    for root in (allowed, allowed / "keys"):
        with pytest.raises(HostFileError, match="contains the host's secrets key"):
            files.check_blob_root(str(root))
    with pytest.raises(HostFileError, match="must be an absolute path"):
        files.check_blob_root("relative/dir")
    with pytest.raises(HostFileError, match="this host allows no directories; start it with --allow-dir"):
        HostFiles().check_blob_root(str(allowed))


def test_a_file_changed_just_before_it_was_read_is_not_trusted_by_its_times() -> None:
    """Two writes within the file clock's granularity can leave the same times, so an identity is
    trusted only once its file has been unchanged for a while (host/components.py)."""
    changed = 1_000_000_000_000
    identity = FileIdentity(1, 2, 3, changed, changed)
    assert not identity.settled(changed + 1_000_000)  # read 1 ms after the write
    assert identity.settled(changed + SETTLED_NS + 1)
    assert not FileIdentity(1, 2, 3, changed - SETTLED_NS * 2, changed).settled(changed + 1_000)  # ctime
