"""`RemoteHTCondorCluster`: a Dask cluster whose scheduler runs as a job at a remote site.

The client submits one job (the bundle) to the site's schedd, watches it until it runs, then
reaches its scheduler and dashboard through the SSH gateway. Scaling is a message to the bundle's
site agent, which submits worker jobs at the same site. Parameter names follow
`dask_jobqueue.HTCondorCluster` where they mean the same thing.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import math
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dask.utils import format_bytes, parse_bytes
from distributed import Security
from distributed.core import Status, rpc
from distributed.deploy.cluster import Cluster

from . import config, sites
from .adaptive import RemoteAdaptive
from .environ import for_cluster_processes
from .errors import (
    ClusterLost,
    ClusterNotFound,
    GatewayError,
    ImpossibleResources,
    RemoteJobqueueError,
    StartTimeout,
)
from .localpeer import UnixSocketPort
from .progress import StartProgress
from .spec import (
    BEARER_TOKEN,
    BUNDLE_SPEC,
    CLUSTER_SECRET,
    CONDOR_CA,
    CREDENTIALS_PORT,
    DASHBOARD_PORT,
    JOB_PATH,
    RUN_REFRESH_TOKEN,
    SCHEDULER_PORT,
    SECRET_INPUTS,
    TLS_CERT,
    TLS_KEY,
    BundleSpec,
    WorkerSpec,
)

if TYPE_CHECKING:
    from .clusters import ClusterInfo
    from .scheduler_job import SchedulerJob

logger = logging.getLogger("remote_jobqueue")


class RemoteHTCondorCluster(Cluster):
    """A Dask cluster at an HTCondor site, reached through an SSH gateway.

    Parameters mirror `dask_jobqueue.HTCondorCluster` (``cores``, ``memory``, ``disk``,
    ``processes``, ``job_extra_directives``, ``worker_extra_args``, ``scheduler_options``,
    ``python``, ``name``), plus ``site`` (a catalogue name, ``"random"`` or ``"local"``),
    ``image``, ``gateway`` and ``lease``. Defaults come from Dask config ``remote-jobqueue.*``.

    With ``shutdown_on_close=False`` (as in dask-gateway) the cluster outlives this object:
    `close()` only detaches, `from_name()` attaches again from any process of yours, and the
    bundle ends by itself after ``idle_timeout`` seconds with no client and no work.
    """

    def __init__(
        self,
        site: str | None = None,
        *,
        cores: int | None = None,
        memory: str | int | None = None,
        disk: str | int | None = None,
        processes: int | None = None,
        python: str | None = None,
        job_extra_directives: dict[str, str] | None = None,
        worker_extra_args: list[str] | None = None,
        scheduler_options: dict[str, Any] | None = None,
        name: str | None = None,
        image: str | None = None,
        gateway: str | None = None,
        gateway_host_key: str | None = None,
        lease: float | None = None,
        n_workers: int = 0,
        resident_worker: bool | None = None,
        tls: bool | None = None,
        token_file: str | os.PathLike | None = None,
        start_timeout: float | None = None,
        idle_grace: float | None = None,
        idle_timeout: float | None = None,
        shutdown_on_close: bool = True,
        driver: dict[str, Any] | None = None,
        asynchronous: bool = False,
        loop: Any = None,
        quiet: bool = False,
        _attach: ClusterInfo | None = None,
    ) -> None:
        # Everything that can be checked without the network fails here, at once.
        # The keyword arguments that are settings (the schema's keys), checked with Dask config.
        keys = {key.replace("-", "_") for key in config.setting_keys()}
        settings = config.settings({k: v for k, v in locals().items() if k in keys})
        self.settings = settings
        self.site = sites.resolve(settings["site"])
        self._attach = _attach
        self.cluster_id = _attach.cluster_id if _attach else f"rjq-{secrets.token_hex(6)}"
        self.shutdown_on_close = shutdown_on_close
        #: A detached run's script (`remote-jobqueue run`): ``script`` (a local path), ``args``,
        #: ``wall_time``, ``linger``; it runs next to the scheduler at the site.
        self.driver = dict(driver) if driver else None
        #: A run's renewal (see `run_token.py`): where, and (until the bundle has it) the
        #: refresh token with which the bundle keeps its bearer token fresh.
        self._renewal: dict[str, Any] | None = None
        self._run_refresh: str | None = None
        if self.driver and shutdown_on_close:
            raise RemoteJobqueueError(
                "a run's cluster must outlive its client: shutdown_on_close=False"
            )
        self.idle_timeout = float(settings["idle-timeout"])
        extra = dict(settings["job-extra-directives"] or {})
        self.image = settings["image"] or self.site.image
        if self.image:
            extra.setdefault("container_image", self.image)
        # Scheduler, workers and client talk TLS with a certificate made for this cluster:
        # anyone at the site (or on this host, in local mode) can reach the scheduler's port,
        # only this cluster holds the key.
        if not settings["tls"]:
            raise RemoteJobqueueError(
                "tls=False is refused: without TLS anyone who can reach the scheduler's port "
                "(other jobs at the site, other users of this host) could run code as you"
            )
        self.tls = True
        self.security = Security.temporary()
        #: Proves the bundle's claim of the cluster's name at the gateway (see registry.py).
        self._claim_secret = secrets.token_urlsafe(32)
        self.worker_spec = WorkerSpec.build(
            cores=settings["cores"],
            memory=settings["memory"],
            processes=settings["processes"],
            disk=settings["disk"],
            python=self._python(settings["python"]),
            worker_extra_args=tuple(settings["worker-extra-args"] or ()),
            job_extra_directives=extra,
            requirements=self.site.requirements,
            # Local processes keep the caller's PATH.
            environment={
                **self._data_environment(),
                **({} if self.site.is_local else {"PATH": JOB_PATH}),
            },
            tls=self.tls,
        )
        self.scheduler_options = dict(settings["scheduler-options"] or {})
        self.gateway = settings["gateway"] or self.site.gateway
        self.gateway_host_key = settings["gateway-host-key"] or self.site.gateway_host_key
        self.lease = float(settings["lease"])
        self.start_timeout = float(settings["start-timeout"])
        self.idle_grace = float(settings["idle-grace"])
        self.n_workers = n_workers
        self.resident_worker = bool(settings["resident-worker"]) and not self.site.is_local
        self.token_file = settings["token-file"]
        if not shutdown_on_close and self.site.is_local:
            raise RemoteJobqueueError(
                'shutdown_on_close=False needs a remote site: a site="local" cluster is '
                "processes of this machine, and nothing could attach to them again"
            )
        if not self.site.is_local and not self.gateway:
            raise RemoteJobqueueError(
                f"site {self.site.name} has no gateway configured: set remote-jobqueue.gateway "
                "or the site's gateway in the site catalogue"
            )
        verb = "attaching to" if _attach else "cluster"
        self.progress = StartProgress(f"{verb} {self.cluster_id} at {self.site.name}", quiet)
        self.lost: str | None = None
        self._tunnel = None
        self._local_proc: subprocess.Popen | None = None
        self._local_port: UnixSocketPort | None = None
        self._inputs: Path | None = None
        #: The scheduler job's own stdout and stderr, fetched when it ended badly.
        self.crash_output: dict[str, str] = {}
        self._tasks: list[asyncio.Task] = []
        self._adaptive: RemoteAdaptive | None = None
        self.scheduler_job: SchedulerJob | None = None
        self._local_dashboard: str | None = None
        self._bundle_token: str | None = None  # the bearer token the bundle holds
        self._refused_token: str | None = None  # the last one it would not take
        #: The bundle's latest report of its worker jobs (with each heartbeat, no schedd query).
        self.job_report: dict[str, Any] | None = None
        super().__init__(
            asynchronous=asynchronous, loop=loop, quiet=quiet, name=name or self.cluster_id
        )
        if not self.called_from_running_loop:
            self._loop_runner.start()
            try:
                self.sync(self._start)
            except BaseException:
                self._loop_runner.stop()
                raise

    # Construction helpers -------------------------------------------------------------
    def _python(self, chosen: str | None) -> str:
        """The interpreter jobs run: chosen, else the site's; local processes use ours."""
        if chosen or self.site.python:
            return chosen or self.site.python  # type: ignore[return-value]
        if self.site.is_local:
            return sys.executable
        raise RemoteJobqueueError(
            f"site {self.site.name} does not say which Python its jobs run: set the site's "
            "python in the site catalogue (its worker image's, or its software area's), or "
            "remote-jobqueue.python"
        )

    def _data_environment(self) -> dict[str, str]:
        """XRootD settings for jobs: the site's nearest cache (see `remote_jobqueue.data`).

        Only the cache's URL travels; each job writes its own plugin conf at the site.
        """
        from .data import job_environment

        env = job_environment(self.site.cache, self.site.xrootd_ca)
        for key in ("RJQ_XROOTD_ORIGIN", "RJQ_DATASET_DIR"):
            if key in os.environ:
                env[key] = os.environ[key]
        return env

    def bundle_spec(self) -> BundleSpec:
        from .data import job_environment

        candidates = {
            site.name: {
                "requirements": site.requirements,
                "environment": job_environment(site.cache, site.xrootd_ca),
            }
            for site in self.site.candidates
        }
        return BundleSpec(
            cluster_id=self.cluster_id,
            site=self.site.name,
            worker=self.worker_spec,
            collector=self.site.collector,
            schedd=self.site.schedd,
            gateway=None if self.site.is_local else self.gateway,
            gateway_host_key=self.gateway_host_key,
            lease=self.lease,
            scheduler_options=self.scheduler_options,
            n_workers=self.n_workers,
            resident_worker=self.resident_worker,
            poll_interval=float(self.settings["poll-interval"]),
            worker_failure_limit=int(self.settings["worker-failure-limit"]),
            idle_timeout=None if self.shutdown_on_close else self.idle_timeout,
            candidates=candidates,
            driver=self._driver_spec(),
            renewal=self._renewal,
        )

    def _driver_spec(self) -> dict[str, Any] | None:
        if not self.driver:
            return None
        return {
            "script": Path(self.driver["script"]).name,
            "args": list(self.driver.get("args", ())),
            "wall_time": self.driver.get("wall_time"),
            "linger": float(self.driver.get("linger", 300)),
        }

    def scheduler_job_description(self) -> dict[str, str]:
        return self.bundle_spec().submit_description()

    def job_script(self) -> str:
        """The submit descriptions of the scheduler job and of a worker job, for reading."""
        sched = self.scheduler_job_description()
        worker = self.worker_spec.submit_description("<scheduler address>", self.cluster_id)
        lines = ["# scheduler job (the bundle)"]
        lines += [f"{k} = {v}" for k, v in sched.items()] + ["queue", "", "# worker job"]
        lines += [f"{k} = {v}" for k, v in worker.items()] + ["queue WorkerName from (...)"]
        return "\n".join(lines)

    # Start --------------------------------------------------------------------------
    def __await__(self):
        async def _():
            if self.status == Status.created:
                await self._start()
            return self

        return _().__await__()

    async def _start(self) -> None:
        if self.status != Status.created:
            return
        self.status = Status.starting
        try:
            if self._attach is not None:
                address = await self._start_attached(self._attach)
            elif self.site.is_local:
                address = await self._start_local()
            else:
                address = await self._start_remote()
            self.scheduler_comm = rpc(address, connection_args=self._connection_args)
            await self._check_versions()
            await self._learn_from_bundle()
            await super()._start()
        except BaseException as err:
            self.progress.update("failed", str(err)[:200])
            self.progress.done()
            if self._attach is not None:  # not ours to remove: only let go of it
                await self._release()
            else:
                err = await self._with_crash_output(err)
                try:
                    await self._cleanup(f"start failed: {err}")
                finally:
                    await self._revoke_run_refresh()
            self.status = Status.failed
            raise err
        self._run_refresh = None  # the bundle has it, and revokes it when the cluster ends
        self.progress.update("running", self.scheduler_address)
        self.progress.done()
        self._tasks.append(asyncio.create_task(self._heartbeat()))

    def _write_inputs(self, bearer: str | None) -> Path:
        """The bundle's input files, in a 0700 directory; secrets 0600 from their first byte."""
        from .tokens import write_private_file

        inputs = Path(tempfile.mkdtemp(prefix=f"{self.cluster_id}-"))
        inputs.chmod(0o700)
        (inputs / BUNDLE_SPEC).write_text(self.bundle_spec().to_json())
        write_private_file(inputs / BEARER_TOKEN, bearer or "")
        write_private_file(inputs / CLUSTER_SECRET, self._claim_secret)
        (inputs / CONDOR_CA).write_text(self._condor_ca())
        if self.driver:
            shutil.copy(self.driver["script"], inputs / Path(self.driver["script"]).name)
        if self._run_refresh:
            write_private_file(inputs / RUN_REFRESH_TOKEN, self._run_refresh)
        (inputs / TLS_CERT).write_text(self.security.tls_scheduler_cert)
        write_private_file(inputs / TLS_KEY, self.security.tls_scheduler_key)
        self._inputs = inputs
        return inputs

    def _remove_inputs(self) -> None:
        if self._inputs is not None:
            shutil.rmtree(self._inputs, ignore_errors=True)
            self._inputs = None

    def _remove_secret_inputs(self) -> None:
        """After a spooled submission the schedd holds its own copy: ours of the secrets goes
        at once; the directory stays (0700) for the job's output, should it crash."""
        if self._inputs is not None:
            for name in SECRET_INPUTS:
                (self._inputs / name).unlink(missing_ok=True)

    async def _with_crash_output(self, err: BaseException) -> BaseException:
        """``err``, with the end of the scheduler job's stderr if it ended badly."""
        if not isinstance(err, ClusterLost) or self.scheduler_job is None or not self._inputs:
            return err
        self.crash_output = await self.scheduler_job.fetch_output(str(self._inputs))
        tail = self.crash_output.get("err", "").strip().splitlines()[-15:]
        if not tail:
            return err
        text = "\n".join(tail)
        detailed = type(err)(f"{err}\nthe end of its stderr:\n{text}")
        detailed.__cause__ = err
        return detailed

    @property
    def _connection_args(self) -> dict[str, Any]:
        return self.security.get_connection_args("client")

    def _condor_ca(self) -> str:
        """The CA of the schedd's SSL certificate (SciTokens run over SSL), for the bundle."""
        import htcondor2

        path = htcondor2.param.get("AUTH_SSL_CLIENT_CAFILE")
        try:
            return Path(path).read_text() if path else ""
        except OSError:
            return ""

    def _bearer_token(self) -> str:
        from .login import refresh_quietly
        from .tokens import discover_bearer_token

        if self.token_file:
            token = Path(self.token_file).read_text().strip()
        else:
            # A token `remote-jobqueue login` stored is renewed before it runs out (for
            # everyone else a stat or two; never raises).
            refresh_quietly()
            token = discover_bearer_token()
        if not token:
            raise GatewayError(
                "no bearer token for the gateway: set BEARER_TOKEN_FILE (WLCG discovery) or "
                "remote-jobqueue.token-file"
            )
        return token

    async def _check_fits(self) -> None:
        """Impossible resources fail here, before anything is submitted; ``random`` keeps only
        the sites that can run the cluster's jobs (or fails if none can)."""
        import dataclasses

        from .capacity import check_fits

        resources = self.bundle_spec().scheduler_resources()
        if not self.site.is_random:
            await check_fits(self.site, self.worker_spec, resources)
            return
        candidates = self.site.candidates
        checks = [check_fits(site, self.worker_spec, resources) for site in candidates]
        results = await asyncio.gather(*checks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, ImpossibleResources):
                raise result
        fitting = [site for site, r in zip(candidates, results, strict=True) if r is None]
        if not fitting:
            raise next(r for r in results if isinstance(r, ImpossibleResources))
        if len(fitting) < len(candidates):
            self.site = sites.random_among(fitting)
            self.worker_spec = dataclasses.replace(
                self.worker_spec, requirements=self.site.requirements
            )

    async def _start_remote(self) -> str:
        from .scheduler_job import SchedulerJob

        self.progress.update("checking the site")
        bearer = self._bearer_token()
        self._bundle_token = bearer
        # The tunnel claims the cluster's name at the gateway before the job (and so the name)
        # shows in the queue; both checks (and a run's token exchange) run at once.
        # All of them end before a failure is raised: a refresh token that arrived after the
        # clean-up would never be revoked.
        results = await asyncio.gather(
            self._check_fits(),
            self._start_tunnel(),
            self._prepare_run_renewal(bearer),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        inputs = self._write_inputs(bearer)
        desc = {**self.scheduler_job_description(), "initialdir": str(inputs)}
        self.scheduler_job = SchedulerJob(self.site, desc, self.cluster_id)
        self.progress.update("submitting the scheduler job")
        try:
            await self.scheduler_job.submit()
        finally:
            self._remove_secret_inputs()
        self._log(f"submitted scheduler job {self.job_id} to {self.site.name}")
        deadline = time.monotonic() + self.start_timeout
        await self.scheduler_job.wait_running(deadline, self.idle_grace, self.progress.update)
        return await self._reach_scheduler(deadline)

    async def _prepare_run_renewal(self, bearer: str) -> None:
        """A run outlives its client, and so the token it starts with: get the bundle a
        refresh token of its own (see `run_token.py`)."""
        from . import run_token

        if not self.driver:
            return
        self.progress.update("getting the run a refresh token")
        exchange = run_token.Exchange(bearer)
        try:
            self._renewal, self._run_refresh = await asyncio.to_thread(exchange.run)
        except asyncio.CancelledError:  # the thread goes on: what it gets is revoked
            exchange.abandon()
            raise

    async def _revoke_run_refresh(self) -> None:
        """A start that failed leaves no live refresh token (the bundle revokes its own)."""
        from . import run_token

        refresh, self._run_refresh = self._run_refresh, None
        if not (refresh and self._renewal):
            return
        if not await asyncio.to_thread(run_token.revoke, self._renewal, refresh):
            logger.warning(
                "could not revoke the failed run's refresh token at %s; it expires there",
                self._renewal["issuer"],
            )

    async def _start_tunnel(self, claim: bool = True) -> None:
        """The tunnel to the cluster's ports; ``claim``: take its name at the gateway first
        (the cluster's maker does, before the job shows in the queue; an attach does not)."""
        from .gateway.tunnel import Tunnel

        self.progress.update("connecting to the gateway", self.gateway)
        self._tunnel = Tunnel(
            gateway=self.gateway,
            known_host_key=self.gateway_host_key,
            token_source=self._bearer_token,
            cluster_id=self.cluster_id,
            services=(SCHEDULER_PORT, DASHBOARD_PORT),
            claim_secret=self._claim_secret if claim else "",
        )
        try:
            await self._tunnel.start()
        except Exception as err:
            raise GatewayError(f"cannot open the tunnel through {self.gateway}: {err}") from err

    async def _reach_scheduler(self, deadline: float) -> str:
        """Through the tunnel, until the bundle has dialled the gateway and its scheduler
        answers (or the job died, or ``deadline`` passed)."""
        assert self.scheduler_job is not None and self._tunnel is not None
        scheme = "tls" if self.tls else "tcp"
        address = f"{scheme}://{self._tunnel.local_address(SCHEDULER_PORT)}"
        self._local_dashboard = self._tunnel.local_address(DASHBOARD_PORT)
        self.progress.update("waiting for the scheduler to dial the gateway")
        last_error: Exception | None = None
        last_check = time.monotonic()
        while True:
            try:
                async with rpc(address, timeout=5, connection_args=self._connection_args) as probe:
                    await asyncio.wait_for(probe.identity(), 10)
                    self.progress.update("tunnel up", address)
                    return address
            except (OSError, TimeoutError) as err:
                last_error = err
            if time.monotonic() - last_check > 1:  # the job may have died meanwhile
                last_check = time.monotonic()
                await self.scheduler_job.check_alive()
            if time.monotonic() > deadline:
                raise StartTimeout(
                    f"the scheduler job {self.job_id} runs but its scheduler did not reach the "
                    f"gateway {self.gateway} within {self.start_timeout:.0f} s (last error: "
                    f"{last_error}); see the job's scheduler.err"
                )
            await asyncio.sleep(0.1)

    async def _start_attached(self, info: ClusterInfo) -> str:
        """Reach a running cluster of ours: its scheduler job must run, and the gateway must
        let us open its ports (it does so for the identity that registered them only)."""
        from .bundle.credentials import fetch_pair
        from .scheduler_job import SchedulerJob

        if info.scheduler_job is None:
            raise ClusterNotFound(f"cluster {self.cluster_id} has no scheduler job any more")
        self.progress.update("checking the scheduler job", info.scheduler_job)
        self.scheduler_job = await SchedulerJob.running(
            self.site, info.scheduler_job, self.cluster_id
        )
        await self._start_tunnel(claim=False)
        schedd, job_id = self.scheduler_job.schedd, info.scheduler_job

        async def write_challenge(attribute: str, value: str) -> None:
            # Only the job's owner may edit its ad: the proof the bundle asks for.
            await asyncio.to_thread(schedd.edit, [job_id], attribute, json.dumps(value))

        try:
            reader, writer = await self._tunnel.open(CREDENTIALS_PORT)
            try:
                pair = await fetch_pair(reader, writer, write_challenge)
            finally:
                writer.close()
        except Exception as err:
            raise GatewayError(
                f"cannot attach to {self.cluster_id} through {self.gateway}: {err} (only a "
                "cluster made with shutdown_on_close=False can be attached to, by its owner)"
            ) from err
        self.security = Security(
            require_encryption=True,
            tls_ca_file=pair["cert"],
            tls_client_cert=pair["cert"],
            tls_client_key=pair["key"],
        )
        self._local_dashboard = self._tunnel.local_address(DASHBOARD_PORT)
        return f"tls://{self._tunnel.local_address(SCHEDULER_PORT)}"

    async def _learn_from_bundle(self) -> None:
        """Where the bundle runs (a ``random`` cluster learns its site here) and, when we
        attached, what its worker jobs are and how long its lease is."""
        info = await asyncio.wait_for(self.scheduler_comm.rjq_info(), 30)
        if info["site"] != self.site.name:
            self.site = sites.resolve(info["site"])
            self.progress.title = f"cluster {self.cluster_id} at {self.site.name}"
        if self._attach is not None:
            from .spec import WorkerSpec

            self.worker_spec = WorkerSpec.from_json(info["worker"])
            self.lease = float(info["lease"])
            self.idle_timeout = float(info.get("idle_timeout") or self.idle_timeout)

    async def _start_local(self) -> str:
        self.progress.update("starting the bundle as local processes")
        inputs = self._write_inputs(None)
        address_file = inputs / "address.json"
        log = open(inputs / "scheduler.log", "ab")  # noqa: SIM115 - the child owns it
        self._local_proc = subprocess.Popen(
            [
                self.worker_spec.python,
                "-m",
                "remote_jobqueue.bundle",
                str(inputs / BUNDLE_SPEC),
                "--local",
                "--address-file",
                str(address_file),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=for_cluster_processes(os.environ),
            cwd=inputs,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + self.start_timeout
        while not address_file.exists():
            if self._local_proc.poll() is not None:
                tail = (inputs / "scheduler.log").read_text()[-2000:]
                raise ClusterLost(f"the local bundle exited at start:\n{tail}")
            if time.monotonic() > deadline:
                raise StartTimeout("the local bundle did not start in time")
            await asyncio.sleep(0.1)
        info = json.loads(address_file.read_text())
        if info.get("dashboard_socket"):
            self._local_port = UnixSocketPort(info["dashboard_socket"])
            self._local_dashboard = f"127.0.0.1:{await self._local_port.start()}"
        return info["scheduler"]

    async def _check_versions(self) -> None:
        from distributed.versions import get_versions

        from . import versions

        site = await asyncio.wait_for(self.scheduler_comm.versions(), 30)
        versions.check(get_versions(), site, self.site.name)

    # Running --------------------------------------------------------------------------
    async def _heartbeat(self) -> None:
        """Keep the lease, and hand the bundle our bearer token whenever it was renewed here
        (by the spawner's refresher, say), so the bundle can still reach the gateway and the
        schedd after the token it started with has expired.

        The heartbeat is also how we notice that the scheduler job is gone: only when it fails
        do we ask the schedd why, so a healthy cluster costs its schedd nothing.
        """
        interval = min(5.0, max(1.0, self.lease / 4))
        while self.status == Status.running:
            renewed = None
            if not self.site.is_local:
                with contextlib.suppress(Exception):
                    current = await asyncio.to_thread(self._bearer_token)
                    if current not in (self._bundle_token, self._refused_token):
                        renewed = current
            try:
                beat = self.scheduler_comm.rjq_heartbeat(token=renewed)
                answer = await asyncio.wait_for(beat, interval)
                self.job_report = answer.get("jobs")
                if renewed and answer.get("token") == "taken":
                    self._bundle_token = renewed
                elif renewed and answer.get("token") == "refused":
                    self._refused_token = renewed  # not offered again; the bundle said why
            except Exception as err:
                if await self._lost_because(err):
                    return
            await asyncio.sleep(interval)

    async def _lost_because(self, err: Exception) -> bool:
        """After a failed heartbeat: is the cluster gone? If so, say why and mark it lost."""
        if self.site.is_local:
            if self._local_proc is not None and self._local_proc.poll() is not None:
                await self._mark_lost(f"the local bundle exited ({self._local_proc.returncode})")
                return True
            return False
        assert self.scheduler_job is not None
        try:
            await self.scheduler_job.check_alive()
        except (ClusterLost, RemoteJobqueueError) as lost:
            await self._mark_lost(str(lost))
            return True
        except Exception as query_error:
            logger.warning(
                "heartbeat failed (%s) and the schedd cannot say why: %s", err, query_error
            )
        return False

    async def _mark_lost(self, reason: str) -> None:
        self.lost = reason
        logger.error("cluster %s lost: %s", self.cluster_id, reason)
        self._log(f"lost: {reason}")
        self.status = Status.failed
        if self.scheduler_job is not None and self._inputs is not None:
            self.crash_output = await self.scheduler_job.fetch_output(str(self._inputs))
        with contextlib.suppress(Exception):
            if self._watch_worker_status_comm:
                await self._watch_worker_status_comm.close()

    def _check_usable(self) -> None:
        if self.lost:
            raise ClusterLost(f"cluster {self.cluster_id} is gone: {self.lost}")
        if self.status not in (Status.running, Status.starting):
            raise RemoteJobqueueError(f"cluster {self.cluster_id} is {self.status.name}")

    def _request(self, coroutine_function, *args: Any) -> Any:
        """Run a request to the bundle: at once in sync code; in async code as a task that has
        started already, so callers that never await it (dask-labextension) still reach the
        site, and callers that do await it get its result or error."""
        if self.asynchronous:
            task = asyncio.ensure_future(coroutine_function(*args))
            task.add_done_callback(_log_failure)
            return task
        return self.sync(coroutine_function, *args)

    # Scaling --------------------------------------------------------------------------
    def _jobs_for(
        self, n: int | None, jobs: int, memory: str | int | None, cores: int | None
    ) -> int:
        spec = self.worker_spec
        if memory is not None:
            mem = parse_bytes(memory) if isinstance(memory, str) else int(memory)
            n = max(n or 0, math.ceil(mem / (spec.memory / spec.processes)))
        if cores is not None:
            n = max(n or 0, math.ceil(cores / spec.threads_per_process))
        if n is not None:
            jobs = max(jobs, math.ceil(n / spec.processes))
        return jobs

    def scale(
        self,
        n: int | None = None,
        jobs: int = 0,
        memory: str | int | None = None,
        cores: int | None = None,
    ):
        """Scale to ``n`` workers (or ``jobs`` jobs, or enough for ``memory`` / ``cores``);
        stops adaptivity, as in `distributed`."""
        self._check_usable()
        self._adaptive = None
        return self._request(self._scale_jobs, self._jobs_for(n, jobs, memory, cores))

    async def _scale_jobs(self, jobs: int) -> dict[str, Any]:
        self._check_usable()
        return await self.scheduler_comm.rjq_scale(jobs=jobs)

    def adapt(
        self,
        minimum: int | None = None,
        maximum: int | None = None,
        minimum_jobs: int | None = None,
        maximum_jobs: int | None = None,
        wait_count: int = 3,
        interval: str | float = "1s",
        target_duration: str | float = "5s",
        **kwargs: Any,
    ) -> RemoteAdaptive:
        """Adapt between the bounds, decided next to the scheduler by `distributed`'s own
        `Adaptive`; returns at once, in both modes, an object with ``.minimum``, ``.maximum``
        and ``stop()`` (awaitable in async code: it waits for the site to take the request)."""
        self._check_usable()
        processes = self.worker_spec.processes
        lo = minimum_jobs if minimum_jobs is not None else math.ceil((minimum or 0) / processes)
        hi = maximum_jobs if maximum_jobs is not None else math.ceil((maximum or 10) / processes)
        if lo > hi:
            raise ValueError(f"minimum ({lo} jobs) is larger than maximum ({hi} jobs)")
        options = {
            "wait_count": wait_count,
            "interval": interval,
            "target_duration": target_duration,
        }
        adaptive = RemoteAdaptive(self, lo * processes, hi * processes)
        self._adaptive = adaptive
        adaptive.request = self._request(self._adapt, lo, hi, options)
        return adaptive

    async def _adapt(self, lo: int, hi: int, options: dict[str, Any]) -> dict[str, Any]:
        return await self.scheduler_comm.rjq_adapt(minimum_jobs=lo, maximum_jobs=hi, **options)

    async def _adapt_stop(self) -> dict[str, Any]:
        return await self.scheduler_comm.rjq_adapt_stop()

    # A detached run -------------------------------------------------------------------
    def run_status(self) -> dict[str, Any]:
        """The run's script: ``state`` (running / done), ``returncode``, ``why`` it ended."""
        return self.sync(self.scheduler_comm.rjq_run_status)

    def run_log(self, offset: int = 0) -> dict[str, Any]:
        """The script's output from byte ``offset`` on: ``text``, and the next ``offset``."""
        return self.sync(self.scheduler_comm.rjq_run_log, offset=offset)

    def run_file(self, path: str) -> bytes:
        """A file the script wrote in its directory at the site."""
        return self.sync(self.scheduler_comm.rjq_run_file, path=path)

    def jobs(self):
        """The worker jobs the site cluster keeps: target, each worker's job and state (held
        ones with their reason), the holds seen, and why no more are submitted, if so."""
        return self.sync(self._jobs)

    async def _jobs(self) -> dict[str, Any]:
        self._check_usable()
        return await self.scheduler_comm.rjq_jobs()

    # Views ----------------------------------------------------------------------------
    @property
    def job_id(self) -> str | None:
        """The scheduler job's id (``"12.0"``), once it is submitted."""
        return self.scheduler_job.job_id if self.scheduler_job is not None else None

    @property
    def dashboard_link(self) -> str:
        """The local end of the dashboard's tunnel, formatted by ``distributed.dashboard.link``
        (so a JupyterHub user's ``{JUPYTERHUB_SERVICE_PREFIX}proxy/{port}/status`` works)."""
        from distributed.utils import format_dashboard_link

        if not self._local_dashboard:
            return ""
        host, port = self._local_dashboard.rsplit(":", 1)
        return format_dashboard_link(host, int(port))

    def __repr__(self) -> str:
        workers = self.scheduler_info.get("workers", {})
        threads = sum(w.get("nthreads", 0) for w in workers.values())
        state = self.lost or str(self.progress) if self.status != Status.running else "running"
        return (
            f"RemoteHTCondorCluster({self.cluster_id!r}, site={self.site.name!r}, "
            f"{self.scheduler_address!r}, workers={len(workers)}, threads={threads}, "
            f"status={state!r})"
        )

    def _widget(self):
        """The live notebook view (`widget.py`: site, jobs and their states, hold reasons, scale
        and adapt controls), cached as `distributed`'s is; None without ipywidgets."""
        try:
            return self._cached_widget
        except AttributeError:
            pass
        try:
            from .widget import cluster_widget
        except ImportError:  # ipywidgets comes with the lab extra
            self._cached_widget = None
            return None
        self._cached_widget = cluster_widget(self)
        return self._cached_widget

    def _repr_html_(self, cluster_status: Any = None) -> str:
        rows = {
            "Site": self.site.display_name,
            "Scheduler job": self.job_id or "-",
            "Status": self.lost or str(self.progress),
            "Lease": f"{self.lease:.0f} s",
            "Worker job": (
                f"{self.worker_spec.cores} cores, {format_bytes(self.worker_spec.memory)}, "
                f"{self.worker_spec.processes} process(es)"
            ),
        }
        rows.update(_job_rows(self.job_report))
        extra = "".join(
            f"<tr><th style='text-align:left'>{k}</th><td>{html.escape(str(v))}</td></tr>"
            for k, v in rows.items()
        )
        status_html = f"<table>{extra}</table>"
        return super()._repr_html_(cluster_status=status_html)

    # Logs -----------------------------------------------------------------------------
    async def _get_logs(self, cluster=True, scheduler=True, workers=True):
        """Dask's logs plus the bundle's own ("Bundle": worker jobs, holds, lease, tokens), and
        after a crash, the scheduler job's stdout and stderr."""
        from distributed.utils import Log

        logs = {}
        if not self.lost:  # a lost scheduler has nothing to tell; its job's output does
            logs = await super()._get_logs(cluster=cluster, scheduler=scheduler, workers=workers)
        elif cluster:
            logs["Cluster"] = Log("\n".join(line[1] for line in self._cluster_manager_logs))
        if scheduler:
            for stream, text in self.crash_output.items():
                logs[f"Scheduler job std{stream}"] = Log(text)
        if scheduler and not self.lost:
            with contextlib.suppress(Exception):
                lines = await asyncio.wait_for(self.scheduler_comm.rjq_logs(), 30)
                logs["Bundle"] = Log("\n".join(line for _level, line in lines))
        return logs

    # Listing, attaching -------------------------------------------------------------
    @classmethod
    def list(cls, site: str | None = None) -> list[ClusterInfo]:
        """Your clusters at ``site`` (default: every site), as the schedds know them."""
        from .clusters import list_clusters

        return list_clusters(site)

    @classmethod
    def from_name(
        cls,
        cluster_id: str,
        *,
        site: str | None = None,
        shutdown_on_close: bool = False,
        asynchronous: bool = False,
        loop: Any = None,
        quiet: bool = False,
        **settings: Any,
    ) -> RemoteHTCondorCluster:
        """Attach to your running cluster ``cluster_id`` (one made with
        ``shutdown_on_close=False``), from any process; `close()` then detaches again unless
        ``shutdown_on_close``, and `shutdown()` ends it. ``settings`` (``gateway``,
        ``token_file``, …) are those of the constructor."""
        found = [info for info in cls.list(site) if info.cluster_id == cluster_id]
        if not found:
            raise ClusterNotFound(
                f"no cluster {cluster_id} of yours is running"
                + (f" at {site}" if site else "")
                + ": RemoteHTCondorCluster.list() (or `remote-jobqueue clusters ls`) lists yours"
            )
        return cls(
            site=found[0].site,
            shutdown_on_close=shutdown_on_close,
            asynchronous=asynchronous,
            loop=loop,
            quiet=quiet,
            _attach=found[0],
            **settings,
        )

    def shutdown(self):
        """End the cluster at the site, whatever ``shutdown_on_close`` says."""
        self.shutdown_on_close = True
        return self.close()

    # Close ----------------------------------------------------------------------------
    async def _close(self) -> None:
        if self.status == Status.closed:
            return
        if not self.shutdown_on_close and not self.lost:
            await self._release()
            return
        # Stop watching first: the scheduler job ending now is what we asked for, not a loss.
        for task in self._tasks:
            task.cancel()
        worker_clusters: set[int] = set()
        if self.scheduler_comm is not None and not self.lost:
            with contextlib.suppress(Exception):
                jobs = await asyncio.wait_for(self.scheduler_comm.rjq_jobs(), 5)
                worker_clusters = _cluster_ids(jobs)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.scheduler_comm.rjq_close(), 10)
        await self._cleanup("cluster closed", worker_clusters)
        self.status = Status.running if self.status == Status.failed else self.status
        with contextlib.suppress(Exception):
            await super()._close()
        self.status = Status.closed

    async def _release(self) -> None:
        """Let go of the cluster and leave it running at the site (detach)."""
        for task in self._tasks:
            task.cancel()
        self._log(f"detached; it ends after {self.idle_timeout:.0f} s with no client and no work")
        self._adaptive = None  # adapting goes on at the site
        self.status = Status.running if self.status == Status.failed else self.status
        with contextlib.suppress(Exception):
            await super()._close()
        await self._close_tunnel()
        self._remove_inputs()
        self.status = Status.closed

    async def _close_tunnel(self) -> None:
        if self._tunnel is not None:
            with contextlib.suppress(Exception):
                await self._tunnel.close()
            self._tunnel = None

    async def _cleanup(self, reason: str, worker_clusters: set[int] = frozenset()) -> None:
        """Remove every job of the cluster, stop the tunnel and local processes, delete inputs."""
        if self.scheduler_job is not None:
            await self.scheduler_job.remove(reason, worker_clusters)
        await self._close_tunnel()
        if self._local_port is not None:
            await self._local_port.close()
            self._local_port = None
        if self._local_proc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.to_thread(self._local_proc.wait), 15)
            if self._local_proc.poll() is None:
                import signal

                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._local_proc.pid, signal.SIGKILL)
        self._remove_inputs()


def _cluster_ids(jobs: dict[str, Any]) -> set[int]:
    """The ClusterIds of the worker jobs the bundle reported (``"12.0"``; not "resident")."""
    ids = set()
    for entry in jobs.get("jobs", {}).values():
        job = str(entry.get("job") or "")
        if job[:1].isdigit():
            ids.add(int(job.split(".")[0]))
    return ids


def _job_rows(report: dict[str, Any] | None) -> dict[str, str]:
    """The notebook view's lines about worker jobs: states counted, holds with their reasons."""
    if not report:
        return {}
    states: dict[str, int] = {}
    for entry in report.get("jobs", {}).values():
        states[entry["state"]] = states.get(entry["state"], 0) + 1
    rows = {"Worker jobs": ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "0"}
    for hold in report.get("holds", [])[-3:]:
        rows[f"Held {hold['job']}"] = hold["reason"]
    if report.get("stopped"):
        rows["Not replacing"] = report["stopped"]
    return rows


def _log_failure(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("request to the cluster failed: %s", task.exception())
