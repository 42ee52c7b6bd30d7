"""The dashboard in a real browser: headless Chromium (Debian's, driven by Playwright) against
`wasmlattice ui` on a real lattice (host processes, the app manager, nats-server).

The page is loaded before any host runs; then a host appears when it starts, a component scaled
from the page shows its new count (and the host agrees), a broken manifest shows its errors inline,
a good one is deployed and reaches `deployed`, a guest log line shows up, config and a link are put
from the forms, and a host killed with SIGKILL disappears. With WASMLATTICE_UI_SCREENSHOTS=DIR the
screenshots of the main views are written there (docs/ uses them); otherwise under tmp_path.
"""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import pytest
from playwright import async_api as playwright_api

from tests.support.cli import cli, cli_ok
from tests.support.http import get
from tests.support.lattice import LatticeEnv, eventually, serve_http
from tests.support.processes import ServerProcess, free_port, wasmlattice_cmd
from wasmlattice.apps.client import AppClient
from wasmlattice.apps.manager import AppManager
from wasmlattice.ui.server import page_token

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 60_000


def manifest(name: str, image: str, instances: Any) -> str:
    return f"""\
apiVersion: core.oam.dev/v1beta1
kind: Application
metadata:
  name: {name}
  annotations:
    version: v1
    description: An echo component deployed from the dashboard
spec:
  components:
    - name: web
      type: component
      properties:
        image: {image}
      traits:
        - type: spreadscaler
          properties:
            instances: {instances}
"""


@pytest.fixture
def ui_server(env: LatticeEnv, tmp_path: Path, wasmlattice_env: dict[str, str]) -> Any:
    port = free_port()
    server = ServerProcess(
        name="wasmlattice ui",
        cmd=wasmlattice_cmd(
            "ui",
            "--nats-url",
            env.nats_url,
            "--lattice",
            env.lattice,
            "--listen",
            f"127.0.0.1:{port}",
            "--refresh-interval",
            "2",
        ),
        port=port,
        log_path=tmp_path / "ui.log",
        env=wasmlattice_env,
    )
    server.start("/", timeout=60)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def browser_page(tmp_path: Path) -> AsyncIterator[Any]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: `make system-deps` installs Debian's chromium"
    async with playwright_api.async_playwright() as p:
        context = await p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 860},
        )
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            yield page
        finally:
            await context.close()
        assert errors == [], f"script errors on the page: {errors}"


def screenshots_dir(tmp_path: Path) -> Path:
    out = Path(os.environ.get("WASMLATTICE_UI_SCREENSHOTS") or tmp_path / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    return out


async def test_dashboard_in_a_browser(
    env: LatticeEnv, ui_server: ServerProcess, browser_page: Any, http_echo_wasm: Path, tmp_path: Path
) -> None:
    expect = playwright_api.expect
    page = browser_page
    shots = screenshots_dir(tmp_path)
    echo = f"file://{http_echo_wasm}"

    await page.goto(ui_server.base_url + "/")
    await expect(page.get_by_test_id("connection")).to_have_text("live", timeout=WAIT_MS)
    await expect(page.get_by_test_id("no-hosts")).to_be_visible()

    # A host appears when it starts, with its labels, version and uptime.
    env.start_host("--label", "name=alpha", "--friendly-name", "alpha-host", "--heartbeat-interval", "2")
    (host_a,) = await env.host_ids(1)
    card = page.locator(f'[data-testid=host][data-host-id="{host_a}"]')
    await expect(card).to_be_visible(timeout=WAIT_MS)
    await expect(card).to_contain_text("alpha-host")
    await expect(card).to_contain_text("name=alpha")
    await expect(card).to_contain_text("version 0.1.0")

    # Scale a component from the page; the count shown and the host's inventory agree.
    await env.ctl.scale_component(host_a, echo, "dash-echo", 1)
    row = card.locator('[data-testid=component-row][data-component-id="dash-echo"]')
    await expect(row.get_by_test_id("count")).to_have_text("1", timeout=WAIT_MS)
    await row.get_by_test_id("scale-input").fill("3")
    await row.get_by_test_id("scale-button").click()
    await expect(row.get_by_test_id("count")).to_have_text("3", timeout=WAIT_MS)
    inv = await env.ctl.get_host_inventory(host_a)
    assert [c.max_instances for c in inv.components if c.id == "dash-echo"] == [3]
    await expect(card.get_by_test_id("host-counts")).to_contain_text("1 components (3 instances)")

    # Apps: a broken manifest shows every error inline; a good one is deployed and reaches `deployed`.
    nc = await nats.connect(env.nats_url)
    manager = AppManager(nc, nc.jetstream(), env.lattice, host_timeout=5.0)
    await manager.start()
    try:
        await page.get_by_role("button", name="Apps").click()
        await page.get_by_test_id("manifest").fill(manifest("dash-app", "", "lots"))
        await page.get_by_test_id("validate").click()
        errors = page.get_by_test_id("manifest-errors").locator("li")
        await expect(errors.first).to_be_visible(timeout=WAIT_MS)
        text = " ".join(await errors.all_inner_texts())
        assert "image" in text and "instances" in text, text
        await page.get_by_test_id("deploy").click()  # refused before anything is sent
        await expect(page.get_by_test_id("manifest-error")).to_have_text("the manifest is not valid")
        assert await AppClient(nc, env.lattice).get("dash-app") is None

        await page.get_by_test_id("manifest").fill(manifest("dash-app", echo, 1))
        await page.get_by_test_id("deploy").click()
        await expect(page.get_by_test_id("manifest-ok")).to_contain_text("Deploying dash-app v1")
        await expect(page.get_by_test_id("manifest-errors").locator("li")).to_have_count(0)
        app_row = page.locator('[data-testid=app][data-app="dash-app"]')
        await expect(app_row.get_by_test_id("app-status")).to_have_text("deployed", timeout=WAIT_MS)
        await page.screenshot(path=str(shots / "ui-apps.png"), full_page=True)

        # A guest log line (the record a host publishes for its guest's output, docs/ui.md).
        record = {
            "time": "2026-01-02T03:04:05.123Z",
            "level": "info",
            "host_id": host_a,
            "component_id": "dash-echo",
            "stream": "stdout",
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "span_id": "00f067aa0ba902b7",
            "message": "echo: handled GET /hello",
        }
        await env.nc.publish(
            f"wasmlattice.logs.{env.lattice}.{host_a}.dash-echo", json.dumps(record).encode()
        )
        await page.get_by_role("button", name="Hosts").click()
        await row.get_by_role("button", name="Logs").click()
        line = page.locator('[data-testid=log-line][data-component-id="dash-echo"]')
        await expect(line).to_contain_text("echo: handled GET /hello", timeout=WAIT_MS)
        await expect(page.get_by_test_id("log-component")).to_have_value("dash-echo")
        await page.screenshot(path=str(shots / "ui-logs.png"), full_page=True)

        # Config and a link from the forms: config names show, their values never do.
        await page.get_by_role("button", name="Links & config").click()
        form = page.get_by_test_id("config-form")
        await form.locator("input[name=name]").fill("dash-cfg")
        await form.locator("textarea[name=values]").fill("greeting=a-secret-value\nother=1")
        await form.get_by_role("button", name="Put config").click()
        await expect(page.locator('[data-testid=config][data-name="dash-cfg"]')).to_be_visible(
            timeout=WAIT_MS
        )
        assert await env.ctl.get_config("dash-cfg") == {"greeting": "a-secret-value", "other": "1"}
        link_form = page.get_by_test_id("link-form")
        for name, value in (
            ("source_id", "dash-echo"),
            ("target", "dash-kv"),
            ("wit_namespace", "wasi"),
            ("wit_package", "keyvalue"),
            ("interfaces", "store,atomics"),
            ("target_config", "dash-cfg"),
        ):
            await link_form.locator(f"input[name={name}]").fill(value)
        await link_form.get_by_role("button", name="Put link").click()
        link_row = page.locator('[data-testid=link][data-source="dash-echo"]')
        await expect(link_row).to_contain_text("wasi:keyvalue/{store,atomics}", timeout=WAIT_MS)
        (made,) = [lk for lk in await env.ctl.get_links() if lk.source_id == "dash-echo"]
        assert (made.target, made.target_config) == ("dash-kv", ["dash-cfg"])
        await page.screenshot(path=str(shots / "ui-links-config.png"), full_page=True)
        assert "a-secret-value" not in await page.content()

        await page.get_by_role("button", name="Events").click()
        await expect(page.locator("[data-testid=event][data-type=component_scaled]").first).to_be_visible()
        await page.screenshot(path=str(shots / "ui-events.png"), full_page=True)

        # A second host appears, and disappears when it is killed without a word.
        await page.get_by_role("button", name="Hosts").click()
        env.start_host("--label", "name=beta", "--friendly-name", "beta-host", "--heartbeat-interval", "2")
        host_b = next(h for h in await env.host_ids(2) if h != host_a)
        card_b = page.locator(f'[data-testid=host][data-host-id="{host_b}"]')
        await expect(card_b).to_be_visible(timeout=WAIT_MS)
        await expect(page.get_by_test_id("summary")).to_contain_text("2 hosts")
        await page.screenshot(path=str(shots / "ui-hosts.png"), full_page=True)
        env.process_of(host_b).send_signal(signal.SIGKILL)
        await expect(card_b).to_have_count(0, timeout=WAIT_MS)
        await expect(card).to_be_visible()
        await expect(page.get_by_test_id("summary")).to_contain_text("1 hosts")
    finally:
        await manager.stop()
        await nc.close()


def test_up_serves_the_dashboard(tmp_path: Path) -> None:
    data_dir, nats_port = tmp_path / "up", free_port()
    r = cli_ok(
        "up", "--detach", "--data-dir", str(data_dir), "--nats-port", str(nats_port),
        "--ui-listen", "127.0.0.1:0", "--no-app-manager", timeout=120,
    )  # fmt: skip
    try:
        state = json.loads((data_dir / "up.json").read_text())
        url = state["ui_url"]
        assert f"UI:      {url}" in r.stdout, r.stdout
        with urllib.request.urlopen(url, timeout=10) as resp:
            token = page_token(resp.read().decode())
        request = urllib.request.Request(url + "api/state", headers={"X-Wasmlattice-Token": token or ""})

        async def one_host() -> None:
            with urllib.request.urlopen(request, timeout=10) as resp:
                hosts = json.loads(resp.read())["hosts"]
            assert [h["id"] for h in hosts] == [state["host_id"]]

        import asyncio

        asyncio.run(eventually(one_host, 30, "up's host on its dashboard"))
    finally:
        cli_ok("down", "--data-dir", str(data_dir))
    # A non-loopback address is refused before anything starts.
    refused = cli("up", "--data-dir", str(tmp_path / "up2"), "--ui-listen", "0.0.0.0:3030")
    assert refused.returncode != 0 and "--allow-remote" in refused.stderr, refused.stderr
    refused = cli("ui", "--listen", "0.0.0.0:3030")
    assert refused.returncode == 1 and "loopback" in refused.stderr, refused.stderr


async def test_component_request_metrics_on_the_page(
    env: LatticeEnv, ui_server: ServerProcess, browser_page: Any, http_echo_wasm: Path
) -> None:
    """A host with `--metrics-listen`: the component's row shows the requests and errors it served."""
    expect = playwright_api.expect
    page = browser_page
    env.start_host("--metrics-listen", "127.0.0.1:0")
    (host,) = await env.host_ids(1)
    await page.goto(ui_server.base_url + "/")
    await expect(page.get_by_test_id("connection")).to_have_text("live", timeout=WAIT_MS)
    url = await serve_http(
        env, host, "echo", f"file://{http_echo_wasm}", port=free_port(), ready_path="/echo"
    )
    cell = page.locator('[data-testid=component-row][data-component-id="echo"] [data-testid=metrics]')
    await expect(cell).to_be_visible(timeout=WAIT_MS)
    await expect(page.get_by_test_id("metrics-note")).to_be_hidden()
    start = int(await cell.get_attribute("data-requests-total") or "0")
    errors = int(await cell.get_attribute("data-errors-total") or "0")
    for path in ["/echo"] * 4 + ["/echo?status=500"] * 2:
        await get(url + path)
    await expect(cell).to_have_attribute("data-requests-total", str(start + 6), timeout=WAIT_MS)
    await expect(cell).to_have_attribute("data-errors-total", str(errors + 2), timeout=WAIT_MS)
    # The next scrape's interval holds the requests: a rate and an error share are shown.
    await expect(cell).to_contain_text("req", timeout=WAIT_MS)
