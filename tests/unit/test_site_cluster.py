"""The site side of a cluster is a Dask `SpecCluster` of worker jobs next to the scheduler.

Specification: the first worker runs in the scheduler job's slot and the others are jobs;
scaling down removes jobs before the resident worker; a held job is removed, reported with its
reason and replaced; after the failure limit no more jobs are submitted, until the user scales
again; adaptivity runs on `distributed`'s `Adaptive` and stops without touching the workers;
the schedd is asked about jobs only through the tracker.
"""

from __future__ import annotations

import asyncio
import sys

import pytest
from distributed import Scheduler, Security

from remote_jobqueue.bundle.agent import SiteAgent
from remote_jobqueue.bundle.site_cluster import SiteCluster
from remote_jobqueue.bundle.worker_jobs import WorkerJob, WorkerProcess
from remote_jobqueue.jobstate import JobPhase, JobState
from remote_jobqueue.spec import BundleSpec, WorkerSpec

from ..waiting import async_wait_until


def _spec(cluster_id: str, **kwargs) -> BundleSpec:
    return BundleSpec(cluster_id, "T2_A", WorkerSpec(), **kwargs)


class FakeTracker:
    """Stands in for the schedd: records submissions and removals, lets the test hold jobs."""

    def __init__(self) -> None:
        self.submitted: list[tuple[str, str]] = []
        self.removed: list[str] = []
        self.listeners: dict = {}
        self.queries = 0
        self.pokes = 0

    async def submit(self, name: str) -> str:
        job = f"7.{len(self.submitted)}"
        self.submitted.append((name, job))
        return job

    def remove(self, job: str, reason: str) -> None:
        self.removed.append(job)

    def watch(self, job: str, listener) -> None:
        self.listeners[job] = listener

    def forget(self, job: str) -> None:
        self.listeners.pop(job, None)

    def poke(self) -> None:
        self.pokes += 1

    def hold(self, job: str, reason: str) -> None:
        self.listeners[job](JobPhase(job, JobState.HELD, reason))


#: The fixtures' event loop is the session's: run these tests in it too.
pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
async def scheduler():
    async with Scheduler(host="127.0.0.1", port=0, dashboard=False) as s:
        yield s


async def _site(scheduler, tmp_path, *, resident: bool, limit: int = 3):
    tracker = FakeTracker()
    site = SiteCluster(
        scheduler,
        "rjq-test",
        WorkerSpec(python=sys.executable, memory=256 * 2**20),
        tracker=tracker,  # type: ignore[arg-type]
        scratch=tmp_path,
        security=Security(),
        resident_worker=resident,
        failure_limit=limit,
    )
    await site
    return site, tracker


def _kinds(site: SiteCluster) -> list[str]:
    return sorted(type(w).__name__ for w in site.workers.values())


async def test_the_first_worker_is_resident_and_the_rest_are_jobs(scheduler, tmp_path):
    site, tracker = await _site(scheduler, tmp_path, resident=True)
    try:
        site.scale(3)
        await site._correct_state()
        assert _kinds(site) == ["WorkerJob", "WorkerJob", "WorkerProcess"]
        assert sorted(name for name, _ in tracker.submitted) == ["rjq-test-1", "rjq-test-2"]
        # The resident worker is a real Dask worker in our slot: it joins the scheduler.
        await async_wait_until(lambda: len(scheduler.workers) == 1, 60, "resident joins")

        site.scale(1)
        await site._correct_state()
        assert _kinds(site) == ["WorkerProcess"], "jobs go before the resident worker"
        assert sorted(tracker.removed) == ["7.0", "7.1"]
    finally:
        await site.close()


async def test_a_held_job_is_reported_removed_and_replaced(scheduler, tmp_path):
    site, tracker = await _site(scheduler, tmp_path, resident=False)
    try:
        site.scale(2)
        await site._correct_state()
        tracker.hold("7.0", "held on purpose")
        await async_wait_until(lambda: len(tracker.submitted) == 3, 10, "a replacement")
        assert tracker.removed == ["7.0"]
        assert tracker.submitted[2][0] == tracker.submitted[0][0], "same worker, new job"
        report = site.describe()
        assert report["holds"][0]["reason"] == "held on purpose"
        assert report["holds"][0]["job"] == "7.0"
        assert {entry["job"] for entry in report["jobs"].values()} == {"7.1", "7.2"}
    finally:
        await site.close()


async def test_after_the_failure_limit_no_more_jobs_until_the_user_scales_again(
    scheduler, tmp_path
):
    site, tracker = await _site(scheduler, tmp_path, resident=False, limit=2)
    agent = SiteAgent(scheduler, site, _spec("rjq-test"))
    try:
        site.scale(1)
        await site._correct_state()
        tracker.hold("7.0", "no such image")
        await async_wait_until(lambda: len(tracker.submitted) == 2, 10, "one replacement")
        tracker.hold("7.1", "no such image")
        await async_wait_until(lambda: site.stopped, 10, "the agent gives up")
        await asyncio.sleep(0.2)
        assert len(tracker.submitted) == 2
        assert "2 worker jobs failed in a row" in site.stopped
        assert "no such image" in site.stopped
        site.scale(3)  # adaptivity would do this: refused while stopped
        await site._correct_state()
        assert len(tracker.submitted) == 2

        await agent.handle_scale(jobs=1)  # the user asks again
        assert site.stopped is None
        assert len(tracker.submitted) == 3
    finally:
        await site.close()


async def test_adaptivity_is_distributeds_and_stopping_it_keeps_the_workers(scheduler, tmp_path):
    site, tracker = await _site(scheduler, tmp_path, resident=False)
    agent = SiteAgent(scheduler, site, _spec("rjq-test"))
    try:
        bounds = await agent.handle_adapt(minimum_jobs=2, maximum_jobs=3, interval="100ms")
        assert bounds == {"minimum": 2, "maximum": 3}
        await async_wait_until(lambda: len(site.worker_spec) == 2, 10, "adapt to its minimum")
        assert site.describe()["adaptive"] == {"minimum": 2, "maximum": 3}

        report = await agent.handle_adapt_stop()
        assert report["adaptive"] is None
        await asyncio.sleep(0.5)  # several adaptive intervals: nothing may change now
        assert report["target"] == 2 and len(site.worker_spec) == 2
        assert tracker.removed == []
    finally:
        await site.close()


async def test_a_worker_that_leaves_makes_the_tracker_look_at_the_queue(scheduler, tmp_path):
    site, tracker = await _site(scheduler, tmp_path, resident=False)
    try:
        site.scheduler_info["workers"]["tcp://w:1"] = {"name": "rjq-test-0"}
        site._update_worker_status("remove", "tcp://w:1")
        assert tracker.pokes == 1
    finally:
        await site.close()


async def test_worker_jobs_and_processes_are_process_interfaces():
    from distributed.deploy.spec import ProcessInterface

    assert issubclass(WorkerJob, ProcessInterface)
    assert issubclass(WorkerProcess, ProcessInterface)


async def test_the_clients_subscription_does_not_blind_the_site_cluster(scheduler, tmp_path):
    from distributed.core import rpc

    site = SiteCluster(
        scheduler,
        "rjq-test",
        WorkerSpec(python=sys.executable, memory=256 * 2**20),
        tracker=None,
        scratch=tmp_path,
        security=Security(),
    )
    await site
    # The client's RemoteHTCondorCluster subscribes to worker events through the tunnel;
    # distributed keeps one such subscription per scheduler.
    client_side = rpc(scheduler.address)
    observer = await client_side.live_comm()
    await observer.write({"op": "subscribe_worker_status"})
    await observer.read()
    try:
        site.scale(1)
        await site._correct_state()
        await async_wait_until(
            lambda: site.describe()["jobs"]["rjq-test-0"]["state"] == "connected",
            60,
            "the site cluster sees its worker join",
        )
    finally:
        await observer.close()
        await client_side.close_rpc()
        await site.close()
