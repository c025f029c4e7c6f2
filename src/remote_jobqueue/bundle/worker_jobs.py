"""The two kinds of worker the site cluster runs, as Dask's `ProcessInterface`s.

`WorkerJob` is one HTCondor job at the bundle's own site, as dask-jobqueue's ``Job`` is: `start`
submits it (through the bundle's `JobTracker`, so submissions made together share one schedd
transaction) and `close` removes it. `WorkerProcess` is a Dask worker started as a child
process: the resident worker in the scheduler job's own slot, and every worker of
``site="local"``. Each reports its phase (`JobPhase`) to the cluster whenever it changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from distributed.core import Status
from distributed.deploy.spec import ProcessInterface

from ..jobstate import JobPhase, JobState
from ..spec import WorkerSpec
from .tracker import JobTracker

Listener = Callable[["_Worker", JobPhase], None]


class _Worker(ProcessInterface):
    """What both kinds share: a Dask name, a phase, and someone to tell when it changes."""

    def __init__(self, scheduler: str | None, name: str | None, on_change: Listener | None):
        super().__init__(scheduler=scheduler, name=name)
        self.scheduler_address = scheduler
        self.name, self.on_change = str(name), on_change
        self.job_id: str | None = None
        self.phase = JobPhase("-", JobState.IDLE, "not started yet")

    def _changed(self, phase: JobPhase) -> None:
        self.phase = phase
        if self.on_change is not None:
            self.on_change(self, phase)


class WorkerJob(_Worker):
    """One worker job; its Dask worker (or workers, with ``processes``) is called ``name``."""

    def __init__(self, scheduler=None, name=None, *, tracker: JobTracker, on_change=None, **_):
        super().__init__(scheduler, name, on_change)
        self.tracker = tracker

    async def start(self) -> None:
        self.job_id = await self.tracker.submit(self.name)
        self.phase = JobPhase(self.job_id, JobState.IDLE, "submitted")
        self.tracker.watch(self.job_id, self._changed)
        await super().start()

    async def close(self) -> None:
        if self.job_id is not None:
            self.tracker.forget(self.job_id)
            if self.phase.alive:
                self.tracker.remove(self.job_id, "scaled down by remote-jobqueue")
        await super().close()

    def __repr__(self) -> str:
        return f"<WorkerJob {self.name} {self.job_id or '-'} {self.phase}>"


class WorkerProcess(_Worker):
    """A Dask worker as a child process of the bundle (its own process group)."""

    def __init__(
        self, scheduler=None, name=None, *, worker: WorkerSpec, log_dir: Path, **options: Any
    ):
        super().__init__(scheduler, name, options.get("on_change"))
        self.worker, self.log_dir = worker, log_dir
        self.job_id = options.get("label", "process")
        self.proc: subprocess.Popen | None = None
        self.closing = False
        self._watch: asyncio.Task | None = None

    async def start(self) -> None:
        assert self.scheduler_address, "a worker process needs the scheduler's address"
        argv = [
            self.worker.python or sys.executable,
            *self.worker.worker_args(self.scheduler_address, self.name),
        ]
        with open(self.log_dir / f"worker-{self.name}.log", "ab") as log:
            self.proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.worker.environment},
                cwd=self.log_dir,  # the cluster's TLS files are named relative to it
                start_new_session=True,
            )
        self.phase = JobPhase(str(self.job_id), JobState.RUNNING, f"pid {self.proc.pid}")
        self._watch = asyncio.ensure_future(self._wait_exit())
        await super().start()

    async def _wait_exit(self) -> None:
        assert self.proc is not None
        code = await asyncio.to_thread(self.proc.wait)
        gone = JobPhase(str(self.job_id), JobState.GONE, f"the process exited with {code}")
        if self.closing or self.status == Status.closed:
            self.phase = gone
        else:
            self._changed(gone)

    async def close(self) -> None:
        self.closing = True
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.to_thread(self.proc.wait), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
        await super().close()

    def __repr__(self) -> str:
        return f"<WorkerProcess {self.name} {self.phase}>"
