"""`wasi:http` 0.2 incoming requests: the request the host's HTTP server hands a guest, and the
response the guest gives back through its outparam."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wasmlattice.runtime.witypes import Err, Ok
from wasmlattice.wasi.ctx import ctx
from wasmlattice.wasi.http_body import IncomingBody, OutgoingBody, content_length
from wasmlattice.wasi.http_types import Fields, internal_error, method_to_wit
from wasmlattice.wasi.io import PIPE_CAPACITY, BytePipe

# How much of a response body a guest may write before `response-outparam.set`. Nothing reads the
# body until the response is set, so these bytes are buffered in memory (as `wasmtime serve` does)
# rather than making the guest wait for room that never comes. A guest that writes more before
# setting its response traps with `UNSENT_BODY_TRAP` (the client gets 500). After `set`, the body
# streams out with at most `PIPE_CAPACITY` buffered, the writer waiting for the network.
UNSENT_BODY_LIMIT = 4 << 20
UNSENT_BODY_TRAP = (
    f"the response body written before response-outparam.set exceeds {UNSENT_BODY_LIMIT >> 20} MiB "
    "(the most this host buffers before the response is set); set the response first and stream the body"
)


class IncomingRequest:
    """`incoming-request`, made by the host's HTTP server."""

    def __init__(
        self,
        method: str,
        path_with_query: str | None,
        scheme: str | None,
        authority: str | None,
        headers: list[tuple[str, bytes]],
        body: BytePipe,
    ) -> None:
        self._method = method_to_wit(method)
        self._path = path_with_query
        self._scheme = scheme
        self._authority = authority
        self._headers = headers
        self.body = body
        self.consumed = False

    def method(self) -> Any:
        """The request method."""
        return self._method

    def path_with_query(self) -> str | None:
        """Path and query."""
        return self._path

    def scheme(self) -> Any:
        """The scheme."""
        s = self._scheme
        if s is None:
            return None
        return ("HTTP", None) if s == "http" else ("HTTPS", None) if s == "https" else ("other", s)

    def authority(self) -> str | None:
        """The authority (host[:port])."""
        return self._authority

    def headers(self) -> Fields:
        """The request headers (immutable)."""
        return Fields(list(self._headers), immutable=True)

    def consume(self) -> IncomingBody:
        """The body (once)."""
        if self.consumed:
            raise Err(None)
        self.consumed = True
        return IncomingBody(self.body)


class OutgoingResponse:
    """`outgoing-response`: the guest's answer to an incoming request."""

    def __init__(self, headers: Fields) -> None:
        self.status = 200
        self.fields = Fields(headers.entries)
        self.body_obj: OutgoingBody | None = None
        self.pipe: BytePipe | None = None
        self.sent = False  # handed to `response-outparam.set`: its body is being read

    def status_code(self) -> int:
        """The status code."""
        return self.status

    def set_status_code(self, code: int) -> None:
        """Set the status code (100..999)."""
        if not 100 <= code <= 999:
            raise Err(None)
        self.status = code

    def headers(self) -> Fields:
        """The response headers (immutable view)."""
        return Fields(self.fields.entries, immutable=True)

    def body(self) -> OutgoingBody:
        """The body (once)."""
        if self.body_obj is not None:
            raise Err(None)
        if self.sent:
            self.pipe = BytePipe(ctx())
        else:
            self.pipe = BytePipe(ctx(), UNSENT_BODY_LIMIT)
            self.pipe.unread = UNSENT_BODY_TRAP
        self.body_obj = OutgoingBody(self.pipe, content_length(self.fields), is_request=False)
        return self.body_obj

    def start_sending(self) -> None:
        """The response was set: its body is read from now on, so writers wait for the reader."""
        self.sent = True
        if self.pipe is not None:
            self.pipe.start_reading(PIPE_CAPACITY)


class ResponseOutparam:
    """`response-outparam`: where the guest sets its response (delivered to the HTTP server)."""

    def __init__(self, deliver: Callable[[Any], None]) -> None:
        self.deliver = deliver
        self.set_already = False

    @staticmethod
    def set(param: ResponseOutparam, response: Any) -> None:
        """Deliver the response (or an error code)."""
        param.set_already = True
        resp = response.value if isinstance(response, Ok) else response
        if isinstance(resp, OutgoingResponse):
            resp.start_sending()
        param.deliver(response)

    def send_informational(self, status: int, headers: Fields) -> None:
        """1xx responses are not supported by this host."""
        raise Err(internal_error("informational responses are not supported"))
