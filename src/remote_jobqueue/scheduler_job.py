"""The client's side of the scheduler job (the bundle), as dask-jobqueue has a ``Job`` beside
its ``JobQueueCluster``: its submission, one watcher of its state, and its removal.

The cluster object only asks "did it start, and if not why", "is it still there", and "remove
it and whatever it left"; the HTCondor side of those questions is here, and every job ad is
read by the one classifier (`jobstate.classify`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from . import schedd as sched
from .errors import ClusterLost, SchedulerJobHeld, StartTimeout
from .jobstate import JobPhase, JobState, by_cluster_ids

logger = logging.getLogger("remote_jobqueue")

Report = Callable[[str, str], None]


class SchedulerJob:
    def __init__(self, site: Any, description: dict[str, str], cluster_id: str) -> None:
        self.site, self.description, self.cluster_id = site, description, cluster_id
        self.schedd: Any = None
        self.cluster: int | None = None
        self.owner = ""
        self.phase = JobPhase("-", JobState.IDLE, "not submitted")
        self.queries = 0

    @property
    def job_id(self) -> str | None:
        return None if self.cluster is None else f"{self.cluster}.0"

    async def submit(self) -> str:
        """Locate the site's schedd and submit (spooled); returns the job id."""
        await self._locate()
        self.cluster = await asyncio.to_thread(sched.submit, self.schedd, self.description)
        return str(self.job_id)

    async def _locate(self) -> None:
        self.schedd = await asyncio.to_thread(sched.locate, self.site.collector, self.site.schedd)

    @classmethod
    async def running(cls, site: Any, job_id: str, cluster_id: str) -> SchedulerJob:
        """The scheduler job of a cluster someone else started (an attach): it must run."""
        job = cls(site, {}, cluster_id)
        await job._locate()
        job.cluster = int(job_id.split(".")[0])
        await job.check_alive()
        return job

    async def fetch_output(self, directory: str) -> dict[str, str]:
        """The job's stdout and stderr, if it ended badly (it then waits in the queue with
        them, see `spec.KEEP_CRASHED`): fetched into ``directory`` (its submit directory)."""
        if self.cluster is None or self.schedd is None:
            return {}
        from pathlib import Path

        try:
            await asyncio.wait_for(
                asyncio.to_thread(self.schedd.retrieve, f"ClusterId == {self.cluster}"), 15
            )
        except Exception as err:
            logger.info("no output of scheduler job %s to fetch: %s", self.job_id, err)
        found = {}
        for stream in ("out", "err"):
            path = Path(directory) / f"scheduler.{stream}"
            with contextlib.suppress(OSError):
                found[stream] = path.read_text(errors="replace")
        return found

    async def refresh(self) -> JobPhase:
        """One query: the job's phase now (and who owns it, learnt once)."""
        assert self.cluster is not None
        self.queries += 1
        found = await asyncio.to_thread(sched.phases, self.schedd, [self.cluster])
        self.phase = found.get(str(self.job_id)) or JobPhase(
            str(self.job_id), JobState.GONE, "it left the queue"
        )
        self.owner = self.phase.owner or self.owner
        return self.phase

    async def wait_running(
        self, deadline: float, idle_grace: float, report: Report, poll: float = 0.25
    ) -> None:
        """Until the job runs; idle (and why), held (and why) and gone each say so."""
        idle_since = time.monotonic()
        while True:
            phase = await self.refresh()
            self.raise_if_dead(phase, starting=True)
            if phase.state == JobState.RUNNING:
                report("running", f"scheduler job {self.job_id}")
                return
            report(str(phase.state), phase.reason or "waiting for a match")
            unmatched = phase.reason and "spooled" not in phase.reason
            if unmatched and time.monotonic() - idle_since > idle_grace:
                raise StartTimeout(
                    f"the scheduler job {self.job_id} cannot start at {self.site.name}: "
                    f"{phase.reason} (after {idle_grace:.0f} s idle)"
                )
            if time.monotonic() > deadline:
                raise StartTimeout(
                    f"the scheduler job {self.job_id} did not start in time; last state: {phase}"
                )
            await asyncio.sleep(poll)

    def raise_if_dead(self, phase: JobPhase, starting: bool = False) -> None:
        if phase.state == JobState.HELD:
            raise SchedulerJobHeld(str(self.job_id), phase.reason)
        if phase.ended:
            when = "before the cluster started" if starting else "while the cluster ran"
            why = f": {phase.reason}" if phase.reason else ""
            raise ClusterLost(f"the scheduler job {self.job_id} ended {when}{why}")

    async def check_alive(self) -> None:
        """Raise `ClusterLost` / `SchedulerJobHeld` if the job is no longer running."""
        self.raise_if_dead(await self.refresh())

    async def remove(self, reason: str, worker_clusters: set[int] = frozenset()) -> None:
        """Remove the scheduler job and the worker jobs the bundle reported (ClusterIds), and
        whatever of this cluster's jobs *we own*; wait (bounded) until they have left.

        Jobs are named by ClusterId or by owner, never by tag alone: another user's job tagged
        with our cluster id is neither removed nor waited for.
        """
        if self.cluster is None or self.schedd is None:
            return
        import htcondor2

        ours = by_cluster_ids({self.cluster, *worker_clusters})
        if self.owner:
            ours += f' || (RjqClusterId == "{self.cluster_id}" && Owner == "{self.owner}")'
        with contextlib.suppress(Exception):
            await asyncio.to_thread(
                self.schedd.act, htcondor2.JobAction.Remove, f"({ours}) && JobStatus =!= 3", reason
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                left = await asyncio.to_thread(sched.job_ads, self.schedd, ours)
            except Exception:
                return
            if not left:
                return
            await asyncio.sleep(0.5)
        logger.warning("jobs of %s still in the queue after 30 s", self.cluster_id)
