"""The bundle's one window onto its site's schedd: submits, removals and status, batched.

A site's schedd serves many users' clusters, and an HTCondor administrator counts queries. So
every worker job of a cluster goes through one `JobTracker`: submissions made together (a
`scale(20)`) become one transaction with one job per item, removals likewise, and the status of
every job comes from one query every ``interval`` seconds — sooner only when something happened
(the scheduler saw a worker leave: `poke`), and never when there is nothing to ask about.

Jobs are known by the ClusterIds this tracker got back from its own submissions, never by a
tag: anybody can put ``RjqClusterId`` on their jobs, nobody else can own ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..jobstate import JobPhase, JobState, by_cluster_ids
from ..spec import WORKER_NAME_VARIABLE

logger = logging.getLogger("remote_jobqueue.tracker")

Listener = Callable[[JobPhase], None]


class JobTracker:
    def __init__(
        self,
        collector: str | None,
        schedd_name: str | None,
        description: dict[str, str],
        workdir: Path,
        *,
        interval: float = 10.0,
        min_gap: float = 2.0,
        batch_window: float = 0.05,
    ) -> None:
        self.collector, self.schedd_name = collector, schedd_name
        self.description = {**description, "initialdir": str(workdir)}
        self.interval, self.min_gap, self.batch_window = interval, min_gap, batch_window
        self.queries = 0  # status queries sent to the schedd (for benchmarks and logs)
        self.phases: dict[str, JobPhase] = {}
        self.submitted: set[str] = set()
        self._listeners: dict[str, Listener] = {}
        self._pending_submits: list[tuple[str, asyncio.Future[str]]] = []
        self._pending_removes: dict[str, str] = {}
        self._flush: asyncio.Task | None = None
        self._poke = asyncio.Event()
        self._last_query = 0.0
        self._schedd: Any = None
        self._task: asyncio.Task | None = None

    # The schedd ------------------------------------------------------------------------
    def _connect(self) -> Any:
        from .. import schedd as sched

        if self._schedd is None:
            self._schedd = sched.locate(self.collector, self.schedd_name)
        return self._schedd

    # Submitting and removing, batched -------------------------------------------------
    async def submit(self, name: str) -> str:
        """Submit one worker job named ``name``; returns its job id once the schedd has it."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending_submits.append((name, future))
        self._schedule_flush()
        return await future

    def remove(self, job: str, reason: str) -> None:
        """Remove ``job`` (ours) soon, together with whatever else is removed meanwhile."""
        self._pending_removes[job] = reason
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush is None or self._flush.done():
            self._flush = asyncio.ensure_future(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self.batch_window)
        # What arrives while a batch is on its way goes in the next one, from this same task.
        while self._pending_submits or self._pending_removes:
            submits, self._pending_submits = self._pending_submits, []
            removes, self._pending_removes = self._pending_removes, {}
            if submits:
                await self._submit_batch(submits)
            if removes:
                await self._remove_batch(removes)

    async def _submit_batch(self, batch: list[tuple[str, asyncio.Future[str]]]) -> None:
        from .. import schedd as sched

        items = [{WORKER_NAME_VARIABLE: name} for name, _ in batch]
        try:
            cluster = await asyncio.to_thread(
                sched.submit, self._connect(), self.description, itemdata=items
            )
        except Exception as err:
            for _, future in batch:
                if not future.done():
                    future.set_exception(err)
            return
        ids = [f"{cluster}.{proc}" for proc in range(len(batch))]
        self.submitted.update(ids)
        for job, (_, future) in zip(ids, batch, strict=True):
            self.phases[job] = JobPhase(job, JobState.IDLE, "submitted")
            if not future.done():
                future.set_result(job)
        logger.info("submitted %d worker job(s): %s", len(ids), ", ".join(ids))

    async def _remove_batch(self, removes: dict[str, str]) -> None:
        import htcondor2

        ids = sorted(removes)
        constraint = " || ".join(
            f"(ClusterId == {c} && ProcId == {p})" for c, p in (j.split(".") for j in ids)
        )
        reason = next(iter(removes.values()))
        try:
            await asyncio.to_thread(
                self._connect().act, htcondor2.JobAction.Remove, constraint, reason=reason
            )
        except Exception:
            logger.exception("removing worker job(s) %s failed", ", ".join(ids))
            return
        logger.info("removed worker job(s): %s (%s)", ", ".join(ids), reason)

    async def drain(self) -> None:
        """Wait until every submission and removal asked for so far has reached the schedd."""
        while self._flush is not None and not self._flush.done():
            await asyncio.shield(self._flush)

    # Status ---------------------------------------------------------------------------
    def watch(self, job: str, listener: Listener) -> None:
        """Call ``listener`` with the job's phase whenever it changes (until it has ended)."""
        self._listeners[job] = listener

    def forget(self, job: str) -> None:
        self._listeners.pop(job, None)
        self.phases.pop(job, None)

    def poke(self) -> None:
        """Something happened (a worker left): look at the queue soon, not in ``interval``."""
        self._poke.set()

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.drain()

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self.interval)
            self._poke.clear()
            gap = self.min_gap - (time.monotonic() - self._last_query)
            if gap > 0:
                await asyncio.sleep(gap)
            if not self._listeners:
                continue
            try:
                await self.refresh()
            except Exception as err:
                logger.warning("cannot ask the schedd about the worker jobs: %s", err)

    async def refresh(self) -> None:
        """One query for every job we watch; tell each listener whose job changed."""
        from .. import schedd as sched

        watched = dict(self._listeners)
        clusters = {int(job.split(".")[0]) for job in watched}
        self._last_query = time.monotonic()
        self.queries += 1
        found = await asyncio.to_thread(sched.phases, self._connect(), clusters)
        for job, listener in watched.items():
            phase = found.get(job) or JobPhase(job, JobState.GONE, "it left the queue")
            if phase != self.phases.get(job):
                self.phases[job] = phase
                listener(phase)
            if phase.ended:
                self._listeners.pop(job, None)

    async def remove_all(self, reason: str) -> None:
        """A last sweep: remove every job this tracker ever submitted that may still be queued."""
        import htcondor2

        clusters = {int(job.split(".")[0]) for job in self.submitted}
        if clusters:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(
                    self._connect().act,
                    htcondor2.JobAction.Remove,
                    f"({by_cluster_ids(clusters)}) && JobStatus =!= 3",
                    reason=reason,
                )
