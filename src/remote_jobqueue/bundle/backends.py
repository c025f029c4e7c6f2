"""How the site agent starts and stops worker jobs: HTCondor at a site, or local processes.

Both give worker names of the form ``<cluster id>-<job id>``, so the agent can map a Dask worker
back to the job that runs it. `ResidentFirst` combines them: the scheduler job's own slot runs
the first worker, so it starts without waiting for a second match.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Protocol

from ..spec import WorkerSpec

logger = logging.getLogger(__name__)


class WorkerBackend(Protocol):
    async def submit(self, count: int, scheduler_address: str) -> list[str]: ...
    async def remove(self, job_ids: list[str]) -> None: ...
    async def alive(self) -> dict[str, str]: ...
    async def remove_all(self) -> None: ...


def job_id_of(worker_name: str, cluster_id: str) -> str | None:
    """``rjq-abc-12.3`` (or ``rjq-abc-12.3-1`` for one of several processes) -> ``12.3``."""
    prefix = f"{cluster_id}-"
    if not str(worker_name).startswith(prefix):
        return None
    rest = str(worker_name)[len(prefix) :]
    return rest.split("-", 1)[0]


class HTCondorBackend:
    """Worker jobs at the bundle's own site, submitted with the bindings to the site's schedd."""

    def __init__(
        self,
        spec: WorkerSpec,
        cluster_id: str,
        collector: str | None,
        schedd: str | None,
        inputs: tuple[Path, ...] = (),
    ) -> None:
        self.spec, self.cluster_id = spec, cluster_id
        self.collector, self.schedd_name = collector, schedd
        self.inputs = inputs  # files every worker job takes along (the TLS pair)
        self._schedd = None

    def _connect(self):
        from .. import schedd as sched

        if self._schedd is None:
            self._schedd = sched.locate(self.collector, self.schedd_name)
        return self._schedd

    def _constraint(self, extra: str = "") -> str:
        base = f'RjqClusterId == "{self.cluster_id}" && RjqRole == "worker"'
        return f"{base} && ({extra})" if extra else base

    async def submit(self, count: int, scheduler_address: str) -> list[str]:
        from .. import schedd as sched

        def go() -> list[str]:
            desc = self.spec.submit_description(scheduler_address, self.cluster_id)
            if self.inputs:
                desc["transfer_input_files"] = ",".join(str(path) for path in self.inputs)
            cluster = sched.submit(self._connect(), desc, count=count)
            return [f"{cluster}.{proc}" for proc in range(count)]

        ids = await asyncio.to_thread(go)
        logger.info("submitted %d worker job(s): %s", count, ", ".join(ids))
        return ids

    async def remove(self, job_ids: list[str]) -> None:
        if not job_ids:
            return
        from .. import schedd as sched

        ids = " || ".join(
            f"(ClusterId == {c} && ProcId == {p})" for c, p in (j.split(".") for j in job_ids)
        )
        await asyncio.to_thread(
            sched.remove, self._connect(), self._constraint(ids), "scaled down by remote-jobqueue"
        )
        logger.info("removed worker job(s): %s", ", ".join(job_ids))

    async def alive(self) -> dict[str, str]:
        from ..schedd import JobStatus

        def go() -> dict[str, str]:
            ads = self._connect().query(
                self._constraint("JobStatus =!= 3 && JobStatus =!= 4"),
                projection=["ClusterId", "ProcId", "JobStatus", "HoldReason"],
            )
            return {
                f"{ad['ClusterId']}.{ad['ProcId']}": JobStatus(ad["JobStatus"]).name.lower()
                for ad in ads
            }

        return await asyncio.to_thread(go)

    async def remove_all(self) -> None:
        from .. import schedd as sched

        await asyncio.to_thread(
            sched.remove, self._connect(), self._constraint(), "cluster closed by remote-jobqueue"
        )


class LocalBackend:
    """Worker "jobs" as local processes: the ``site="local"`` mode, no HTCondor needed."""

    def __init__(self, spec: WorkerSpec, cluster_id: str, log_dir: Path) -> None:
        self.spec, self.cluster_id, self.log_dir = spec, cluster_id, log_dir
        self.procs: dict[str, subprocess.Popen] = {}
        self._next = 0

    async def submit(self, count: int, scheduler_address: str) -> list[str]:
        ids = []
        for _ in range(count):
            job_id = f"0.{self._next}"
            self._next += 1
            name = f"{self.cluster_id}-{job_id}"
            argv = [
                self.spec.python or sys.executable,
                *self.spec.worker_args(scheduler_address, name),
            ]
            log = open(self.log_dir / f"worker-{job_id}.log", "ab")  # noqa: SIM115 - child owns it
            self.procs[job_id] = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.spec.environment},
                start_new_session=True,
            )
            log.close()
            ids.append(job_id)
        return ids

    async def remove(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            proc = self.procs.pop(job_id, None)
            if proc is None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.to_thread(proc.wait), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)

    async def alive(self) -> dict[str, str]:
        return {j: "running" for j, p in self.procs.items() if p.poll() is None}

    async def remove_all(self) -> None:
        await self.remove(list(self.procs))


class ResidentFirst:
    """The first worker runs in the scheduler job's own slot; the others are worker jobs.

    The scheduler job asked for one worker's resources on top of its own, so that worker starts
    as soon as the scheduler does, while further jobs wait for their match. Local "job" ids are
    ``0.N``: HTCondor cluster ids start at 1, so they never collide with worker jobs.
    """

    def __init__(self, resident: LocalBackend, jobs: HTCondorBackend) -> None:
        self.resident, self.jobs = resident, jobs

    async def submit(self, count: int, scheduler_address: str) -> list[str]:
        ids: list[str] = []
        if count > 0 and not await self.resident.alive():
            ids += await self.resident.submit(1, scheduler_address)
            logger.info("started the resident worker %s in the scheduler job's slot", ids[0])
            count -= 1
        if count > 0:
            ids += await self.jobs.submit(count, scheduler_address)
        return ids

    def is_resident(self, job_id: str) -> bool:
        return job_id in self.resident.procs

    async def remove(self, job_ids: list[str]) -> None:
        mine = [j for j in job_ids if self.is_resident(j)]
        await self.resident.remove(mine)
        await self.jobs.remove([j for j in job_ids if j not in mine])

    async def alive(self) -> dict[str, str]:
        return {**await self.resident.alive(), **await self.jobs.alive()}

    async def remove_all(self) -> None:
        await self.resident.remove_all()
        await self.jobs.remove_all()
