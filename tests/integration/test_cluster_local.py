"""`site="local"`: the same bundle as local processes, what a plain `pip install` user tries first.

Specification:
- a computation gives the right answer, synchronously and with asyncio;
- `scale` starts and stops worker processes; `adapt` grows with work and shrinks without it;
- `close()` leaves no process behind; a silent client lets the lease end the bundle.
"""

from __future__ import annotations

import asyncio
import time

import psutil
import pytest
from dask.distributed import Client

from remote_jobqueue import RemoteHTCondorCluster

from ..waiting import wait_until

pytestmark = pytest.mark.timeout(180)


def _bundle_children(cluster: RemoteHTCondorCluster) -> list[psutil.Process]:
    proc = psutil.Process(cluster._local_proc.pid)
    return [proc, *proc.children(recursive=True)]


def _gone(procs: list[psutil.Process], timeout: float = 30) -> bool:
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return not alive


def test_local_cluster_computes_scales_and_leaves_nothing():
    with RemoteHTCondorCluster(site="local", cores=1, memory="1 GiB", quiet=True) as cluster:
        cluster.scale(2)
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=60)
            assert client.submit(sum, [1, 2, 3]).result() == 6
            assert len(cluster.jobs()["jobs"]) == 2
        procs = _bundle_children(cluster)
        assert cluster.dashboard_link.startswith("http://127.0.0.1:")
    assert _gone(procs)


async def test_local_cluster_works_with_asyncio():
    async with RemoteHTCondorCluster(site="local", asynchronous=True, quiet=True) as cluster:
        await cluster.scale(1)
        async with Client(cluster, asynchronous=True) as client:
            await client.wait_for_workers(1, timeout=60)
            assert await client.submit(lambda x: x + 1, 41) == 42


def test_adapt_grows_with_work_and_shrinks_without():
    with RemoteHTCondorCluster(site="local", quiet=True) as cluster:
        bounds = cluster.adapt(minimum=0, maximum=3)
        assert (bounds.minimum, bounds.maximum) == (0, 3)
        assert cluster.jobs()["adaptive"] == {"minimum": 0, "maximum": 3}
        with Client(cluster) as client:
            futures = client.map(time.sleep, [1.0] * 30, pure=False)
            wait_until(lambda: len(cluster.scheduler_info["workers"]) >= 2, 60, "adapt grows")
            client.gather(futures)
            del futures
            wait_until(lambda: cluster.jobs()["target"] == 0, 90, "adapt shrinks")


async def test_adapt_in_async_code_returns_its_bounds_at_once_and_stop_keeps_the_workers():
    async with RemoteHTCondorCluster(site="local", asynchronous=True, quiet=True) as cluster:
        await cluster.scale(2)
        async with Client(cluster, asynchronous=True) as client:
            await client.wait_for_workers(2, timeout=60)
            # As dask-labextension does it: no await, and the bounds read at once.
            adaptive = cluster.adapt(minimum=0, maximum=3)
            assert (adaptive.minimum, adaptive.maximum) == (0, 3)
            await adaptive  # the site has taken the request
            assert (await cluster._jobs())["adaptive"] == {"minimum": 0, "maximum": 3}
            await adaptive.stop()
            jobs = await cluster._jobs()
            assert jobs["adaptive"] is None
            # Idle workers that adaptivity would retire within seconds stay: it is stopped.
            await asyncio.sleep(8)
            assert (await cluster._jobs())["target"] == 2
            assert len(cluster.scheduler_info["workers"]) == 2


def test_a_silent_client_lets_the_lease_end_the_bundle():
    cluster = RemoteHTCondorCluster(site="local", lease=3, quiet=True)
    try:
        cluster.scale(1)
        procs = _bundle_children(cluster)
        # The client goes silent (as if its process had been killed): no more heartbeats.
        for task in cluster._tasks:
            cluster.loop.add_callback(task.cancel)
        # Generous: under load a worker still starting takes its time to be stopped.
        assert _gone(procs, timeout=90), "the bundle outlived its lease"
    finally:
        cluster.close()


def test_job_script_shows_both_jobs():
    with RemoteHTCondorCluster(site="local", cores=2, memory="3 GiB", processes=2, quiet=True) as c:
        script = c.job_script()
    assert "remote_jobqueue.bundle" in script
    assert "request_cpus = 2" in script and "request_memory = 3072" in script
    assert "--nworkers" in script
