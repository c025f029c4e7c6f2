"""The scheduler job runs the first worker itself; every further worker is a job of its own.

Specification: asking for n workers starts one resident worker and n - 1 jobs; a second request
does not start a second resident; removal goes to the right side; the agent removes jobs before
the resident worker when scaling down.
"""

from __future__ import annotations

from remote_jobqueue.bundle.backends import ResidentFirst


class FakeBackend:
    def __init__(self, prefix: str) -> None:
        self.prefix, self.procs, self.removed = prefix, {}, []

    async def submit(self, count: int, scheduler_address: str) -> list[str]:
        ids = [f"{self.prefix}.{len(self.procs) + i}" for i in range(count)]
        self.procs.update(dict.fromkeys(ids, "running"))
        return ids

    async def remove(self, job_ids: list[str]) -> None:
        self.removed += job_ids
        for job_id in job_ids:
            self.procs.pop(job_id, None)

    async def alive(self) -> dict[str, str]:
        return dict(self.procs)

    async def remove_all(self) -> None:
        await self.remove(list(self.procs))


async def test_the_first_worker_is_resident_and_the_rest_are_jobs():
    resident, jobs = FakeBackend("0"), FakeBackend("7")
    backend = ResidentFirst(resident, jobs)
    assert await backend.submit(3, "tcp://s:1") == ["0.0", "7.0", "7.1"]
    assert await backend.submit(1, "tcp://s:1") == ["7.2"]
    assert set(await backend.alive()) == {"0.0", "7.0", "7.1", "7.2"}


async def test_removal_reaches_the_side_that_runs_the_worker():
    resident, jobs = FakeBackend("0"), FakeBackend("7")
    backend = ResidentFirst(resident, jobs)
    await backend.submit(2, "tcp://s:1")
    await backend.remove(["0.0", "7.0"])
    assert resident.removed == ["0.0"] and jobs.removed == ["7.0"]
    # With the resident gone, the next worker is resident again.
    assert await backend.submit(1, "tcp://s:1") == ["0.0"]


async def test_scaling_down_removes_jobs_before_the_resident_worker():
    from types import SimpleNamespace

    from remote_jobqueue.bundle.agent import SiteAgent

    resident, jobs = FakeBackend("0"), FakeBackend("7")
    scheduler = SimpleNamespace(workers={}, address="tcp://s:1", handlers={})
    agent = SiteAgent(scheduler, ResidentFirst(resident, jobs), "rjq-x")  # type: ignore[arg-type]
    agent.target = 3
    await agent.reconcile()
    agent.target = 1
    await agent.reconcile()
    assert set(await agent.backend.alive()) == {"0.0"}
