"""The cluster's TLS pair for its owner, so that a new process can attach to a detached cluster.

Only a cluster made with ``shutdown_on_close=False`` offers it. The pair is served on a UNIX
socket in the job's scratch directory (only the job's user can enter it), forwarded through
the gateway as logical port `CREDENTIALS_PORT`; the gateway opens that port to the identity
that registered it and to no one else, as it does the scheduler's. So whoever can attach could
already submit jobs as the user; nobody else learns the pair.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path

logger = logging.getLogger("remote_jobqueue.bundle")

SOCKET_NAME = "credentials.sock"


class CredentialsServer:
    def __init__(self, scratch: Path, cert: Path, key: Path) -> None:
        self.path = scratch / SOCKET_NAME
        self._pair = {"cert": cert.read_text(), "key": key.read_text()}
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> str:
        self.path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        self.path.chmod(0o600)
        return str(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(json.dumps(self._pair).encode() + b"\n")
            await writer.drain()
            logger.info("handed the cluster's TLS pair to an attaching client of its owner")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.path.unlink(missing_ok=True)


async def fetch_pair(reader: asyncio.StreamReader) -> dict[str, str]:
    """The client's side: read the pair the bundle sends (one JSON line)."""
    line = await asyncio.wait_for(reader.readline(), 30)
    pair = json.loads(line)
    if not {"cert", "key"} <= set(pair):
        raise ValueError("the bundle sent no TLS pair")
    return pair
