"""Serves HTTP and counts through `example:counter/counter`, which a capability plugin implements.

Routes: /inc?name=N (the new count of N, as text), /ready.
"""

from urllib.parse import parse_qsl, urlsplit

from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports import counter
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
        if parts.path == "/inc":
            text(response_out, 200, str(counter.increment(q.get("name", "x"))))
        elif parts.path == "/ready":
            text(response_out, 200, "ready")
        else:
            text(response_out, 404, "no such route")
