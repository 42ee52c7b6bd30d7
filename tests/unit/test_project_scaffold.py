"""`wasmlattice new`'s templates and the checks on a project's wasmlattice.toml (no toolchain run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from wasmlattice.project.build import BuildError, load_config, project_roots
from wasmlattice.project.scaffold import new_project, templates


def test_every_template_writes_a_project_whose_config_loads(tmp_path: Path) -> None:
    assert set(templates()) == {"python-http", "python-kv", "python-messaging", "python-custom"}
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
    expected = "no template named 'rust-http'; choose one of: python-custom, python-http"
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
