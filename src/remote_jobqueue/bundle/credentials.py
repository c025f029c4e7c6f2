"""The cluster's TLS pair for its owner, so that a new process can attach to a detached cluster.

Only a cluster made with ``shutdown_on_close=False`` offers it, on a UNIX socket in the job's
scratch directory (only the job's user can enter it), forwarded through the gateway as logical
port `CREDENTIALS_PORT`. The gateway opens that port to the identity that registered it only;
but any login of that identity would do there, a token made for the gateway alone or a Hub
token among them, and the pair lets its holder run code next to the scheduler, where the
user's schedd-capable token lies. So the pair goes only to a caller that also proves it can act
on this job *at the schedd*: the bundle sends a fresh challenge, the caller writes it into the
scheduler job's own ad (only the job's owner may edit it), and the bundle reads it back there
before it answers. A challenge is good for one channel only; it is no secret, a token never.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

logger = logging.getLogger("remote_jobqueue.bundle")

SOCKET_NAME = "credentials.sock"
#: The scheduler job's attribute the attaching client writes the challenge into.
CHALLENGE_ATTRIBUTE = "RjqAttachChallenge"
#: How long the bundle waits for the caller to write the challenge.
ANSWER_TIMEOUT = 60.0

#: Reads the challenge attribute of our own job at the schedd (None if unset).
ReadChallenge = Callable[[], Awaitable[str | None]]


class AttachRefused(PermissionError):
    """The bundle would not hand out its TLS pair; the message says why."""


class CredentialsServer:
    def __init__(self, scratch: Path, cert: Path, key: Path, read_challenge: ReadChallenge) -> None:
        self.path = scratch / SOCKET_NAME
        self._pair = {"cert": cert.read_text(), "key": key.read_text()}
        self._read_challenge = read_challenge
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> str:
        self.path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        self.path.chmod(0o600)
        return str(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        challenge = secrets.token_urlsafe(24)
        try:
            _send(writer, {"challenge": challenge, "attribute": CHALLENGE_ATTRIBUTE})
            await writer.drain()
            await asyncio.wait_for(reader.readline(), ANSWER_TIMEOUT)
            try:
                written = await self._read_challenge()
            except Exception as err:
                logger.warning("cannot read the attach challenge at the schedd: %s", err)
                written = None
            if written != challenge:
                logger.warning("refused the TLS pair to a caller that did not answer at the schedd")
                _send(writer, {"refused": "the challenge is not in the scheduler job's ad"})
            else:
                _send(writer, self._pair)
                logger.info("handed the cluster's TLS pair to its owner, proven at the schedd")
            await writer.drain()
        except (TimeoutError, ConnectionError) as err:
            logger.info("an attach attempt ended without an answer: %s", err or "timeout")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.path.unlink(missing_ok=True)


def _send(writer: asyncio.StreamWriter, message: dict[str, str]) -> None:
    writer.write(json.dumps(message).encode() + b"\n")


async def fetch_pair(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    write_challenge: Callable[[str, str], Awaitable[None]],
) -> dict[str, str]:
    """The client's side: take the challenge, write it at the schedd with
    ``write_challenge(attribute, value)``, and read the pair (or the refusal)."""
    hello = json.loads(await asyncio.wait_for(reader.readline(), 30))
    await write_challenge(hello["attribute"], hello["challenge"])
    writer.write(b'{"written": true}\n')
    answer = json.loads(await asyncio.wait_for(reader.readline(), 30))
    if "refused" in answer:
        raise AttachRefused(f"the cluster refused to hand out its TLS pair: {answer['refused']}")
    if not {"cert", "key"} <= set(answer):
        raise AttachRefused("the cluster sent no TLS pair")
    return answer


_JOB_ID = re.compile(r"^(ClusterId|ProcId)\s*=\s*(\d+)", re.MULTILINE)


def own_job_id(job_ad: Path) -> str | None:
    """``ClusterId.ProcId`` of the job we run in, from the ad HTCondor wrote for it."""
    try:
        found = dict(_JOB_ID.findall(job_ad.read_text()))
    except OSError:
        return None
    if {"ClusterId", "ProcId"} <= set(found):
        return f"{found['ClusterId']}.{found['ProcId']}"
    return None
