"""Typed async client for the wasmCloud v1 control interface (what `wash` does over NATS).

Every operation builds its subject with `lattice.subjects`, sends a `lattice.models` payload and parses
the `CtlResponse` envelope. A reply with `success: false` raises `CtlError` with the host's message;
silence (no responders, time-out) raises `CtlNoHostError` / `CtlTimeoutError` with a hint about what
to do. Scatter-gather operations (`ping_hosts`, auctions) publish with a fresh inbox and collect every
reply until the wait ends, like the reference client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

import nats.errors
from pydantic import BaseModel

from wasmlattice.aio import wait_for
from wasmlattice.protocol import subjects
from wasmlattice.protocol.models import (
    DEFAULT_AUCTION_TIMEOUT_S,
    DEFAULT_LINK_NAME,
    DEFAULT_REQUEST_TIMEOUT_S,
    ClaimsList,
    ComponentAuctionAck,
    ComponentAuctionRequest,
    DeleteInterfaceLinkDefinitionRequest,
    Host,
    HostInventory,
    HostLabel,
    HostLabelIdentifier,
    Link,
    LinkList,
    NamedConfig,
    ProviderAuctionAck,
    ProviderAuctionRequest,
    RegistryCredential,
    RegistryCredentialMap,
    ScaleComponentCommand,
    StartProviderCommand,
    StopHostCommand,
    StopProviderCommand,
    UpdateComponentCommand,
)
from wasmlattice.protocol.subjects import CtlOperation
from wasmlattice.protocol.wire import PayloadError, WireModel, WireRoot, decode_json, validate_obj

M = TypeVar("M", bound=BaseModel)

UP_HINT = "is a host running? start one with `wasmlattice up`"


class CtlError(RuntimeError):
    """A control-interface call failed; `message` is the host's (or the client's) explanation."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CtlNoHostError(CtlError):
    """Nobody subscribes to the subject: no host runs on the lattice (or not that host)."""


class CtlTimeoutError(CtlError):
    """A host is subscribed but did not answer within the timeout."""


class CtlResult(WireModel):
    """A decoded reply envelope: `success`, `message` and the raw `response` JSON (if any)."""

    success: bool
    message: str = ""
    response: Any = None


def _fmt_s(seconds: float) -> str:
    return f"{seconds:g}s"


def _require(value: str, what: str) -> str:
    # Same client-side validation as the reference client: trimmed, non-empty.
    value = value.strip()
    if not value:
        raise CtlError(f"{what} cannot be empty")
    return value


def parse_envelope(data: bytes, what: str) -> CtlResult:
    """Parse a reply body into `CtlResult`, accepting the `{"success":false,"error":...}` fallback."""
    try:
        obj = decode_json(f"{what} reply", data)
    except PayloadError as e:
        raise CtlError(f"{what}: the host sent an unreadable reply ({e.message})") from None
    if isinstance(obj, dict) and "message" not in obj and isinstance(obj.get("error"), str):
        return CtlResult(success=False, message=obj["error"])
    try:
        return validate_obj(CtlResult, obj, f"{what} reply")
    except PayloadError as e:
        raise CtlError(f"{what}: the host sent an unexpected reply ({e.message})") from None


def check_response(result: CtlResult, what: str) -> CtlResult:
    """Raise `CtlError` carrying the host's message when `success` is false."""
    if not result.success:
        raise CtlError(f"{what} failed: {result.message.strip() or 'the host gave no reason'}")
    return result


def parse_response_payload(model: type[M], result: CtlResult, what: str) -> M:
    """Validate the envelope's `response` into `model`; a missing or malformed payload is a CtlError."""
    if result.response is None:
        raise CtlError(f"{what}: the host's reply has no response payload")
    try:
        return validate_obj(model, result.response, f"{what} response")
    except PayloadError as e:
        raise CtlError(f"{what}: unexpected response payload ({e.message})") from None


def parse_key_values(items: Sequence[str], what: str = "value") -> dict[str, str]:
    """Parse `k=v` strings into a dict (the value may contain `=`); reject items without a key."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected KEY=VALUE for {what}, got {item!r}")
        out[key.strip()] = value
    return out


class CtlClient:
    """Async control-interface client over an already connected `nats.aio.client.Client`."""

    def __init__(
        self,
        nc: Any,
        lattice: str = subjects.DEFAULT_LATTICE,
        prefix: str = subjects.DEFAULT_TOPIC_PREFIX,
        timeout: float = DEFAULT_REQUEST_TIMEOUT_S,
        auction_timeout: float = DEFAULT_AUCTION_TIMEOUT_S,
    ) -> None:
        self.nc = nc
        self.lattice = subjects.check_token(lattice)
        self.prefix = prefix
        self.timeout = timeout
        self.auction_timeout = auction_timeout

    # -- transport -------------------------------------------------------------------------------

    def _subject(self, op: CtlOperation, target: str | None = None) -> str:
        """The subject of `op` on this client's lattice (and host or config `target`)."""
        return subjects.ctl_subject(op, self.lattice, target, self.prefix)

    async def _request(
        self, subject: str, payload: bytes, what: str, host_id: str | None = None
    ) -> CtlResult:
        """Request/reply (first answer wins), mapping silence to actionable errors."""
        try:
            msg = await self.nc.request(subject, payload, timeout=self.timeout)
        except nats.errors.NoRespondersError:
            raise CtlNoHostError(self._nobody(what, host_id, answered=False)) from None
        except nats.errors.TimeoutError:
            raise CtlTimeoutError(self._nobody(what, host_id, answered=True)) from None
        return parse_envelope(msg.data, what)

    def _nobody(self, what: str, host_id: str | None, *, answered: bool) -> str:
        if host_id is not None:
            head = (
                f"{what}: host {host_id} did not answer on lattice '{self.lattice}' within "
                f"{_fmt_s(self.timeout)}"
                if answered
                else f"{what}: no host {host_id} on lattice '{self.lattice}'"
            )
            return f"{head}: list the hosts with `wasmlattice get hosts`"
        if answered:
            return (
                f"{what}: no host answered on lattice '{self.lattice}' within {_fmt_s(self.timeout)}: "
                f"{UP_HINT} (or raise --timeout)"
            )
        return f"{what}: no host answered on lattice '{self.lattice}': {UP_HINT}"

    async def _gather(
        self, subject: str, payload: bytes, wait: float, enough: Callable[[bytes], bool] | None = None
    ) -> list[bytes]:
        """Publish with a fresh inbox and collect every reply body until `wait` seconds have passed
        (or, given `enough`, until it returns True for the reply just collected)."""
        inbox = self.nc.new_inbox()
        queue: asyncio.Queue[Any] = asyncio.Queue()

        async def on_msg(msg: Any) -> None:
            await queue.put(msg)

        sub = await self.nc.subscribe(inbox, cb=on_msg)
        bodies: list[bytes] = []
        try:
            await self.nc.publish(subject, payload, reply=inbox)
            await self.nc.flush(timeout=max(self.timeout, 1.0))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + wait
            while (left := deadline - loop.time()) > 0:
                try:
                    msg = await wait_for(queue.get(), left)
                except TimeoutError:
                    break
                headers = msg.headers or {}
                if headers.get("Status") == "503":
                    # The server's no-responders notice: nobody is subscribed, stop waiting.
                    break
                if not msg.data:
                    # Like the reference client: an empty body ends the collection.
                    break
                bodies.append(bytes(msg.data))
                if enough is not None and enough(bodies[-1]):
                    break
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        return bodies

    async def _gather_ok(
        self,
        subject: str,
        payload: bytes,
        wait: float,
        what: str,
        enough: Callable[[bytes], bool] | None = None,
    ) -> list[CtlResult]:
        results: list[CtlResult] = []
        for body in await self._gather(subject, payload, wait, enough):
            try:
                results.append(parse_envelope(body, what))
            except CtlError:
                # A garbled reply from one host should not hide the others.
                continue
        return results

    # -- hosts -----------------------------------------------------------------------------------

    async def ping_hosts(self, wait: float = 1.0, expect: Collection[str] = ()) -> list[Host]:
        """Every host of the lattice that answers `host.ping` within `wait` seconds, sorted by ID.

        Given `expect` (host IDs), it stops as soon as each of them has answered: a ping cannot
        know how many hosts there are, but a caller that does need not wait out `wait`.
        """
        what = "host.ping"
        missing = set(expect)

        def enough(body: bytes) -> bool:
            try:
                missing.discard(str((json.loads(body).get("response") or {}).get("id", "")))
            except (ValueError, AttributeError):
                pass  # a garbled reply: _gather_ok skips it
            return not missing

        results = await self._gather_ok(
            self._subject(CtlOperation.HOST_PING), b"", wait, what, enough if missing else None
        )
        hosts = [parse_response_payload(Host, r, what) for r in results if r.success]
        return sorted(hosts, key=lambda h: h.id)

    async def get_host_inventory(self, host_id: str) -> HostInventory:
        """One host's inventory (`host.get`)."""
        host_id = _require(host_id, "Host ID")
        what = "host.get"
        result = await self._request(self._subject(CtlOperation.HOST_GET, host_id), b"", what, host_id)
        return parse_response_payload(HostInventory, check_response(result, what), what)

    async def stop_host(self, host_id: str, timeout_ms: int | None = None) -> str:
        """Ask a host to shut down (`host.stop`); returns the host's message."""
        host_id = _require(host_id, "Host ID")
        body = StopHostCommand(host_id=host_id, timeout=timeout_ms).to_wire()
        what = "host.stop"
        result = await self._request(self._subject(CtlOperation.HOST_STOP, host_id), body, what, host_id)
        return check_response(result, what).message

    async def put_label(self, host_id: str, key: str, value: str) -> str:
        """Set a label on a host (`label.put`); returns the host's message."""
        host_id = _require(host_id, "Host ID")
        body = HostLabel(key=key, value=value).to_wire()
        what = "label.put"
        result = await self._request(self._subject(CtlOperation.LABEL_PUT, host_id), body, what, host_id)
        return check_response(result, what).message

    async def delete_label(self, host_id: str, key: str) -> str:
        """Remove a label from a host (`label.del`); returns the host's message."""
        host_id = _require(host_id, "Host ID")
        body = HostLabelIdentifier(key=key).to_wire()
        what = "label.del"
        result = await self._request(self._subject(CtlOperation.LABEL_DEL, host_id), body, what, host_id)
        return check_response(result, what).message

    # -- links -----------------------------------------------------------------------------------

    async def get_links(self) -> list[Link]:
        """Every link in the lattice (`link.get`, answered by one host)."""
        what = "link.get"
        result = check_response(await self._request(self._subject(CtlOperation.LINK_GET), b"", what), what)
        if result.response is None:
            return []
        return list(parse_response_payload(LinkList, result, what).root)

    async def put_link(self, link: Link) -> str:
        """Create or replace a link (`link.put`); returns the host's message."""
        _require(link.source_id, "Source ID")
        _require(link.target, "Target")
        _require(link.name, "Link Name")
        what = "link.put"
        result = await self._request(self._subject(CtlOperation.LINK_PUT), link.to_wire(), what)
        return check_response(result, what).message

    async def delete_link(
        self, source_id: str, wit_namespace: str, wit_package: str, name: str = DEFAULT_LINK_NAME
    ) -> str:
        """Delete the link of `source_id` for `namespace:package` named `name` (`link.del`)."""
        body = DeleteInterfaceLinkDefinitionRequest(
            source_id=_require(source_id, "Source ID"),
            name=_require(name, "Link Name"),
            wit_namespace=wit_namespace,
            wit_package=wit_package,
        ).to_wire()
        what = "link.del"
        result = await self._request(self._subject(CtlOperation.LINK_DEL), body, what)
        return check_response(result, what).message

    # -- config and claims -----------------------------------------------------------------------

    async def get_config(self, name: str) -> dict[str, str] | None:
        """The named config `name`, or None if it does not exist (`config.get`)."""
        what = "config.get"
        result = await self._request(self._subject(CtlOperation.CONFIG_GET, name), b"", what)
        check_response(result, what)
        if result.response is None:
            return None
        return dict(parse_response_payload(NamedConfig, result, what).root)

    async def put_config(self, name: str, values: Mapping[str, str]) -> str:
        """Store named config `name` (`config.put`); returns the host's message."""
        body = NamedConfig(dict(values)).to_wire()
        what = "config.put"
        result = await self._request(self._subject(CtlOperation.CONFIG_PUT, name), body, what)
        return check_response(result, what).message

    async def delete_config(self, name: str) -> str:
        """Delete named config `name` (`config.del`, idempotent); returns the host's message."""
        what = "config.del"
        result = await self._request(self._subject(CtlOperation.CONFIG_DEL, name), b"", what)
        return check_response(result, what).message

    async def get_claims(self) -> list[dict[str, str]]:
        """Claims of every signed component and provider known to the lattice (`claims.get`)."""
        what = "claims.get"
        result = check_response(await self._request(self._subject(CtlOperation.CLAIMS_GET), b"", what), what)
        if result.response is None:
            return []
        return [dict(c) for c in parse_response_payload(ClaimsList, result, what).root]

    # -- components and providers ----------------------------------------------------------------

    async def scale_component(
        self,
        host_id: str,
        component_ref: str,
        component_id: str,
        count: int,
        *,
        annotations: Mapping[str, str] | None = None,
        config: Sequence[str] = (),
        limits: Mapping[str, str] | None = None,
        allow_update: bool = False,
    ) -> str:
        """Scale a component on a host to `count` instances (0 stops it); returns the ack message."""
        host_id = _require(host_id, "Host ID")
        body = ScaleComponentCommand(
            component_ref=_require(component_ref, "Component OCI reference"),
            component_id=_require(component_id, "Component ID"),
            count=count,
            annotations=dict(annotations) if annotations is not None else None,
            component_limits=dict(limits) if limits is not None else None,
            host_id=host_id,
            config=list(config),
            allow_update=allow_update,
        ).to_wire()
        what = "component.scale"
        result = await self._request(
            self._subject(CtlOperation.COMPONENT_SCALE, host_id), body, what, host_id
        )
        return check_response(result, what).message

    async def update_component(
        self,
        host_id: str,
        component_id: str,
        new_component_ref: str,
        annotations: Mapping[str, str] | None = None,
    ) -> str:
        """Replace a running component's image on a host; returns the ack message."""
        host_id = _require(host_id, "Host ID")
        body = UpdateComponentCommand(
            component_id=_require(component_id, "Component ID"),
            new_component_ref=_require(new_component_ref, "Component OCI reference"),
            host_id=host_id,
            annotations=dict(annotations) if annotations is not None else None,
        ).to_wire()
        what = "component.update"
        result = await self._request(
            self._subject(CtlOperation.COMPONENT_UPDATE, host_id), body, what, host_id
        )
        return check_response(result, what).message

    async def start_provider(
        self,
        host_id: str,
        provider_ref: str,
        provider_id: str,
        *,
        config: Sequence[str] = (),
        annotations: Mapping[str, str] | None = None,
    ) -> str:
        """Start a provider on a host; returns the ack message."""
        host_id = _require(host_id, "Host ID")
        body = StartProviderCommand(
            provider_id=_require(provider_id, "Provider ID"),
            provider_ref=_require(provider_ref, "Provider OCI reference"),
            host_id=host_id,
            config=list(config),
            annotations=dict(annotations) if annotations is not None else None,
        ).to_wire()
        what = "provider.start"
        result = await self._request(self._subject(CtlOperation.PROVIDER_START, host_id), body, what, host_id)
        return check_response(result, what).message

    async def stop_provider(self, host_id: str, provider_id: str) -> str:
        """Stop a provider on a host; returns the host's message."""
        host_id = _require(host_id, "Host ID")
        body = StopProviderCommand(
            host_id=host_id, provider_id=_require(provider_id, "Provider ID")
        ).to_wire()
        what = "provider.stop"
        result = await self._request(self._subject(CtlOperation.PROVIDER_STOP, host_id), body, what, host_id)
        return check_response(result, what).message

    async def auction_component(
        self,
        component_ref: str,
        component_id: str,
        constraints: Mapping[str, str] | None = None,
        wait: float | None = None,
    ) -> list[ComponentAuctionAck]:
        """Ask which hosts could run a component; the acks of every willing host (maybe none)."""
        body = ComponentAuctionRequest(
            component_ref=_require(component_ref, "Component OCI reference"),
            component_id=_require(component_id, "Component ID"),
            constraints=dict(constraints or {}),
        ).to_wire()
        what = "component.auction"
        results = await self._gather_ok(
            self._subject(CtlOperation.COMPONENT_AUCTION),
            body,
            self.auction_timeout if wait is None else wait,
            what,
        )
        return [parse_response_payload(ComponentAuctionAck, r, what) for r in results if r.success]

    async def auction_provider(
        self,
        provider_ref: str,
        provider_id: str,
        constraints: Mapping[str, str] | None = None,
        wait: float | None = None,
    ) -> list[ProviderAuctionAck]:
        """Ask which hosts could run a provider; the acks of every willing host (maybe none)."""
        body = ProviderAuctionRequest(
            provider_ref=_require(provider_ref, "Provider OCI reference"),
            provider_id=_require(provider_id, "Provider ID"),
            constraints=dict(constraints or {}),
        ).to_wire()
        what = "provider.auction"
        results = await self._gather_ok(
            self._subject(CtlOperation.PROVIDER_AUCTION),
            body,
            self.auction_timeout if wait is None else wait,
            what,
        )
        return [parse_response_payload(ProviderAuctionAck, r, what) for r in results if r.success]

    async def put_registries(self, registries: Mapping[str, RegistryCredential]) -> None:
        """Push registry credentials to every host (fire-and-forget, as the reference client does)."""
        body = RegistryCredentialMap(dict(registries)).to_wire()
        await self.nc.publish(self._subject(CtlOperation.REGISTRY_PUT), body)
        await self.nc.flush(timeout=max(self.timeout, 1.0))


def to_json(value: WireModel | WireRoot[Any] | Sequence[WireModel] | Any) -> Any:
    """JSON data (wire field names) of a model, a list of models, or plain data."""
    if isinstance(value, WireModel | WireRoot):
        return json.loads(value.to_wire())
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value
