"""The entry of the chain test: HTTP in, `test:chain/stage` (middle) and `test:chain/judge` (back) out.

/chain?item=NAME:WEIGHT:TAG1,TAG2 ...[&note=N]   {"trail": [...], "verdicts": [...]} or 400 {"error"}
/slow?ms=N                                       back's answer, or 500 if the call failed
/crash                                           back traps: 500
/ready                                           200
"""

import json
from urllib.parse import parse_qsl, urlsplit

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import judge, lattice, stage
from wit_world.imports.test_chain_types import Item, Verdict_Accept, Verdict_Reject
from wit_world.imports.wasi_http_types import Fields, OutgoingBody, OutgoingResponse, ResponseOutparam


def respond(response_out, status, doc):
    resp = OutgoingResponse(Fields.from_list([("content-type", b"application/json")]))
    resp.set_status_code(status)
    body = resp.body()
    ResponseOutparam.set(response_out, Ok(resp))
    with body.write() as stream:
        stream.blocking_write_and_flush(json.dumps(doc).encode())
    OutgoingBody.finish(body, None)


def parse_item(text):
    name, weight, tags = [*text.split(":"), "", ""][:3]
    return Item(name, [t for t in tags.split(",") if t], int(weight or 0))


def show(verdict):
    if isinstance(verdict, Verdict_Accept):
        return {"accept": verdict.value}
    if isinstance(verdict, Verdict_Reject):
        return {"reject": verdict.value}
    return "unknown"


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request, response_out):
        parts = urlsplit(request.path_with_query() or "/")
        query = parse_qsl(parts.query)
        if parts.path == "/chain":
            items = [parse_item(v) for k, v in query if k == "item"]
            note = dict(query).get("note")
            try:
                trail, verdicts = stage.process(items, note)
            except Err as e:
                respond(response_out, 400, {"error": e.value})
                return
            respond(response_out, 200, {"trail": trail, "verdicts": [show(v) for v in verdicts]})
        elif parts.path == "/slow":
            respond(response_out, 200, {"slept": judge.slow(int(dict(query).get("ms", "0")))})
        elif parts.path == "/via":
            q = dict(query)
            try:
                lattice.set_link_name(q["link"], [lattice.CallTargetInterface("test", "chain", "judge")])
            except Err as e:
                respond(response_out, 409, {"error": e.value})
                return
            respond(response_out, 200, {"slept": judge.slow(int(q.get("ms", "0")))})
        elif parts.path == "/crash":
            judge.crash()
            respond(response_out, 200, {})
        elif parts.path == "/ready":
            respond(response_out, 200, {})
        else:
            respond(response_out, 404, {"error": "no such route"})
