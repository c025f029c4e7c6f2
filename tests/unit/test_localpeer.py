"""Loopback ports for one user: the peer's uid, read from the kernel's socket tables.

Specification: a connection from this process is ours; one from another uid (``nobody``,
through the system's Python) is closed before the handler sees it; the tables' address format
(host-order words, IPv4-mapped IPv6) is read right.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess

import pytest

from remote_jobqueue.localpeer import _address, own_user_only, peer_uid

pytestmark = pytest.mark.timeout(30)


def test_the_kernels_address_format_is_read_right() -> None:
    assert _address("0100007F:1F90") == ("127.0.0.1", 8080)
    # ::ffff:127.0.0.1, as a dual-stack socket shows in /proc/net/tcp6
    assert _address("0000000000000000FFFF00000100007F:1F90") == ("127.0.0.1", 8080)
    assert _address("00000000000000000000000001000000:0016") == ("::1", 22)


async def test_a_connection_of_our_own_is_ours() -> None:
    seen: list[int | None] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(peer_uid(writer.get_extra_info("socket")))
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.read()
        writer.close()
    assert seen == [os.geteuid()]


@pytest.mark.security
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
async def test_another_users_connection_is_closed_before_the_handler_sees_it() -> None:
    handled: list[bool] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handled.append(True)
        writer.write(b"secret dashboard\n")
        writer.close()

    guarded = own_user_only(handle, "test port")
    server = await asyncio.start_server(guarded, "127.0.0.1", 0)
    async with server:
        port = server.sockets[0].getsockname()[1]
        code = (
            f"import socket; s = socket.create_connection(('127.0.0.1', {port}));"
            "print(repr(s.recv(100)))"
        )
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        proc = await asyncio.create_subprocess_exec(
            runuser, "-u", "nobody", "--", "/usr/bin/python3", "-c", code,
            stdout=subprocess.PIPE,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
        assert out.strip() == b"b''" and handled == []
        # ... while our own connection gets through
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await reader.readline() == b"secret dashboard\n"
        writer.close()
    assert handled == [True]


def test_a_socket_that_is_gone_has_no_owner() -> None:
    sock = socket.socket()
    assert peer_uid(sock) is None
    sock.close()
