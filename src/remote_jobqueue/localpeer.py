"""Loopback ports for one user: who is on the other end of a local TCP connection.

The client's local ports (the tunnel's scheduler and dashboard ports, the local dashboard) sit
on a loopback that every user of a shared hub host or login node can reach. The kernel knows
which uid owns each socket (``/proc/net/tcp``, the table ``ss -e`` and identd read), so a
listener can accept its own user's connections and close everybody else's, before a byte is
read: no password a browser or ``jupyter-server-proxy`` would have to send.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

log = logging.getLogger(__name__)

_TABLES = {socket.AF_INET: "/proc/net/tcp", socket.AF_INET6: "/proc/net/tcp6"}


def _address(field: str, family: int) -> tuple[str, int]:
    """``0100007F:1F90`` → ("127.0.0.1", 8080): the kernel prints 32-bit words little-endian."""
    hex_ip, hex_port = field.split(":")
    raw = bytes.fromhex(hex_ip)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.IPv4Address(words) if family == socket.AF_INET else ipaddress.IPv6Address(words)
    return str(ip), int(hex_port, 16)


def peer_uid(sock: socket.socket) -> int | None:
    """The uid owning the other end of ``sock`` (a loopback TCP connection), if it is found.

    The peer's socket is the row whose local address is our peer address and whose remote
    address is our local one. ``None`` if no row matches (the peer closed meanwhile).
    """
    family = sock.family
    ours = sock.getsockname()[:2]
    theirs = sock.getpeername()[:2]
    table = _TABLES.get(family)
    if table is None:
        return None
    try:
        lines = Path(table).read_text().splitlines()[1:]
    except OSError:
        return None
    want_local = (str(ipaddress.ip_address(theirs[0])), theirs[1])
    want_remote = (str(ipaddress.ip_address(ours[0])), ours[1])
    for line in lines:
        fields = line.split()
        if len(fields) < 8:
            continue
        if _address(fields[1], family) == want_local and _address(fields[2], family) == want_remote:
            return int(fields[7])
    return None


def is_own_user(writer: asyncio.StreamWriter, uid: int | None = None) -> bool:
    """True if the connection behind ``writer`` comes from a process of ``uid`` (ours)."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return False
    owner = peer_uid(sock)
    return owner is not None and owner == (os.geteuid() if uid is None else uid)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def own_user_only(handler: Handler, what: str) -> Handler:
    """Wrap a stream handler so it only ever sees connections of our own uid."""

    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not is_own_user(writer):
            owner = peer_uid(writer.get_extra_info("socket"))
            log.warning("%s: refused a local connection of uid %s (not ours)", what, owner)
            writer.close()
            return
        await handler(reader, writer)

    return guarded


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(256 * 1024):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        pass


class UnixSocketPort:
    """A loopback TCP port, for our own uid only, in front of a UNIX socket.

    The local bundle's dashboard listens on a UNIX socket in its 0700 directory; a browser or
    ``jupyter-server-proxy`` needs a TCP port: this is it, closed to other users.
    """

    def __init__(self, path: str | os.PathLike[str], host: str = "127.0.0.1") -> None:
        self.path, self.host = str(path), host
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(
            own_user_only(self._handle, f"local port of {self.path}"), self.host, 0
        )
        return self.port

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(self.path)
        except OSError as err:
            log.warning("cannot reach %s: %s", self.path, err)
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        up_writer.close()
        writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
