"""What capability implementations share: the calling component's context, links, and providers.

It is also the capabilities' port to the host: capabilities sit below the host
(docs/architecture.md) and never import it. `ComponentRouter` is what they need from it, the
host's one router, which decides for every call whether a local instance or another host serves
it; `HostServices` carries it and the other host-wide things.

A capability import (`wasi:keyvalue/store`, `wasmcloud:messaging/consumer`, ...) is bound once at
link time to host functions that know nothing about any particular component. On each call they
ask `component()` which component is calling (the store's WASI config carries its
`ComponentContext`), resolve the link for the interface by its link name (default `default`,
docs/protocol.md#wrpc), and ask the link's target provider for the backend that link selects. Link and config
changes therefore apply to the next call, with nothing to relink.

Host functions run on a wasm thread (or inline on the event loop, see `wasi.ctx.NeedsLoop`);
backends are asyncio code on the host's loop, reached through `ComponentContext.run`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

from wasmlattice.capabilities.config_keys import ProviderKeys, first_typo
from wasmlattice.capabilities.http_ingress import Forward, HttpTarget, PendingTarget
from wasmlattice.observability import tracing
from wasmlattice.protocol.models import Link, ProviderDescription, StrMap
from wasmlattice.protocol.policy import PolicyClaims, PolicyDecision
from wasmlattice.runtime.execution import DeadlineExceeded, NeedsLoop, from_thread
from wasmlattice.runtime.fastcall import GuestTrap
from wasmlattice.runtime.hostfiles import HostFiles
from wasmlattice.runtime.linking import HostFunc, HostInterface
from wasmlattice.runtime.witypes import FuncSig
from wasmlattice.supervision import Supervisor
from wasmlattice.wasi.ctx import WasiCtx, ctx

if TYPE_CHECKING:
    from wasmlattice.observability.metrics import HostMetrics
    from wasmlattice.protocol.state import LatticeState

log = logging.getLogger("wasmlattice.capabilities")

T = TypeVar("T")

DEFAULT_LINK_NAME = "default"
# How long one capability call may wait for its backend when the guest has no deadline.
DEFAULT_CALL_TIMEOUT_S = 30.0
DEFAULT_INVOCATION_TIMEOUT_S = 10.0
# How long a replaced backend stays open for the calls that still use it.
BACKEND_RETIRE_S = 10.0


class CapabilityError(Exception):
    """A capability call cannot be served (no link, target not running, backend failure).

    The message is what the guest receives in the interface's own error type, and what is logged.
    """


def no_link_message(interface: str, link_name: str = DEFAULT_LINK_NAME) -> str:
    """The error text of a call through an interface that has no link of that name."""
    return f"no link named `{link_name}` for `{interface}`"


class InvokeError(Exception):
    """A component's export cannot be called; the message says why (not running, not exported,
    no free instance in time, the remote host failed or answered badly)."""


class ComponentRouter(Protocol):
    """The host's router: where each call to a component goes, here or on another host."""

    def runs_here(self, component_id: str) -> bool:
        """Whether `component_id` runs on this host (messaging and watchers deliver only here)."""
        ...

    async def call_here(
        self, component_id: str, interface: str, func: str, *args: Any, timeout: float | None = None
    ) -> Any:
        """Call an export (`ns:pkg/iface`) of a component running here; `InvokeError` or a trap."""
        ...

    async def call(
        self, source_id: str, link_name: str, target: str, instance: str, func: str, sig: FuncSig, args: Any
    ) -> Any:
        """Call `instance#func` (`ns:pkg/iface@version`, typed `sig`) on `target`, here or remotely.

        `InvokeError` whose message names the target and what failed.
        """
        ...

    def context(self, component_id: str) -> ComponentContext | None:
        """The capability context of a component running here (None if it does not run here)."""
        ...

    def http_route(
        self, component_id: str, source_id: str, max_body: int
    ) -> HttpTarget | PendingTarget | Forward | None:
        """What serves an HTTP request for `component_id` (from provider `source_id`, bodies up to
        `max_body`): its local target (pending while the host's policy decides), a forwarder to
        another host, or None."""
        ...


class InvocationPolicy(Protocol):
    """The host's policy service as the places that run invocations see it (docs/policy.md).

    The lattice layer implements it (`lattice/policy.py`); it is None on a host without a policy
    topic, so the check costs one attribute test then.
    """

    def cached_invocation(
        self, component_id: str, image_ref: str, interface: str, function: str
    ) -> PolicyDecision | None:
        """The decision already known for this invocation key, without asking (None: not known)."""
        ...

    async def check_invocation(
        self,
        component_id: str,
        image_ref: str,
        annotations: Mapping[str, str],
        claims: PolicyClaims | None,
        interface: str,
        function: str,
    ) -> PolicyDecision:
        """Whether `interface#function` of the component may run; a failure to ask is a denial."""
        ...


class Failure(NamedTuple):
    """Why a call into a component failed: `trapped`, `unavailable` (it could not be called) or
    `failed` (a host error), and the reason to log."""

    kind: str
    reason: str


async def call_here_or_failure(
    router: ComponentRouter,
    component_id: str,
    interface: str,
    func: str,
    *args: Any,
    describe: Callable[[Exception], str] = str,
) -> tuple[Any, Failure | None]:
    """Call an export of a component running here, for deliveries that log rather than raise:
    (its result, None), or (None, why it failed)."""
    try:
        return await router.call_here(component_id, interface, func, *args), None
    except GuestTrap as e:
        return None, Failure("trapped", e.reason)
    except InvokeError as e:
        return None, Failure("unavailable", str(e))
    except asyncio.CancelledError:
        raise
    except Exception as e:
        return None, Failure("failed", f"{type(e).__name__}: {describe(e)}")


def provider_supervisor(name: str, services: HostServices | None) -> Supervisor:
    """A provider's own supervisor, under the host's (its log lines under the capabilities logger)."""
    return Supervisor(name, parent=None if services is None else services.supervisor, logger=log)


class ProviderLookup(Protocol):
    """Finds a provider running on this host by ID."""

    def get(self, provider_id: str) -> Any:
        """The running provider with that ID, or None."""
        ...


class Provider(Protocol):
    """A capability provider running in this host's process."""

    provider_id: str
    image_ref: str
    annotations: dict[str, str]

    def description(self) -> ProviderDescription:
        """The inventory entry of this provider."""

    def health(self) -> tuple[bool, str | None]:
        """Whether it is healthy, and why not."""

    async def start(self) -> None:
        """Begin serving (bind, connect, follow links)."""

    async def stop(self) -> None:
        """Stop serving and release what it holds."""


@dataclass
class ProviderSpec:
    """What a builtin provider is started with."""

    provider_id: str
    image_ref: str
    config: StrMap
    annotations: StrMap
    services: HostServices
    # The config keys the provider reads (capabilities/config_keys.py), None if not declared.
    config_keys: ProviderKeys | None = None


class LinkTargetProvider:
    """Base of providers that serve component imports: one backend per link, opened on first use.

    Subclasses implement `open_backend(link, config)` (config = the link's merged target config)
    and may override `close_backend`. A link whose definition changes (re-put), or one of whose
    named target configs changes, gets a fresh backend on its next call; the old one is closed
    after a grace period (calls may still use it). Backends of deleted links are closed when the
    provider stops.
    """

    kind = "provider"

    def __init__(self, spec: ProviderSpec) -> None:
        self.provider_id = spec.provider_id
        self.image_ref = spec.image_ref
        self.config = spec.config
        self.annotations = dict(spec.annotations)
        self.services = spec.services
        self.config_keys = spec.config_keys
        # Links whose target config has a misspelt key, and why: `health` reports them.
        self._key_errors: dict[tuple[str, str, str, str], str] = {}
        self._backends: dict[tuple[str, str, str, str], tuple[Link, Any]] = {}
        self._opening: dict[tuple[str, str, str, str], asyncio.Future[Any]] = {}
        self._stopped = False
        self._following_config = False
        # Replaced backends waiting out their grace period before they are closed.
        self._retiring: list[Any] = []
        # Owns every task of this provider (retiring backends, and what subclasses run).
        self.sup = provider_supervisor(f"{self.kind} {self.provider_id}", self.services)

    def description(self) -> ProviderDescription:
        """The inventory entry of this provider."""
        return ProviderDescription(
            id=self.provider_id, image_ref=self.image_ref, name=self.kind, annotations=self.annotations
        )

    def health(self) -> tuple[bool, str | None]:
        """Healthy while running and no link used has a misspelt target config key."""
        if self._stopped:
            return False, "stopped"
        if self._key_errors:
            # A deleted link's error goes with it.
            live = {
                (lk.source_id, lk.name, lk.wit_namespace, lk.wit_package)
                for lk in self.services.state.links()
                if lk.target == self.provider_id
            }
            self._key_errors = {k: v for k, v in self._key_errors.items() if k in live}
        if self._key_errors:
            return False, "; ".join(self._key_errors[k] for k in sorted(self._key_errors))
        return True, None

    async def start(self) -> None:
        """Start the provider's supervisor; backends open on first use."""
        await self.sup.start()

    async def stop(self) -> None:
        """Stop the provider's tasks and close every backend."""
        self._stopped = True
        if self._following_config:
            with contextlib.suppress(ValueError):
                self.services.state.config_listeners.remove(self._config_changed)
        await self.sup.stop(0.0)  # backends in their grace period are closed below, at once
        retiring, self._retiring = self._retiring, []
        backends = [b for _, b in self._backends.values()] + retiring
        self._backends = {}
        for backend in backends:
            try:
                await self.close_backend(backend)
            except Exception:
                log.exception("%s: closing a backend failed", self.provider_id)

    async def backend(self, link: Link) -> Any:
        """The backend serving `link` (opened on first use, reopened if the link changed)."""
        key = (link.source_id, link.name, link.wit_namespace, link.wit_package)
        known = self._backends.get(key)
        if known is not None and known[0] == link:
            return known[1]
        pending = self._opening.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        if not self._following_config:
            self._following_config = True
            self.services.state.config_listeners.append(self._config_changed)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._opening[key] = fut
        try:
            config = await self.services.state.merged_config(link.target_config)
            typo = None if self.config_keys is None else first_typo(config, self.config_keys, "target")
            if typo is not None:
                # The misspelt setting would be ignored; refuse the link until its config is fixed.
                why = f"link `{link.name}` from {link.source_id}: {typo.message()}"
                self._key_errors[key] = why
                raise CapabilityError(why)
            self._key_errors.pop(key, None)
            backend = await self.open_backend(link, config)
            if known is not None:
                self._retire(known[1])
            self._backends[key] = (link, backend)
            fut.set_result(backend)
            return backend
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # retrieved: waiters get it through shield
            raise
        finally:
            del self._opening[key]

    def _config_changed(self, name: str | None) -> None:
        # A named config changed (None: any may have): links using it reopen on their next call.
        for key, (lk, backend) in list(self._backends.items()):
            if name is None or name in lk.target_config:
                del self._backends[key]
                self._retire(backend)

    def _retire(self, backend: Any) -> None:
        async def close_later() -> None:
            await asyncio.sleep(BACKEND_RETIRE_S)
            if backend in self._retiring:
                self._retiring.remove(backend)
                try:
                    await self.close_backend(backend)
                except Exception:
                    log.exception("%s: closing a backend failed", self.provider_id)

        self._retiring.append(backend)
        if self.sup.running:
            self.sup.spawn("retire-backend", close_later())

    async def open_backend(self, link: Link, config: StrMap) -> Any:
        """Open what serves one link (a bucket, a client...)."""
        raise NotImplementedError

    async def close_backend(self, backend: Any) -> None:
        """Release a backend opened by `open_backend`."""
        close = getattr(backend, "close", None)
        if close is not None:
            res = close()
            if asyncio.iscoroutine(res):
                await res


@dataclass
class HostServices:
    """The host-wide things capabilities and components need (one per host)."""

    loop: asyncio.AbstractEventLoop
    state: LatticeState
    host_id: str
    lattice: str
    nc: Any = None  # nats.aio.client.Client
    js: Any = None  # JetStream context
    # The providers running on this host (`capabilities.manager.ProviderManager`).
    providers: ProviderLookup | None = None
    # The host's router: how capabilities reach components (here or on another host).
    router: ComponentRouter | None = None
    # The host's supervisor: each provider's own supervisor runs under it.
    supervisor: Supervisor | None = None
    # Deadline of one call to a component on another host (docs/protocol.md#wrpc: 10 s).
    invocation_timeout: float = DEFAULT_INVOCATION_TIMEOUT_S
    # What control messages may reach on this machine: `file://` components, blobstore-fs roots
    # (docs/security.md). Nothing unless the host's operator allowed it.
    files: HostFiles = field(default_factory=HostFiles)
    # The policy service every invocation of a component is checked with (None: no policy topic).
    policy: InvocationPolicy | None = None
    # What the host's HTTP ingress and capability calls are counted in (None: metrics are off).
    metrics: HostMetrics | None = None
    _index: dict[tuple[str, str, str], Link] | None = None
    _index_generation: int = -1

    def find_link(self, source_id: str, interface: str, link_name: str) -> Link | None:
        """The link from `source_id` named `link_name` that covers `ns:pkg/iface`."""
        index = self._index
        if index is None or self._index_generation != self.state.generation:
            self._index_generation = self.state.generation
            index = {}
            for lk in self.state.links():
                for iface in lk.interfaces:
                    key = (lk.source_id, lk.name, f"{lk.wit_namespace}:{lk.wit_package}/{iface}")
                    index.setdefault(key, lk)
            self._index = index
        return index.get((source_id, link_name, interface))

    def provider(self, provider_id: str) -> Any:
        """The running provider with that ID on this host, or None."""
        return None if self.providers is None else self.providers.get(provider_id)


@dataclass
class ComponentContext:
    """One running component as its capability calls see it; shared by all its instances."""

    component_id: str
    services: HostServices
    config: dict[str, str] = field(default_factory=dict)
    config_names: list[str] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)
    # Secret values by key (revealed only through `wasmcloud:secrets/reveal`).
    secrets: dict[str, Any] = field(default_factory=dict)

    def link(self, interface: str, link_name: str | None = None) -> Link:
        """The link for `ns:pkg/iface`; `CapabilityError` (logged) if there is none.

        Without `link_name`, the calling instance's current link name for the interface is used
        (`default` unless it chose another with `wasmcloud:bus/lattice.set-link-name`).
        """
        if link_name is None:
            link_name = current_link_name(interface)
        found = self.services.find_link(self.component_id, interface, link_name)
        if found is None:
            raise self.error(no_link_message(interface, link_name))
        return found

    def target(self, interface: str, link_name: str | None = None) -> tuple[Link, Any]:
        """The link for `interface` and its target provider running on this host."""
        lk = self.link(interface, link_name)
        link_name = lk.name
        provider = self.services.provider(lk.target)
        if provider is None:
            raise self.error(
                f"`{lk.target}` (the target of link `{link_name}` for `{interface}`) is not running on "
                "this host; start the provider here or scale the component where it runs"
            )
        return lk, provider

    def backend(self, interface: str, link_name: str | None = None) -> Any:
        """The backend that the link for `interface` selects (opened on first use)."""
        lk, provider = self.target(interface, link_name)
        if not isinstance(provider, LinkTargetProvider):
            raise self.error(f"`{lk.target}` does not serve `{interface}`")
        return self.run(lambda: provider.backend(lk))

    def error(self, message: str) -> CapabilityError:
        """A `CapabilityError`, logged with the component's ID (the guest gets the message too)."""
        log.error("component %s: %s", self.component_id, message)
        return CapabilityError(message)

    def run(self, make: Callable[[], Awaitable[T]], timeout: float | None = None) -> T:
        """Run a coroutine on the host's loop from the guest's thread and wait for its result.

        Bounded by the guest's deadline (and `timeout`); a guest running inline on the loop is sent
        to a worker thread first (`NeedsLoop`), before anything has been started.
        """
        wctx: WasiCtx | None = _current_wasi()
        if wctx is not None and wctx.inline:
            raise NeedsLoop("a capability call needs the event loop")
        limit = timeout if timeout is not None else DEFAULT_CALL_TIMEOUT_S
        if wctx is not None and wctx.deadline is not None:
            limit = min(limit, wctx.deadline - time.monotonic())
            if limit <= 0:
                raise DeadlineExceeded("request deadline exceeded before a capability call")
        deadline = wctx.deadline if wctx is not None else None
        try:
            return from_thread(self.services.loop, make, limit, deadline=deadline)
        except concurrent.futures.TimeoutError:
            raise CapabilityError(f"the capability call did not finish within {limit:.1f}s") from None


def capability_span(
    comp: ComponentContext, interface: str, op: str, link: Link | None = None, backend: str | None = None
) -> contextlib.AbstractContextManager[Any]:
    """The span of one capability call a guest makes (a no-op when tracing is off).

    Named `<interface> <operation>`, with the calling component, the link name, the provider
    the link targets and the backend; an error leaving the block (the interface's error case,
    a failed backend) marks it failed. Runs on the guest's thread: the guest-call span is its
    parent, and the backend's coroutine on the loop runs in its context (`from_thread`).
    """
    if not tracing.enabled():
        return contextlib.nullcontext()
    wctx = _current_wasi()
    if wctx is not None and wctx.inline:
        # The call will leave with NeedsLoop and run again on a worker thread: trace that one.
        return contextlib.nullcontext()
    attrs = {
        tracing.CAP_INTERFACE: interface,
        tracing.CAP_OPERATION: op,
        tracing.COMPONENT_ID: comp.component_id,
    }
    if link is not None:
        attrs[tracing.LINK_NAME] = link.name
        attrs[tracing.LINK_TARGET] = link.target
    if backend is not None:
        attrs[tracing.CAP_BACKEND] = backend
    return tracing.span(f"{interface} {op}", attributes=attrs)


# What a traced call's arguments may add to its span: names only (a key, a container), never a
# value. Called with the function's arguments; a failure to describe them is not the call's failure.
Describe = Callable[..., Mapping[str, Any]]


def traced(
    iface: HostInterface,
    *,
    backend: str | None = None,
    describe: Mapping[str, Describe] | None = None,
    inline: bool = True,
) -> HostInterface:
    """`iface` with a capability span (`<interface> <operation>`) around each function call.

    For interfaces whose functions do their own work rather than call a backend through
    `ComponentContext.run` (`wasi:config`, secrets, blobstore), the same span key-value and
    messaging calls make. `describe[fname]` adds attributes from the arguments (names only: a
    secret's or config key's name, never its value). With `inline=False` a call made inline on the
    event loop is not traced, because it leaves with `NeedsLoop` and is made again (and traced) on a
    worker thread. Resource drops are not calls. Tracing off, each call tests one global.
    """
    describe = describe or {}
    functions = {
        fname: fn
        if fname.startswith("[resource-drop]")
        else _traced(fn, iface.name, fname, backend, describe.get(fname), inline)
        for fname, fn in iface.functions.items()
    }
    return dataclasses.replace(iface, functions=functions)


def _operation(fname: str) -> str:
    """`get-data` of `[method]container.get-data`, `finish` of `[static]outgoing-value.finish`."""
    if fname.startswith("["):
        return fname.partition("]")[2].rpartition(".")[2]
    return fname


def _traced(
    fn: HostFunc, interface: str, fname: str, backend: str | None, describe: Describe | None, inline: bool
) -> HostFunc:
    op = _operation(fname)
    name = f"{interface} {op}"

    def call(*args: Any) -> Any:
        if not tracing.enabled():
            return fn(*args)
        wctx = _current_wasi()
        if wctx is not None and wctx.inline and not inline:
            return fn(*args)
        attrs: dict[str, Any] = {tracing.CAP_INTERFACE: interface, tracing.CAP_OPERATION: op}
        if wctx is not None:
            attrs[tracing.COMPONENT_ID] = wctx.config.component_id
        if backend is not None:
            attrs[tracing.CAP_BACKEND] = backend
        if describe is not None:
            try:
                attrs.update(describe(*args))
            except Exception as e:  # an argument of an unexpected shape: the call reports it
                log.debug("span attributes of %s: %s", name, e)
        with tracing.span(name, attributes=attrs):
            return fn(*args)

    return call


def current_link_name(interface: str) -> str:
    """The link name the calling instance uses for `ns:pkg/iface` (default `default`)."""
    wctx = _current_wasi()
    return DEFAULT_LINK_NAME if wctx is None else wctx.link_names.get(interface, DEFAULT_LINK_NAME)


def _current_wasi() -> WasiCtx | None:
    try:
        return ctx()
    except AttributeError:
        return None


def component() -> ComponentContext:
    """The context of the component whose guest is calling; `CapabilityError` outside a lattice host."""
    comp = ctx().config.component
    if comp is None:
        raise CapabilityError(
            "this capability is only available to components run by a lattice host (`wasmlattice host`)"
        )
    assert isinstance(comp, ComponentContext)
    return comp


def lower_config(config: Mapping[str, str]) -> StrMap:
    """Config keys lower-cased (providers read their keys case-insensitively, as wasmCloud's do)."""
    return {k.lower(): v for k, v in config.items()}
