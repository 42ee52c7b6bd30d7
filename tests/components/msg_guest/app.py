"""A guest that sends and handles `wasmcloud:messaging@0.2.0` messages and logs through `wasi:logging`.

HTTP routes (each answers JSON):
  /                                            {"ok": "msg guest"}
  /publish?subject=S&body=B[&reply_to=R]      consumer.publish -> {"ok": null} or 500 {"err": ...}
  /request?subject=S&body=B[&timeout_ms=N]     consumer.request (default 1000 ms) -> {"ok": {"subject",
                                               "body", "reply_to"}} or 500 {"err": ...}
  /log?tag=T                                   one wasi:logging line per level, message "T <level>",
                                               context "msg-guest"

handle-message:
  body "fail"  -> returns Err("refusing body `fail` on <subject>")
  body "trap"  -> a Python exception (a wasm trap)
  otherwise    -> logs "handling <subject>" at info; replies to reply-to (if any) with the body
                  upper-cased; republishes the body to "handled.<subject>" with reply-to = subject.
"""

import json
from urllib.parse import parse_qsl, urlsplit

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import consumer, logging
from wit_world.imports.wasi_http_types import Fields, OutgoingBody, OutgoingResponse, ResponseOutparam
from wit_world.imports.wasmcloud_messaging_types import BrokerMessage

LEVELS = [
    ("trace", logging.Level.TRACE),
    ("debug", logging.Level.DEBUG),
    ("info", logging.Level.INFO),
    ("warn", logging.Level.WARN),
    ("error", logging.Level.ERROR),
    ("critical", logging.Level.CRITICAL),
]


def respond(response_out, status, doc):
    resp = OutgoingResponse(Fields.from_list([("content-type", b"application/json")]))
    resp.set_status_code(status)
    body = resp.body()
    ResponseOutparam.set(response_out, Ok(resp))
    with body.write() as stream:
        stream.blocking_write_and_flush(json.dumps(doc).encode() + b"\n")
    OutgoingBody.finish(body, None)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request, response_out):
        parts = urlsplit(request.path_with_query() or "/")
        q = dict(parse_qsl(parts.query, keep_blank_values=True))
        route = parts.path
        try:
            if route == "/":
                respond(response_out, 200, {"ok": "msg guest"})
            elif route == "/publish":
                msg = BrokerMessage(q.get("subject", ""), q.get("body", "").encode(), q.get("reply_to"))
                consumer.publish(msg)
                respond(response_out, 200, {"ok": None})
            elif route == "/request":
                timeout = int(q.get("timeout_ms", "1000"))
                reply = consumer.request(q.get("subject", ""), q.get("body", "").encode(), timeout)
                doc = {"subject": reply.subject, "body": reply.body.decode(), "reply_to": reply.reply_to}
                respond(response_out, 200, {"ok": doc})
            elif route == "/log":
                tag = q.get("tag", "tag")
                for name, level in LEVELS:
                    logging.log(level, "msg-guest", f"{tag} {name}")
                respond(response_out, 200, {"ok": None})
            else:
                respond(response_out, 404, {"err": f"no route {route}"})
        except Err as e:
            respond(response_out, 500, {"err": e.value})


class Handler(exports.Handler):
    def handle_message(self, msg):
        if msg.body == b"fail":
            raise Err(f"refusing body `fail` on {msg.subject}")
        if msg.body == b"trap":
            raise RuntimeError(f"deliberate trap on {msg.subject}")
        logging.log(logging.Level.INFO, "msg-guest", f"handling {msg.subject}")
        if msg.reply_to:
            consumer.publish(BrokerMessage(msg.reply_to, msg.body.upper(), None))
        consumer.publish(BrokerMessage("handled." + msg.subject, msg.body, msg.subject))
