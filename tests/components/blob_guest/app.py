"""A `wasi:http/proxy` guest that exercises `wasi:blobstore@0.2.0-draft`; every route answers JSON.

A failed blobstore call answers `{"error": "<the interface's error string>"}` (status 200), so
tests see exactly what the guest got. Query parameters: `c` container, `o` object.

  /create?c  /get-container?c  /exists?c  /delete-container?c  /info?c
  /put?c&o&n=N[&seed=S][&chunk=K][&order=before|after]
        N bytes of the pattern (i + S) % 251 written through the outgoing-value's output-stream in
        chunks of K bytes, `write-data` before (default) or after writing; then `finish`
  /put-text?c&o&v=TEXT            a small value
  /unfinished?c&o&n=N             write-data and write N bytes, then drop the value unfinished
  /write-twice?c&o                write-data twice with one value
  /body-twice                     outgoing-value-write-body twice
  /get?c&o[&start&end][&mode=async|sync][&chunk=K]
        get-data, then the value read as a stream (async, default) or whole (sync): its `size()`,
        length, sha256 and (if under 4 KiB) its text
  /list?c[&skip=S][&page=P]       list-objects: skip S names, then read pages of P names
  /has?c&o  /object-info?c&o  /delete?c&o  /delete-many?c&o&o...  /clear?c
  /copy?sc&so&dc&do  /move?sc&so&dc&do
"""

import hashlib
import json
from urllib.parse import parse_qsl, urlsplit

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import blobstore
from wit_world.imports.wasi_blobstore_types import IncomingValue, ObjectId, OutgoingValue
from wit_world.imports.wasi_http_types import (
    Fields,
    IncomingRequest,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)
from wit_world.imports.wasi_io_streams_0_2_0 import StreamError_Closed

PERIOD = 251


def pattern(n, seed, start=0):
    """Bytes start..start+n of the pattern (i + seed) % 251."""
    block = bytes((i + seed) % PERIOD for i in range(PERIOD * 64))
    out = bytearray()
    pos = start
    while len(out) < n:
        off = pos % PERIOD
        take = min(n - len(out), len(block) - off)
        out += block[off : off + take]
        pos += take
    return bytes(out)


def write_all(stream, data, chunk):
    """Write `data` in chunks of at most `chunk` bytes, waiting for room (check-write)."""
    view = memoryview(data)
    off = 0
    while off < len(view):
        room = stream.check_write()
        if room == 0:
            with stream.subscribe() as p:
                p.block()
            continue
        n = min(room, chunk, len(view) - off)
        stream.write(bytes(view[off : off + n]))
        off += n
    stream.blocking_flush()


def respond(response_out, status, doc):
    body = json.dumps(doc, sort_keys=True).encode() + b"\n"
    resp = OutgoingResponse(Fields.from_list([("content-type", b"application/json")]))
    resp.set_status_code(status)
    out_body = resp.body()
    ResponseOutparam.set(response_out, Ok(resp))
    with out_body.write() as stream:
        write_all(stream, body, 4096)
    OutgoingBody.finish(out_body, None)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        parts = urlsplit(request.path_with_query() or "/")
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        q = dict(pairs)
        route = parts.path.strip("/")
        handler = getattr(self, "r_" + route.replace("-", "_"), None)
        if handler is None:
            respond(response_out, 404, {"error": f"no route {route}"})
            return
        try:
            doc = handler(q, pairs)
        except Err as e:
            doc = {"error": e.value}
        respond(response_out, 200, doc)

    # -- containers ----------------------------------------------------------------------------

    def r_create(self, q, _):
        with blobstore.create_container(q["c"]) as c:
            return {"name": c.name()}

    def r_get_container(self, q, _):
        with blobstore.get_container(q["c"]) as c:
            return {"name": c.name()}

    def r_exists(self, q, _):
        return {"exists": blobstore.container_exists(q["c"])}

    def r_delete_container(self, q, _):
        blobstore.delete_container(q["c"])
        return {"ok": True}

    def r_info(self, q, _):
        with blobstore.get_container(q["c"]) as c:
            meta = c.info()
        return {"name": meta.name, "created_at": meta.created_at}

    # -- writing -------------------------------------------------------------------------------

    def r_put(self, q, _):
        n = int(q.get("n", "0"))
        seed = int(q.get("seed", "0"))
        chunk = int(q.get("chunk", "65536"))
        data = pattern(n, seed)
        with blobstore.get_container(q["c"]) as c:
            value = OutgoingValue.new_outgoing_value()
            stream = value.outgoing_value_write_body()
            if q.get("order", "before") == "before":
                c.write_data(q["o"], value)
                write_all(stream, data, chunk)
            else:
                write_all(stream, data, chunk)
                c.write_data(q["o"], value)
            stream.__exit__(None, None, None)
            OutgoingValue.finish(value)
        return {"ok": True, "size": n, "sha256": hashlib.sha256(data).hexdigest()}

    def r_put_text(self, q, _):
        with blobstore.get_container(q["c"]) as c:
            value = OutgoingValue.new_outgoing_value()
            with value.outgoing_value_write_body() as stream:
                write_all(stream, q.get("v", "").encode(), 4096)
            c.write_data(q["o"], value)
            OutgoingValue.finish(value)
        return {"ok": True}

    def r_unfinished(self, q, _):
        with blobstore.get_container(q["c"]) as c:
            value = OutgoingValue.new_outgoing_value()
            c.write_data(q["o"], value)
            with value.outgoing_value_write_body() as stream:
                write_all(stream, pattern(int(q.get("n", "1000")), 0), 65536)
            value.__exit__(None, None, None)  # dropped without finish
        return {"ok": True}

    def r_write_twice(self, q, _):
        with blobstore.get_container(q["c"]) as c:
            value = OutgoingValue.new_outgoing_value()
            c.write_data(q["o"], value)
            try:
                c.write_data(q["o"] + ".again", value)
                second = "ok"
            except Err as e:
                second = e.value
            with value.outgoing_value_write_body() as stream:
                write_all(stream, b"once", 4096)
            OutgoingValue.finish(value)
        return {"second": second}

    def r_body_twice(self, q, _):
        value = OutgoingValue.new_outgoing_value()
        first = value.outgoing_value_write_body()
        try:
            value.outgoing_value_write_body()
            second = "ok"
        except Err as e:
            second = repr(e.value)
        first.__exit__(None, None, None)
        value.__exit__(None, None, None)
        return {"second": second}

    # -- reading -------------------------------------------------------------------------------

    def r_get(self, q, _):
        start = int(q.get("start", "0"))
        end = int(q.get("end", str(2**64 - 1)))
        chunk = int(q.get("chunk", "65536"))
        with blobstore.get_container(q["c"]) as c:
            value = c.get_data(q["o"], start, end)
        size = value.size()
        if q.get("mode", "async") == "sync":
            data = IncomingValue.incoming_value_consume_sync(value)
            reads = 1
        else:
            stream = IncomingValue.incoming_value_consume_async(value)
            parts, reads = [], 0
            while True:
                try:
                    parts.append(stream.blocking_read(chunk))
                    reads += 1
                except Err as e:
                    if isinstance(e.value, StreamError_Closed):
                        break
                    stream.__exit__(None, None, None)
                    return {"error": "stream: " + e.value.value.to_debug_string()}
            stream.__exit__(None, None, None)
            data = b"".join(parts)
        doc = {"size": size, "len": len(data), "sha256": hashlib.sha256(data).hexdigest(), "reads": reads}
        if len(data) < 4096:
            doc["text"] = data.decode("latin-1")
        return doc

    def r_list(self, q, _):
        skip = int(q.get("skip", "0"))
        page = int(q.get("page", "1000"))
        with blobstore.get_container(q["c"]) as c, c.list_objects() as names:
            doc = {"skipped": None, "pages": [], "ends": []}
            if skip:
                skipped, end = names.skip_stream_object_names(skip)
                doc["skipped"] = [skipped, end]
                if end:
                    return doc
            while True:
                got, end = names.read_stream_object_names(page)
                doc["pages"].append(got)
                doc["ends"].append(end)
                if end:
                    return doc

    def r_has(self, q, _):
        with blobstore.get_container(q["c"]) as c:
            return {"has": c.has_object(q["o"])}

    def r_object_info(self, q, _):
        with blobstore.get_container(q["c"]) as c:
            m = c.object_info(q["o"])
        return {"name": m.name, "container": m.container, "created_at": m.created_at, "size": m.size}

    def r_delete(self, q, _):
        with blobstore.get_container(q["c"]) as c:
            c.delete_object(q["o"])
        return {"ok": True}

    def r_delete_many(self, q, pairs):
        with blobstore.get_container(q["c"]) as c:
            c.delete_objects([v for k, v in pairs if k == "o"])
        return {"ok": True}

    def r_clear(self, q, _):
        with blobstore.get_container(q["c"]) as c:
            c.clear()
        return {"ok": True}

    def r_copy(self, q, _):
        blobstore.copy_object(ObjectId(q["sc"], q["so"]), ObjectId(q["dc"], q["do"]))
        return {"ok": True}

    def r_move(self, q, _):
        blobstore.move_object(ObjectId(q["sc"], q["so"]), ObjectId(q["dc"], q["do"]))
        return {"ok": True}
