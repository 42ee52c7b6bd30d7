"""A `wasi:http/proxy` test guest for resource limits: a memory bomb, a trap and an output flood.

Routes:
  /ok                               200 "ok"
  /bomb                             grows memory until the allocator fails (a wasm trap)
  /grow?mib=N                       holds N MiB of memory, then answers 200 (under the limit: fine)
  /trap                             a Python exception (a wasm trap)
  /flood?lines=N[&len=L][&err]      N lines of L bytes on stdout (stderr with `err`), then 200
  /longline?len=L                   one line of L bytes on stdout, then 200
"""

import sys
from urllib.parse import parse_qsl, urlsplit

from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports.types import (
    Fields,
    IncomingRequest,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)


def text(response_out, status, message):
    """Answer with a short text body."""
    resp = OutgoingResponse(Fields.from_list([("content-type", b"text/plain")]))
    resp.set_status_code(status)
    body = resp.body()
    ResponseOutparam.set(response_out, Ok(resp))
    with body.write() as stream:
        stream.blocking_write_and_flush(message.encode() + b"\n")
    OutgoingBody.finish(body, None)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        parts = urlsplit(request.path_with_query() or "/")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        route = parts.path
        if route == "/ok":
            text(response_out, 200, "ok")
        elif route == "/bomb":
            hog = []
            while True:
                hog.append(bytearray(4 << 20))
        elif route == "/grow":
            hog = [bytearray(1 << 20) for _ in range(int(query.get("mib", "1")))]
            text(response_out, 200, f"held {len(hog)} MiB")
        elif route == "/trap":
            raise RuntimeError("deliberate trap from the /trap route")
        elif route == "/flood":
            out = sys.stderr if "err" in query else sys.stdout
            n, length = int(query.get("lines", "1000")), int(query.get("len", "100"))
            line = "x" * length
            for i in range(n):
                out.write(f"flood {i} {line}\n")
            out.flush()
            text(response_out, 200, f"wrote {n} lines")
        elif route == "/longline":
            sys.stdout.write("L" * int(query.get("len", "100000")) + "\n")
            sys.stdout.flush()
            text(response_out, 200, "wrote one line")
        else:
            text(response_out, 404, f"no route {route}")
