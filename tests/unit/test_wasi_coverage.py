"""Every WASI 0.2 function has a host implementation; wasi:filesystem and wasi:sockets behave as granted.

The coverage check reads the WIT that spin-sdk ships (0.2.0, 0.2.3 and 0.2.6) with a small lister,
because a function missing from a host table only shows up as a trap when a guest calls it.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from wasmlattice.runtime.fastcall import set_current_state
from wasmlattice.runtime.witypes import Err
from wasmlattice.wasi import filesystem, sockets
from wasmlattice.wasi.ctx import WasiConfig, WasiCtx
from wasmlattice.wasi.io import IoError

VERSIONS = ["0.2.0", "0.2.3", "0.2.6"]
MODULES = ["io", "clocks", "random", "cli", "filesystem", "sockets", "http"]
# Interfaces the guest exports and the host calls: nothing for the host to implement.
GUEST_EXPORTS = {"wasi:cli/run", "wasi:http/incoming-handler"}


# ---------------------------------------------------------------------------------------------
# A WIT function lister: enough of the grammar for the WASI packages.
# ---------------------------------------------------------------------------------------------


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def _blocks(text: str) -> Iterator[tuple[str, str]]:
    """(header, body) of each brace block at the top level of `text`."""
    depth = 0
    header_start = 0
    body_start = 0
    for i, ch in enumerate(text):
        if ch == "{":
            if depth == 0:
                body_start = i + 1
                header = text[header_start:i]
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                yield header, text[body_start:i]
                header_start = i + 1
        elif ch == ";" and depth == 0:
            header_start = i + 1


def _outside_blocks(text: str) -> str:
    """`text` with each brace block replaced by `;`, so a block's header ends up as a statement of its own."""
    out, depth = [], 0
    for ch in text:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            out.append(";")
        elif depth == 0:
            out.append(ch)
    return "".join(out)


_ANNOTATIONS = re.compile(r"@\w+\s*\([^)]*\)")
_FUNC = re.compile(r"^(%?[\w-]+)\s*:\s*(static\s+)?func\b")
_CONSTRUCTOR = re.compile(r"^constructor\s*\(")


def _statements(text: str) -> Iterator[str]:
    for stmt in _outside_blocks(text).split(";"):
        stmt = _ANNOTATIONS.sub("", stmt).strip()
        if stmt:
            yield stmt


def wit_functions(package_dir: Path) -> dict[str, tuple[bool, set[str]]]:
    """Interface name (`wasi:pkg/iface`) -> (feature-gated?, component-model function names)."""
    out: dict[str, tuple[bool, set[str]]] = {}
    texts = [_strip_comments(wit.read_text()) for wit in sorted(package_dir.glob("*.wit"))]
    # One file of the package is enough to name it.
    pkg = re.search(r"package\s+([\w-]+:[\w-]+)(?:@[\w.+-]+)?\s*;", "\n".join(texts))
    assert pkg is not None, f"{package_dir} has no package line"
    for text in texts:
        for header, body in _blocks(text):
            m = re.search(r"\binterface\s+(%?[\w-]+)\s*$", header.strip())
            if m is None:
                continue  # a world
            funcs: set[str] = set()
            for stmt in _statements(body):
                f = _FUNC.match(stmt)
                if f is not None:
                    funcs.add(f.group(1).lstrip("%"))
            for rheader, rbody in _blocks(body):
                r = re.search(r"\bresource\s+(%?[\w-]+)\s*$", rheader.strip())
                if r is None:
                    continue  # a record, variant, enum or flags
                res = r.group(1).lstrip("%")
                for stmt in _statements(rbody):
                    f = _FUNC.match(stmt)
                    if _CONSTRUCTOR.match(stmt):
                        funcs.add(f"[constructor]{res}")
                    elif f is not None:
                        kind = "static" if f.group(2) else "method"
                        funcs.add(f"[{kind}]{res}.{f.group(1).lstrip('%')}")
            name = f"{pkg.group(1)}/{m.group(1).lstrip('%')}"
            out[name] = ("@unstable" in header, funcs)
    return out


def _deps_dir() -> Path:
    spin_sdk = pytest.importorskip("spin_sdk")
    return Path(os.path.dirname(spin_sdk.__file__)) / "wit" / "deps"


def test_lister_reads_the_wit() -> None:
    """The lister finds methods, constructors, statics, `%`-escaped names and free functions."""
    deps = _deps_dir()
    fs = wit_functions(deps / "filesystem@0.2.6")
    assert "[method]descriptor.open-at" in fs["wasi:filesystem/types"][1]
    assert "[method]directory-entry-stream.read-directory-entry" in fs["wasi:filesystem/types"][1]
    assert "filesystem-error-code" in fs["wasi:filesystem/types"][1]
    assert len(fs["wasi:filesystem/types"][1]) == 29
    udp = wit_functions(deps / "sockets@0.2.6")["wasi:sockets/udp"][1]
    assert "[method]udp-socket.stream" in udp
    http = wit_functions(deps / "http@0.2.6")["wasi:http/types"][1]
    assert {"[constructor]fields", "[static]fields.from-list", "[static]incoming-body.finish"} <= http
    clocks = wit_functions(deps / "clocks@0.2.6")
    assert clocks["wasi:clocks/timezone"][0] and not clocks["wasi:clocks/wall-clock"][0]
    assert "network-error-code" not in wit_functions(deps / "sockets@0.2.0")["wasi:sockets/network"][1]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("module", MODULES)
def test_every_wit_function_is_implemented(module: str, version: str) -> None:
    """Each interface of the package is served at this version, with every one of its functions.

    A feature-gated (`@unstable`) interface may be left out entirely, so a component importing it
    is refused at link time; an interface that is provided must be complete, since a missing
    function would only trap when called.
    """
    package_dir = _deps_dir() / f"{module}@{version}"
    mod = importlib.import_module(f"wasmlattice.wasi.{module}")
    served: dict[str, dict[str, Any]] = {}
    for iface in mod.interfaces():
        if iface.serves(version):
            served.setdefault(iface.name, iface.functions)
    problems: list[str] = []
    for name, (gated, funcs) in sorted(wit_functions(package_dir).items()):
        if name in GUEST_EXPORTS:
            continue
        table = served.get(name)
        if table is None:
            if not gated:
                problems.append(f"{name}@{version}: interface not provided")
            continue
        problems += [f"{name}@{version}: {f}" for f in sorted(funcs - table.keys())]
    assert not problems, "missing host functions:\n" + "\n".join(problems)


# ---------------------------------------------------------------------------------------------
# wasi:filesystem behaviour, called directly (no wasm).
# ---------------------------------------------------------------------------------------------

FS = {i.name: i.functions for i in filesystem.interfaces()}
SOCK = {i.name: i.functions for i in sockets.interfaces()}


def fs(fn: str, *args: Any) -> Any:
    """Call a `wasi:filesystem/types` function."""
    return FS["wasi:filesystem/types"][fn](*args)


def fs_err(fn: str, *args: Any) -> Any:
    """The error code a `wasi:filesystem/types` call fails with."""
    with pytest.raises(Err) as e:
        fs(fn, *args)
    return e.value.value


@contextmanager
def _use_ctx(config: WasiConfig) -> Iterator[WasiCtx]:
    wctx = WasiCtx(config)
    prev = set_current_state(SimpleNamespace(wasi=wctx))  # type: ignore[arg-type]
    try:
        yield wctx
    finally:
        set_current_state(prev)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A granted directory with files, a subdirectory, and links inside and out."""
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "hello.txt").write_bytes(b"hello world")
    (root / "sub" / "inner.txt").write_bytes(b"inner")
    (tmp_path / "secret.txt").write_bytes(b"secret")
    os.symlink("hello.txt", root / "good-link")
    os.symlink("sub", root / "dir-link")
    os.symlink(str(tmp_path / "secret.txt"), root / "abs-link")
    os.symlink(str(root / "hello.txt"), root / "abs-inside-link")
    os.symlink("../secret.txt", root / "rel-escape")
    os.symlink("../hello.txt", root / "sub" / "up-link")
    os.symlink("loop-b", root / "loop-a")
    os.symlink("loop-a", root / "loop-b")
    return root


@pytest.fixture
def root(tree: Path) -> Iterator[Any]:
    """The descriptor of the `/data` grant of `tree`."""
    with _use_ctx(WasiConfig(read_only_dirs={"/data": tree})):
        dirs = FS["wasi:filesystem/preopens"]["get-directories"]()
        assert [p for _, p in dirs] == ["/data"]
        yield dirs[0][0]


def open_file(base: Any, path: str, follow: bool = False) -> Any:
    """open-at for reading."""
    return fs(
        "[method]descriptor.open-at", base, {"symlink-follow"} if follow else set(), path, set(), {"read"}
    )


def test_no_preopens_by_default() -> None:
    with _use_ctx(WasiConfig()):
        assert FS["wasi:filesystem/preopens"]["get-directories"]() == []


def test_missing_grant_directory_is_not_preopened(tmp_path: Path) -> None:
    with _use_ctx(WasiConfig(read_only_dirs={"/gone": tmp_path / "nope"})):
        assert FS["wasi:filesystem/preopens"]["get-directories"]() == []


def test_preopen_is_a_read_only_directory(root: Any) -> None:
    assert fs("[method]descriptor.get-type", root) == "directory"
    assert fs("[method]descriptor.get-flags", root) == {"read"}


def test_open_and_read(root: Any) -> None:
    f = open_file(root, "hello.txt")
    assert fs("[method]descriptor.get-type", f) == "regular-file"
    assert fs("[method]descriptor.read", f, 5, 0) == (b"hello", False)
    assert fs("[method]descriptor.read", f, 100, 6) == (b"world", True)
    assert fs("[method]descriptor.read", f, 10, 11) == (b"", True)
    assert fs("[method]descriptor.read", f, 10, 2**64 - 1) == (b"", True)
    sub = fs("[method]descriptor.open-at", root, set(), "sub", {"directory"}, {"read"})
    assert fs("[method]descriptor.read", open_file(sub, "inner.txt"), 100, 0) == (b"inner", True)
    assert fs("[method]descriptor.read", open_file(root, "sub/./inner.txt"), 100, 0) == (b"inner", True)
    assert fs("[method]descriptor.read", open_file(root, "sub/../hello.txt"), 5, 0) == (b"hello", False)


def test_read_via_stream(root: Any) -> None:
    f = open_file(root, "hello.txt")
    stream = fs("[method]descriptor.read-via-stream", f, 6)
    assert stream.subscribe().ready()
    assert stream.blocking_read(100) == b"world"
    with pytest.raises(Err) as e:
        stream.blocking_read(100)
    assert e.value.value == ("closed", None)
    whole = fs("[method]descriptor.read-via-stream", f, 0)
    assert whole.read(3) == b"hel"
    assert whole.skip(2) == 2
    assert whole.read(100) == b" world"
    whole.drop()
    past_end = fs("[method]descriptor.read-via-stream", f, 1000)
    with pytest.raises(Err):
        past_end.blocking_read(1)
    assert fs_err("[method]descriptor.read-via-stream", root, 0) == "is-directory"


def test_large_file_streams_in_chunks(root: Any, tree: Path) -> None:
    data = os.urandom(300_000)
    (tree / "big.bin").write_bytes(data)
    stream = fs("[method]descriptor.read-via-stream", open_file(root, "big.bin"), 0)
    got = bytearray()
    while True:
        try:
            got += stream.blocking_read(1 << 20)
        except Err:
            break
    assert bytes(got) == data


def _entries(d: Any) -> list[tuple[str, str]]:
    stream = fs("[method]descriptor.read-directory", d)
    out = []
    while (entry := fs("[method]directory-entry-stream.read-directory-entry", stream)) is not None:
        out.append(entry)
    assert fs("[method]directory-entry-stream.read-directory-entry", stream) is None
    return out


def test_read_directory(root: Any) -> None:
    entries = dict((name, kind) for kind, name in _entries(root))
    assert entries == {
        "hello.txt": "regular-file",
        "sub": "directory",
        "good-link": "symbolic-link",
        "dir-link": "symbolic-link",
        "abs-link": "symbolic-link",
        "abs-inside-link": "symbolic-link",
        "rel-escape": "symbolic-link",
        "loop-a": "symbolic-link",
        "loop-b": "symbolic-link",
    }
    sub = fs("[method]descriptor.open-at", root, {"symlink-follow"}, "dir-link", set(), {"read"})
    assert sorted(_entries(sub)) == [("regular-file", "inner.txt"), ("symbolic-link", "up-link")]
    assert fs_err("[method]descriptor.read-directory", open_file(root, "hello.txt")) == "not-directory"


def test_stat(root: Any, tree: Path) -> None:
    f = open_file(root, "hello.txt")
    kind, links, size, atime, mtime, ctime = fs("[method]descriptor.stat", f)
    assert (kind, links, size) == ("regular-file", 1, 11)
    mtime_ns = (tree / "hello.txt").stat().st_mtime_ns
    assert mtime == (mtime_ns // 10**9, mtime_ns % 10**9)
    assert atime is not None and ctime is not None
    assert fs("[method]descriptor.stat-at", root, set(), "hello.txt") == fs("[method]descriptor.stat", f)
    assert fs("[method]descriptor.stat-at", root, set(), "good-link")[0] == "symbolic-link"
    assert fs("[method]descriptor.stat-at", root, {"symlink-follow"}, "good-link")[0] == "regular-file"
    assert fs("[method]descriptor.stat-at", root, {"symlink-follow"}, "dir-link")[0] == "directory"
    assert fs("[method]descriptor.stat", root)[0] == "directory"
    assert fs_err("[method]descriptor.stat-at", root, set(), "missing") == "no-entry"
    assert fs_err("[method]descriptor.stat-at", root, set(), "missing/x") == "no-entry"
    assert fs_err("[method]descriptor.stat-at", root, set(), "hello.txt/x") == "not-directory"
    assert fs_err("[method]descriptor.stat-at", f, set(), "x") == "not-directory"


def test_identity_and_metadata_hash(root: Any, tree: Path) -> None:
    a = open_file(root, "hello.txt")
    b = open_file(root, "good-link", follow=True)
    c = open_file(root, "sub/inner.txt")
    assert fs("[method]descriptor.is-same-object", a, b)
    assert not fs("[method]descriptor.is-same-object", a, c)
    h = fs("[method]descriptor.metadata-hash", a)
    assert all(isinstance(x, int) and 0 <= x < 2**64 for x in h)
    assert fs("[method]descriptor.metadata-hash", b) == h
    assert fs("[method]descriptor.metadata-hash-at", root, {"symlink-follow"}, "good-link") == h
    assert fs("[method]descriptor.metadata-hash-at", root, set(), "good-link") != h
    assert fs("[method]descriptor.metadata-hash", c) != h
    (tree / "hello.txt").write_bytes(b"changed by the host")
    assert fs("[method]descriptor.metadata-hash", a) != h


def test_readlink(root: Any) -> None:
    assert fs("[method]descriptor.readlink-at", root, "good-link") == "hello.txt"
    assert fs("[method]descriptor.readlink-at", root, "rel-escape") == "../secret.txt"
    assert fs_err("[method]descriptor.readlink-at", root, "abs-link") == "not-permitted"
    assert fs_err("[method]descriptor.readlink-at", root, "hello.txt") == "invalid"


def test_symlinks_inside_the_grant_are_followed(root: Any) -> None:
    assert fs("[method]descriptor.read", open_file(root, "good-link", follow=True), 5, 0) == (b"hello", False)
    assert fs("[method]descriptor.read", open_file(root, "dir-link/inner.txt"), 9, 0) == (b"inner", True)
    # From the root, sub/up-link resolves to root/hello.txt: still inside the base directory.
    assert fs("[method]descriptor.read", open_file(root, "sub/up-link", follow=True), 5, 0)[0] == b"hello"
    # Without symlink-follow, opening the link itself fails as O_NOFOLLOW does.
    assert fs_err("[method]descriptor.open-at", root, set(), "good-link", set(), {"read"}) == "loop"
    assert fs_err("[method]descriptor.open-at", root, {"symlink-follow"}, "loop-a", set(), {"read"}) == "loop"


@pytest.mark.parametrize(
    ("path", "follow"),
    [
        ("../secret.txt", False),
        ("/etc/passwd", False),
        ("/", False),
        ("..", False),
        ("sub/../../secret.txt", False),
        ("sub/../../root/hello.txt", False),  # leaves the base, even if only for a moment
        ("abs-link", True),
        ("abs-inside-link", True),  # absolute targets are refused even when they point inside
        ("rel-escape", True),
        ("rel-escape/", False),  # a trailing slash expands the final link
        ("dir-link/../../secret.txt", False),
    ],
)
def test_escapes_are_refused(root: Any, path: str, follow: bool) -> None:
    flags = {"symlink-follow"} if follow else set()
    assert fs_err("[method]descriptor.open-at", root, flags, path, set(), {"read"}) == "not-permitted"
    assert fs_err("[method]descriptor.stat-at", root, flags, path) == "not-permitted"
    assert fs_err("[method]descriptor.metadata-hash-at", root, flags, path) == "not-permitted"


def test_escape_from_a_subdirectory_descriptor_is_refused(root: Any) -> None:
    sub = fs("[method]descriptor.open-at", root, set(), "sub", {"directory"}, {"read"})
    # up-link points at ../hello.txt: inside the grant, but above `sub`, the base of this call.
    assert fs_err("[method]descriptor.open-at", sub, {"symlink-follow"}, "up-link", set(), {"read"}) == (
        "not-permitted"
    )
    assert fs_err("[method]descriptor.stat-at", sub, set(), "../hello.txt") == "not-permitted"
    # The link itself, not followed, may be inspected.
    assert fs("[method]descriptor.stat-at", sub, set(), "up-link")[0] == "symbolic-link"


def test_bad_open_requests(root: Any) -> None:
    assert fs_err("[method]descriptor.open-at", root, set(), "missing", set(), {"read"}) == "no-entry"
    assert fs_err("[method]descriptor.open-at", root, set(), "", set(), {"read"}) == "no-entry"
    assert fs_err("[method]descriptor.open-at", root, set(), "a\0b", set(), {"read"}) == "invalid"
    assert fs_err("[method]descriptor.open-at", root, set(), "hello.txt", {"directory"}, {"read"}) == (
        "not-directory"
    )
    assert fs_err("[method]descriptor.open-at", root, set(), "hello.txt/", set(), {"read"}) == "not-directory"
    f = open_file(root, "hello.txt")
    assert fs_err("[method]descriptor.open-at", f, set(), "x", set(), {"read"}) == "not-directory"
    assert fs_err("[method]descriptor.read", root, 1, 0) == "is-directory"
    no_read = fs("[method]descriptor.open-at", root, set(), "hello.txt", set(), set())
    assert fs("[method]descriptor.get-flags", no_read) == set()
    assert fs_err("[method]descriptor.read", no_read, 1, 0) == "bad-descriptor"
    assert fs("[method]descriptor.stat", no_read)[0] == "regular-file"


def test_host_permission_errors_map_to_access(root: Any, tree: Path) -> None:
    locked = tree / "locked.txt"
    locked.write_bytes(b"x")
    locked.chmod(0)
    if os.geteuid() != 0:
        assert fs_err("[method]descriptor.open-at", root, set(), "locked.txt", set(), {"read"}) == "access"
        return
    # Root reads files whatever their mode, so check from a child that gave up root.
    tree.chmod(0o755)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.setgid(65534)
            os.setuid(65534)
            got = fs_err("[method]descriptor.open-at", root, set(), "locked.txt", set(), {"read"})
            code = 0 if got == "access" else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


NEVER = ("no-change", None)


def test_every_mutation_is_read_only(root: Any, tree: Path) -> None:
    f = open_file(root, "hello.txt")
    before = sorted(p.name for p in tree.iterdir())
    calls: list[tuple[str, tuple[Any, ...]]] = [
        ("write-via-stream", (f, 0)),
        ("append-via-stream", (f,)),
        ("set-size", (f, 0)),
        ("set-times", (f, NEVER, "now")),
        ("write", (f, b"x", 0)),
        ("create-directory-at", (root, "new")),
        ("set-times-at", (root, set(), "hello.txt", NEVER, ("timestamp", (1, 0)))),
        ("link-at", (root, set(), "hello.txt", root, "hard")),
        ("remove-directory-at", (root, "sub")),
        ("rename-at", (root, "hello.txt", root, "renamed.txt")),
        ("symlink-at", (root, "hello.txt", "new-link")),
        ("unlink-file-at", (root, "hello.txt")),
    ]
    for fn, args in calls:
        assert fs_err(f"[method]descriptor.{fn}", *args) == "read-only", fn
    for open_flags, flags in [
        ({"create"}, {"read"}),
        ({"truncate"}, {"read"}),
        ({"exclusive"}, {"read"}),
        ({"create", "exclusive"}, {"read", "write"}),
        (set(), {"read", "write"}),
        (set(), {"write"}),
        (set(), {"read", "mutate-directory"}),
    ]:
        for path in ("hello.txt", "new.txt"):
            err = fs_err("[method]descriptor.open-at", root, set(), path, open_flags, flags)
            assert err == "read-only", (open_flags, flags, path)
    assert sorted(p.name for p in tree.iterdir()) == before
    assert (tree / "hello.txt").read_bytes() == b"hello world"


def test_harmless_operations_succeed(root: Any) -> None:
    f = open_file(root, "hello.txt")
    for d in (root, f):
        assert fs("[method]descriptor.advise", d, 0, 10, "sequential") is None
        assert fs("[method]descriptor.sync", d) is None
        assert fs("[method]descriptor.sync-data", d) is None


def test_filesystem_error_code() -> None:
    code: Callable[[Any], Any] = FS["wasi:filesystem/types"]["filesystem-error-code"]
    assert code(IoError("not from a file")) is None
    assert code(filesystem.FsError("failed", "io")) == "io"


# ---------------------------------------------------------------------------------------------
# wasi:sockets: everything denied.
# ---------------------------------------------------------------------------------------------


def _sock_err(iface: str, fn: str, *args: Any) -> Any:
    with pytest.raises(Err) as e:
        SOCK[iface][fn](*args)
    return e.value.value


def test_sockets_are_denied() -> None:
    with _use_ctx(WasiConfig()):
        net = SOCK["wasi:sockets/instance-network"]["instance-network"]()
        assert isinstance(net, sockets.Network)
        for family in ("ipv4", "ipv6"):
            assert _sock_err("wasi:sockets/tcp-create-socket", "create-tcp-socket", family) == "access-denied"
            assert _sock_err("wasi:sockets/udp-create-socket", "create-udp-socket", family) == "access-denied"
        for name in ("example.com", "127.0.0.1", "::1"):
            assert _sock_err("wasi:sockets/ip-name-lookup", "resolve-addresses", net, name) == "access-denied"
        assert SOCK["wasi:sockets/network"]["network-error-code"](IoError("x")) is None


def test_unreachable_socket_methods_still_answer() -> None:
    with _use_ctx(WasiConfig()):
        tcp, udp = sockets.TcpSocket("ipv6"), sockets.UdpSocket("ipv4")
        t, u = SOCK["wasi:sockets/tcp"], SOCK["wasi:sockets/udp"]
        assert t["[method]tcp-socket.is-listening"](tcp) is False
        assert t["[method]tcp-socket.address-family"](tcp) == "ipv6"
        assert u["[method]udp-socket.address-family"](udp) == "ipv4"
        assert t["[method]tcp-socket.subscribe"](tcp).ready()
        assert (
            _sock_err("wasi:sockets/tcp", "[method]tcp-socket.start-connect", tcp, None, None)
            == "access-denied"
        )
        assert _sock_err("wasi:sockets/udp", "[method]udp-socket.stream", udp, None) == "access-denied"
        assert (
            _sock_err("wasi:sockets/udp", "[method]outgoing-datagram-stream.send", None, [])
            == "access-denied"
        )
