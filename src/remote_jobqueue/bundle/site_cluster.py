"""The site side of a cluster: a Dask `SpecCluster` around the bundle's own scheduler.

Worker jobs are `ProcessInterface`s (`worker_jobs.py`), so `scale`, `adapt` (distributed's own
`Adaptive`), scale-down by the scheduler's choice, and close all run through `distributed`'s
deployment machinery, next to the scheduler and at the site's speed, whatever the client's link
is like. What it adds to `SpecCluster`:

- the **resident worker**: the first worker runs in the scheduler job's own slot (a
  `WorkerProcess`), the others are jobs;
- **jobs that fail are replaced**: a held worker job (with its `HoldReason`) or one that left
  the queue while still wanted is removed and submitted anew; after ``failure_limit``
  consecutive failures no new jobs are submitted, and the reason says why and what to do;
- **the schedd is asked only when needed**: the tracker polls every ``interval`` seconds, and
  sooner when the scheduler sees a worker leave (`_update_worker_status`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from pathlib import Path
from typing import Any

from distributed import Scheduler, SchedulerPlugin, Security
from distributed.deploy.cluster import Cluster
from distributed.deploy.spec import SpecCluster
from distributed.scheduler import WorkerStatusPlugin

from ..jobstate import JobPhase, JobState
from ..spec import WorkerSpec
from .tracker import JobTracker
from .worker_jobs import WorkerJob, WorkerProcess

logger = logging.getLogger("remote_jobqueue.site")


class SiteCluster(SpecCluster):
    def __init__(
        self,
        scheduler: Scheduler,
        cluster_id: str,
        worker: WorkerSpec,
        *,
        tracker: JobTracker | None,
        scratch: Path,
        security: Security,
        resident_worker: bool = True,
        failure_limit: int = 3,
    ) -> None:
        self.cluster_id, self.tracker = cluster_id, tracker
        self.processes = worker.processes
        group = (
            {"group": [f"-{i}" for i in range(worker.processes)]} if worker.processes > 1 else {}
        )
        process_options = {"worker": worker, "log_dir": scratch, "on_change": self._changed}
        self.process_spec = {"cls": WorkerProcess, "options": process_options, **group}
        if tracker is None:  # site="local": every worker is a local process
            job_spec, self.resident_spec = self.process_spec, None
        else:
            job_spec = {
                "cls": WorkerJob,
                "options": {"tracker": tracker, "on_change": self._changed},
                **group,
            }
            self.resident_spec = {
                **self.process_spec,
                "options": {**process_options, "label": "resident"},
            }
            if not resident_worker:
                self.resident_spec = None
        self.failure_limit = failure_limit
        self.failures: list[JobPhase] = []  # consecutive, since a worker last joined
        self.holds: deque[dict[str, Any]] = deque(maxlen=20)  # the latest holds, for `jobs()`
        self.stopped: str | None = None  # why no new jobs are submitted, if so
        super().__init__(
            worker=job_spec,
            asynchronous=True,
            security=security,
            name=cluster_id,
            scheduler_sync_interval=10,
        )
        self.scheduler = scheduler

    # Names and specs ----------------------------------------------------------------
    def _new_worker_name(self, worker_number: int) -> str:
        return f"{self.cluster_id}-{worker_number}"

    def new_worker_spec(self) -> dict[str, dict[str, Any]]:
        """The resident worker first (if it is not running already), then worker jobs."""
        ((name, spec),) = super().new_worker_spec().items()
        if self.resident_spec is not None and not any(
            s is self.resident_spec for s in self.worker_spec.values()
        ):
            spec = self.resident_spec
        return {name: spec}

    def adopt_resident(self, process: WorkerProcess) -> None:
        """Take a resident worker started before the scheduler (see the bundle's start)."""
        assert self.resident_spec is not None
        process.on_change = self._changed
        self.worker_spec[process.name] = self.resident_spec
        self.workers[process.name] = process

    # Scaling ------------------------------------------------------------------------
    def scale(self, n: int | None = None, jobs: int = 0, memory: Any = None, cores: Any = None):
        """Scale to ``n`` workers or ``jobs`` jobs (one job runs ``processes`` workers)."""
        if n is not None:
            jobs = math.ceil(n / self.processes)
        if self.stopped and jobs > len(self.worker_spec):
            logger.warning("not adding worker jobs: %s", self.stopped)
            jobs = len(self.worker_spec)
        for name in self._scale_down_order()[: max(0, len(self.worker_spec) - jobs)]:
            del self.worker_spec[name]
        return super().scale(jobs)

    def _scale_down_order(self) -> list[str]:
        """Which workers go first: jobs whose worker has not joined, then the newest jobs;
        the resident worker last (its share of the slot stays with the scheduler anyway)."""
        connected = {w.get("name") for w in self.scheduler_info.get("workers", {}).values()}
        newest_first = list(reversed(self.worker_spec))
        return sorted(
            newest_first,
            key=lambda name: (
                self.worker_spec[name] is self.resident_spec,
                _joined(name, connected),
            ),
        )

    def restart_failed(self) -> None:
        """The user asked again: forget earlier failures and submit again."""
        self.failures.clear()
        self.stopped = None

    # Job changes --------------------------------------------------------------------
    def _changed(self, worker: WorkerJob | WorkerProcess, phase: JobPhase) -> None:
        if phase.state == JobState.HELD or phase.ended:
            task = asyncio.ensure_future(self._replace(worker, phase))
            self._futures.add(task)
            task.add_done_callback(self._futures.discard)

    async def _replace(self, worker: WorkerJob | WorkerProcess, phase: JobPhase) -> None:
        async with self._lock:
            if self.workers.get(worker.name) is not worker:
                return  # scaled away or replaced already
            del self.workers[worker.name]
        wanted = worker.name in self.worker_spec
        if phase.state == JobState.HELD:
            self.holds.append({**phase.to_dict(), "name": worker.name, "time": time.time()})
            logger.warning(
                "worker job %s (%s) is held: %s", phase.job_id, worker.name, phase.reason
            )
        else:
            logger.warning("worker %s (%s) ended: %s", worker.name, phase.job_id, phase.reason)
        await worker.close()
        if not wanted or self.status.name in ("closing", "closed"):
            return
        self.failures.append(phase)
        if len(self.failures) >= self.failure_limit:
            self.stopped = (
                f"{len(self.failures)} worker jobs failed in a row (last: {phase.job_id} "
                f"{phase}); no more are submitted. Fix the cause (the hold reason says it) and "
                "scale again."
            )
            logger.error("%s", self.stopped)
            self.worker_spec.pop(worker.name, None)
            return
        logger.info("submitting a replacement for %s", worker.name)
        self._correct_state()

    async def _start(self) -> None:
        await super()._start()
        # `distributed` lets one cluster manager subscribe to a scheduler's worker events (the
        # plugin's name is fixed), and the client's RemoteHTCondorCluster needs it through the
        # tunnel. We live in the scheduler's process: listen in-process instead, and leave the
        # subscription to the client (no client can have subscribed yet: no tunnel is up).
        self.scheduler.remove_plugin(name=WorkerStatusPlugin.name)
        if self._watch_worker_status_comm is not None:
            await self._watch_worker_status_comm.close()
        self.scheduler.add_plugin(_InProcessWorkerStatus(self))

    def _update_worker_status(self, op: str, msg: Any) -> None:
        """The scheduler's own events: a worker joined (our jobs work) or left (look why).

        Not `SpecCluster`'s handling of a lost worker (close its job after a timeout and never
        replace it): the tracker learns why the job ended, and `_replace` submits it anew.
        """
        if op == "add":
            self.failures.clear()
        elif op == "remove" and self.tracker is not None:
            self.tracker.poke()
        Cluster._update_worker_status(self, op, msg)

    # What the client sees -----------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Target, each worker's job and phase, holds, adaptivity: for `cluster.jobs()`."""
        connected = {w.get("name") for w in self.scheduler_info.get("workers", {}).values()}
        jobs = {}
        for name, worker in self.workers.items():
            phase = worker.phase
            state = "connected" if _joined(name, connected) else str(phase.state)
            jobs[name] = {"job": worker.job_id, "state": state, "reason": phase.reason}
        for name in set(self.worker_spec) - set(self.workers):
            jobs[name] = {"job": None, "state": "pending", "reason": "being submitted"}
        adaptive = getattr(self, "_adaptive", None)
        running = adaptive is not None and adaptive.periodic_callback is not None
        return {
            "target": len(self.worker_spec),
            "jobs": jobs,
            "holds": list(self.holds),
            "stopped": self.stopped,
            "adaptive": (
                {"minimum": adaptive.minimum, "maximum": adaptive.maximum} if running else None
            ),
            "schedd_queries": self.tracker.queries if self.tracker else 0,
        }


class _InProcessWorkerStatus(SchedulerPlugin):
    """Worker events of the scheduler, handed to the site cluster in the same process."""

    name = "remote-jobqueue-site-cluster"

    def __init__(self, site: SiteCluster) -> None:
        self.site = site

    def add_worker(self, scheduler: Scheduler, worker: str) -> None:
        ident = scheduler.workers[worker].identity()
        ident.pop("metrics", None)
        ident.pop("last_seen", None)
        self.site._update_worker_status("add", {"workers": {worker: ident}})

    def remove_worker(self, scheduler: Scheduler, worker: str, **kwargs: Any) -> None:
        if worker in self.site.scheduler_info.get("workers", {}):
            self.site._update_worker_status("remove", worker)


def _joined(name: str, connected: set[Any]) -> bool:
    return name in connected or any(str(c).startswith(f"{name}-") for c in connected)
