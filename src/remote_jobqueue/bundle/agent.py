"""The site agent: what the client can ask of the bundle, as scheduler handlers (``rjq_*``).

Scaling and adaptivity are the site cluster's (a `SpecCluster` next to the scheduler, see
`site_cluster.py`); the agent only turns the client's requests into calls on it, keeps the
lease (the cluster ends when its client has gone silent), takes renewed bearer tokens, and
keeps the bundle's own log for `cluster.get_logs()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from distributed import Scheduler

from ..spec import BundleSpec
from .site_cluster import SiteCluster

logger = logging.getLogger("remote_jobqueue.agent")


class SiteAgent:
    def __init__(
        self,
        scheduler: Scheduler,
        cluster: SiteCluster | None,
        spec: BundleSpec,
        *,
        token_file: Path | None = None,
    ) -> None:
        self.scheduler, self.cluster, self.spec = scheduler, cluster, spec
        self.cluster_id, self.lease, self.token_file = spec.cluster_id, spec.lease, token_file
        #: Detachable clusters end after this long with no client and no work (else None).
        self.idle_timeout = spec.idle_timeout
        #: Checks a renewed token as the gateway does (and renews our login with it); without
        #: it (local mode) no token is taken.
        self.verify_token: Callable[[str], Awaitable[float]] | None = None
        self._renewals: dict[str, asyncio.Future[bool]] = {}
        self.last_heartbeat = self.last_activity = time.monotonic()
        self.closing = asyncio.Event()
        self.close_reason = ""
        self._task: asyncio.Task | None = None
        #: A detached run's script (see `driver.py`), if this cluster runs one.
        self.driver: Any = None
        self.driver_task: asyncio.Task | None = None

    def install(self) -> None:
        from distributed.utils import DequeHandler

        # The bundle's own story (workers submitted, held, removed, tokens renewed, lease) for
        # `cluster.get_logs()`: the scheduler's logs hold only what `distributed` said.
        self.log_handler = DequeHandler(n=2000)
        self.log_handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
        logging.getLogger("remote_jobqueue").addHandler(self.log_handler)
        self.scheduler.handlers.update(
            {
                "rjq_scale": self.handle_scale,
                "rjq_adapt": self.handle_adapt,
                "rjq_adapt_stop": self.handle_adapt_stop,
                "rjq_heartbeat": self.handle_heartbeat,
                "rjq_close": self.handle_close,
                "rjq_jobs": self.handle_jobs,
                "rjq_logs": self.handle_logs,
                "rjq_info": self.handle_info,
                "rjq_run_status": self.handle_run_status,
                "rjq_run_log": self.handle_run_log,
                "rjq_run_file": self.handle_run_file,
                "rjq_bearer_token": self.handle_bearer_token,
            }
        )
        self._task = asyncio.ensure_future(self._keep_lease())

    @property
    def site(self) -> SiteCluster:
        assert self.cluster is not None, "the site cluster is not up yet"
        return self.cluster

    # Handlers (called through the scheduler's RPC) ---------------------------------------
    async def handle_scale(self, jobs: int) -> dict[str, Any]:
        with contextlib.suppress(AttributeError):
            self.site._adaptive.stop(reason="scaled by the client")
        self.site.restart_failed()
        logger.info("scale to %d job(s)", max(0, int(jobs)))
        self.site.scale(jobs=max(0, int(jobs)))
        await self.site._correct_state()
        return await self.handle_jobs()

    async def handle_adapt(
        self,
        minimum_jobs: int = 0,
        maximum_jobs: int = 10,
        wait_count: int = 3,
        interval: str | float = "1s",
        target_duration: str | float = "5s",
    ) -> dict[str, Any]:
        processes = self.site.processes
        self.site.restart_failed()
        adaptive = self.site.adapt(
            minimum=minimum_jobs * processes,
            maximum=maximum_jobs * processes,
            wait_count=wait_count,
            interval=interval,
            target_duration=target_duration,
        )
        logger.info("adapt between %d and %d job(s)", minimum_jobs, maximum_jobs)
        return {"minimum": adaptive.minimum, "maximum": adaptive.maximum}

    async def handle_adapt_stop(self) -> dict[str, Any]:
        """Stop adapting; the workers stay as they are."""
        with contextlib.suppress(AttributeError):
            self.site._adaptive.stop(reason="stopped by the client")
        logger.info("adaptivity stopped by the client")
        return await self.handle_jobs()

    async def handle_heartbeat(self, token: str | None = None) -> dict[str, Any]:
        """The client is alive; with ``token``, it offers a renewed bearer token. The answer
        carries the jobs' report (no schedd query), for the client's notebook view, and what
        became of the token: ``taken``, ``refused``, or ``pending`` (offer it again).

        The check goes to the gateway; it runs beside the heartbeat, not in it, so a slow
        gateway never makes a heartbeat late."""
        self.last_heartbeat = time.monotonic()
        return {
            "lease": self.lease,
            "jobs": self.cluster.describe() if self.cluster else None,
            "token": await self._offer(token) if token else None,
        }

    async def _offer(self, token: str) -> str:
        import hashlib

        digest = hashlib.sha256(token.encode()).hexdigest()
        task = self._renewals.get(digest)
        if task is None:
            for done in [d for d, t in self._renewals.items() if t.done()][:-8]:
                del self._renewals[done]  # keep a few answers, for offers still in flight
            task = self._renewals[digest] = asyncio.ensure_future(self.renew_token(token))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), 1.0)
        if not task.done():
            return "pending"
        return "taken" if not task.cancelled() and task.result() else "refused"

    async def renew_token(self, token: str) -> bool:
        """Keep ``token`` for the gateway and the schedd if it lives longer than ours and the
        gateway takes it.

        The scheduler's port is open to the site network (TLS keeps strangers out, but the
        token must not have to trust that): the gateway checks the token's signature, issuer,
        audience and expiry, and that it names the identity our login has, before we write it.
        """
        from ..gateway.tunnel import TunnelError
        from ..tokens import TokenError, redact, token_claims_unverified, write_token_file

        if self.token_file is None or self.verify_token is None:
            return False
        try:  # only a ranking, checked for real by the gateway below
            new_exp = int(token_claims_unverified(token).get("exp", 0))
            old_exp = int(token_claims_unverified(self.token_file.read_text()).get("exp", 0))
        except (TokenError, OSError, ValueError) as err:
            logger.warning("refused a renewed token (%s): %s", redact(token), err)
            return False
        if new_exp <= old_exp:
            logger.warning(
                "refused a renewed token (%s): it ends no later than ours", redact(token)
            )
            return False
        try:
            until = await self.verify_token(token)
        except TunnelError as err:
            logger.warning("refused a renewed token (%s): %s", redact(token), err)
            return False
        write_token_file(self.token_file, token)
        logger.info("bearer token renewed (%s), login valid until %.0f", redact(token), until)
        return True

    async def handle_bearer_token(self, newer_than: float = 0) -> str | None:
        """Our bearer token, for a worker whose copy (an input file of its job, as it was at
        submission) ends at ``newer_than``, if ours ends later: workers read token-protected
        storage with it. Only the cluster's members reach the scheduler (mutual TLS with the
        cluster's own certificate), and the token travels in that TLS only."""
        from ..tokens import TokenError, token_claims_unverified

        if self.token_file is None:
            return None
        try:
            token = self.token_file.read_text().strip()
            exp = float(token_claims_unverified(token).get("exp", 0))
        except (OSError, TokenError, ValueError):
            return None
        return token if exp > newer_than else None

    async def handle_close(self, reason: str = "closed by the client") -> None:
        asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self.shutdown(reason)))

    async def handle_logs(self) -> list[tuple[str, str]]:
        handler = self.log_handler
        return [(record.levelname, handler.format(record)) for record in handler.deque]

    async def handle_jobs(self) -> dict[str, Any]:
        return self.site.describe()

    async def handle_info(self) -> dict[str, Any]:
        """What an attaching client must know: where we run, the worker job, the lease."""
        return {
            "cluster_id": self.cluster_id,
            "site": self.spec.site,
            "worker": self.spec.worker.to_json(),
            "lease": self.lease,
            "idle_timeout": self.idle_timeout,
        }

    # A detached run ------------------------------------------------------------------
    def _run(self) -> Any:
        if self.driver is None:
            raise ValueError("this cluster runs no script (it was not started by `run`)")
        return self.driver

    async def handle_run_status(self) -> dict[str, Any]:
        return self._run().status()

    async def handle_run_log(self, offset: int = 0) -> dict[str, Any]:
        return self._run().read_log(offset)

    async def handle_run_file(self, path: str) -> bytes:
        return await asyncio.to_thread(self._run().read_file, path)

    async def follow_driver(self) -> None:
        """Once the script ends, linger for its logs and output files, then end."""
        driver = self._run()
        await driver.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.closing.wait(), driver.linger)
        await self.shutdown(f"the run finished: {driver.why}")

    # The lease ------------------------------------------------------------------------
    def _busy(self) -> bool:
        """A Dask client connected (other than the scheduler's own), or work in flight."""
        scheduler = self.scheduler
        if self.driver is not None and self.driver.running:
            return True
        if any(client != "fire-and-forget" for client in scheduler.clients):
            return True
        if getattr(scheduler, "queued", None) or getattr(scheduler, "unrunnable", None):
            return True
        return any(ws.processing for ws in scheduler.workers.values())

    def _token_expired(self) -> bool:
        """Has our bearer token run out? Nobody renews it while no client is attached, and
        without it the bundle can neither keep its gateway login nor submit workers."""
        from ..tokens import TokenError, token_claims_unverified

        if self.token_file is None:
            return False
        try:
            claims = token_claims_unverified(self.token_file.read_text())
        except (TokenError, OSError, ValueError):
            return False
        return float(claims.get("exp", float("inf"))) < time.time()

    async def _keep_lease(self) -> None:
        while not self.closing.is_set():
            now = time.monotonic()
            if self.idle_timeout is None:
                if now - self.last_heartbeat > self.lease:
                    await self.shutdown(
                        f"lease expired: no heartbeat from the client for {self.lease:.0f} s"
                    )
                    return
            else:
                if self._busy():
                    self.last_activity = now
                idle = now - max(self.last_heartbeat, self.last_activity)
                if idle > self.idle_timeout:
                    await self.shutdown(
                        f"idle timeout: no client and no work for {self.idle_timeout:.0f} s"
                    )
                    return
                if now - self.last_heartbeat > self.lease and self._token_expired():
                    await self.shutdown(
                        "the bearer token expired and no attached client renewed it"
                    )
                    return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closing.wait(), 1.0)

    async def shutdown(self, reason: str) -> None:
        if self.closing.is_set():
            return
        self.close_reason = reason
        logger.warning("shutting the cluster down: %s", reason)
        self.closing.set()
        if self.driver is not None:
            await self.driver.close()
        if self.cluster is not None:
            try:
                await self.cluster.close()
            except Exception:
                logger.exception("closing the site cluster failed")
        await self.scheduler.close(reason=reason)
