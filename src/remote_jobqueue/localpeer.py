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
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

log = logging.getLogger(__name__)

_TABLES = ("/proc/net/tcp", "/proc/net/tcp6")


def _address(field: str) -> tuple[str, int]:
    """``0100007F:1F90`` → ("127.0.0.1", 8080). The kernel prints each 32-bit word of the
    address in host byte order; IPv4-mapped IPv6 addresses come out as IPv4."""
    hex_ip, hex_port = field.split(":")
    raw = bytes.fromhex(hex_ip)
    if sys.byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return _normal(str(ipaddress.ip_address(raw))), int(hex_port, 16)


def _normal(host: str) -> str:
    ip = ipaddress.ip_address(host.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def peer_uid(sock: socket.socket) -> int | None:
    """The uid owning the other end of ``sock`` (a loopback TCP connection), if it is found.

    The peer's socket is the row whose local address is our peer address and whose remote
    address is our local one, in either table (a dual-stack peer is in ``tcp6``). ``None`` if
    no row matches (the peer closed meanwhile) or the socket is gone.
    """
    try:
        ours, theirs = sock.getsockname()[:2], sock.getpeername()[:2]
    except OSError:
        return None
    want = ((_normal(theirs[0]), theirs[1]), (_normal(ours[0]), ours[1]))
    for table in _TABLES:
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) >= 8 and (_address(fields[1]), _address(fields[2])) == want:
                return int(fields[7])
    return None


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def own_user_only(handler: Handler, what: str, uid: int | None = None) -> Handler:
    """Wrap a stream handler so it only ever sees connections of our own uid (or ``uid``).

    The lookup reads the kernel's tables in a thread (they can be long on a busy login
    node); refusals are logged at most every 10 s, with how many there were."""
    me = os.geteuid() if uid is None else uid
    refused = {"count": 0, "logged": 0.0}

    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        owner = await asyncio.to_thread(peer_uid, sock) if sock is not None else None
        if owner != me:
            writer.close()
            refused["count"] += 1
            now = time.monotonic()
            if now - refused["logged"] > 10:
                log.warning(
                    "%s: refused %d local connection(s) not of uid %d (the last of uid %s)",
                    what,
                    refused["count"],
                    me,
                    owner,
                )
                refused.update(count=0, logged=now)
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
