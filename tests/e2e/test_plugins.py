"""Capability plugins as Python packages (docs/plugins.md).

`examples/plugin-counter` is pip-installed (offline, `--target` a directory on the host's
`PYTHONPATH`) next to a package of deliberately broken plugins made here. `wasmlattice plugins`
lists both; a real host process started with them serves `builtin://counter` to a component
(`tests/components/counter_guest`) over its link, and skips every broken plugin with a warning
naming its package.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.cli import cli
from tests.support.components import EXAMPLES
from tests.support.http import get
from tests.support.lattice import LatticeEnv, serve_http
from tests.support.processes import free_port
from wasmlattice.client.ctl import CtlError
from wasmlattice.protocol.models import Link

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

BROKEN_PYPROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "wasmlattice-broken"
version = "0.0.1"

[project.entry-points."wasmlattice.capabilities"]
missing = "broken_plugins.nowhere:plugin"
not-a-spec = "broken_plugins:not_a_spec"
shadow-builtin = "broken_plugins:shadow_builtin"
shadow-keyvalue = "broken_plugins:shadow_keyvalue"
zz-second-counter = "broken_plugins:second_counter"
explode = "broken_plugins:explode"
"""

BROKEN_MODULE = '''\
"""Plugins that are wrong in every way the host must survive."""

from wasmlattice.capabilities.plugins import PluginSpec
from wasmlattice.runtime.linking import HostInterface


def _iface(name):
    return [HostInterface(name, {"f": lambda: None}, versions=("0.1.",))]


def _failing_provider(spec):
    raise RuntimeError("this provider cannot start")


def not_a_spec():
    return {"name": "dict"}


def shadow_builtin():
    return PluginSpec("http-server", _failing_provider, _iface("example:shadow/http"))


def shadow_keyvalue():
    return PluginSpec("kv-thief", _failing_provider, _iface("wasi:keyvalue/store"))


def second_counter():
    return PluginSpec("counter", _failing_provider, _iface("example:other/counter"))


# Loads fine; its provider fails when started.
explode = PluginSpec("explode", _failing_provider, _iface("example:explode/boom"))
'''


def pip_install(src: Path, target: Path) -> None:
    """Install a package directory into `target` with this interpreter's pip, offline."""
    build = target.parent / f"src-{src.name}"
    shutil.copytree(src, build, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    # No index and no build isolation: nothing is downloaded (setuptools and wheel are test deps).
    offline = ["--no-deps", "--no-build-isolation", "--no-index"]
    res = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", *offline, "--target", str(target), str(build)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A `PYTHONPATH` with the counter plugin and the broken plugins installed."""
    root = tmp_path_factory.mktemp("plugins")
    site = root / "site"
    pip_install(EXAMPLES / "plugin-counter", site)
    broken = root / "wasmlattice-broken"
    (broken / "broken_plugins").mkdir(parents=True)
    (broken / "pyproject.toml").write_text(BROKEN_PYPROJECT)
    (broken / "broken_plugins" / "__init__.py").write_text(textwrap.dedent(BROKEN_MODULE))
    pip_install(broken, site)
    return os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])


def test_plugins_lists_installed_and_broken(plugin_path: str) -> None:
    r = cli("plugins", "-o", "json", env={"PYTHONPATH": plugin_path})
    assert r.returncode == 0, r.stderr
    rows = {p["entry_point"]: p for p in json.loads(r.stdout)}
    assert rows["counter"] == {
        "name": "counter",
        "entry_point": "counter",
        "package": "wasmlattice-counter",
        "version": "0.1.0",
        "provider": "builtin://counter",
        "interfaces": ["example:counter/counter@0.1"],
        "status": "ok",
    }
    status = {name: row["status"] for name, row in rows.items()}
    assert status["missing"].startswith(
        "broken (ModuleNotFoundError: No module named 'broken_plugins.nowhere'"
    )
    assert status["not-a-spec"] == "broken (the entry point gives a dict, not a PluginSpec)"
    assert status["shadow-builtin"] == "broken (builtin://http-server is already served by this host)"
    assert status["shadow-keyvalue"] == "broken (wasi:keyvalue/store is already served by this host)"
    assert status["zz-second-counter"] == (
        "broken (builtin://counter is already served by plugin counter (wasmlattice-counter))"
    )
    assert status["explode"] == "ok"
    assert all(rows[n]["package"] == "wasmlattice-broken" for n in status if n != "counter")

    text = cli("plugins", env={"PYTHONPATH": plugin_path}).stdout
    lines = {line.split()[0]: line.split() for line in text.splitlines()[1:]}
    assert lines["counter"] == [
        "counter",
        "wasmlattice-counter",
        "0.1.0",
        "builtin://counter",
        "example:counter/counter@0.1",
        "ok",
    ]
    assert lines["missing"][1:3] == ["wasmlattice-broken", "0.0.1"]
    assert "broken (ModuleNotFoundError: No module named" in text
    # The WIT a guest builds against; a broken plugin has none to give.
    wit = cli("plugins", "--wit", "counter", env={"PYTHONPATH": plugin_path})
    assert wit.returncode == 0 and "increment: func(name: string) -> u64;" in wit.stdout
    assert wit.stdout.startswith("package example:counter@0.1.0;")
    bad = cli("plugins", "--wit", "kv-thief", env={"PYTHONPATH": plugin_path})
    assert bad.returncode == 2
    assert "no working plugin named 'kv-thief' (installed: counter, explode)" in bad.stderr
    # Without the packages, nothing is listed.
    assert "no capability plugins installed" in cli("plugins").stdout


async def test_host_serves_a_plugin_and_skips_broken_ones(
    env: LatticeEnv, build_component: Callable[[str], Path], plugin_path: str
) -> None:
    guest = "file://" + str(build_component("counter_guest"))
    env.start_host(env={"PYTHONPATH": plugin_path})
    (host,) = await env.host_ids(1)
    # Each broken plugin is named with its package in the host's (configured) log; the host runs on.
    warn = "WARNING wasmlattice.capabilities.plugins: capability plugin"
    for needle in (
        f"{warn} 'missing' from package wasmlattice-broken 0.0.1 is skipped: ModuleNotFoundError",
        f"{warn} 'not-a-spec' from package wasmlattice-broken 0.0.1 is skipped",
        f"{warn} 'shadow-builtin' from package wasmlattice-broken 0.0.1 is skipped",
    ):
        await env.wait_log(needle)

    url = await serve_http(env, host, "counting", guest, port=free_port(), ready_path="/ready")
    # No link yet: the call traps (500) with the logged reason.
    assert (await get(f"{url}/inc?name=a"))[0] == 500
    await env.wait_log("no link named `default` for `example:counter/counter`")

    await env.ctl.start_provider(host, "builtin://counter", "counter")
    await env.wait_event("provider_started", lambda e: e["data"]["provider_id"] == "counter")
    # In the inventory like any provider, named by its kind.
    (desc,) = [p for p in (await env.inventory(host)).providers if p.id == "counter"]
    assert (desc.image_ref, desc.name) == ("builtin://counter", "counter")

    def counter_link(config: str) -> Link:
        return Link(
            source_id="counting",
            target="counter",
            wit_namespace="example",
            wit_package="counter",
            interfaces=["counter"],
            target_config=[config],
        )

    # The plugin's config keys are checked as a builtin's: a typo of `start` is refused.
    await env.ctl.put_config("counter-typo", {"strat": "10"})
    with pytest.raises(CtlError, match=r"unknown key 'strat' for counter .*did you mean 'start'"):
        await env.ctl.put_link(counter_link("counter-typo"))
    await env.ctl.put_config("counter-from-10", {"start": "10"})
    await env.ctl.put_link(counter_link("counter-from-10"))
    got = [await get(f"{url}/inc?name=a") for _ in range(3)]
    assert got == [(200, "11\n"), (200, "12\n"), (200, "13\n")]
    assert await get(f"{url}/inc?name=b") == (200, "11\n")

    # A plugin whose provider fails to start: the start fails with its message, the host serves.
    await env.ctl.start_provider(host, "builtin://explode", "explode")
    failed = await env.wait_event("provider_start_failed", lambda e: e["data"]["provider_id"] == "explode")
    assert "this provider cannot start" in failed["data"]["error"]
    # A broken plugin's provider is unknown to the host, like any other unknown reference.
    await env.ctl.start_provider(host, "builtin://kv-thief", "thief")
    failed = await env.wait_event("provider_start_failed", lambda e: e["data"]["provider_id"] == "thief")
    assert "builtin://counter" in failed["data"]["error"]  # the supported references, plugins included
    assert await get(f"{url}/inc?name=a") == (200, "14\n")
    assert env.host_tracebacks() == []
