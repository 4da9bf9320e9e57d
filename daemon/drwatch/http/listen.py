"""The listening sockets of the HTTP endpoints: :class:`ListenSocket` accepts at most ``ACCEPT_BURST``
connections per turn of the event loop and hands EMFILE/ENFILE at ``accept()`` to its
:class:`drwatch.http.conn.ConnectionGuard` (see there)."""

from __future__ import annotations

import asyncio
import errno
import socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from drwatch.http.conn import ConnectionGuard

# Pending connections the kernel queues before accept(): a burst beyond it has SYNs dropped, and a scrape
# caught in one waits a SYN retransmission (1 s, then 3 s) before it is even accepted.
LISTEN_BACKLOG = 1024
_OUT_OF_FDS = frozenset({errno.EMFILE, errno.ENFILE})


class ListenSocket(socket.socket):
    """A listening socket whose ``accept()`` hands EMFILE/ENFILE to :meth:`ConnectionGuard.out_of_descriptors`.

    asyncio's accept loop calls ``accept()`` on the socket object given to ``create_server(sock=...)``.
    """

    guard: ConnectionGuard | None = None

    def accept(self) -> tuple[socket.socket, Any]:
        if self.guard is not None and not self.guard.may_accept():
            raise BlockingIOError(errno.EAGAIN, "enough for this turn of the event loop")
        try:
            return super().accept()
        except OSError as exc:
            if exc.errno not in _OUT_OF_FDS or self.guard is None:
                raise
            self.guard.out_of_descriptors(self, exc)


async def bind(host: str, port: int) -> list[ListenSocket]:
    """Listening sockets for ``host:port`` as ``loop.create_server(host, port)`` makes them (every address the
    host resolves to, SO_REUSEADDR, IPv6 sockets v6-only), but of class :class:`ListenSocket`."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    socks: list[ListenSocket] = []
    try:
        for family, type_, proto, _name, address in dict.fromkeys(infos):
            sock = ListenSocket(family, type_, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise OSError(exc.errno, f"error while attempting to bind on address {address!r}: "
                                         f"{exc.strerror}") from None
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks
