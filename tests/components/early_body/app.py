"""A `wasi:http/proxy` test guest that writes its whole response body before setting the response.

GET /?n=N[&content-length]: N bytes of the pattern i % 251, all written (respecting check-write,
waiting on the stream's pollable when there is no room) and the body finished, and only then
`response-outparam.set` (200). A host that only streams the body once the response is set would
leave this guest waiting for room forever; `wasmtime serve` buffers it.
"""

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

PERIOD = bytes(range(251))


def write_all(stream, n):
    """Write n pattern bytes in writes as large as check-write allows, blocking on the pollable
    when there is no room (as `wasmtime serve` sees it, a few large writes fit its buffer)."""
    data = memoryview((PERIOD * (n // 251 + 1))[:n])
    off = 0
    while off < n:
        room = stream.check_write()
        if room == 0:
            with stream.subscribe() as p:
                p.block()
            continue
        size = min(room, n - off)
        stream.write(bytes(data[off : off + size]))
        off += size


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        query = dict(parse_qsl(urlsplit(request.path_with_query() or "/").query, keep_blank_values=True))
        n = int(query.get("n", "0"))
        headers = [("content-type", b"application/octet-stream")]
        if "content-length" in query:
            headers.append(("content-length", str(n).encode()))
        resp = OutgoingResponse(Fields.from_list(headers))
        body = resp.body()
        # No blocking-flush before `set`: in `wasmtime serve` it waits for room in a channel
        # nobody drains yet (two chunks of at most 1 MiB).
        with body.write() as stream:
            write_all(stream, n)
        OutgoingBody.finish(body, None)
        ResponseOutparam.set(response_out, Ok(resp))
