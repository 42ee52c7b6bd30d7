"""A `wasi:http/proxy` test guest that calls out over HTTP (record and replay of outgoing requests).

Every request is forwarded to the URL in its `x-upstream` header (`http://host:port/path?query`;
without the header: 400, and nothing is sent): same method, the incoming `content-type`,
`authorization` and other `x-*` headers (not `x-upstream` itself), and the incoming body, which is
written after `outgoing-handler.handle` in 1000-byte writes. The answer is the upstream's status
with a body `upstream <content-type>: <its body>`, or, with the request header `x-digest`, its
length and sha256 instead of the body. An error is a 502 with the `error-code` the guest got:
`handle refused: ...` (from `handle` itself) or `failed: ...` (through the future). The guest reads
the wall clock before and after the call and answers it in `x-took-ms`, so a recording has
recorded calls on both sides of the exchange.
"""

import hashlib
import time
from urllib.parse import urlsplit

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import outgoing_handler
from wit_world.imports.streams import StreamError_Closed
from wit_world.imports.types import (
    Fields,
    IncomingBody,
    IncomingRequest,
    Method_Delete,
    Method_Get,
    Method_Other,
    Method_Patch,
    Method_Post,
    Method_Put,
    OutgoingBody,
    OutgoingRequest,
    OutgoingResponse,
    ResponseOutparam,
    Scheme_Http,
    Scheme_Https,
)

FORWARDED = ("content-type", "authorization")


def read_body(body):
    """A whole incoming body (request or response), read in chunks until closed."""
    parts = []
    with body.stream() as stream:
        while True:
            try:
                chunk = stream.blocking_read(65536)
            except Err as e:
                if isinstance(e.value, StreamError_Closed):
                    break
                raise
            parts.append(chunk)
    IncomingBody.finish(body).__exit__(None, None, None)
    return b"".join(parts)


def respond(response_out, status, body, headers=()):
    resp = OutgoingResponse(Fields.from_list([("content-type", b"text/plain"), *headers]))
    resp.set_status_code(status)
    out_body = resp.body()
    ResponseOutparam.set(response_out, Ok(resp))
    with out_body.write() as stream:
        for i in range(0, len(body), 4096):
            stream.blocking_write_and_flush(body[i : i + 4096])
    OutgoingBody.finish(out_body, None)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        with request.headers() as fields:
            entries = fields.entries()
        headers = dict(entries)
        upstream = headers.get("x-upstream")
        method = request.method()
        body = read_body(request.consume())
        if upstream is None:
            respond(response_out, 400, b"no x-upstream header\n")
            return
        started = time.time()
        url = urlsplit(upstream.decode())
        sent = [(k, v) for k, v in entries if k in FORWARDED or (k.startswith("x-") and k != "x-upstream")]
        req = OutgoingRequest(Fields.from_list(sent))
        if not isinstance(
            method, (Method_Get, Method_Post, Method_Put, Method_Delete, Method_Patch, Method_Other)
        ):
            method = Method_Get()
        req.set_method(method)
        req.set_scheme(Scheme_Https() if url.scheme == "https" else Scheme_Http())
        req.set_authority(url.netloc)
        req.set_path_with_query((url.path or "/") + ("?" + url.query if url.query else ""))
        out_body = req.body()
        try:
            future = outgoing_handler.handle(req, None)
        except Err as e:
            respond(response_out, 502, f"handle refused: {e.value!r}\n".encode())
            return
        # The body goes out after `handle`, as a streaming client writes it.
        with out_body.write() as stream:
            for i in range(0, len(body), 1000):
                stream.blocking_write_and_flush(body[i : i + 1000])
        OutgoingBody.finish(out_body, None)
        with future.subscribe() as p:
            p.block()
        result = future.get()
        future.__exit__(None, None, None)
        took = str(int((time.time() - started) * 1000)).encode()
        # option<result<result<incoming-response, error-code>>>: unwrap the two results.
        if isinstance(result, Err) or isinstance(result.value, Err):
            err = result.value if isinstance(result, Err) else result.value.value
            respond(response_out, 502, f"failed: {err!r}\n".encode(), [("x-took-ms", took)])
            return
        upstream_resp = result.value.value
        status = upstream_resp.status()
        with upstream_resp.headers() as fields:
            ctype = dict(fields.entries()).get("content-type", b"?").decode("latin-1")
        data = read_body(upstream_resp.consume())
        upstream_resp.__exit__(None, None, None)
        if "x-digest" in headers:
            data = f"{len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}".encode()
        respond(response_out, status, f"upstream {ctype}: ".encode() + data, [("x-took-ms", took)])
