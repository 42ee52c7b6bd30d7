"""The guest of the tracing test: one HTTP request makes a key-value call and a call to `judge`.

/go?key=K&value=V   set K to V in bucket `default`, read it back, `judge.sign(["front"])`:
                    200 {"value": V, "trail": [...]}; prints one line to stdout on the way
/crash              `judge.crash()` (the callee traps): 500
/ready              200
"""

import json
from urllib.parse import parse_qsl, urlsplit

from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports import judge, store
from wit_world.imports.wasi_http_types import Fields, OutgoingBody, OutgoingResponse, ResponseOutparam


def respond(response_out, status, doc):
    resp = OutgoingResponse(Fields.from_list([("content-type", b"application/json")]))
    resp.set_status_code(status)
    body = resp.body()
    ResponseOutparam.set(response_out, Ok(resp))
    with body.write() as stream:
        stream.blocking_write_and_flush(json.dumps(doc).encode())
    OutgoingBody.finish(body, None)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request, response_out):
        parts = urlsplit(request.path_with_query() or "/")
        q = dict(parse_qsl(parts.query))
        if parts.path == "/go":
            key, value = q.get("key", "k"), q.get("value", "v")
            print(f"trace-front: storing {key}", flush=True)
            bucket = store.open("default")
            bucket.set(key, value.encode())
            got = bucket.get(key)
            trail = judge.sign(["front"])
            respond(response_out, 200, {"value": got.decode() if got is not None else None, "trail": trail})
        elif parts.path == "/crash":
            judge.crash()
            respond(response_out, 200, {})
        elif parts.path == "/ready":
            respond(response_out, 200, {})
        else:
            respond(response_out, 404, {"error": "no such route"})
