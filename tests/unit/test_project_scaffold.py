"""`wasmlattice new`'s templates and the checks on a project's wasmlattice.toml (no toolchain run)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from wasmlattice.project.build import BuildError, load_config, project_roots
from wasmlattice.project.jsbuild import stage_wit
from wasmlattice.project.scaffold import new_project, templates


def test_every_template_writes_a_project_whose_config_loads(tmp_path: Path) -> None:
    assert set(templates()) == {"python-http", "python-kv", "python-messaging", "python-custom", "js-http"}
    for t in templates():
        dest = tmp_path / t
        written = new_project("my-app", t, dest)
        assert dest / "wadm.yaml" in written and dest / ".gitignore" in written
        assert not any("{{" in p.read_text() for p in written), t
        assert not any(p.suffix == ".tmpl" for p in written)
        for root in project_roots(dest):
            cfg = load_config(root)
            assert cfg.name.startswith("my-app")
            assert cfg.output == (root / "build" / f"{cfg.name}.wasm").resolve()
    custom = tmp_path / "python-custom"
    assert project_roots(custom) == [custom / "front", custom / "greeter"]


def test_js_http_is_a_javascript_project_with_its_npm_toolchain(tmp_path: Path) -> None:
    written = new_project("web", "js-http", tmp_path / "p")
    assert sorted(p.name for p in written) == [
        ".gitignore", "app.js", "package.json", "wadm.yaml", "wasmlattice.toml"
    ]  # fmt: skip
    cfg = load_config(tmp_path / "p")
    assert (cfg.language, cfg.source.name, cfg.world) == ("javascript", "app.js", "wasi:http/proxy@0.2.12")
    package = json.loads((tmp_path / "p" / "package.json").read_text())
    assert package["name"] == "web" and "@bytecodealliance/jco" in package["devDependencies"]
    assert "node_modules/" in (tmp_path / "p" / ".gitignore").read_text()


def test_js_project_with_its_own_wit_is_refused_for_now(tmp_path: Path) -> None:
    new_project("web", "js-http", tmp_path)
    (tmp_path / "wit").mkdir()
    (tmp_path / "wit" / "world.wit").write_text("package a:b;\nworld w {}\n")
    toml = tmp_path / "wasmlattice.toml"
    toml.write_text(toml.read_text().replace('source = "app.js"', 'source = "app.js"\nwit = "wit"'))
    with pytest.raises(BuildError, match=r"`component.wit` is not supported yet for javascript"):
        load_config(tmp_path)


def test_python_kv_names_its_own_world(tmp_path: Path) -> None:
    new_project("notes", "python-kv", tmp_path / "p")
    cfg = load_config(tmp_path / "p")
    assert cfg.world == "notes" and cfg.wit == (tmp_path / "p" / "wit").resolve()
    assert "world notes {" in (tmp_path / "p" / "wit" / "world.wit").read_text()


@pytest.mark.parametrize("name", ["", "Hello", "1st", "a_b", "a--b", "-a", "a-", "a/b", "../x", "x" * 64])
def test_new_rejects_a_bad_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(BuildError, match="project name"):
        new_project(name, "python-http", tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_new_refuses_a_non_empty_folder_and_an_unknown_template(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "keep.txt").write_text("mine")
    with pytest.raises(BuildError, match="not empty"):
        new_project("app", "python-http", tmp_path / "p")
    assert sorted(x.name for x in (tmp_path / "p").iterdir()) == ["keep.txt"]
    expected = "no template named 'rust-http'; choose one of: js-http, python-custom, python-http"
    with pytest.raises(BuildError, match=expected):
        new_project("app", "rust-http", tmp_path / "q")
    new_project("app", "python-http", tmp_path / "empty")  # an empty folder is fine
    new_project("app", "python-http", tmp_path / "empty2")


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("", "a [component] table is required"),
        ("[component\n", "not valid TOML"),
        ('[component]\nname = "a"\nsauce = "x"\n', "unknown key(s) in [component]: sauce"),
        ('[component]\nname = "A"\n', "`component.name` 'A' is not valid"),
        ('[component]\nname = "a"\nlanguage = "rust"\n', "`component.language` 'rust'"),
        ('[component]\nname = "a"\nsource = "../x.py"\n', "`component.source` (../x.py) points outside"),
        ('[component]\nname = "a"\nsource = "nope.py"\n', "must be an existing .py file"),
        ('[component]\nname = "a"\nlanguage = "javascript"\n', "must be an existing .js or .mjs file"),
        ('[component]\nname = "a"\nlanguage = "javascript"\nsource = "app.py"\n', ".js or .mjs file"),
        ('[component]\nname = "a"\nworld = "proxy"\n', "names no package"),
        ('[component]\nname = "a"\nworld = "wasi:http/Proxy"\n', "is not a world name"),
        ('[component]\nname = "a"\nwit = "wit"\n', "must be a folder with a world.wit"),
        ('[component]\nname = "a"\n[build]\noutput = "/tmp/a.wasm"\n', "`build.output` (/tmp/a.wasm) points"),
        ('[component]\nname = "a"\n[build]\noutput = "a.txt"\n', "must end in .wasm"),
    ],
)
def test_config_errors_name_the_field(tmp_path: Path, toml: str, needle: str) -> None:
    (tmp_path / "app.py").write_text("")
    (tmp_path / "wasmlattice.toml").write_text(toml)
    with pytest.raises(BuildError) as e:
        load_config(tmp_path)
    assert needle in str(e.value)


def test_config_missing_says_where_to_run(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="does not exist: run `wasmlattice build` in a project folder"):
        load_config(tmp_path)


def _fake_jco(root: Path, *versions: str) -> Path:
    """A jco package folder laid out as the npm package is, with an empty WASI package per release."""
    jco = root / "node_modules" / "@bytecodealliance" / "jco"
    for v in versions:
        (jco / "lib" / "wit" / "builtin" / v / "wasi-http").mkdir(parents=True)
        (jco / "lib" / "wit" / "builtin" / v / "wasi-http" / "package.wit").write_text(
            f"package wasi:http@{v};\n"
        )
    (jco / "lib" / "wit" / "builtin" / "jco-node-0.1.0").mkdir()
    return jco


def test_js_wit_stage_includes_the_world_from_jcos_wasi_release(tmp_path: Path) -> None:
    new_project("web", "js-http", tmp_path / "p")
    cfg = load_config(tmp_path / "p")
    jco = _fake_jco(tmp_path / "p", "0.2.10", "0.2.12")
    stage, world = stage_wit(cfg, jco, tmp_path / "p" / "build")
    assert world == "component"
    assert "include wasi:http/proxy@0.2.12;" in (stage / "world.wit").read_text()
    assert (stage / "deps" / "wasi-http" / "package.wit").read_text() == "package wasi:http@0.2.12;\n"
    assert sorted(p.name for p in (stage / "deps").iterdir()) == ["wasi-http"]  # only that release's


@pytest.mark.parametrize(
    ("world", "needle"),
    [
        ("wasi:http/proxy@0.2.6", "ships the WASI WIT at 0.2.10, 0.2.12; name a wasi world"),
        ("example:x/y@1.0.0", "ships the WASI WIT at 0.2.10, 0.2.12"),
    ],
)
def test_js_world_must_be_a_wasi_release_jco_ships(tmp_path: Path, world: str, needle: str) -> None:
    new_project("web", "js-http", tmp_path / "p")
    toml = tmp_path / "p" / "wasmlattice.toml"
    toml.write_text(toml.read_text().replace('"wasi:http/proxy@0.2.12"', f'"{world}"'))
    cfg = load_config(tmp_path / "p")
    with pytest.raises(BuildError, match=re.escape(needle)):
        stage_wit(cfg, _fake_jco(tmp_path / "p", "0.2.10", "0.2.12"), tmp_path / "p" / "build")
