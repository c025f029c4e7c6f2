"""How long a bundle lives without its client.

Specification: a cluster ends when its client has been silent for its lease; a detachable one
(``idle_timeout`` set) outlives a silent client while a Dask client is connected or work is in
flight, and ends once it has had neither for ``idle_timeout``, or once its bearer token has
expired with no client to renew it; its TLS pair goes, on its private socket, only to a caller
who wrote the bundle's challenge into the job's ad at the schedd.
"""

from __future__ import annotations

import asyncio
import stat
import time
from types import SimpleNamespace

import jwt
import pytest

from remote_jobqueue.bundle.agent import SiteAgent
from remote_jobqueue.bundle.credentials import (
    AttachRefused,
    CredentialsServer,
    fetch_pair,
    own_job_id,
)
from remote_jobqueue.spec import BundleSpec, WorkerSpec

from ..waiting import async_wait_until


class FakeScheduler(SimpleNamespace):
    def __init__(self) -> None:
        super().__init__(
            handlers={},
            clients={"fire-and-forget": None},
            workers={"w": SimpleNamespace(processing=set())},
            queued=[],
            unrunnable={},
            closed=None,
        )

    async def close(self, reason: str = "") -> None:
        self.closed = reason


def _agent(token_file=None, **spec) -> tuple[SiteAgent, FakeScheduler]:
    scheduler = FakeScheduler()
    spec = BundleSpec("rjq-x", "T2_A", WorkerSpec(), **spec)
    agent = SiteAgent(scheduler, None, spec, token_file=token_file)
    agent.log_handler = None
    agent._task = asyncio.ensure_future(agent._keep_lease())
    return agent, scheduler


async def test_a_silent_client_ends_the_cluster_after_its_lease():
    _, scheduler = _agent(lease=0.5)
    await async_wait_until(lambda: scheduler.closed, 5, "the lease ends the cluster")
    assert "lease expired" in scheduler.closed


async def test_a_detached_cluster_lives_while_a_client_is_connected_then_ends_when_idle():
    _, scheduler = _agent(lease=0.1, idle_timeout=1.5)
    scheduler.clients["Client-1"] = object()
    await asyncio.sleep(2.5)
    assert scheduler.closed is None, "a connected client keeps it"
    del scheduler.clients["Client-1"]
    scheduler.workers["w"].processing.add("sum-1")
    await asyncio.sleep(2.5)
    assert scheduler.closed is None, "work in flight keeps it"
    scheduler.workers["w"].processing.clear()
    await async_wait_until(lambda: scheduler.closed, 5, "idle, it ends by itself")
    assert scheduler.closed == "idle timeout: no client and no work for 2 s"


async def test_a_detached_cluster_whose_token_expired_ends(tmp_path):
    token_file = tmp_path / "bearer-token"
    token_file.write_text(jwt.encode({"exp": int(time.time()) - 5}, "k" * 32, algorithm="HS256"))
    _, scheduler = _agent(token_file=token_file, lease=0.1, idle_timeout=3600)
    scheduler.clients["Client-1"] = object()  # even in use: nobody can renew its token
    await async_wait_until(lambda: scheduler.closed, 5, "the expired token ends it")
    assert scheduler.closed == "the bearer token expired and no attached client renewed it"


async def _pair_server(tmp_path, written):
    cert, key = tmp_path / "tls-cert.pem", tmp_path / "tls-key.pem"
    cert.write_text("CERT")
    key.write_text("KEY")

    async def read_challenge():
        return written.get("value")

    server = CredentialsServer(tmp_path, cert, key, read_challenge)
    return server, await server.start()


async def test_the_tls_pair_goes_to_a_caller_who_wrote_the_challenge_at_the_schedd(tmp_path):
    written: dict[str, str] = {}
    server, path = await _pair_server(tmp_path, written)
    try:
        assert stat.S_IMODE((tmp_path / "credentials.sock").stat().st_mode) == 0o600

        async def write_challenge(attribute: str, value: str) -> None:
            assert attribute == "RjqAttachChallenge"
            written["value"] = value

        reader, writer = await asyncio.open_unix_connection(path)
        assert await fetch_pair(reader, writer, write_challenge) == {"cert": "CERT", "key": "KEY"}
        writer.close()
    finally:
        await server.close()
    assert not (tmp_path / "credentials.sock").exists()


@pytest.mark.security
async def test_a_caller_who_cannot_write_at_the_schedd_gets_no_pair(tmp_path):
    written = {"value": "a challenge of another channel"}
    server, path = await _pair_server(tmp_path, written)
    try:

        async def cannot_write(attribute: str, value: str) -> None:
            pass  # a gateway-only token: the schedd would refuse the edit

        reader, writer = await asyncio.open_unix_connection(path)
        with pytest.raises(AttachRefused, match="the challenge is not in the scheduler job's ad"):
            await fetch_pair(reader, writer, cannot_write)
        writer.close()
    finally:
        await server.close()


def test_the_bundle_knows_its_own_job_from_its_job_ad(tmp_path):
    ad = tmp_path / ".job.ad"
    ad.write_text('Owner = "alice"\nClusterId = 42\nProcId = 0\n')
    assert own_job_id(ad) == "42.0"
    assert own_job_id(tmp_path / "missing") is None
