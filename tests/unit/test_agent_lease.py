"""How long a bundle lives without its client.

Specification: a cluster ends when its client has been silent for its lease; a detachable one
(``idle_timeout`` set) outlives a silent client while a Dask client is connected or work is in
flight, and ends once it has had neither for ``idle_timeout``; its TLS pair is handed out on
its private socket, and nothing else is.
"""

from __future__ import annotations

import asyncio
import json
import stat
from types import SimpleNamespace

import pytest

from remote_jobqueue.bundle.agent import SiteAgent
from remote_jobqueue.bundle.credentials import CredentialsServer, fetch_pair
from remote_jobqueue.spec import BundleSpec, WorkerSpec

from ..waiting import async_wait_until


class FakeScheduler(SimpleNamespace):
    def __init__(self) -> None:
        super().__init__(handlers={}, clients={"fire-and-forget": None}, tasks={}, closed=None)

    async def close(self, reason: str = "") -> None:
        self.closed = reason


def _agent(**spec) -> tuple[SiteAgent, FakeScheduler]:
    scheduler = FakeScheduler()
    agent = SiteAgent(scheduler, None, BundleSpec("rjq-x", "T2_A", WorkerSpec(), **spec))
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
    scheduler.tasks["sum-1"] = SimpleNamespace(state="processing")
    await asyncio.sleep(2.5)
    assert scheduler.closed is None, "work in flight keeps it"
    scheduler.tasks["sum-1"].state = "memory"
    await async_wait_until(lambda: scheduler.closed, 5, "idle, it ends by itself")
    assert scheduler.closed == "idle timeout: no client and no work for 2 s"


async def test_the_tls_pair_is_served_on_a_private_socket(tmp_path):
    cert, key = tmp_path / "tls-cert.pem", tmp_path / "tls-key.pem"
    cert.write_text("CERT")
    key.write_text("KEY")
    server = CredentialsServer(tmp_path, cert, key)
    path = await server.start()
    try:
        assert stat.S_IMODE((tmp_path / "credentials.sock").stat().st_mode) == 0o600
        reader, writer = await asyncio.open_unix_connection(path)
        assert await fetch_pair(reader) == {"cert": "CERT", "key": "KEY"}
        writer.close()
    finally:
        await server.close()
    assert not (tmp_path / "credentials.sock").exists()


async def test_an_answer_without_a_pair_is_refused():
    reader = asyncio.StreamReader()
    reader.feed_data(json.dumps({"cert": "only"}).encode() + b"\n")
    with pytest.raises(ValueError, match="no TLS pair"):
        await fetch_pair(reader)
