"""Serves HTTP and calls `test:greeter/greet` through whatever its link targets.

Routes: /hello?name=N&age=A, /divide?a=A&b=B (200 and the quotient, or 400 and the error),
/crash (the callee traps).
"""

from urllib.parse import parse_qsl, urlsplit

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import greet
from wit_world.imports.types import Fields, OutgoingBody, OutgoingResponse, ResponseOutparam


def text(response_out, status, message):
    resp = OutgoingResponse(Fields.from_list([("content-type", b"text/plain")]))
    resp.set_status_code(status)
    body = resp.body()
    ResponseOutparam.set(response_out, Ok(resp))
    with body.write() as stream:
        stream.blocking_write_and_flush(message.encode() + b"\n")
    OutgoingBody.finish(body, None)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request, response_out):
        parts = urlsplit(request.path_with_query() or "/")
        q = dict(parse_qsl(parts.query))
        if parts.path == "/hello":
            text(response_out, 200, greet.hello(greet.Person(q.get("name", "x"), int(q.get("age", "0")))))
        elif parts.path == "/divide":
            try:
                text(response_out, 200, str(greet.divide(int(q["a"]), int(q["b"]))))
            except Err as e:
                text(response_out, 400, f"error: {e.value}")
        elif parts.path == "/ready":
            text(response_out, 200, "ready")
        elif parts.path == "/crash":
            greet.crash()
            text(response_out, 200, "unreachable")
        else:
            text(response_out, 404, "no such route")
