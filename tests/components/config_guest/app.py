"""Serves HTTP and reports what `wasi:config/store@0.2.0-draft-2024-09-27` and `wasmcloud:secrets`
return, as JSON.

Routes:
  /config/get?key=K        {"value": V or null} or {"error": "..."}
  /config/all              {"all": {K: V, ...}, "order": [K, ...]} or {"error": "..."}
  /secret?key=K            {"kind": "string"|"bytes", "value": text, "hex": hex of the bytes}
                           or {"error": "not-found" | "upstream: ..." | "io: ..."}
  /secret/twice?key=K      two handles to one secret, each revealed after the other was dropped
  /ready                   "ready"
"""

import json
from urllib.parse import parse_qsl, urlsplit

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import reveal, wasi_config_store, wasmcloud_secrets_store
from wit_world.imports.types import Fields, OutgoingBody, OutgoingResponse, ResponseOutparam


def send(response_out, status, data):
    resp = OutgoingResponse(Fields.from_list([("content-type", b"application/json")]))
    resp.set_status_code(status)
    body = resp.body()
    ResponseOutparam.set(response_out, Ok(resp))
    with body.write() as stream:
        stream.blocking_write_and_flush(json.dumps(data).encode() + b"\n")
    OutgoingBody.finish(body, None)


def config_error(e):
    v = e.value
    if isinstance(v, wasi_config_store.Error_Upstream):
        return {"error": "upstream: " + v.value}
    return {"error": "io: " + v.value}


def secrets_error(e):
    v = e.value
    if isinstance(v, wasmcloud_secrets_store.SecretsError_NotFound):
        return {"error": "not-found"}
    if isinstance(v, wasmcloud_secrets_store.SecretsError_Upstream):
        return {"error": "upstream: " + v.value}
    return {"error": "io: " + v.value}


def revealed(secret):
    value = reveal.reveal(secret)
    if isinstance(value, wasmcloud_secrets_store.SecretValue_String):
        return {"kind": "string", "value": value.value, "hex": value.value.encode().hex()}
    return {"kind": "bytes", "value": None, "hex": bytes(value.value).hex()}


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request, response_out):
        parts = urlsplit(request.path_with_query() or "/")
        q = dict(parse_qsl(parts.query, keep_blank_values=True))
        try:
            if parts.path == "/config/get":
                send(response_out, 200, {"value": wasi_config_store.get(q["key"])})
            elif parts.path == "/config/all":
                pairs = wasi_config_store.get_all()
                send(response_out, 200, {"all": dict(pairs), "order": [k for k, _ in pairs]})
            elif parts.path == "/secret":
                with wasmcloud_secrets_store.get(q["key"]) as secret:
                    send(response_out, 200, revealed(secret))
            elif parts.path == "/secret/twice":
                first = wasmcloud_secrets_store.get(q["key"])
                second = wasmcloud_secrets_store.get(q["key"])
                a = revealed(first)
                first.__exit__(None, None, None)
                b = revealed(second)
                second.__exit__(None, None, None)
                send(response_out, 200, {"first": a, "second": b})
            elif parts.path == "/ready":
                send(response_out, 200, "ready")
            else:
                send(response_out, 404, {"error": "no such route"})
        except Err as e:
            if parts.path.startswith("/config"):
                send(response_out, 500, config_error(e))
            else:
                send(response_out, 500, secrets_error(e))
