"""The host's one router: every call to a component goes to a local instance or to another host.

Capabilities reach components only through this router (the `ComponentRouter` port in
`capabilities/base.py`): messaging deliveries and key-value watch callbacks (local instances
only, since their subscriptions follow where the component runs), custom-interface calls along a
link, and HTTP requests from the http-server provider. A component running here is always
preferred; otherwise the call leaves over wRPC to the component's queue group, so whichever host
runs it answers (docs/lattice.md, "Calls between components").
"""

from __future__ import annotations

import functools
from typing import Any

from aiohttp import web

from wasmlattice.capabilities.base import ComponentContext, InvocationPolicy, InvokeError
from wasmlattice.capabilities.http_ingress import Forward, HttpTarget, PendingTarget, error_response
from wasmlattice.host.components import ComponentRegistry, RunningComponent
from wasmlattice.host.policy_checks import invocation_denial, invocation_denied_text
from wasmlattice.host.wrpc_http import RemoteHttp
from wasmlattice.protocol.wrpc import http as wrpc_http_codec
from wasmlattice.protocol.wrpc.client import invoke
from wasmlattice.protocol.wrpc.primitives import CodecError
from wasmlattice.protocol.wrpc.transport import WrpcError, invocation_subject
from wasmlattice.protocol.wrpc.tuples import params_codec, results_codec
from wasmlattice.runtime.fastcall import GuestTrap
from wasmlattice.runtime.witypes import FuncSig


class _WireCall:
    """What calls of one imported function need on the wire, prepared once (codecs, subjects)."""

    __slots__ = ("params", "results", "sig", "subjects")

    def __init__(self, sig: FuncSig) -> None:
        self.sig = sig  # kept alive: the cache is keyed by its identity
        self.params = params_codec(sig)
        self.results = results_codec(sig)
        # (target, caller, link name) -> (subject, headers)
        self.subjects: dict[tuple[str, str, str], tuple[str, dict[str, str]]] = {}


class Router:
    """Decides, for every call to a component, whether a local instance or another host serves it."""

    def __init__(
        self,
        components: ComponentRegistry,
        *,
        nc: Any = None,
        lattice: str = "default",
        invocation_timeout: float = 10.0,
    ) -> None:
        self.components = components
        self.nc = nc
        self.lattice = lattice
        self.invocation_timeout = invocation_timeout
        self._wire: dict[int, _WireCall] = {}
        self._remote_http: dict[tuple[str, int], RemoteHttp] = {}

    def runs_here(self, component_id: str) -> bool:
        """Whether `component_id` runs on this host."""
        return self.components.get(component_id) is not None

    def context(self, component_id: str) -> ComponentContext | None:
        """The capability context of a component running here (None if it does not run here)."""
        running = self.components.get(component_id)
        return None if running is None else running.context

    async def call_here(
        self, component_id: str, interface: str, func: str, *args: Any, timeout: float | None = None
    ) -> Any:
        """Call an export of a component running here; `InvokeError` or `GuestTrap`.

        With a policy, the call is checked first as wasmCloud checks every invocation it serves
        (docs/policy.md): a denial is an `InvokeError` naming the decision.
        """
        policy = self._policy()
        if policy is not None:
            running = self.components.get(component_id)
            if running is not None:
                instance = _instance_of(running, interface)
                denied = await invocation_denial(
                    policy,
                    component_id,
                    running.image_ref,
                    running.annotations,
                    running.claims,
                    instance,
                    func,
                )
                if denied is not None:
                    raise InvokeError(denied)
        return await self.components.invoke(component_id, interface, func, *args, timeout=timeout)

    def _policy(self) -> InvocationPolicy | None:
        services = self.components.services
        return None if services is None else services.policy

    async def call(
        self, source_id: str, link_name: str, target: str, instance: str, func: str, sig: FuncSig, args: Any
    ) -> Any:
        """Call `instance#func` on `target`: a local instance when it runs here, else over wRPC.

        Values are Python values; on the wire they are encoded with `sig`, the caller's view of
        the function. `InvokeError` names the target and what failed.
        """
        interface = instance.partition("@")[0]
        if self.runs_here(target):
            try:
                return await self.call_here(target, interface, func, *args)
            except InvokeError as e:
                raise InvokeError(f"calling {interface}#{func} on `{target}` failed: {e}") from None
            except GuestTrap as e:
                raise InvokeError(f"`{target}` trapped in {interface}#{func}: {e.reason}") from None
        if self.nc is None:
            raise InvokeError(
                f"`{target}` (the target of link `{link_name}` for `{interface}`) is not running on "
                "this host, and this host is not connected to a lattice"
            )
        wire = self._wire.get(id(sig))
        if wire is None:
            wire = self._wire[id(sig)] = _WireCall(sig)
        try:
            data = wire.params.encode(args)
        except CodecError as e:
            raise InvokeError(f"cannot send {instance}#{func} to `{target}`: {e}") from None
        key = (target, source_id, link_name)
        found = wire.subjects.get(key)
        if found is None:
            subject = invocation_subject(f"{self.lattice}.{target}", instance, func)
            found = wire.subjects[key] = (subject, {"source-id": source_id, "link-name": link_name})
        subject, headers = found
        try:
            reply = await invoke(self.nc, subject, data, headers=headers, timeout=self.invocation_timeout)
        except WrpcError as e:
            raise InvokeError(f"calling {instance}#{func} on `{target}` failed: {e}") from None
        try:
            values = wire.results.decode(reply)
        except CodecError as e:
            raise InvokeError(f"`{target}` answered {instance}#{func} with an invalid result: {e}") from None
        return values[0] if values else None

    def http_route(
        self, component_id: str, source_id: str, max_body: int
    ) -> HttpTarget | PendingTarget | Forward | None:
        """What serves an HTTP request for `component_id`: its local target, else a forwarder to
        the host running it (None when this host is on no lattice)."""
        running = self.components.get(component_id)
        if running is not None and running.target is not None:
            policy = self._policy()
            if policy is None:
                return running.target
            return self._checked_http(policy, running, running.target)
        if self.nc is None:
            return None
        remote = self._remote_http.get((source_id, max_body))
        if remote is None:
            remote = RemoteHttp(
                self.nc, self.lattice, source_id, timeout=self.invocation_timeout, max_body=max_body
            )
            self._remote_http[(source_id, max_body)] = remote
        # Made per request, not cached per component ID: routes come and go with links.
        return functools.partial(remote.forward, component_id=component_id)

    def _checked_http(
        self, policy: InvocationPolicy, running: RunningComponent, target: HttpTarget
    ) -> HttpTarget | PendingTarget:
        """The local target once the policy permits the request (as the http-server provider's
        `wrpc:http` invocation is checked in wasmCloud, docs/policy.md); a 403 when it denies."""
        cid, ref = running.component_id, running.image_ref
        instance, func = wrpc_http_codec.INSTANCE, wrpc_http_codec.FUNCTION
        cached = policy.cached_invocation(cid, ref, instance, func)
        if cached is not None and cached.permitted:
            return target  # the common case: no await on the request's path

        async def resolve() -> HttpTarget | web.StreamResponse:
            if cached is not None:
                return error_response(403, invocation_denied_text(cid, instance, func, cached))
            denied = await invocation_denial(
                policy, cid, ref, running.annotations, running.claims, instance, func
            )
            return target if denied is None else error_response(403, denied)

        return PendingTarget(resolve)


def _instance_of(running: RunningComponent, interface: str) -> str:
    """The versioned instance (`ns:pkg/iface@1.0.0`) the component exports for `ns:pkg/iface`, as
    a wRPC invocation would name it; the interface itself when it exports no versioned one."""
    for name in running.linked.exports:
        if name.partition("@")[0] == interface:
            return name
    return interface
