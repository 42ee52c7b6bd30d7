"""The components a host runs: load by reference, compile, link, and serve within `max_instances`.

See docs/protocol.md#scale, docs/protocol.md#update and docs/protocol.md#instances: every
invocation gets a fresh instance unless the component's annotations ask for warm instances
(docs/instance-pools.md), and `max_instances` (the scale command's `count`) bounds how many
run at once on this host. Loading and compiling run on a worker thread so the host keeps answering
the lattice meanwhile. A replaced component (rescale or update) keeps serving the requests it
already accepted; new requests go to its replacement.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from wasmlattice.artifacts.claims import ClaimsPolicy, ComponentClaims
from wasmlattice.artifacts.fetch import ArtifactFetcher
from wasmlattice.artifacts.reference import scheme_of
from wasmlattice.artifacts.source import ArtifactError
from wasmlattice.capabilities.base import ComponentContext, HostServices, InvokeError
from wasmlattice.capabilities.catalog import host_registry
from wasmlattice.capabilities.http_ingress import INCOMING_HANDLER, HttpTarget
from wasmlattice.capabilities.secrets import resolve_secrets
from wasmlattice.host.exports import ExportServer
from wasmlattice.host.guest_limits import GuestLimits
from wasmlattice.host.invoke import ExportInvoker
from wasmlattice.protocol import subjects as sj
from wasmlattice.protocol.models import ComponentDescription, StrMap
from wasmlattice.replay.recording import Recorder, RecordingQuota, recording_wrap
from wasmlattice.runtime.budget import format_size, parse_size
from wasmlattice.runtime.component import (
    CompileCache,
    ComponentError,
    check_format,
    default_cache_dir,
)
from wasmlattice.runtime.engine import WINCH, EngineSettings, HostEngine
from wasmlattice.runtime.execution import HostGate, Workload
from wasmlattice.runtime.hostfiles import FileIdentity, HostFileError, HostFiles
from wasmlattice.runtime.linking import HostRegistry, LinkedComponent, link
from wasmlattice.runtime.pool import InstanceGroup, InstancePool, PoolStats
from wasmlattice.runtime.reuse import FRESH, RECORD, REPORT, ReuseSettings, parse_record, parse_reuse
from wasmlattice.supervision import Supervisor
from wasmlattice.wasi.ctx import WasiConfig
from wasmlattice.wasi.output_limit import OutputLimiter

if TYPE_CHECKING:
    from wasmlattice.observability.metrics import InstanceCount

log = logging.getLogger(__name__)

# The default deadline of one invocation, and how long a request waits for a free instance
# (docs/limits.md). wasmCloud's is 600 s; a guest past 30 s is almost always stuck, and every
# second it runs holds a thread, an instance and a core, so ours is 30 s. A host changes it with
# `--max-execution-time`, a component with its `max_execution_time` limit.
DEFAULT_EXECUTION_TIME_S = 30.0
# Worker threads per component are bounded by max_instances, and by this (threads are not free).
MAX_THREADS_PER_COMPONENT = 32
# How long a rescaled component may finish its in-flight requests before they are interrupted.
RETIRE_DRAIN_S = 30.0
# How long a stopped (scaled to 0) component's in-flight requests may run on before they are
# interrupted (docs/limits.md): short, since the component is meant to be gone.
RETIRE_GRACE_S = 0.5
# The same for an updated component: long enough for a response already streaming to finish
# (requests accepted before an update complete on the old image), short enough that a stuck
# guest of the old image is gone soon.
RETIRE_UPDATE_GRACE_S = 5.0
# How often idle instances past their component's idle timeout are looked for (docs/instance-pools.md).
RECLAIM_INTERVAL_S = 1.0
MSG_ONLY_FILE_REFS = "only file:// references are supported for now"


class ComponentRefError(ComponentError):
    """A component reference this host cannot load (scheme, path)."""


def file_ref_path(ref: str) -> str:
    """The absolute path of a `file://` reference; `ComponentRefError` for anything else."""
    parsed = urlparse(ref)
    if parsed.scheme != "file":
        raise ComponentRefError(f"cannot load {ref!r}: {MSG_ONLY_FILE_REFS}")
    path = unquote(parsed.path)
    if parsed.netloc not in ("", "localhost") or not os.path.isabs(path):
        raise ComponentRefError(
            f"cannot load {ref!r}: a file:// reference needs an absolute path (file:///path/to/c.wasm)"
        )
    return path


def different_ref_message(component_id: str, running: str, requested: str, allow_update: bool) -> str:
    """Ack text of a scale request naming another image than the running one (docs/protocol.md#scale)."""
    if allow_update:
        return (
            f"component {component_id} is already running with a different image reference "
            f"`{running}`; it will be updated to `{requested}` after scaling"
        )
    return (
        f"component {component_id} is already running with a different image reference `{running}`; "
        "scaling proceeds but the image is not changed (use component update, or allow_update)"
    )


def instance_bound(max_instances: int) -> int:
    """How many instances of a component can exist at once: its slots, bounded by its threads.

    Guests run on the component's worker threads, plus at most one inline on the event loop's
    thread (runtime/execution.py), whatever `max_instances` allows.
    """
    return max(0, min(max_instances, MAX_THREADS_PER_COMPONENT + 1))


def parse_limits(
    limits: Mapping[str, str] | None, default_seconds: float = DEFAULT_EXECUTION_TIME_S
) -> tuple[float, int | None]:
    """Execution time (seconds) and memory limit (bytes) from `component_limits`; bad values ignored.

    `max_memory_limit` is bytes (`268435456`; `256MiB` is accepted too), None when not given.
    """
    seconds, memory = default_seconds, None
    for key, value in (limits or {}).items():
        try:
            if key == "max_execution_time":
                seconds = max(1.0, float(value))
            elif key == "max_memory_limit":
                memory = parse_size(value)
                if memory <= 0:
                    raise ValueError(value)
        except ValueError:
            log.warning("ignoring unparsable component limit %s=%r", key, value)
    return seconds, memory


@dataclass
class RunningComponent:
    """A component this host runs, and the HTTP target its requests use (None if not HTTP)."""

    component_id: str
    image_ref: str
    max_instances: int
    linked: LinkedComponent
    annotations: StrMap = field(default_factory=dict)
    config_names: list[str] = field(default_factory=list)
    limits: StrMap | None = None
    target: HttpTarget | None = None
    # Threads and instance bound of every call (the HTTP target when there is one).
    workload: Workload | None = None
    wasi: WasiConfig = field(default_factory=WasiConfig)
    context: ComponentContext | None = None
    invoker: ExportInvoker | None = None
    server: ExportServer | None = None
    # The verified claims of a signed component (docs/claims.md); None if unsigned.
    claims: ComponentClaims | None = None
    # How its instances are reused (its annotations), and the idle ones its pools keep.
    reuse: ReuseSettings = FRESH
    instances: InstanceGroup | None = None

    @property
    def tier(self) -> str:
        """The compiler of the build new calls run (`winch` until the optimised `cranelift` one is in)."""
        return self.linked.tier

    def description(self) -> ComponentDescription:
        """The inventory entry of this component (`name` and `revision` from its claims).

        With warm instances, `annotations` also reports the settings in effect under
        `wasmlattice.dev/instance-pool` (docs/instance-pools.md); the wire fields stay wasmCloud's.
        """
        annotations = dict(self.annotations)
        if self.reuse.enabled and self.instances is not None:
            annotations[REPORT] = self.reuse.report(self.instances.pool_size or 0)
        return ComponentDescription(
            id=self.component_id,
            image_ref=self.image_ref,
            name=self.claims.name if self.claims is not None else None,
            annotations=annotations,
            revision=self.claims.revision if self.claims is not None else 0,
            max_instances=self.max_instances,
            limits=dict(self.limits) if self.limits is not None else None,
        )


# Linked components kept in memory for reuse (each holds a compiled module of tens of MB).
LINKED_CACHE_SIZE = 16


# Asked once an artifact is loaded, before it runs: (image reference, its verified claims or None).
Admit = Callable[[str, ComponentClaims | None], Awaitable[None]]


class ComponentRegistry:
    """The components of one host, by component ID."""

    def __init__(
        self,
        engine: HostEngine | None = None,
        cache: CompileCache | None = None,
        services: HostServices | None = None,
        fetcher: ArtifactFetcher | None = None,
        claims_policy: ClaimsPolicy | None = None,
        guest_limits: GuestLimits | None = None,
        gate: HostGate | None = None,
        execution_time: float = DEFAULT_EXECUTION_TIME_S,
        guest_output: Callable[[str], Callable[[str, str, str], None]] | None = None,
        tiered_compile: bool = True,
        record_dir: Path | None = None,
        record_all: bool = False,
    ) -> None:
        # Tiered compilation (docs/architecture.md#tiered-compilation): a component not in the
        # compile cache is first compiled by Winch (seconds sooner) and served, while Cranelift
        # compiles the optimised build in the background; new instances then use that one.
        self.tiered_compile = tiered_compile
        self._baseline: HostEngine | None = None
        # Digests whose optimised build is being compiled; one compile at a time (they use every core).
        self._optimising: set[str] = set()
        self._optimise_lock = threading.Lock()
        # Given a component ID, the tap its output limiter hands each admitted guest line to: the
        # lattice's log stream (docs/observability.md); None: guest output goes to the log only.
        self.guest_output = guest_output
        # The host's cap on concurrent invocations, and its default deadline (docs/limits.md).
        self.gate = gate
        self.execution_time = execution_time
        self.engine = engine or HostEngine()
        # Memory per instance, the budget every component reserves from, output allowance
        # (docs/limits.md).
        self.guest_limits = guest_limits or GuestLimits()
        self.budget = self.guest_limits.budget()
        self.cache = cache or CompileCache(default_cache_dir())
        self.services = services
        # What `file://` references may load (the host's `--allow-file-load`, `--allow-dir`).
        self.files = services.files if services is not None else HostFiles()
        # Where every other reference (OCI, and sources registered later) comes from; None: file:// only.
        self.fetcher = fetcher
        # Invocations, instances and capability calls are counted here (None: metrics are off).
        self.metrics = services.metrics if services is not None else None
        self.registry: HostRegistry = host_registry(self.metrics)
        # `--record-dir` (docs/record-replay.md): components are then linked with the recording
        # wrapper, and every HTTP request served by a component annotated `wasmlattice.dev/record:
        # "true"` (or by any, with `--record-all`) is written there; None costs nothing.
        self.record_dir = record_dir
        self.record_all = record_all
        # One quota for every component this host records, however many the lattice annotates.
        self._record_quota = RecordingQuota()
        self._wrap = None if record_dir is None else recording_wrap
        if self.metrics is not None:
            self.metrics.observe_instances(self._instance_counts)
        self._linked: dict[str, LinkedComponent] = {}
        # The digest of the bytes last read from each component file (by `FileIdentity`).
        self._file_digests: dict[FileIdentity, str] = {}
        # What embedded claims must satisfy (`--allowed-issuer`), and the verified claims of each
        # linked component just loaded, by its id(): the same bytes link once and carry one JWT.
        self.claims_policy = claims_policy or ClaimsPolicy()
        self._loaded_claims: dict[int, tuple[LinkedComponent, ComponentClaims | None]] = {}
        self._components: dict[str, RunningComponent] = {}
        # Workloads of replaced or stopped components still finishing their calls.
        self._retiring: set[Workload] = set()
        # Scale/update of one host are serialized: each is a read-modify-write of the map.
        self._lock = asyncio.Lock()
        # Owns the registry's background work: retiring replaced components, refreshing config.
        self.sup = Supervisor("components", parent=None if services is None else services.supervisor)
        # Named configs changed in CONFIGDATA and not yet applied (None: any), and who applies them.
        self._stale_configs: set[str | None] = set()
        self._config_refresher: asyncio.Task[None] | None = None
        # Instance counts by component ID, kept across rescales so the metrics' counters go on.
        self._pool_stats: dict[str, PoolStats] = {}
        self._reclaiming = False

    async def start(self) -> None:
        """Start the registry's supervisor (before the first scale)."""
        await self.sup.start()

    def get(self, component_id: str) -> RunningComponent | None:
        """The running component with that ID, if any."""
        return self._components.get(component_id)

    def http_target(self, component_id: str) -> HttpTarget | None:
        """What serves HTTP requests for that component now (None if not running or not HTTP)."""
        running = self._components.get(component_id)
        return running.target if running is not None else None

    def descriptions(self) -> list[ComponentDescription]:
        """Inventory entries of every running component, by ID."""
        return [c.description() for _, c in sorted(self._components.items())]

    async def scale(
        self,
        component_ref: str,
        component_id: str,
        max_instances: int,
        annotations: Mapping[str, str] | None = None,
        config_names: Sequence[str] = (),
        limits: Mapping[str, str] | None = None,
        admit: Admit | None = None,
    ) -> RunningComponent | None:
        """Run `component_id` with at most `max_instances` concurrent instances; 0 removes it.

        A running component keeps its image (scale never changes it: see `update`); a new one is
        loaded from `component_ref`. `admit(image_ref, claims)` runs once the artifact is loaded and
        before anything starts, and may refuse by raising (the policy service). Returns the running
        component (None after scaling to 0).
        """
        async with self._lock:
            existing = self._components.get(component_id)
            if max_instances <= 0:
                self.budget.release(component_id)
                self._pool_stats.pop(component_id, None)
                if existing is not None:
                    del self._components[component_id]
                    self._retire(existing, RETIRE_GRACE_S, "its component was stopped")
                    log.info("component %s stopped", component_id)
                return None
            self.check_budget(component_id, max_instances, limits)
            reuse = parse_reuse(annotations)  # checked before the ack too (lattice/workloads.py)
            if existing is None:
                linked = await self._load(component_ref)
                image_ref, claims = component_ref, self.claims_of(linked)
            else:
                linked, image_ref, claims = existing.linked, existing.image_ref, existing.claims
            if admit is not None:
                await admit(image_ref, claims)
            running = RunningComponent(
                component_id=component_id,
                image_ref=image_ref,
                max_instances=max_instances,
                linked=linked,
                annotations=dict(annotations or {}),
                config_names=list(config_names),
                limits=dict(limits) if limits is not None else None,
                claims=claims,
                reuse=reuse,
            )
            await self._prepare(running)
            self._reserve(component_id, max_instances, limits)
            self._components[component_id] = running
            if existing is not None:
                self._retire(existing)
            log.info("component %s (%s) runs with max_instances=%d", component_id, image_ref, max_instances)
            return running

    def instance_memory(self, limits: Mapping[str, str] | None) -> int:
        """Linear memory one instance may use: the component's `max_memory_limit`, else the host's."""
        memory = parse_limits(limits)[1]
        return memory if memory is not None else self.guest_limits.instance_memory

    def _need(self, max_instances: int, limits: Mapping[str, str] | None) -> tuple[int, str]:
        memory = self.instance_memory(limits)
        bound = instance_bound(max_instances)
        return bound * memory, f"{bound} concurrent instances x {format_size(memory)}"

    def check_budget(self, component_id: str, max_instances: int, limits: Mapping[str, str] | None) -> None:
        """`BudgetExceeded` with the reason if scaling to `max_instances` would not fit the budget.

        A component already running counts with its new size only (its old reservation is replaced).
        """
        if max_instances > 0:
            self.budget.check(component_id, *self._need(max_instances, limits))

    def _reserve(self, component_id: str, max_instances: int, limits: Mapping[str, str] | None) -> None:
        self.budget.reserve(component_id, *self._need(max_instances, limits))

    async def update(
        self,
        component_id: str,
        new_ref: str,
        annotations: Mapping[str, str] | None = None,
        admit: Admit | None = None,
    ) -> tuple[RunningComponent, RunningComponent]:
        """Replace a running component's image, keeping its max instances and limits; (old, new).

        Requests already accepted finish on the old image; `KeyError` if it is not running.
        `admit(new_ref, claims)` may refuse the new image once loaded (the old one keeps running).
        """
        async with self._lock:
            old = self._components.get(component_id)
            if old is None:
                raise KeyError(component_id)
            new_annotations = dict(annotations) if annotations is not None else dict(old.annotations)
            reuse = parse_reuse(new_annotations)
            linked = await self._load(new_ref)
            if admit is not None:
                await admit(new_ref, self.claims_of(linked))
            new = RunningComponent(
                component_id=component_id,
                image_ref=new_ref,
                max_instances=old.max_instances,
                linked=linked,
                annotations=new_annotations,
                config_names=list(old.config_names),
                limits=old.limits,
                claims=self.claims_of(linked),
                reuse=reuse,
            )
            await self._prepare(new)
            self._components[component_id] = new
            self._retire(old, RETIRE_UPDATE_GRACE_S, "its component was updated")
            log.info("component %s updated from %s to %s", component_id, old.image_ref, new_ref)
            return old, new

    async def invoke(
        self, component_id: str, interface: str, func: str, *args: Any, timeout: float | None = None
    ) -> Any:
        """Call an export (`ns:pkg/iface`, unversioned) of a component running here; its result.

        `InvokeError` if the component is not running here or does not export the function.
        """
        running = self._components.get(component_id)
        if running is None or running.invoker is None:
            raise InvokeError(f"component {component_id} is not running on this host")
        return await running.invoker.call(interface, func, *args, timeout=timeout)

    async def _prepare(self, running: RunningComponent) -> None:
        # What every instance of this component shares: its capability context and WASI view.
        context = None
        if self.services is not None:
            # `SECRET*` names are secret references, resolved once here, not config
            # (docs/protocol.md#secrets).
            plain = [n for n in running.config_names if not sj.is_secret_reference(n)]
            # Each secret is checked against the grants sealed with it: naming it grants nothing.
            secrets = await resolve_secrets(
                self.services,
                [n for n in running.config_names if sj.is_secret_reference(n)],
                running.component_id,
                subject=running.claims.subject if running.claims is not None else None,
            )
            config = await self.services.state.merged_config(plain)
            context = ComponentContext(
                running.component_id,
                self.services,
                config=dict(config),
                config_names=list(running.config_names),
                annotations=dict(running.annotations),
                secrets=dict(secrets),
            )
        running.context = context
        # The idle instances of every export's pool, within the instances the budget reserved.
        stats = self._pool_stats.setdefault(running.component_id, PoolStats())
        bound = instance_bound(running.max_instances)
        running.instances = InstanceGroup(running.reuse, bound=bound, stats=stats)
        if running.reuse.enabled and not self._reclaiming:
            self._reclaiming = True
            self.sup.supervise("reclaim idle instances", self._reclaim_idle)
        # No `wasi:filesystem` grants on a lattice host: only `wasmlattice run --dir` makes them,
        # so nothing a control message says can open a host directory to a guest.
        running.wasi = WasiConfig(
            component_id=running.component_id,
            args=["main.wasm"],
            component=context,
            output=OutputLimiter(
                running.component_id,
                self.guest_limits.output,
                tap=self.guest_output(running.component_id) if self.guest_output is not None else None,
            ),
        )
        running.target = self._target(running)
        timeout, memory = parse_limits(running.limits, self.execution_time)
        running.workload = running.target or Workload(
            running.component_id,
            timeout=timeout,
            threads=min(running.max_instances, MAX_THREADS_PER_COMPONENT),
            max_concurrency=running.max_instances,
        )
        running.workload.gate = self.gate
        if self.metrics is not None:
            running.workload.metrics = self.metrics.component(running.component_id, running.image_ref)
        running.invoker = ExportInvoker(
            self.engine,
            running.linked,
            running.wasi,
            running.workload,
            max_memory=memory if memory is not None else self.guest_limits.instance_memory,
            group=running.instances,
        )
        if self.services is not None and self.services.nc is not None:
            # Serve the exports to the lattice (wRPC) under this component's queue group.
            invoker = running.invoker
            running.server = ExportServer(
                self.services.nc,
                self.services.lattice,
                running.component_id,
                running.linked.exports,
                lambda iface, func, *args, timeout: invoker.call(iface, func, *args, timeout=timeout),
                timeout=self.services.invocation_timeout,
                http=running.target,
                supervisor=self.sup,
                policy=self.services.policy,
                image_ref=running.image_ref,
                annotations=running.annotations,
                claims=running.claims,
            )
            await running.server.start()

    def _instance_counts(self) -> list[InstanceCount]:
        """Active and maximum instances of every running component (read when metrics are collected)."""
        from wasmlattice.observability.metrics import InstanceCount  # the SDK: only with metrics on

        out = []
        for r in list(self._components.values()):
            if r.workload is None:
                continue
            count = InstanceCount(r.component_id, r.image_ref, r.workload.active, r.max_instances)
            group = r.instances
            if r.reuse.enabled and group is not None:
                created, reused, discarded = group.stats.snapshot()
                count = replace(
                    count,
                    idle=group.idle_count,
                    created=created,
                    reused=reused,
                    discarded=tuple(sorted(discarded.items())),
                )
            out.append(count)
        return out

    async def _reclaim_idle(self) -> None:
        """Close idle instances past their component's idle timeout, now and then (a supervised child).

        Requests drop expired instances too; this frees the memory of components nobody calls.
        """
        while True:
            await asyncio.sleep(RECLAIM_INTERVAL_S)
            groups = [r.instances for r in list(self._components.values()) if r.reuse.enabled]
            for group in groups:
                if group is not None and group.idle_count:
                    closed = group.reclaim()
                    if closed:
                        log.debug("closed %d idle instance(s) past their idle timeout", closed)

    def running(self) -> list[RunningComponent]:
        """Every running component."""
        return list(self._components.values())

    def config_changed(self, name: str | None) -> None:
        """Note that named config `name` changed in CONFIGDATA (None: any may have); refresh soon.

        A `LatticeState.config_listeners` callback: changes are collected and applied by one task.
        """
        self._stale_configs.add(name)
        if self._config_refresher is None or self._config_refresher.done():
            self._config_refresher = self.sup.spawn("refresh-config", self._refresh_stale_configs())

    async def _refresh_stale_configs(self) -> None:
        while self._stale_configs:
            stale, self._stale_configs = self._stale_configs, set()
            await self.refresh_config(None if None in stale else {n for n in stale if n is not None})

    async def refresh_config(self, names: Collection[str] | None = None) -> int:
        """Re-merge the config of running components listing any of `names` (all if None) from KV.

        The next call of their guests sees it (docs/protocol.md#named-config); a deleted config
        counts as empty. Runs under
        the registry lock, so a component being scaled meanwhile is refreshed after it is
        registered and cannot keep a config read before the change. Returns how many changed.
        """
        if self.services is None:
            return 0
        changed = 0
        async with self._lock:
            for running in list(self._components.values()):
                context = running.context
                plain = [n for n in running.config_names if not sj.is_secret_reference(n)]
                if context is None or (names is not None and not any(n in names for n in plain)):
                    continue
                try:
                    config = await self.services.state.live_config(plain)
                except Exception as e:
                    log.warning(
                        "component %s keeps its previous config: reading %s failed: %s",
                        running.component_id,
                        ", ".join(plain),
                        e,
                    )
                    continue
                if config != context.config:
                    # A new dict, never mutated: a guest reading the old one meanwhile stays consistent.
                    context.config = dict(config)
                    changed += 1
                    log.info("component %s: config updated from %s", running.component_id, ", ".join(plain))
        return changed

    async def stop(self, drain_timeout: float = 0.5) -> None:
        """Stop every component and the engine's ticker.

        In-flight calls get up to `drain_timeout` seconds (all together), then are interrupted.
        """
        async with self._lock:
            for running in self._components.values():
                if running.server is not None:
                    await running.server.stop()
            workloads = [r.workload for r in self._components.values() if r.workload is not None]
            await asyncio.gather(*(w.retire(drain_timeout, "the host is stopping") for w in workloads))
            for running in self._components.values():
                self.budget.release(running.component_id)
                if running.instances is not None:
                    running.instances.close()
            self._components.clear()
        await self.sup.stop(0.0)  # components still being retired (or optimised) are cut short
        self.interrupt_all("the host is stopping")
        self.engine.close()
        if self._baseline is not None:
            self._baseline.close()

    def interrupt_all(self, reason: str) -> int:
        """Interrupt every guest call still running here (running and retired components); how many.

        Synchronous, so a stopping host can call it whatever state its shutdown is in.
        """
        count = 0
        for workload in self._workloads:
            cut = workload.interrupt_all(reason)
            if cut:
                log.warning("%s: interrupted %s (%s)", workload.name, ", ".join(cut), reason)
            count += len(cut)
        return count

    def check_ref(self, ref: str) -> None:
        """`ComponentRefError` if this host's policy refuses `ref` outright (no file is opened).

        Cheap enough for a control request to answer with the refusal instead of an ack.
        """
        if self.fetcher is not None and scheme_of(ref) != "file":
            try:
                self.fetcher.check(ref)  # malformed, `latest` without --allow-latest, insecure
            except ArtifactError as e:
                raise ComponentRefError(str(e)) from None
            return
        try:
            path = file_ref_path(ref)
        except ComponentRefError:
            return  # not a file: loading says what is wrong with it, as before
        try:
            self.files.check_load(ref, path)
        except HostFileError as e:
            raise ComponentRefError(str(e)) from None

    async def _load(self, ref: str) -> LinkedComponent:
        data: bytes | bytearray | None = None
        if self.fetcher is not None and scheme_of(ref) != "file":
            # OCI (and other registered sources): policy, digest check and cache in the fetcher.
            try:
                data = (await self.fetcher.fetch(ref)).data
            except ArtifactError as e:
                raise ComponentRefError(str(e)) from None
            path = ref
        else:
            path = file_ref_path(ref)
        # Reading and compiling take a while for big components: keep the event loop free.
        linked, loaded, digest = await asyncio.get_running_loop().run_in_executor(
            None, self._load_blocking, ref, path, data
        )
        if linked.tier != self.engine.settings.strategy and digest not in self._optimising:
            self._optimising.add(digest)
            self.sup.spawn(f"optimise {path}", self._optimise(loaded, path, digest, linked))
        return linked

    def _load_blocking(
        self, ref: str, path: str, pulled: bytes | bytearray | None = None
    ) -> tuple[LinkedComponent, bytes, str]:
        # `pulled`: bytes a fetcher already pulled and checked; `path` is then the reference. A
        # registry pull arrives in a bytearray (filled as it streamed in); the runtime keeps
        # immutable bytes, copied here on the worker thread, next to a compile of seconds.
        # Only what the host allows, only a regular file, never more than the size cap
        # (docs/security.md): the reference comes from a control message. A file unchanged since
        # it was last loaded is not read again (scaling many IDs of one file read and hashed it
        # for each, about 20 ms per 18 MiB): the checks still run, the bytes are not needed.
        identity: FileIdentity | None = None
        try:
            if pulled is not None:
                data = bytes(pulled)
            else:
                got, identity = self.files.read_component(ref, path, self._unchanged_file)
                reused = self._reuse_loaded(identity) if got is None else None
                if reused is not None:
                    return reused
                if got is None:  # another load dropped that build meanwhile: read after all
                    got, identity = self.files.read_component(ref, path)
                assert got is not None  # read_component without `unchanged` always reads
                data = got
        except HostFileError as e:
            raise ComponentRefError(str(e)) from None
        check_format(data, path)
        # Embedded claims are verified before anything is compiled; refused ones fail the scale.
        claims = self.claims_policy.check(data)
        # Many component ids often share one file (and scale repeats): compile and link it once.
        # A compiled, linked component is immutable, so every pool can instantiate from it.
        digest = hashlib.sha256(data).hexdigest()
        if identity is not None and identity.settled(time.time_ns()):
            self._file_digests.pop(identity, None)
            self._file_digests[identity] = digest  # most recently used last
            while len(self._file_digests) > LINKED_CACHE_SIZE:
                del self._file_digests[next(iter(self._file_digests))]
        linked = self._linked.pop(digest, None)
        if linked is None:
            linked = self._first_build(data, path)
        self._linked[digest] = linked  # most recently used last
        self._loaded_claims.pop(id(linked), None)  # re-inserted last: never the one pruned below
        self._loaded_claims[id(linked)] = (linked, claims)
        while len(self._loaded_claims) > LINKED_CACHE_SIZE:
            del self._loaded_claims[next(iter(self._loaded_claims))]
        while len(self._linked) > LINKED_CACHE_SIZE:
            del self._linked[next(iter(self._linked))]
        return linked, data, digest

    def _unchanged_file(self, identity: FileIdentity) -> bool:
        """Whether the file with `identity` was loaded before into a build that needs nothing more:
        the optimised one (a first-tier build still needs the bytes to be optimised), with no
        claims whose validity depends on the time (those are checked again on every load)."""
        digest = self._file_digests.get(identity)
        linked = self._linked.get(digest) if digest is not None else None
        if linked is None or linked.tier != self.engine.settings.strategy:
            return False
        entry = self._loaded_claims.get(id(linked))
        if entry is None:
            return False
        claims = entry[1]
        return claims is None or (claims.claims.exp is None and claims.claims.nbf is None)

    def _reuse_loaded(self, identity: FileIdentity) -> tuple[LinkedComponent, bytes, str] | None:
        """`_load_blocking`'s answer for a file `_unchanged_file` accepted (no bytes: none needed),
        or None if a concurrent load pruned its build since."""
        digest = self._file_digests.get(identity)
        linked = self._linked.pop(digest, None) if digest is not None else None
        if digest is None or linked is None:
            return None
        self._linked[digest] = linked  # most recently used last
        entry = self._loaded_claims.pop(id(linked), None)
        if entry is None:
            return None
        self._loaded_claims[id(linked)] = entry
        return linked, b"", digest

    def _first_build(self, data: bytes, path: str) -> LinkedComponent:
        """The build to serve first: the cached optimised one, else (tiered) Winch's, else Cranelift's."""
        if self.tiered_compile and self.cache.lookup(data, self.engine) is None:
            if self._baseline is None:
                self._baseline = HostEngine(
                    EngineSettings(epoch_interruption=self.engine.settings.epoch_interruption, strategy=WINCH)
                )
            try:
                comp = self.cache.compile(data, self._baseline, path)
            except ComponentError as e:
                # Winch lacks some proposals Cranelift has: such a component waits for Cranelift.
                log.warning("%s: the first-tier (Winch) compile failed, waiting for Cranelift: %s", path, e)
            else:
                log.info("%s: serving its first-tier (Winch) build while Cranelift optimises it", path)
                return link(self._baseline, comp, self.registry, origin=path, wrap=self._wrap)
        comp = self.cache.load(data, self.engine, path)
        return link(self.engine, comp, self.registry, origin=path, wrap=self._wrap)

    async def _optimise(self, data: bytes, path: str, digest: str, first: LinkedComponent) -> None:
        """Compile the optimised build of a component served from its first-tier build, then swap."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[LinkedComponent] = loop.create_future()

        def deliver(result: LinkedComponent | None, error: BaseException | None) -> None:
            if done.done():
                return
            if error is not None:
                done.set_exception(error)
            else:
                assert result is not None
                done.set_result(result)

        def work() -> None:
            # A daemon thread, not an executor: a stopping host must not wait for a compile
            # (the cache entry is written atomically, so one cut short leaves nothing behind).
            result: LinkedComponent | None = None
            error: BaseException | None = None
            try:
                with self._optimise_lock:
                    comp = self.cache.load(data, self.engine, path)
                    result = link(self.engine, comp, self.registry, origin=path, wrap=self._wrap)
            except BaseException as e:
                error = e
            try:
                loop.call_soon_threadsafe(deliver, result, error)
            except RuntimeError:
                pass  # the host stopped meanwhile

        threading.Thread(target=work, name="wasmlattice-optimise", daemon=True).start()
        try:
            optimised = await done
        except Exception as e:
            log.warning("%s keeps serving its first-tier (Winch) build: optimising failed: %s", path, e)
            return
        finally:
            self._optimising.discard(digest)
        async with self._lock:
            self.promote(digest, first, optimised)

    def promote(self, digest: str, first: LinkedComponent, optimised: LinkedComponent) -> int:
        """Serve `optimised` wherever `first` (another build of the same bytes) serves; how many
        components switched. New instances use it; calls already running finish on `first`."""
        if self._linked.get(digest) is first:
            self._linked[digest] = optimised
        loaded = self._loaded_claims.get(id(first))
        if loaded is not None and loaded[0] is first:
            self._loaded_claims[id(optimised)] = (optimised, loaded[1])
        switched = 0
        for running in self._components.values():
            if running.linked is not first:
                continue
            running.linked = optimised
            if running.target is not None:
                running.target.pool.promote(optimised)
            if running.invoker is not None:
                running.invoker.promote(optimised)
            switched += 1
            log.info("component %s now serves its optimised (%s) build", running.component_id, optimised.tier)
        return switched

    def claims_of(self, linked: LinkedComponent) -> ComponentClaims | None:
        """The verified claims of a component `_load` just returned (None: unsigned)."""
        found = self._loaded_claims.get(id(linked))
        return found[1] if found is not None and found[0] is linked else None

    def _target(self, running: RunningComponent) -> HttpTarget | None:
        linked = running.linked
        if not any(n.split("@")[0] == INCOMING_HANDLER for n in linked.exports):
            return None
        timeout = parse_limits(running.limits, self.execution_time)[0]
        memory = self.instance_memory(running.limits)
        pool = InstancePool(
            self.engine, linked, INCOMING_HANDLER, "handle", max_memory=memory, group=running.instances
        )
        target = HttpTarget(
            running.component_id,
            pool,
            running.wasi,
            timeout=timeout,
            threads=min(running.max_instances, MAX_THREADS_PER_COMPONENT),
            max_concurrency=running.max_instances,
        )
        wanted = parse_record(running.annotations)  # checked before the scale was acknowledged
        if wanted and self.record_dir is None:
            log.warning(
                "%s asks to be recorded (%s) but this host has no --record-dir: it is not recorded",
                running.component_id,
                RECORD,
            )
        if self.record_dir is not None and (wanted or self.record_all):
            ref = running.image_ref
            target.recorder = Recorder(
                self.record_dir,
                running.component_id,
                ref.removeprefix("file://") if ref.startswith("file://") else ref,
                quota=self._record_quota,
            )
        return target

    def _retire(
        self, running: RunningComponent, grace: float = RETIRE_DRAIN_S, reason: str = "it was replaced"
    ) -> None:
        if running.workload is not None:
            self._retiring.add(running.workload)
        if running.instances is not None:
            running.instances.close()  # idle ones now; those still running when they return
        self.sup.spawn(f"retire {running.component_id}", self._retire_now(running, grace, reason))

    async def _retire_now(self, running: RunningComponent, grace: float, reason: str) -> None:
        try:
            if running.server is not None:
                await running.server.stop()
            if running.workload is not None:
                await running.workload.retire(grace, reason)
        finally:
            if running.workload is not None:
                self._retiring.discard(running.workload)
            if running.wasi.output is not None:
                running.wasi.output.close()  # its last drop counts, if any

    @property
    def _workloads(self) -> list[Workload]:
        running = [r.workload for r in self._components.values() if r.workload is not None]
        return running + list(self._retiring)
