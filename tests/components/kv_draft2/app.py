"""A `wasi:keyvalue@0.2.0-draft2` guest (the version Spin and the WASI proposal ship).

Every route answers JSON: `{"ok": ...}` with 200, or `{"error": case, "message": text}` with 500
when the host answers with the interface's error. Query parameter `bucket=ID` (the identifier
passed to `open`, default `default`). Values are shown as Latin-1 text. Routes as in `kv_draft`
(list-keys cursors are strings here; get-many answers [[key, value|null], ...]), plus:

  /cas?key=K&value=V             cas.new, cas.current, swap: {"before": value|null}
  /cas-conflict?key=K&value=V    cas.new, then a set of K behind its back, then swap (refused with
                                 cas-failed and a fresh cas), then swap with the fresh cas

  /set?key=K&value=V | &size=N   set K to V (or to N bytes of `x`)
  /get?key=K                     the value or null
  /delete?key=K, /exists?key=K
  /list-page[?cursor=C]          one page of list-keys: {"keys": [...], "cursor": C|null}
  /list                          every page followed: {"keys": sorted, "pages": n}
  /incr?key=K&delta=D            increment
  /get-many?key=A&key=B          [[key, value] | null, ...]
  /set-many?k=A&v=1&k=B&v=2      set-many of the pairs
  /delete-many?key=A&key=B
  /bench?n=N                     N x (set + get) on one bucket, for benchmarks
"""

import json
from urllib.parse import parse_qsl, urlsplit

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import atomics, batch, store
from wit_world.imports.types import Fields, OutgoingBody, OutgoingResponse, ResponseOutparam


def respond(response_out, status, doc):
    resp = OutgoingResponse(Fields.from_list([("content-type", b"application/json")]))
    resp.set_status_code(status)
    body = resp.body()
    ResponseOutparam.set(response_out, Ok(resp))
    data = json.dumps(doc).encode()
    with body.write() as stream:
        off = 0
        while off < len(data):
            n = stream.check_write()
            if n == 0:
                with stream.subscribe() as p:
                    p.block()
                continue
            n = min(n, 65536, len(data) - off)
            stream.write(data[off : off + n])
            off += n
        stream.blocking_flush()
    OutgoingBody.finish(body, None)


def show(value):
    return None if value is None else value.decode("latin-1")


def error_doc(e):
    v = e.value
    if isinstance(v, store.Error_Other):
        return {"error": "other", "message": v.value}
    if isinstance(v, store.Error_NoSuchStore):
        return {"error": "no-such-store", "message": ""}
    if isinstance(v, store.Error_AccessDenied):
        return {"error": "access-denied", "message": ""}
    return {"error": repr(v), "message": repr(v)}


def run(route, q, multi):
    b = store.open(q.get("bucket", "default"))
    key = q.get("key", "")
    if route == "/set":
        value = b"x" * int(q["size"]) if "size" in q else q.get("value", "").encode()
        b.set(key, value)
        return len(value)
    if route == "/get":
        return show(b.get(key))
    if route == "/delete":
        b.delete(key)
        return True
    if route == "/exists":
        return b.exists(key)
    if route == "/list-page":
        cursor = q.get("cursor")
        r = b.list_keys(cursor)
        return {"keys": r.keys, "cursor": r.cursor}
    if route == "/list":
        keys, cursor, pages = [], None, 0
        while True:
            r = b.list_keys(cursor)
            keys += r.keys
            pages += 1
            cursor = r.cursor
            if cursor is None:
                return {"keys": sorted(keys), "pages": pages}
    if route == "/incr":
        return atomics.increment(b, key, int(q.get("delta", "1")))
    if route == "/get-many":
        got = batch.get_many(b, multi.get("key", []))
        return [[k, show(v)] for k, v in got]
    if route == "/set-many":
        pairs = [(k, v.encode()) for k, v in zip(multi.get("k", []), multi.get("v", []), strict=True)]
        batch.set_many(b, pairs)
        return len(pairs)
    if route == "/delete-many":
        batch.delete_many(b, multi.get("key", []))
        return True
    if route == "/bench":
        n = int(q.get("n", "100"))
        for i in range(n):
            k = f"bench-{i % 16}"
            b.set(k, b"v" * 64)
            b.get(k)
        return n
    if route == "/cas":
        cas = atomics.Cas.new(b, key)
        before = show(cas.current())
        atomics.swap(cas, q.get("value", "").encode())
        return {"before": before}
    if route == "/cas-conflict":
        cas = atomics.Cas.new(b, key)
        b.set(key, b"intruder")
        try:
            atomics.swap(cas, q.get("value", "").encode())
            return {"first": "ok"}
        except Err as e:
            if not isinstance(e.value, atomics.CasError_CasFailed):
                raise Err(e.value.value) from None
            fresh = e.value.value
        seen = show(fresh.current())
        atomics.swap(fresh, q.get("value", "").encode())
        return {"first": "cas-failed", "fresh_current": seen, "final": show(b.get(key))}
    raise LookupError(route)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request, response_out):
        parts = urlsplit(request.path_with_query() or "/")
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        multi = {}
        for k, v in pairs:
            multi.setdefault(k, []).append(v)
        try:
            respond(response_out, 200, {"ok": run(parts.path, dict(pairs), multi)})
        except Err as e:
            respond(response_out, 500, error_doc(e))
        except LookupError as e:
            respond(response_out, 404, {"error": "route", "message": f"no route {e}"})
