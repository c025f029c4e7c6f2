"""The bundle's window onto the schedd batches what it is asked and asks little.

Specification: submissions made together become one transaction with one job per item, in
order; a submission that arrives while a batch is on its way is not lost; with nothing to watch
there is no status query; one query serves every watched job and tells only those whose phase
changed; a job missing from the queue is gone.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from remote_jobqueue import schedd as sched
from remote_jobqueue.bundle.tracker import JobTracker
from remote_jobqueue.jobstate import JobPhase, JobState


class FakeSchedd:
    def __init__(self) -> None:
        self.transactions: list[list[str]] = []
        self.queue: dict[str, JobPhase] = {}
        self.queries = 0
        self.delay = 0.0  # seconds a transaction takes

    def submit(self, _schedd, description, count=1, itemdata=None):
        time.sleep(self.delay)
        cluster = 100 + len(self.transactions)
        self.transactions.append([item["WorkerName"] for item in itemdata])
        for proc in range(len(itemdata)):
            job = f"{cluster}.{proc}"
            self.queue[job] = JobPhase(job, JobState.IDLE, "")
        return cluster

    def phases(self, _schedd, clusters):
        self.queries += 1
        return {job: p for job, p in self.queue.items() if int(job.split(".")[0]) in clusters}


@pytest.fixture
def schedd(monkeypatch):
    fake = FakeSchedd()
    monkeypatch.setattr(sched, "submit", fake.submit)
    monkeypatch.setattr(sched, "phases", fake.phases)
    return fake


def _tracker() -> JobTracker:
    tracker = JobTracker(None, None, {"executable": "python"}, Path("/tmp"), interval=3600)
    tracker._schedd = object()  # located already
    return tracker


async def test_submissions_made_together_are_one_transaction(schedd):
    tracker = _tracker()
    ids = await asyncio.gather(*(tracker.submit(f"w-{i}") for i in range(5)))
    assert schedd.transactions == [[f"w-{i}" for i in range(5)]]
    assert ids == [f"100.{i}" for i in range(5)]


async def test_a_submission_during_a_batch_is_not_lost(schedd, monkeypatch):
    tracker = _tracker()
    schedd.delay = 0.3
    first = asyncio.ensure_future(tracker.submit("w-0"))
    await asyncio.sleep(tracker.batch_window * 2)  # the first batch is being sent now...
    second = await asyncio.wait_for(tracker.submit("w-1"), 5)
    assert await first == "100.0" and second.endswith(".0")
    assert [names for names in schedd.transactions] == [["w-0"], ["w-1"]]


async def test_one_query_for_every_watched_job_and_only_changes_are_told(schedd):
    tracker = _tracker()
    heard: list[JobPhase] = []
    jobs = await asyncio.gather(tracker.submit("w-0"), tracker.submit("w-1"))
    for job in jobs:
        tracker.watch(job, heard.append)
    schedd.queue[jobs[0]] = JobPhase(jobs[0], JobState.HELD, "no image")
    await tracker.refresh()
    assert schedd.queries == 1 and tracker.queries == 1
    assert [(p.job_id, p.state) for p in heard] == [
        (jobs[0], JobState.HELD),
        (jobs[1], JobState.IDLE),
    ]
    heard.clear()
    del schedd.queue[jobs[1]]
    await tracker.refresh()
    assert [(p.job_id, p.state) for p in heard] == [(jobs[1], JobState.GONE)]


async def test_with_nothing_to_watch_the_loop_asks_nothing(schedd):
    tracker = _tracker()
    tracker.interval, tracker.min_gap = 0.01, 0
    tracker.start()
    await asyncio.sleep(0.2)
    await tracker.close()
    assert schedd.queries == 0
