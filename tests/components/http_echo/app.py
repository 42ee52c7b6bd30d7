"""A `wasi:http/proxy` test guest with many routes, for conformance and fault tests.

Routes:
  /echo[?status=N][&header=name:value ...]  a JSON dump of what the guest saw (method, path, scheme,
                                            authority, headers sorted by name, body length and sha256)
  /body                                     the request body echoed back, streamed
  /bytes?n=N[&content-length]               N bytes of the pattern i % 251 (chunked, or with a
                                            content-length header)
  /count                                    how many requests this instance has handled
  /trap                                     a Python exception (a wasm trap)
  /loop                                     an infinite loop
  /oom                                      unbounded memory growth
  /outgoing?url=http://host:port/path       an outgoing request (with the `header=` headers); its status
                                            and body, or 502 and the error
  /stderr[?msg=TEXT]                        a line on stderr, then 200
  /env?name=NAME                            the guest's environment variable NAME (404 if unset)
  /file?path=P[&write]                      the file at P read (or, with `write`, an attempt to write
                                            it) through wasi:filesystem: its bytes, or 403 and the error
"""

import hashlib
import json
import os
import sys
from urllib.parse import parse_qsl, urlsplit

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import outgoing_handler
from wit_world.imports.streams import StreamError_Closed, StreamError_LastOperationFailed
from wit_world.imports.types import (
    Fields,
    IncomingBody,
    IncomingRequest,
    Method_Connect,
    Method_Delete,
    Method_Get,
    Method_Head,
    Method_Options,
    Method_Other,
    Method_Patch,
    Method_Post,
    Method_Put,
    Method_Trace,
    OutgoingBody,
    OutgoingRequest,
    OutgoingResponse,
    ResponseOutparam,
    Scheme_Http,
    Scheme_Https,
    Scheme_Other,
)

_METHODS = {
    Method_Get: "GET",
    Method_Head: "HEAD",
    Method_Post: "POST",
    Method_Put: "PUT",
    Method_Delete: "DELETE",
    Method_Connect: "CONNECT",
    Method_Options: "OPTIONS",
    Method_Trace: "TRACE",
    Method_Patch: "PATCH",
}

READ_CHUNK = 65536
WRITE_CHUNK = 65536
PATTERN_BLOCK = bytes(i % 251 for i in range(251 * 256))  # a whole number of periods


def method_name(m):
    if isinstance(m, Method_Other):
        return m.value
    return _METHODS[type(m)]


def scheme_name(s):
    if s is None:
        return None
    if isinstance(s, Scheme_Http):
        return "http"
    if isinstance(s, Scheme_Https):
        return "https"
    if isinstance(s, Scheme_Other):
        return s.value
    return repr(s)


def read_stream(stream, sink):
    """Read an input stream until closed, handing each chunk to `sink`."""
    while True:
        try:
            chunk = stream.blocking_read(READ_CHUNK)
        except Err as e:
            if isinstance(e.value, StreamError_Closed):
                return
            raise
        if chunk:
            sink(chunk)


def read_incoming_body(body):
    """Read a whole incoming body (and drop it)."""
    parts = []
    with body.stream() as stream:
        read_stream(stream, parts.append)
    IncomingBody.finish(body).__exit__(None, None, None)
    return b"".join(parts)


def write_all(stream, data):
    """Write `data` respecting check-write, waiting for room when there is none."""
    view = memoryview(data)
    off = 0
    while off < len(view):
        n = stream.check_write()
        if n == 0:
            with stream.subscribe() as p:
                p.block()
            continue
        n = min(n, WRITE_CHUNK, len(view) - off)
        stream.write(bytes(view[off : off + n]))
        off += n


def headers_from_query(query):
    """`header=name:value` (value sent as UTF-8) and `header-latin1=name:value` (as Latin-1)."""
    out = []
    for key, value in query:
        if key in ("header", "header-latin1"):
            name, _, val = value.partition(":")
            out.append((name, val.encode("utf-8" if key == "header" else "latin-1")))
    return out


def respond(response_out, status, headers, body=b"", writer=None):
    """Send a response: status, headers (list of (str, bytes)), then a body (bytes or a writer)."""
    resp = OutgoingResponse(Fields.from_list(headers))
    resp.set_status_code(status)
    out_body = resp.body()
    ResponseOutparam.set(response_out, Ok(resp))
    with out_body.write() as stream:
        if writer is not None:
            writer(stream)
        else:
            write_all(stream, body)
        stream.blocking_flush()
    OutgoingBody.finish(out_body, None)


def text(response_out, status, message):
    respond(response_out, status, [("content-type", b"text/plain")], message.encode() + b"\n")


# Requests this instance has handled: shows whether the host reuses instances.
HANDLED = 0


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        global HANDLED
        HANDLED += 1
        pwq = request.path_with_query() or "/"
        parts = urlsplit(pwq)
        query = parse_qsl(parts.query, keep_blank_values=True)
        route = parts.path
        if route == "/echo":
            self.echo(request, response_out, pwq, query)
        elif route == "/body":
            self.body(request, response_out)
        elif route == "/bytes":
            self.bytes(response_out, query)
        elif route == "/count":
            text(response_out, 200, str(HANDLED))
        elif route == "/trap":
            raise RuntimeError("deliberate trap from the /trap route")
        elif route == "/loop":
            n = 0
            while True:
                n += 1
        elif route == "/oom":
            hog = []
            while True:
                hog.append(bytearray(1 << 20))
        elif route == "/outgoing":
            self.outgoing(response_out, query)
        elif route == "/env":
            name = dict(query).get("name", "")
            value = os.environ.get(name)
            if value is None:
                text(response_out, 404, f"{name} is not set")
            else:
                text(response_out, 200, value)
        elif route == "/file":
            self.file(response_out, dict(query))
        elif route == "/stderr":
            msg = dict(query).get("msg", "hello from the /stderr route")
            print(msg, file=sys.stderr, flush=True)
            text(response_out, 200, "logged")
        else:
            text(response_out, 404, f"no route {route}")

    def file(self, response_out, q):
        path = q.get("path", "")
        try:
            if "write" in q:
                with open(path, "wb") as f:
                    f.write(b"overwritten")
                data = b"written"
            else:
                with open(path, "rb") as f:
                    data = f.read()
        except OSError as e:
            text(response_out, 403, f"{type(e).__name__}: {e}")
            return
        respond(response_out, 200, [("content-type", b"application/octet-stream")], data)

    def echo(self, request, response_out, pwq, query):
        with request.headers() as fields:
            entries = fields.entries()
        headers = {}
        for name, value in entries:
            headers.setdefault(name, []).append(value.decode("latin-1"))
        body = read_incoming_body(request.consume())
        doc = {
            "method": method_name(request.method()),
            "path_with_query": pwq,
            "scheme": scheme_name(request.scheme()),
            "authority": request.authority(),
            "headers": [[name, headers[name]] for name in sorted(headers)],
            "body_length": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
        }
        status = 200
        out_headers = [("content-type", b"application/json")]
        for key, value in query:
            if key == "status":
                status = int(value)
        out_headers += headers_from_query(query)
        respond(response_out, status, out_headers, json.dumps(doc, sort_keys=True).encode() + b"\n")

    def body(self, request, response_out):
        in_body = request.consume()

        def pump(out_stream):
            with in_body.stream() as in_stream:
                read_stream(in_stream, lambda chunk: write_all(out_stream, chunk))

        respond(response_out, 200, [("content-type", b"application/octet-stream")], writer=pump)
        IncomingBody.finish(in_body).__exit__(None, None, None)

    def bytes(self, response_out, query):
        n = int(dict(query).get("n", "0"))

        def gen(stream):
            off = 0
            period = len(PATTERN_BLOCK)
            while off < n:
                start = off % period
                chunk = PATTERN_BLOCK[start : start + min(n - off, period - start)]
                write_all(stream, chunk)
                off += len(chunk)

        headers = [("content-type", b"application/octet-stream")]
        if "content-length" in dict(query):
            headers.append(("content-length", str(n).encode()))
        respond(response_out, 200, headers, writer=gen)

    def outgoing(self, response_out, query):
        url = urlsplit(dict(query)["url"])
        req = OutgoingRequest(Fields.from_list(headers_from_query(query)))
        req.set_scheme(Scheme_Https() if url.scheme == "https" else Scheme_Http())
        req.set_authority(url.netloc)
        req.set_path_with_query(url.path + ("?" + url.query if url.query else "") or "/")
        try:
            future = outgoing_handler.handle(req, None)
        except Err as e:
            text(response_out, 502, f"outgoing request refused: {e.value!r}")
            return
        with future.subscribe() as p:
            p.block()
        result = future.get()
        future.__exit__(None, None, None)
        # option<result<result<incoming-response, error-code>>>: unwrap the two results.
        if isinstance(result, Err) or isinstance(result.value, Err):
            err = result.value if isinstance(result, Err) else result.value.value
            text(response_out, 502, f"outgoing request failed: {err!r}")
            return
        upstream = result.value.value
        status = upstream.status()
        try:
            body = read_incoming_body(upstream.consume())
        except Err as e:
            err = e.value
            failed = isinstance(err, StreamError_LastOperationFailed)
            detail = err.value.to_debug_string() if failed else repr(err)
            text(response_out, 502, f"reading the upstream body failed: {detail}")
            return
        upstream.__exit__(None, None, None)
        respond(response_out, status, [("content-type", b"application/octet-stream")], body)
