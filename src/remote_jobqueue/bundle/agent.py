"""The site agent: runs next to the scheduler and keeps the right number of worker jobs.

`scale` and `adapt` from the client arrive as scheduler handlers (``rjq_*`` operations over the
tunnel); adaptivity is decided here, next to the scheduler, so it keeps working while the
client's link is slow. The lease ends the cluster when the client has gone silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from pathlib import Path
from typing import Any

from distributed import Scheduler

from .backends import WorkerBackend, job_id_of

logger = logging.getLogger("remote_jobqueue.agent")


class SiteAgent:
    def __init__(
        self,
        scheduler: Scheduler,
        backend: WorkerBackend,
        cluster_id: str,
        processes: int = 1,
        lease: float = 120.0,
        interval: float = 1.0,
        token_file: Path | None = None,
    ) -> None:
        self.scheduler, self.backend, self.cluster_id = scheduler, backend, cluster_id
        self.token_file = token_file
        self.processes, self.lease, self.interval = processes, lease, interval
        self.target = 0
        self.jobs: set[str] = set()
        self.adaptive: dict[str, Any] | None = None
        self._below_since = 0
        self.last_heartbeat = time.monotonic()
        self.closing = asyncio.Event()
        self.close_reason = ""
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self._recent: dict[str, float] = {}

    def install(self) -> None:
        from distributed.utils import DequeHandler

        # The bundle's own story (workers submitted, removed, tokens renewed, lease) for
        # `cluster.get_logs()`: the scheduler's logs hold only what `distributed` said.
        self.log_handler = DequeHandler(n=2000)
        self.log_handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
        logging.getLogger("remote_jobqueue").addHandler(self.log_handler)
        handlers = {
            "rjq_scale": self.handle_scale,
            "rjq_adapt": self.handle_adapt,
            "rjq_heartbeat": self.handle_heartbeat,
            "rjq_close": self.handle_close,
            "rjq_jobs": self.handle_jobs,
            "rjq_logs": self.handle_logs,
        }
        self.scheduler.handlers.update(handlers)
        self._task = asyncio.create_task(self._loop())

    # Handlers (called through the scheduler's RPC) ---------------------------------------
    async def handle_scale(self, jobs: int) -> dict[str, Any]:
        self.adaptive = None
        self.target = max(0, int(jobs))
        logger.info("scale to %d job(s)", self.target)
        await self.reconcile()
        return await self.handle_jobs()

    async def handle_adapt(
        self, minimum_jobs: int = 0, maximum_jobs: int = 10, wait_count: int = 3
    ) -> dict[str, Any]:
        self.adaptive = {"minimum": minimum_jobs, "maximum": maximum_jobs, "wait_count": wait_count}
        logger.info("adapt between %d and %d job(s)", minimum_jobs, maximum_jobs)
        await self._adapt_step()
        return {"minimum": minimum_jobs, "maximum": maximum_jobs}

    async def handle_heartbeat(self, token: str | None = None) -> float:
        """The client is alive; with ``token``, it brings a renewed bearer token."""
        self.last_heartbeat = time.monotonic()
        if token and self.token_file is not None:
            self.renew_token(token)
        return self.lease

    def renew_token(self, token: str) -> bool:
        """Keep ``token`` for the gateway (and the schedd, with SciTokens) if it renews ours.

        The scheduler's port is open to the site network, so only a token for the same subject
        from the same issuer that lives longer is taken: nobody else's identity gets in.
        """
        from ..tokens import TokenError, redact, token_claims_unverified, write_token_file

        assert self.token_file is not None
        try:
            new = token_claims_unverified(token)
            old = token_claims_unverified(self.token_file.read_text().strip())
        except (TokenError, OSError) as err:
            logger.warning("not renewing the bearer token: %s", err)
            return False
        same = all(new.get(k) == old.get(k) for k in ("iss", "sub"))
        if not same or int(new.get("exp", 0)) <= int(old.get("exp", 0)):
            logger.warning("refused a token (%s) that does not renew ours", redact(token))
            return False
        write_token_file(self.token_file, token)
        logger.info("bearer token renewed (%s), valid until %s", redact(token), new.get("exp"))
        return True

    async def handle_close(self, reason: str = "closed by the client") -> None:
        asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self.shutdown(reason)))

    async def handle_logs(self) -> list[tuple[str, str]]:
        handler = self.log_handler
        return [(record.levelname, handler.format(record)) for record in handler.deque]

    async def handle_jobs(self) -> dict[str, Any]:
        alive = await self.backend.alive()
        return {"target": self.target, "jobs": alive, "adaptive": self.adaptive}

    # The loop ------------------------------------------------------------------------
    async def _loop(self) -> None:
        while not self.closing.is_set():
            try:
                if time.monotonic() - self.last_heartbeat > self.lease:
                    await self.shutdown(
                        f"lease expired: no heartbeat from the client for {self.lease:.0f} s"
                    )
                    return
                if self.adaptive is not None:
                    await self._adapt_step()
                await self.reconcile()
            except Exception:
                logger.exception("site agent step failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closing.wait(), self.interval)

    async def _adapt_step(self) -> None:
        assert self.adaptive is not None
        workers = self.scheduler.adaptive_target()
        wanted = math.ceil(workers / self.processes)
        wanted = min(max(wanted, self.adaptive["minimum"]), self.adaptive["maximum"])
        if wanted >= self.target:
            self._below_since = 0
            self.target = wanted
        else:
            self._below_since += 1
            if self._below_since >= self.adaptive["wait_count"]:
                self._below_since = 0
                self.target = wanted

    async def reconcile(self) -> None:
        """Submit or remove worker jobs until the live ones match the target."""
        async with self._lock:
            alive = await self.backend.alive()
            self.jobs &= set(alive) | self.jobs_recently_submitted()
            self.jobs |= set(alive)
            missing = self.target - len(self.jobs)
            if missing > 0:
                new = await self.backend.submit(missing, self.scheduler.address)
                self._recent = {j: time.monotonic() for j in new}
                self.jobs |= set(new)
            elif missing < 0:
                await self._remove_jobs(-missing, alive)

    def jobs_recently_submitted(self) -> set[str]:
        return {j for j, t in self._recent.items() if time.monotonic() - t < 30}

    async def _remove_jobs(self, count: int, alive: dict[str, str]) -> None:
        # Jobs that have no worker yet go first; then the workers the scheduler would close.
        with_workers: dict[str, list[str]] = {}
        for ws in self.scheduler.workers.values():
            job = job_id_of(ws.name, self.cluster_id)
            if job is not None:
                with_workers.setdefault(job, []).append(ws.address)
        # A resident worker goes last: its slot stays allocated to the scheduler job anyway.
        is_resident = getattr(self.backend, "is_resident", lambda _job: False)
        idle_jobs = sorted((j for j in self.jobs if j not in with_workers), key=is_resident)
        victims = idle_jobs[:count]
        if len(victims) < count:
            names = self.scheduler.workers_to_close(
                n=(count - len(victims)) * self.processes, attribute="name"
            )
            names = sorted(names, key=lambda n: is_resident(job_id_of(n, self.cluster_id) or ""))
            for name in names:
                job = job_id_of(name, self.cluster_id)
                if job and job not in victims and len(victims) < count:
                    victims.append(job)
        addresses = [a for j in victims for a in with_workers.get(j, [])]
        if addresses:
            await self.scheduler.retire_workers(workers=addresses, close_workers=True)
        await self.backend.remove(victims)
        self.jobs -= set(victims)

    async def shutdown(self, reason: str) -> None:
        if self.closing.is_set():
            return
        self.close_reason = reason
        logger.warning("shutting the cluster down: %s", reason)
        self.closing.set()
        self.adaptive, self.target = None, 0
        try:
            await self.backend.remove_all()
        except Exception:
            logger.exception("removing the worker jobs failed")
        await self.scheduler.close(reason=reason)
