"""Serving a running component's exports to the lattice over wRPC (docs/protocol.md#wrpc).

Every function of every exported interface instance is served on
`<lattice>.<component_id>.wrpc.0.0.1.<instance>.<function>` (the instance with its version) in the
queue group `<lattice>.<component_id>`, so hosts running the same component share its calls. An
invocation decodes its parameters with the function's types, runs the export on a fresh instance
within the component's `max_instances` (waiting for a free one until its deadline), and answers
the encoded result; a trap or a full component is answered as an error the caller sees.

A `wasi:http/incoming-handler@0.2.x` export is served as wasmCloud does it, as
`wrpc:http/incoming-handler@0.1.0` `handle` with streamed bodies (`host/wrpc_http.py`), running the
guest through the component's HTTP target (its instance bound and deadline, as local requests).

Not served: functions passing resources, and root-level function exports.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from wasmlattice.artifacts.claims import ComponentClaims
from wasmlattice.capabilities.base import InvocationPolicy, InvokeError
from wasmlattice.capabilities.http_ingress import HttpTarget
from wasmlattice.host import wrpc_http
from wasmlattice.host.policy_checks import invocation_denial
from wasmlattice.protocol.wrpc import http as wrpc_http_codec
from wasmlattice.protocol.wrpc.primitives import CodecError
from wasmlattice.protocol.wrpc.server import serve
from wasmlattice.protocol.wrpc.transport import WrpcError, invocation_subject
from wasmlattice.protocol.wrpc.tuples import TupleCodec, params_codec, results_codec
from wasmlattice.runtime.component import InterfaceName
from wasmlattice.runtime.fastcall import GuestTrap
from wasmlattice.runtime.witypes import FuncSig, has_handle
from wasmlattice.supervision import Supervisor

log = logging.getLogger(__name__)

HTTP_HANDLER = "wasi:http/incoming-handler"
# How long in-flight invocations may finish when a component is replaced or stopped.
STOP_GRACE_S = 5.0


def wrpc_prefix(lattice: str, entity_id: str) -> str:
    """The subject prefix of a component or provider: `<lattice>.<id>`."""
    return f"{lattice}.{entity_id}"


def queue_group(lattice: str, component_id: str) -> str:
    """The queue group every host serving `component_id` joins."""
    return f"{lattice}.{component_id}"


def servable(sig: FuncSig) -> bool:
    """Whether a function's values can cross the lattice (no resources yet)."""
    return not any(has_handle(t) for _, t in sig.params) and not has_handle(sig.result)


class ExportServer:
    """The wRPC subscriptions of one running component."""

    def __init__(
        self,
        nc: Any,
        lattice: str,
        component_id: str,
        exports: Mapping[str, Mapping[str, FuncSig]],
        invoke: Any,
        timeout: float = 10.0,
        http: HttpTarget | None = None,
        *,
        supervisor: Supervisor,
        policy: InvocationPolicy | None = None,
        image_ref: str = "",
        annotations: Mapping[str, str] | None = None,
        claims: ComponentClaims | None = None,
    ) -> None:
        self.nc = nc
        self.lattice = lattice
        self.component_id = component_id
        self.exports = exports
        self.invoke = invoke  # async (interface, func, *args, timeout=) -> result
        # A caller gives up after its invocation time-out: waiting for an instance (or running)
        # longer than that only holds resources for an answer nobody reads.
        self.timeout = timeout
        # What serves the component's HTTP handler, if it exports one.
        self.http = http
        self.supervisor = supervisor
        # Every invocation is checked with the host's policy first (docs/policy.md); None: no policy.
        self.policy = policy
        self.image_ref = image_ref
        self.annotations = dict(annotations or {})
        self.claims = claims  # the component's verified claims, for the policy request
        self._subs: list[Any] = []

    async def denial(self, instance: str, function: str) -> str | None:
        """None if the policy lets `instance#function` run now, else the error to answer."""
        if self.policy is None:
            return None
        return await invocation_denial(
            self.policy, self.component_id, self.image_ref, self.annotations, self.claims, instance, function
        )

    async def start(self) -> list[str]:
        """Subscribe every servable export; the subjects served."""
        subjects: list[str] = []
        prefix = wrpc_prefix(self.lattice, self.component_id)
        queue = queue_group(self.lattice, self.component_id)
        if self.http is not None and any(
            (n := InterfaceName.parse(i)) is not None and n.unversioned == HTTP_HANDLER for i in self.exports
        ):
            # One subject whichever 0.2.x version the component exports (wasmCloud maps them all).
            export = wrpc_http.HttpExport(
                self.component_id,
                self.http,
                self.timeout,
                self.supervisor,
                denial=self.denial if self.policy is not None else None,
            )
            subject = invocation_subject(prefix, wrpc_http_codec.INSTANCE, wrpc_http_codec.FUNCTION)
            # The host's invocation timeout also bounds a caller's silence on a parameter stream.
            sub = await serve(
                self.nc,
                subject,
                queue,
                export.handle,
                params_complete=wrpc_http_codec.params_complete,
                params_timeout=self.timeout,
            )
            self._subs.append(sub)
            subjects.append(subject)
        for instance, funcs in self.exports.items():
            parsed = InterfaceName.parse(instance)
            if parsed is None or parsed.unversioned == HTTP_HANDLER:
                continue
            for fname, sig in funcs.items():
                if not servable(sig):
                    log.info(
                        "%s: %s#%s passes resources; not served over wRPC", self.component_id, instance, fname
                    )
                    continue
                subject = invocation_subject(prefix, instance, fname)
                params = params_codec(sig)
                handler = self._handler(parsed.unversioned, instance, fname, sig, params)
                complete = _completeness(params)
                sub = await serve(
                    self.nc, subject, queue, handler, params_complete=complete, params_timeout=self.timeout
                )
                self._subs.append(sub)
                subjects.append(subject)
        return subjects

    def _handler(self, interface: str, instance: str, fname: str, sig: FuncSig, params: TupleCodec) -> Any:
        results = results_codec(sig)
        component_id = self.component_id
        policy = self.policy

        async def handle(data: bytes, headers: Mapping[str, str]) -> bytes:
            if policy is not None:
                denied = await self.denial(instance, fname)
                if denied is not None:
                    log.info("%s: %s (called by %s)", component_id, denied, headers.get("source-id", "?"))
                    raise WrpcError(denied)
            try:
                args = params.decode(data)
            except CodecError as e:
                raise WrpcError(f"invalid parameters for {instance}#{fname}: {e}") from None
            try:
                value = await self.invoke(interface, fname, *args, timeout=self.timeout)
            except InvokeError as e:
                raise WrpcError(f"{component_id} cannot serve {instance}#{fname}: {e}") from None
            except GuestTrap as e:
                source = headers.get("source-id", "a caller")
                log.warning(
                    "%s trapped in %s#%s called by %s: %s", component_id, instance, fname, source, e.reason
                )
                raise WrpcError(f"{component_id} trapped in {instance}#{fname}: {e.reason}") from None
            return results.encode([] if sig.result is None else [value])

        return handle

    async def stop(self, timeout: float = STOP_GRACE_S) -> None:
        """Unsubscribe everything; in-flight invocations get `timeout` seconds to finish."""
        subs, self._subs = self._subs, []
        results = await asyncio.gather(*(sub.stop(timeout) for sub in subs), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                log.error("%s: stopping a wRPC subscription failed: %s", self.component_id, r)


def _completeness(params: TupleCodec) -> Any:
    def complete(data: bytes) -> bool:
        try:
            params.decode_prefix(data)
        except CodecError:
            return False
        return True

    return complete
