"""Workers keep reading token-protected storage after the token they started with expires.

Specification: a worker job starts with a copy of its scheduler job's bearer token; the
scheduler job's token is renewed (by the client, or a run's refresh token); each worker asks
its scheduler, over the cluster's own comm, for a token newer than its copy and writes it 0600
over its copy; a scheduler with no newer token (or none at all) leaves the copy alone.
"""

from __future__ import annotations

import asyncio
import stat
import time
from pathlib import Path

import jwt
import pytest_asyncio
from distributed import Scheduler, Worker

from remote_jobqueue.bundle.agent import SiteAgent
from remote_jobqueue.data import follow_scheduler_token
from remote_jobqueue.spec import BundleSpec, WorkerSpec
from remote_jobqueue.tokens import write_token_file

from ..waiting import async_wait_until


def token(lifetime: float) -> str:
    now = time.time()
    return jwt.encode({"sub": "alice", "iat": now, "exp": now + lifetime}, "k" * 32, "HS256")


@pytest_asyncio.fixture(loop_scope="function")
async def cluster(tmp_path: Path):
    """A scheduler whose bundle agent serves ``bundle-token``, and a worker with its copy."""
    async with Scheduler(dashboard_address=":0") as scheduler:
        bundle_token = tmp_path / "bundle-token"
        agent = SiteAgent(
            scheduler, None, BundleSpec("rjq-x", "T2_A", WorkerSpec()), token_file=bundle_token
        )
        scheduler.handlers["rjq_bearer_token"] = agent.handle_bearer_token
        async with Worker(scheduler.address, nthreads=1) as worker:
            yield worker, bundle_token, tmp_path / "worker-token"


async def test_a_worker_takes_its_schedulers_renewed_token(cluster) -> None:
    worker, bundle_token, copy = cluster
    write_token_file(copy, first := token(60))
    write_token_file(bundle_token, renewed := token(3600))
    callback = follow_scheduler_token(worker, copy, interval=0.05)
    callback.start()
    await async_wait_until(lambda: copy.read_text() == renewed, 5, "the worker's copy renewed")
    assert first != renewed
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600


async def test_a_worker_keeps_its_copy_when_the_scheduler_has_nothing_newer(cluster) -> None:
    worker, bundle_token, copy = cluster
    write_token_file(copy, own := token(3600))
    callback = follow_scheduler_token(worker, copy, interval=0.05)
    callback.start()
    assert await worker.scheduler.rjq_bearer_token(newer_than=0) is None  # no token at all
    await asyncio.sleep(0.2)
    write_token_file(bundle_token, older := token(60))
    assert await worker.scheduler.rjq_bearer_token(newer_than=0) == older
    await asyncio.sleep(0.3)  # six rounds of asking
    assert callback.is_running()
    assert copy.read_text() == own
