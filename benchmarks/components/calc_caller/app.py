"""The caller of benchmarks/lattice_calls.py: `/bench?n=N` makes N sequential `calc.add` calls
through its link and answers their latencies: {"n", "seconds", "p50_us", "p99_us"}."""

import json
import time
from urllib.parse import parse_qsl, urlsplit

from componentize_py_types import Ok
from wit_world import exports
from wit_world.imports import calc
from wit_world.imports.types import Fields, OutgoingBody, OutgoingResponse, ResponseOutparam


def respond(response_out, status, doc):
    resp = OutgoingResponse(Fields.from_list([("content-type", b"application/json")]))
    resp.set_status_code(status)
    body = resp.body()
    ResponseOutparam.set(response_out, Ok(resp))
    with body.write() as stream:
        stream.blocking_write_and_flush(json.dumps(doc).encode())
    OutgoingBody.finish(body, None)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request, response_out):
        parts = urlsplit(request.path_with_query() or "/")
        n = int(dict(parse_qsl(parts.query)).get("n", "1"))
        times = []
        start = time.perf_counter()
        for i in range(n):
            t = time.perf_counter()
            if calc.add(calc.Point(i, 1)) != i + 1:
                respond(response_out, 500, {"error": f"wrong sum at {i}"})
                return
            times.append(time.perf_counter() - t)
        total = time.perf_counter() - start
        times.sort()
        respond(
            response_out,
            200,
            {
                "n": n,
                "seconds": total,
                "p50_us": times[len(times) // 2] * 1e6 if times else 0,
                "p99_us": times[min(len(times) - 1, int(len(times) * 0.99))] * 1e6 if times else 0,
            },
        )
