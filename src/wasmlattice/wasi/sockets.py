"""`wasi:sockets` 0.2: every interface present, and every attempt at network access denied.

Guests reach the network only through `wasi:http/outgoing-handler`, where destinations are
checked against the component's grants. Sockets would bypass that, so no socket can be created:
`create-tcp-socket`, `create-udp-socket` and `resolve-addresses` fail with `access-denied`, which
the `error-code` documentation lists among the codes every function may return. (wasmtime reports
`permanent-resolver-failure` for a denied lookup; `access-denied` tells the guest why.)

The socket and stream resources are still implemented in full, so that a component importing
them links, but no guest can ever hold one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

from wasmlattice.runtime.linking import HostInterface
from wasmlattice.runtime.witypes import Err
from wasmlattice.wasi.ctx import ctx
from wasmlattice.wasi.io import IoError, Pollable

DENIED = "access-denied"


class Network:
    """`network`: the capability handle; holding it grants nothing here."""


class TcpSocket:
    """`tcp-socket` (never created: `create-tcp-socket` is denied)."""

    def __init__(self, family: str) -> None:
        self.family = family


class UdpSocket:
    """`udp-socket` (never created: `create-udp-socket` is denied)."""

    def __init__(self, family: str) -> None:
        self.family = family


class IncomingDatagramStream:
    """`incoming-datagram-stream` (never created: it comes only from a UDP socket)."""


class OutgoingDatagramStream:
    """`outgoing-datagram-stream` (never created: it comes only from a UDP socket)."""


class ResolveAddressStream:
    """`resolve-address-stream` (never created: `resolve-addresses` is denied)."""


def _denied(*_args: Any) -> NoReturn:
    """Fail a `result<_, error-code>` function: this host gives guests no network access."""
    raise Err(DENIED)


def _subscribe(_self: object) -> Pollable:
    """A pollable that is always ready (every operation fails at once, so none waits)."""
    return Pollable(ctx())


def _family(sock: TcpSocket | UdpSocket) -> str:
    """`address-family`: the family the socket was created with."""
    return sock.family


def instance_network() -> Network:
    """`instance-network`: the default network handle."""
    return Network()


def create_tcp_socket(address_family: str) -> TcpSocket:
    """`create-tcp-socket`: denied."""
    raise Err(DENIED)


def create_udp_socket(address_family: str) -> UdpSocket:
    """`create-udp-socket`: denied."""
    raise Err(DENIED)


def resolve_addresses(network: Network, name: str) -> ResolveAddressStream:
    """`resolve-addresses`: denied (even for IP literals: no socket could use the result)."""
    raise Err(DENIED)


def network_error_code(err: IoError) -> str | None:
    """`network-error-code` (0.2.3+): no stream error here ever comes from a socket."""
    return None


def _methods(resource: str, names: list[str], **special: Callable[..., Any]) -> dict[str, Callable[..., Any]]:
    """`[method]` entries: the given ones as provided, every other one denied."""
    out: dict[str, Callable[..., Any]] = {f"[method]{resource}.{n}": _denied for n in names}
    out.update({f"[method]{resource}.{n.replace('_', '-')}": f for n, f in special.items()})
    return out


# Methods whose result is `result<..., error-code>`, exactly as in the WIT (0.2.0 to 0.2.6).
_TCP_RESULT_METHODS = [
    "start-bind",
    "finish-bind",
    "start-connect",
    "finish-connect",
    "start-listen",
    "finish-listen",
    "accept",
    "local-address",
    "remote-address",
    "set-listen-backlog-size",
    "keep-alive-enabled",
    "set-keep-alive-enabled",
    "keep-alive-idle-time",
    "set-keep-alive-idle-time",
    "keep-alive-interval",
    "set-keep-alive-interval",
    "keep-alive-count",
    "set-keep-alive-count",
    "hop-limit",
    "set-hop-limit",
    "receive-buffer-size",
    "set-receive-buffer-size",
    "send-buffer-size",
    "set-send-buffer-size",
    "shutdown",
]
_UDP_RESULT_METHODS = [
    "start-bind",
    "finish-bind",
    "stream",
    "local-address",
    "remote-address",
    "unicast-hop-limit",
    "set-unicast-hop-limit",
    "receive-buffer-size",
    "set-receive-buffer-size",
    "send-buffer-size",
    "set-send-buffer-size",
]


def interfaces() -> list[HostInterface]:
    """The `wasi:sockets` interfaces."""
    tcp = _methods(
        "tcp-socket",
        _TCP_RESULT_METHODS,
        is_listening=lambda _s: False,
        address_family=_family,
        subscribe=_subscribe,
    )
    udp = {
        **_methods("udp-socket", _UDP_RESULT_METHODS, address_family=_family, subscribe=_subscribe),
        **_methods("incoming-datagram-stream", ["receive"], subscribe=_subscribe),
        **_methods("outgoing-datagram-stream", ["check-send", "send"], subscribe=_subscribe),
    }
    lookup = {
        "resolve-addresses": resolve_addresses,
        **_methods("resolve-address-stream", ["resolve-next-address"], subscribe=_subscribe),
    }
    return [
        HostInterface("wasi:sockets/network", {"network-error-code": network_error_code}),
        HostInterface("wasi:sockets/instance-network", {"instance-network": instance_network}),
        HostInterface("wasi:sockets/tcp", tcp),
        HostInterface("wasi:sockets/tcp-create-socket", {"create-tcp-socket": create_tcp_socket}),
        HostInterface("wasi:sockets/udp", udp),
        HostInterface("wasi:sockets/udp-create-socket", {"create-udp-socket": create_udp_socket}),
        HostInterface("wasi:sockets/ip-name-lookup", lookup),
    ]
