"""Serves HTTP and reports what `wasi:config/store@0.2.0-draft` and the older
`wasi:config/runtime@0.2.0-draft` return, as JSON.

Routes:
  /store/get?key=K, /runtime/get?key=K    {"value": V or null} or {"error": "..."}
  /store/all, /runtime/all                {"all": {K: V, ...}} or {"error": "..."}
  /ready                                  "ready"
"""

import json
from urllib.parse import parse_qsl, urlsplit

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import runtime, store
from wit_world.imports.types import Fields, OutgoingBody, OutgoingResponse, ResponseOutparam


def send(response_out, status, data):
    resp = OutgoingResponse(Fields.from_list([("content-type", b"application/json")]))
    resp.set_status_code(status)
    body = resp.body()
    ResponseOutparam.set(response_out, Ok(resp))
    with body.write() as stream:
        stream.blocking_write_and_flush(json.dumps(data).encode() + b"\n")
    OutgoingBody.finish(body, None)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request, response_out):
        parts = urlsplit(request.path_with_query() or "/")
        q = dict(parse_qsl(parts.query, keep_blank_values=True))
        iface = {"/store": store, "/runtime": runtime}.get(parts.path.rsplit("/", 1)[0])
        try:
            if iface is not None and parts.path.endswith("/get"):
                send(response_out, 200, {"value": iface.get(q["key"])})
            elif iface is not None and parts.path.endswith("/all"):
                send(response_out, 200, {"all": dict(iface.get_all())})
            elif parts.path == "/ready":
                send(response_out, 200, "ready")
            else:
                send(response_out, 404, {"error": "no such route"})
        except Err as e:
            send(response_out, 500, {"error": type(e.value).__name__ + ": " + e.value.value})
