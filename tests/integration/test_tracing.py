"""One HTTP request across two hosts is one trace, exported over OTLP (issue 15's test).

Host A runs the HTTP server provider and the `back` component (tests/components/chain_back);
host B runs `trace-front` (tests/components/trace_front) with an in-memory key-value provider.
A request with a W3C `traceparent` enters on A, is forwarded to B over wRPC (`wrpc:http`), where
the guest calls key-value and then `judge.sign`, served by `back` on A over wRPC again. Both hosts
export spans with the real OTLP/HTTP exporter to a receiver the test runs
(tests/support/otlp.py); the test checks one trace, its parent/child links and attributes.
Host A is configured with flags, host B with wasmCloud's variables, and B also exports its logs.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.cli import cli_ok
from tests.support.lattice import HTTP_SERVER, LatticeEnv, eventually, http_link, kv_link, serve_http
from tests.support.otlp import OtlpReceiver, SpanRecord
from tests.support.processes import ServerProcess, free_port, wasmlattice_cmd
from wasmlattice.host.identity import HostIdentity
from wasmlattice.protocol.models import Link

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

HANDLE = "wrpc wrpc:http/incoming-handler@0.1.0#handle"
SIGN = "wrpc test:chain/judge@0.1.0#sign"


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    r = OtlpReceiver()
    await r.start()
    try:
        yield r
    finally:
        await r.stop()


def judge_link(source: str, target: str) -> Link:
    return Link(
        source_id=source, target=target, wit_namespace="test", wit_package="chain", interfaces=["judge"]
    )


async def scaled(env: LatticeEnv, host: str, ref: str, cid: str) -> None:
    assert await env.ctl.scale_component(host, ref, cid, 2) == ""
    await env.wait_event(
        "component_scaled", lambda e: e["data"]["component_id"] == cid and e["data"]["host_id"] == host
    )


async def started(env: LatticeEnv, host: str, ref: str, pid: str) -> None:
    await env.ctl.start_provider(host, ref, pid)
    await env.wait_event("provider_started", lambda e: e["data"]["provider_id"] == pid)


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as s,
        s.get(url, headers=headers) as r,
    ):
        return r.status, await r.text()


def one(spans: list[SpanRecord], name: str, kind: str, host: str) -> SpanRecord:
    found = [
        s for s in spans if s.name == name and s.kind == kind and s.resource.get("wasmcloud.host.id") == host
    ]
    assert len(found) == 1, (name, kind, host, [(s.name, s.kind) for s in spans])
    return found[0]


async def test_one_trace_across_two_hosts(
    env: LatticeEnv, build_component: Callable[[str], Path], receiver: OtlpReceiver
) -> None:
    batch = {"OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_BLRP_SCHEDULE_DELAY": "200"}
    # A: wasmCloud's flags; B: wasmCloud's variables (traces and logs). Seeds fix which is which.
    ida, idb = HostIdentity.generate(), HostIdentity.generate()
    a, b = ida.public_key, idb.public_key
    env.start_host(
        "--host-seed",
        ida.seed,
        "--enable-traces",
        "--override-observability-endpoint",
        receiver.url,
        env=batch,
    )
    env.start_host(
        "--host-seed",
        idb.seed,
        env={
            **batch,
            "WASMCLOUD_TRACES_ENABLED": "true",
            "WASMCLOUD_LOGS_ENABLED": "true",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        },
    )
    assert set(await env.host_ids(2)) == {a, b}
    front = "file://" + str(build_component("trace_front"))
    back = "file://" + str(build_component("chain_back"))
    ctl = env.ctl
    await scaled(env, b, front, "trace-front")
    await scaled(env, a, back, "back")
    await started(env, b, "builtin://keyvalue-memory", "kv")
    await started(env, a, HTTP_SERVER, "http-server")
    port = free_port()
    await ctl.put_config("front-addr", {"address": f"127.0.0.1:{port}"})
    for link in (
        kv_link("trace-front", "kv"),
        judge_link("trace-front", "back"),
        http_link("http-server", "trace-front", ["front-addr"]),
    ):
        await ctl.put_link(link)
    url = f"http://127.0.0.1:{port}"

    async def ready() -> None:
        try:
            status = (await get(url + "/ready"))[0]
        except aiohttp.ClientError as e:
            raise AssertionError(str(e)) from None
        assert status == 200, status

    await eventually(ready, 60, "trace-front served on host A")

    # The lattice's log stream (`wasmlattice logs`) gets the guest's lines with their trace IDs too.
    streamed: list[dict[str, Any]] = []

    async def on_log(msg: Any) -> None:
        streamed.append(json.loads(msg.data))

    await env.nc.subscribe(f"wasmlattice.logs.{env.lattice}.{b}.trace-front", cb=on_log)
    await env.nc.flush()

    # The client's own span: the request's trace ID and the ingress span's parent.
    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    status, text = await get(url + "/go?key=tk&value=tv", {"traceparent": f"00-{trace_id}-{client_span}-01"})
    assert status == 200, text
    assert json.loads(text) == {"value": "tv", "trail": ["front", "back"]}

    def complete() -> bool:
        names = {s.name for s in receiver.trace(trace_id)}
        return {"guest back", SIGN, "wasi:keyvalue get"} <= names and len(receiver.trace(trace_id)) >= 11

    await receiver.wait_for(complete, 60, "the request's trace")
    spans = receiver.trace(trace_id)

    ingress = one(spans, "HTTP GET", "server", a)
    assert ingress.parent_id == client_span
    assert ingress.attributes["http.request.method"] == "GET"
    assert ingress.attributes["url.path"] == "/go"
    assert ingress.attributes["http.response.status_code"] == 200
    assert ingress.status != "error"
    assert ingress.resource["service.name"] == "wasmlattice"
    assert ingress.resource["wasmcloud.lattice"] == env.lattice

    # A -> B: wrpc:http, client side on A, server side on B.
    fwd_client = one(spans, HANDLE, "client", a)
    assert fwd_client.parent_id == ingress.span_id
    assert fwd_client.attributes["rpc.system"] == "wrpc"
    assert fwd_client.attributes["wasmlattice.wrpc.target"] == "trace-front"
    fwd_server = one(spans, HANDLE, "server", b)
    assert fwd_server.parent_id == fwd_client.span_id

    guest = one(spans, "guest trace-front", "internal", b)
    assert guest.parent_id == fwd_server.span_id
    assert guest.attributes["wasmcloud.component.id"] == "trace-front"
    assert str(guest.attributes["wasmlattice.guest.export"]).startswith("wasi:http/incoming-handler@0.2")
    assert guest.attributes["wasmlattice.guest.export"].endswith("#handle")
    assert guest.attributes["wasmlattice.guest.instance"] == "fresh"
    assert guest.attributes["wasmlattice.guest.outcome"] == "ok"

    # Key-value calls of the guest: children of its call, naming the link, provider and backend.
    for op in ("open", "set", "get"):
        kv = one(spans, f"wasi:keyvalue {op}", "internal", b)
        assert kv.parent_id == guest.span_id, op
        assert kv.attributes["wasmlattice.capability.interface"] == "wasi:keyvalue"
        assert kv.attributes["wasmcloud.link.name"] == "default"
        assert kv.attributes["wasmlattice.link.target"] == "kv"
        assert kv.attributes["wasmcloud.component.id"] == "trace-front"
    assert one(spans, "wasi:keyvalue get", "internal", b).attributes["wasmlattice.capability.backend"] == (
        "keyvalue-memory"
    )

    # B -> A: the custom interface call, over wRPC to `back`.
    cap = one(spans, "test:chain/judge@0.1.0 sign", "internal", b)
    assert cap.parent_id == guest.span_id
    assert cap.attributes["wasmlattice.link.target"] == "back"
    sign_client = one(spans, SIGN, "client", b)
    assert sign_client.parent_id == cap.span_id
    assert sign_client.attributes["wasmlattice.wrpc.source"] == "trace-front"
    assert sign_client.attributes["wasmcloud.link.name"] == "default"
    sign_server = one(spans, SIGN, "server", a)
    assert sign_server.parent_id == sign_client.span_id
    callee = one(spans, "guest back", "internal", a)
    assert callee.parent_id == sign_server.span_id
    assert callee.attributes["wasmlattice.guest.export"] == "test:chain/judge@0.1.0#sign"
    assert callee.attributes["wasmlattice.guest.outcome"] == "ok"
    assert all(s.status != "error" for s in spans), [(s.name, s.status_message) for s in spans]

    # The guest's stdout line carries the trace and span IDs of its call: in the host's log, and
    # in the OTLP log records of host B.
    text = await env.wait_log("trace-front: storing tk")
    line = next(ln for ln in text.splitlines() if "trace-front: storing tk" in ln)
    assert f"trace={trace_id} span={guest.span_id}" in line
    await receiver.wait_for(
        lambda: any("trace-front: storing tk" in r.body and r.trace_id == trace_id for r in receiver.logs),
        60,
        "the guest's log record",
    )
    record = next(r for r in receiver.logs if "trace-front: storing tk" in r.body)
    assert record.span_id == guest.span_id
    assert record.resource["wasmcloud.host.id"] == b

    async def streamed_line() -> None:
        assert any("trace-front: storing tk" in r["message"] for r in streamed)

    await eventually(streamed_line, 30, "the guest's line on the log stream")
    rec = next(r for r in streamed if "trace-front: storing tk" in r["message"])
    assert (rec["trace_id"], rec["span_id"]) == (trace_id, guest.span_id)

    # A trap in the callee: its guest span is an error with the trap's message, and so is the
    # server side of the wRPC call that ran it.
    crash_trace = secrets.token_hex(16)
    status, _ = await get(url + "/crash", {"traceparent": f"00-{crash_trace}-{secrets.token_hex(8)}-01"})
    assert status == 500

    def crashed() -> bool:
        return any(s.name == "guest back" for s in receiver.trace(crash_trace))

    await receiver.wait_for(crashed, 60, "the crash's trace")
    crash_spans = receiver.trace(crash_trace)
    trapped = one(crash_spans, "guest back", "internal", a)
    assert trapped.status == "error"
    assert trapped.attributes["wasmlattice.guest.outcome"] == "trap"
    # componentize-py turns the guest's exception into `unreachable` (its text goes to stderr).
    assert "unreachable" in trapped.status_message
    assert one(crash_spans, "wrpc test:chain/judge@0.1.0#crash", "server", a).status == "error"

    # Control-interface operations are traced too.
    await receiver.wait_for(
        lambda: any(s.name == "ctl component.scale" for s in receiver.spans), 30, "a ctl span"
    )
    scale = next(s for s in receiver.spans if s.name == "ctl component.scale")
    assert scale.kind == "server"
    assert scale.attributes["wasmcloud.ctl.operation"] == "component.scale"

    # The same request served on host A alone: the component and a key-value provider there too,
    # so ingress, key-value and `judge` are all in-process. The guest first runs inline on the
    # event loop and moves to a worker thread at its first capability call; only the call that
    # served is traced, with no error from the abandoned attempt.
    await scaled(env, a, front, "trace-front")
    await started(env, a, "builtin://keyvalue-memory", "kv")
    local_trace = secrets.token_hex(16)
    status, text = await get(
        url + "/go?key=lk&value=lv", {"traceparent": f"00-{local_trace}-{secrets.token_hex(8)}-01"}
    )
    assert status == 200, text

    def local_done() -> bool:
        return len(receiver.trace(local_trace)) >= 7

    await receiver.wait_for(local_done, 60, "the local request's trace")
    local = receiver.trace(local_trace)
    assert {s.resource["wasmcloud.host.id"] for s in local} == {a}
    assert not any(s.name.startswith("wrpc ") for s in local)
    ingress = one(local, "HTTP GET", "server", a)
    front_call = one(local, "guest trace-front", "internal", a)
    assert front_call.parent_id == ingress.span_id
    assert front_call.attributes["wasmlattice.guest.inline"] is False
    for op in ("open", "set", "get"):
        assert one(local, f"wasi:keyvalue {op}", "internal", a).parent_id == front_call.span_id
    cap = one(local, "test:chain/judge@0.1.0 sign", "internal", a)
    assert one(local, "guest back", "internal", a).parent_id == cap.span_id
    assert all(s.status != "error" for s in local), [(s.name, s.status_message) for s in local]


async def test_blobstore_config_and_secrets_calls_are_spans(
    env: LatticeEnv,
    build_component: Callable[[str], Path],
    receiver: OtlpReceiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The CLI and the host read the secrets key from the default file under $XDG_DATA_HOME.
    xdg = tmp_path / "xdg"
    monkeypatch.setenv("XDG_DATA_HOME", str(xdg))
    await asyncio.to_thread(cli_ok, "secret", "keygen")
    env.env = {**env.env, "XDG_DATA_HOME": str(xdg), "OTEL_BSP_SCHEDULE_DELAY": "200"}
    env.start_host("--enable-traces", "--override-observability-endpoint", receiver.url)
    (host,) = await env.host_ids(1)
    nats = ("--nats-url", env.nats_url, "--lattice", env.lattice)
    value = "tok-" + secrets.token_hex(16)
    await asyncio.to_thread(cli_ok, "secret", "put", "api_token", value, "--allow", "cfg", *nats)
    await env.ctl.put_config("plain", {"colour": "teal"})
    cfg_url = await serve_http(
        env,
        host,
        "cfg",
        "file://" + str(build_component("config_guest")),
        port=free_port(),
        config=["plain", "SECRET_api_token"],
        ready_path="/ready",
    )
    await env.ctl.put_config("blob-fs", {"root": str(tmp_path / "blobs")})
    await started(env, host, "builtin://blobstore-fs", "files")
    blob_url = await serve_http(
        env,
        host,
        "blob",
        "file://" + str(build_component("blob_guest")),
        port=free_port(),
        ready_path="/exists?c=x",
    )
    await env.ctl.put_link(
        Link(
            source_id="blob",
            target="files",
            wit_namespace="wasi",
            wit_package="blobstore",
            interfaces=["blobstore", "container", "types"],
            target_config=["blob-fs"],
        )
    )

    async def linked() -> None:
        status, body = await get(blob_url + "/exists?c=box")
        assert (status, json.loads(body)) == (200, {"exists": False}), body

    await eventually(linked, 30, "the blobstore link")

    traces: dict[str, str] = {}
    for name, url in (
        ("config", cfg_url + "/config/get?key=colour"),
        ("secret", cfg_url + "/secret?key=api_token"),
        ("missing", cfg_url + "/secret?key=nope"),
        ("blob", blob_url + "/create?c=box"),
    ):
        traces[name] = secrets.token_hex(16)
        status, body = await get(url, {"traceparent": f"00-{traces[name]}-{secrets.token_hex(8)}-01"})
        assert status in (200, 500), (name, status, body)
    assert value in (await get(cfg_url + "/secret?key=api_token"))[1]  # the guest got it...

    def span_of(trace: str, name: str) -> SpanRecord | None:
        return next((s for s in receiver.trace(traces[trace]) if s.name == name), None)

    wanted = {
        "config": "wasi:config/store get",
        "secret": "wasmcloud:secrets/reveal reveal",
        "missing": "wasmcloud:secrets/store get",
        "blob": "wasi:blobstore/blobstore create-container",
    }
    await receiver.wait_for(lambda: all(span_of(t, n) for t, n in wanted.items()), 60, "capability spans")

    config = span_of("config", "wasi:config/store get")
    assert config is not None and config.status != "error"
    assert config.attributes["wasmlattice.config.key"] == "colour"
    assert config.attributes["wasmcloud.component.id"] == "cfg"
    guest = one(receiver.trace(traces["config"]), "guest cfg", "internal", host)
    assert config.parent_id == guest.span_id  # a child of the guest call

    get_span = span_of("secret", "wasmcloud:secrets/store get")
    assert get_span is not None and get_span.status != "error"
    assert get_span.attributes["wasmlattice.secret.name"] == "api_token"
    missing = span_of("missing", "wasmcloud:secrets/store get")
    assert missing is not None and missing.status == "error"
    assert missing.attributes["wasmlattice.secret.name"] == "nope"

    blob = span_of("blob", "wasi:blobstore/blobstore create-container")
    assert blob is not None and blob.attributes["wasmlattice.blobstore.container"] == "box"
    assert blob.attributes["wasmcloud.component.id"] == "blob"

    # ...but no span carries the secret's value, in any attribute or status message.
    everything = json.dumps([[s.attributes, s.status_message, s.resource] for s in receiver.spans])
    assert value not in everything


async def test_run_exports_the_http_and_guest_spans(
    http_echo_wasm: Path, wasmlattice_env: dict[str, str], receiver: OtlpReceiver, tmp_path: Path
) -> None:
    port = free_port()
    server = ServerProcess(
        name="wasmlattice",
        cmd=wasmlattice_cmd(
            "run",
            str(http_echo_wasm),
            "--listen",
            f"127.0.0.1:{port}",
            "--enable-traces",
            "--override-observability-endpoint",
            receiver.url,
        ),
        port=port,
        log_path=tmp_path / "run.log",
        env={**wasmlattice_env, "OTEL_BSP_SCHEDULE_DELAY": "200"},
    )
    await asyncio.to_thread(server.start, "/echo", 180.0)
    try:
        trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
        status, _ = await get(server.base_url + "/echo", {"traceparent": f"00-{trace_id}-{parent}-01"})
        assert status == 200

        # `run` names its workload after the file it serves.
        guest_name = f"guest {http_echo_wasm}"

        def both() -> bool:
            names = {s.name for s in receiver.trace(trace_id)}
            return {"HTTP GET", guest_name} <= names

        await receiver.wait_for(both, 60, "the run's spans")
        spans = receiver.trace(trace_id)
        ingress = next(s for s in spans if s.name == "HTTP GET")
        guest = next(s for s in spans if s.name == guest_name)
        assert ingress.kind == "server" and ingress.parent_id == parent
        assert ingress.attributes["http.response.status_code"] == 200
        assert guest.parent_id == ingress.span_id
        assert guest.attributes["wasmlattice.guest.outcome"] == "ok"
        assert ingress.resource["wasmlattice.role"] == "run"
    finally:
        await asyncio.to_thread(server.stop)
