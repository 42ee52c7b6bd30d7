"""The app manager: the wadm API, manifest storage and the reconciler, with a leader lease.

Several managers may run on one lattice for availability. All of them answer the API (a NATS
queue group shares the requests) and store manifests in JetStream KV; only the one holding the
lease acts on the lattice. The lease is a key in the `wadm_state` bucket (`leader_<lattice>`)
holding the holder's ID and expiry, taken with a create and renewed with a compare-and-set every
`LEASE_RENEW_S`; a holder that dies loses it after `LEASE_TTL_S`. The holder re-reads the deployed
apps from KV every round, so a deploy answered by another manager (or made before a restart)
reaches it, and converges from what it finds on the lattice: scaling and link puts are idempotent,
so a restart duplicates nothing.

Statuses are published on `wadm.status.<lattice>.<app>` by the leader when they change (and again
every `STATUS_REFRESH_S`); every manager caches what it sees there to answer `model.status`.

The leader also keeps wadm's own lattice state keys in `wadm_state` (`host_<lattice>`,
`component_<lattice>`, `provider_<lattice>`; `wadm_state.py`) for tools written for wadm.

With `--health-listen` the process serves `/livez` and `/readyz` (`wasmlattice/probes.py`): ready
while connected to NATS, with both buckets open and the API subscribed (`AppManager.not_ready`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import nats.js.errors

from wasmlattice.apps.api import ApiServer
from wasmlattice.apps.manifest.model import Manifest
from wasmlattice.apps.reconciler import DEFAULT_HOST_TIMEOUT_S, AppState, Reconciler
from wasmlattice.apps.status import status_type
from wasmlattice.apps.store import DEFAULT_BUCKET, AppStore, AppStoreError
from wasmlattice.apps.wadm_state import WadmStateWriter
from wasmlattice.observability.settings import ObservabilitySettings
from wasmlattice.probes import ProbeServer, nats_reason, parse_listen
from wasmlattice.protocol.kv import KvError, create_replicated
from wasmlattice.supervision import Supervisor

if TYPE_CHECKING:  # the OpenTelemetry SDK is imported only when metrics are on
    from wasmlattice.observability.metrics import AppMetrics

log = logging.getLogger(__name__)

STATE_BUCKET = "wadm_state"
LEASE_TTL_S = 6.0
LEASE_RENEW_S = 2.0
STATUS_REFRESH_S = 5.0


class AppManagerStartError(RuntimeError):
    """The app manager cannot start (its probe address cannot be bound, ...); the message says why."""


def status_subject(lattice: str, app: str) -> str:
    """Where an app's status is published."""
    return f"wadm.status.{lattice}.{app}"


class AppManager:
    """One app manager process (or task inside `wasmlattice up`) for one lattice."""

    def __init__(
        self,
        nc: Any,
        js: Any,
        lattice: str,
        *,
        host_timeout: float = DEFAULT_HOST_TIMEOUT_S,
        manager_id: str | None = None,
        api_prefix: str = "wadm.api",
        metrics: AppMetrics | None = None,
    ) -> None:
        self.nc = nc
        self.js = js
        self.lattice = lattice
        self.manager_id = manager_id or uuid.uuid4().hex
        self.api_prefix = api_prefix
        self.reconciler = Reconciler(nc, lattice, host_timeout=host_timeout, publish_status=self._publish)
        self.reconciler.active = False
        self.store: AppStore | None = None
        self.api: ApiServer | None = None
        self._seen_status: dict[str, dict[str, Any]] = {}
        # Owns the lease loop, the reconcile loop and (as a child) the API server's handlers.
        self._supervisor = Supervisor("app-manager", logger=log)
        self._status_sub: Any = None
        self._lease_kv: Any = None
        self._lease_rev: int | None = None
        # wadm's lattice state keys in the same bucket, written by the leader (apps/wadm_state.py).
        self._wadm_state: WadmStateWriter | None = None
        # Reconcile rounds and app statuses (docs/observability.md#metrics; None: metrics are off).
        self.metrics = metrics
        if metrics is not None:
            self.reconciler.metrics = metrics
            metrics.observe_statuses(self._app_statuses)

    def _app_statuses(self) -> list[str]:
        """The status of every app this manager knows (read when metrics are collected)."""
        names = set(self.reconciler.statuses) | set(self._seen_status)
        return [status_type(st) for st in map(self.status, sorted(names)) if st is not None]

    def not_ready(self) -> list[str]:
        """Why this manager cannot serve the API and reconcile (`/readyz`); empty when it can.

        While NATS is down nothing reaches the API; the buckets and the API subscription are in
        place once `start` has run (nats-py renews the subscription after a reconnect).
        """
        out = nats_reason(self.nc, "the wadm API and reconciling are unavailable")
        store = self.store
        if store is None or not store.opened:
            out.append(f"buckets: {store.bucket_name if store else DEFAULT_BUCKET} not open yet")
        if self._lease_kv is None:
            out.append(f"buckets: {STATE_BUCKET} not open yet")
        if self.api is None or not self.api.subscribed:
            out.append(f"api: not subscribed to {self.api_prefix}.{self.lattice}.model.>")
        return out

    @property
    def leader(self) -> bool:
        """Whether this manager holds the lease (acts on the lattice)."""
        return self.reconciler.active

    # -- hooks for the API server -------------------------------------------------------------

    async def deployed(self, name: str, manifest: Manifest) -> None:
        """A deploy was acknowledged: the leader runs it (others leave it to the leader)."""
        self._seen_status.pop(name, None)  # the previous version's status no longer holds
        await self.reconciler.deployed(name, manifest)

    async def undeployed(self, name: str) -> None:
        """An undeploy was acknowledged."""
        await self.reconciler.undeployed(name)

    def status(self, name: str) -> dict[str, Any] | None:
        """The app's status: this manager's own if it leads, else the last one published."""
        if self.leader:
            own = self.reconciler.status(name)
            if own is not None:
                return own
        return self._seen_status.get(name) or self.reconciler.status(name)

    # -- life cycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open storage, serve the API, follow statuses, and start competing for the lease."""
        self.store = AppStore(self.js, self.lattice)
        await self._supervisor.start()
        self.api = ApiServer(
            self.nc, self.lattice, self.store, self, prefix=self.api_prefix, supervisor=self._supervisor
        )
        await self.api.start()
        self._status_sub = await self.nc.subscribe(f"wadm.status.{self.lattice}.*", cb=self._on_status)
        await self.reconciler.start()
        try:
            self._lease_kv = await self.js.key_value(STATE_BUCKET)
        except nats.js.errors.BucketNotFoundError:
            try:
                self._lease_kv = await create_replicated(
                    self.js,
                    f"KV bucket {STATE_BUCKET}",
                    lambda n: self.js.create_key_value(bucket=STATE_BUCKET, history=1, replicas=n),
                )
            except nats.js.errors.BadRequestError:
                self._lease_kv = await self.js.key_value(STATE_BUCKET)
        # Now rather than at the first request: a bucket that cannot be opened is a start-up error,
        # and readiness (`not_ready`) means the API can answer.
        try:
            await self.store.open()
        except (KvError, AppStoreError) as e:
            raise AppManagerStartError(str(e)) from None
        self._wadm_state = WadmStateWriter(self._lease_kv, self.lattice)
        self._supervisor.supervise("lease", self._lease_loop)
        self._supervisor.supervise("reconcile", self._run)
        log.info("app manager %s serving lattice %s", self.manager_id, self.lattice)

    async def stop(self) -> None:
        """Stop acting, give up the lease, stop serving; each step bounded, so a stop always ends."""
        # Only the lease and reconcile loops: the API keeps answering until it is stopped below.
        for name in ("lease", "reconcile"):
            child = self._supervisor.child(name)
            if child is not None:
                await _bounded(f"stopping the {name} loop", child.stop())
        if self.leader and self._lease_kv is not None and self._lease_rev is not None:
            with contextlib.suppress(Exception):
                release = self._lease_kv.delete(self._lease_key, last=self._lease_rev)
                await _bounded("giving up the lease", release)
        self.reconciler.active = False
        await _bounded("stopping the reconciler", self.reconciler.stop())
        if self._status_sub is not None:
            with contextlib.suppress(Exception):
                await _bounded("unsubscribing from statuses", self._status_sub.unsubscribe())
        if self.api is not None:
            await _bounded("stopping the API", self.api.stop())
        await _bounded("stopping the supervisor", self._supervisor.stop())

    # -- lease ----------------------------------------------------------------------------------

    @property
    def _lease_key(self) -> str:
        return f"leader_{self.lattice}"

    async def _lease_loop(self) -> None:
        while True:
            try:
                await self._try_lease()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("app manager %s: lease check failed: %s", self.manager_id, e)
                self._lose_lease()
            await asyncio.sleep(LEASE_RENEW_S)

    async def _try_lease(self) -> None:
        kv = self._lease_kv
        value = json.dumps({"id": self.manager_id, "until": time.time() + LEASE_TTL_S}).encode()
        if self.leader and self._lease_rev is not None:
            try:
                self._lease_rev = await kv.update(self._lease_key, value, last=self._lease_rev)
                return
            except nats.js.errors.KeyWrongLastSequenceError:
                self._lose_lease()
                return
        try:
            entry = await kv.get(self._lease_key)
        except nats.js.errors.KeyNotFoundError:
            entry = None
        if entry is None or entry.value is None or not entry.value:
            try:
                self._lease_rev = await kv.create(self._lease_key, value)
            except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.APIError):
                return
            self._win_lease()
            return
        holder = json.loads(entry.value)
        if holder.get("id") == self.manager_id or float(holder.get("until", 0)) < time.time():
            try:
                self._lease_rev = await kv.update(self._lease_key, value, last=entry.revision)
            except nats.js.errors.KeyWrongLastSequenceError:
                return
            self._win_lease()

    def _win_lease(self) -> None:
        if not self.reconciler.active:
            log.info("app manager %s leads lattice %s", self.manager_id, self.lattice)
            if self._wadm_state is not None:
                self._wadm_state.forget()
            self.reconciler.active = True
            self.reconciler.poke()

    def _lose_lease(self) -> None:
        if self.reconciler.active:
            log.warning("app manager %s no longer leads lattice %s", self.manager_id, self.lattice)
        self.reconciler.active = False
        self._lease_rev = None

    # -- the reconcile loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        last_refresh = 0.0
        while True:
            try:
                if self.leader:
                    await self._sync_apps()
                    if time.monotonic() - last_refresh > STATUS_REFRESH_S:
                        last_refresh = time.monotonic()
                        self.reconciler.republish()
                await self.reconciler.round()
                if self.leader and self._wadm_state is not None:
                    r = self.reconciler
                    await self._wadm_state.update(r.hosts.values(), r.provider_health)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("app manager %s: a round failed", self.manager_id)
            await self.reconciler.idle()

    async def _sync_apps(self) -> None:
        """Make the reconciler's apps the deployed ones in KV (deploys answered elsewhere, restarts)."""
        assert self.store is not None
        deployed = await self.store.deployed()
        apps = self.reconciler.apps
        for name, manifest in deployed.items():
            current = apps.get(name)
            if current is None:
                apps[name] = AppState(manifest)
            elif current.manifest.version != manifest.version:
                apps[name] = AppState(manifest, previous=current.manifest)
        for name in [n for n in apps if n not in deployed]:
            await self.reconciler.undeployed(name)

    # -- statuses -----------------------------------------------------------------------------------

    async def _publish(self, name: str, status: dict[str, Any]) -> None:
        with contextlib.suppress(Exception):
            await self.nc.publish(status_subject(self.lattice, name), json.dumps(status).encode())

    async def _on_status(self, msg: Any) -> None:
        app = msg.subject.rsplit(".", 1)[-1]
        with contextlib.suppress(ValueError):
            self._seen_status[app] = json.loads(msg.data)


class ManagerReadiness:
    """The readiness of an app manager that exists only once NATS is connected (`run_app_manager`
    fills it in); `wasmlattice up` adds `reasons` to its host's `/readyz`."""

    def __init__(self, prefix: str = "") -> None:
        self.manager: AppManager | None = None
        self.stopped = False
        self.prefix = prefix  # before each reason: which part of a process is not ready

    def reasons(self) -> list[str]:
        """Why the app manager is not ready; empty when it is."""
        if self.stopped:
            out = ["stopped"]
        elif self.manager is None:
            out = ["nats: not connected yet"]
        else:
            out = self.manager.not_ready()
        return [self.prefix + r for r in out]


async def run_app_manager(
    nats_opts: Any,
    lattice: str,
    stop: asyncio.Event,
    *,
    host_timeout: float = DEFAULT_HOST_TIMEOUT_S,
    ready: asyncio.Event | None = None,
    observability: ObservabilitySettings | None = None,
    health_listen: str | None = None,
    readiness: ManagerReadiness | None = None,
) -> None:
    """Connect, run an app manager for `lattice` until `stop` is set, then leave cleanly.

    `observability`: its metrics settings (the CLI's flags); None reads the environment.
    `health_listen`: `HOST:PORT` to serve `/livez` and `/readyz` on, bound before connecting so
    that a bad address fails at once (`AppManagerStartError`). `readiness` is kept up to date for a
    caller that serves the probes itself (`wasmlattice up`).
    """
    readiness = readiness if readiness is not None else ManagerReadiness()
    probes: ProbeServer | None = None
    if health_listen:
        try:
            probes = ProbeServer(parse_listen(health_listen), [readiness.reasons])
        except ValueError as e:
            raise AppManagerStartError(f"--health-listen: {e}") from None
        try:
            await probes.start()
        except OSError as e:
            raise AppManagerStartError(f"--health-listen {health_listen}: cannot listen: {e}") from None
    try:
        await _run_app_manager(nats_opts, lattice, stop, host_timeout, ready, observability, readiness)
    finally:
        readiness.manager, readiness.stopped = None, True
        if probes is not None:
            await probes.stop()


async def _run_app_manager(
    nats_opts: Any,
    lattice: str,
    stop: asyncio.Event,
    host_timeout: float,
    ready: asyncio.Event | None,
    observability: ObservabilitySettings | None,
    readiness: ManagerReadiness,
) -> None:
    from wasmlattice.protocol.connection import connect, jetstream

    # Metrics (docs/observability.md#metrics): the SDK is imported only if they are on.
    if observability is None:
        try:
            observability = ObservabilitySettings.from_env()
        except ValueError as e:
            from wasmlattice.observability.metrics import MetricsError

            raise MetricsError(str(e)) from None
    metrics: AppMetrics | None = None
    manager_id = uuid.uuid4().hex
    if observability.metrics_wanted:
        from wasmlattice.observability.metrics import start_app_metrics

        metrics = await start_app_metrics(observability, lattice, manager_id)
    try:
        nc = await connect(nats_opts)
    except BaseException:
        if metrics is not None:
            await metrics.release()
        raise
    manager = AppManager(
        nc,
        jetstream(nc, nats_opts),
        lattice,
        host_timeout=host_timeout,
        manager_id=manager_id,
        metrics=metrics,
    )
    readiness.manager = manager
    try:
        await manager.start()
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await manager.stop()
        with contextlib.suppress(Exception):
            await nc.close()
        if metrics is not None:
            await metrics.release()


# How long one step of `AppManager.stop` may take: a step that hangs (a NATS call during an outage,
# a task that does not end when cancelled) is logged and skipped, so stopping never hangs.
STOP_STEP_S = 10.0


async def _bounded(what: str, step: Awaitable[Any]) -> None:
    """Await `step` for at most STOP_STEP_S seconds; log and go on if it takes longer."""
    try:
        async with asyncio.timeout(STOP_STEP_S):
            await step
    except TimeoutError:
        log.warning("app manager: %s took over %.0fs; going on with the stop", what, STOP_STEP_S)
