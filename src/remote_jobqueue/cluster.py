"""`RemoteHTCondorCluster`: a Dask cluster whose scheduler runs as a job at a remote site.

The client submits one job (the bundle) to the site's schedd, watches it until it runs, then
reaches its scheduler and dashboard through the SSH gateway. Scaling is a message to the bundle's
site agent, which submits worker jobs at the same site. Parameter names follow
`dask_jobqueue.HTCondorCluster` where they mean the same thing.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from typing import Any

from dask.utils import format_bytes, parse_bytes
from distributed import Security
from distributed.core import Status, rpc
from distributed.deploy.cluster import Cluster

from . import config, sites
from .errors import (
    ClusterLost,
    GatewayError,
    ImpossibleResources,
    RemoteJobqueueError,
    SchedulerJobHeld,
    StartTimeout,
)
from .progress import StartProgress
from .spec import (
    DASHBOARD_PORT,
    SCHEDULER_PORT,
    TLS_CERT,
    TLS_KEY,
    BundleSpec,
    WorkerSpec,
    condor_arguments,
)

logger = logging.getLogger("remote_jobqueue")
#: HTCondor starts jobs without PATH; whatever runs a tool by name needs one (ROOT's C++
#: interpreter asks ``c++`` where the system headers are, or fails to JIT in every job).
JOB_PATH = "/usr/local/bin:/usr/bin:/bin"

BUNDLE_INPUTS = ("bundle.json", "condor-token", "bearer-token", "condor-ca.pem")
#: What the scheduler itself asks for (a resident worker's share comes on top).
SCHEDULER_MEMORY_MB = 1024
SCHEDULER_DISK_KB = 2**20


class RemoteAdaptive:
    """What `adapt` returns: the bounds, as dask-labextension reads them, and `stop()`."""

    def __init__(self, cluster: RemoteHTCondorCluster, minimum: int, maximum: int) -> None:
        self.cluster, self.minimum, self.maximum = cluster, minimum, maximum

    def stop(self) -> None:
        self.cluster._adaptive = None


class RemoteHTCondorCluster(Cluster):
    """A Dask cluster at an HTCondor site, reached through an SSH gateway.

    Parameters mirror `dask_jobqueue.HTCondorCluster` (``cores``, ``memory``, ``disk``,
    ``processes``, ``job_extra_directives``, ``worker_extra_args``, ``scheduler_options``,
    ``python``, ``name``), plus ``site`` (a catalogue name, ``"random"`` or ``"local"``),
    ``image``, ``gateway`` and ``lease``. Defaults come from Dask config ``remote-jobqueue.*``.
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
        condor_token_dir: str | os.PathLike | None = None,
        start_timeout: float | None = None,
        idle_grace: float | None = None,
        asynchronous: bool = False,
        loop: Any = None,
        quiet: bool = False,
    ) -> None:
        # Everything that can be checked without the network fails here, at once.
        self.site = sites.resolve(site)
        self.cluster_id = f"rjq-{secrets.token_hex(6)}"
        extra = dict(config.get("job-extra-directives", job_extra_directives) or {})
        self.image = config.get("image", image) or self.site.image
        if self.image:
            extra.setdefault("container_image", self.image)
        # Scheduler and workers at a site talk TLS with a certificate made for this cluster:
        # anyone at the site can reach the scheduler's port, only this cluster holds the key.
        self.tls = bool(config.get("tls", tls)) and not self.site.is_local
        self.security = Security.temporary() if self.tls else Security()
        self.worker_spec = WorkerSpec.build(
            cores=config.get("cores", cores),
            memory=config.get("memory", memory),
            processes=config.get("processes", processes),
            disk=config.get("disk", disk),
            python=config.get("python", python) or sys.executable,
            worker_extra_args=tuple(config.get("worker-extra-args", worker_extra_args) or ()),
            job_extra_directives=extra,
            requirements=self.site.requirements,
            # Local processes keep the caller's PATH.
            environment={
                **self._data_environment(),
                **({} if self.site.is_local else {"PATH": JOB_PATH}),
            },
            tls=self.tls,
        )
        self.scheduler_options = dict(config.get("scheduler-options", scheduler_options) or {})
        self.gateway = config.get("gateway", gateway) or self.site.gateway
        self.gateway_host_key = (
            config.get("gateway-host-key", gateway_host_key) or self.site.gateway_host_key
        )
        self.lease = float(config.get("lease", lease))
        self.start_timeout = float(config.get("start-timeout", start_timeout))
        self.idle_grace = float(config.get("idle-grace", idle_grace))
        self.n_workers = n_workers
        self.resident_worker = bool(config.get("resident-worker", resident_worker)) and (
            not self.site.is_local
        )
        self.token_file = config.get("token-file", token_file)
        self.condor_token_dir = config.get("condor-token-dir", condor_token_dir)
        if not self.site.is_local and not self.gateway:
            raise RemoteJobqueueError(
                f"site {self.site.name} has no gateway configured: set remote-jobqueue.gateway "
                "or the site's gateway in the site catalogue"
            )
        self.progress = StartProgress(f"cluster {self.cluster_id} at {self.site.name}", quiet)
        self.job_id: str | None = None
        self.lost: str | None = None
        self._tunnel = None
        self._local_proc: subprocess.Popen | None = None
        self._inputs: Path | None = None
        self._tasks: list[asyncio.Task] = []
        self._adaptive_bounds: RemoteAdaptive | None = None
        self._local_dashboard: str | None = None
        self._bundle_token: str | None = None  # the bearer token the bundle holds
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
    def _data_environment(self) -> dict[str, str]:
        """XRootD settings for jobs: the site's nearest cache (see `remote_jobqueue.data`).

        Only the cache's URL travels; each job writes its own plugin conf at the site.
        """
        from .data import job_environment

        env = job_environment(self.site.cache) if self.site.cache else {}
        for key in ("RJQ_XROOTD_ORIGIN",):
            if key in os.environ:
                env[key] = os.environ[key]
        return env

    def bundle_spec(self) -> BundleSpec:
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
        )

    def scheduler_job_description(self) -> dict[str, str]:
        desc = {
            "universe": "vanilla",
            "executable": self.worker_spec.python,
            "transfer_executable": "false",
            "arguments": condor_arguments(["-m", "remote_jobqueue.bundle", "bundle.json"]),
            "transfer_input_files": ",".join(
                BUNDLE_INPUTS + ((TLS_CERT, TLS_KEY) if self.tls else ())
            ),
            **self._scheduler_job_resources(),
            "output": "scheduler.out",
            "error": "scheduler.err",
            "should_transfer_files": "YES",
            "when_to_transfer_output": "ON_EXIT_OR_EVICT",
            "+RjqClusterId": json.dumps(self.cluster_id),
            "+RjqRole": '"scheduler"',
            "+RjqSite": json.dumps(self.site.name),
            # Spooled jobs would wait in the queue for their output to be fetched: don't.
            "leave_in_queue": "false",
            "job_machine_attrs": "SiteName",
        }
        if self.site.requirements:
            desc["requirements"] = self.site.requirements
        if self.worker_spec.environment:
            from .spec import condor_environment

            desc["environment"] = condor_environment(self.worker_spec.environment)
        desc.update({k: str(v) for k, v in self.worker_spec.job_extra_directives.items()})
        return desc

    def _scheduler_job_resources(self) -> dict[str, str]:
        """One core and 1 GiB for the scheduler; with a resident worker, that worker's share too."""
        cpus, memory_mb, disk_kb = 1, SCHEDULER_MEMORY_MB, SCHEDULER_DISK_KB
        if self.resident_worker:
            spec = self.worker_spec
            cpus = spec.cores
            memory_mb += spec.memory_mb
            disk_kb += math.ceil(spec.disk / 1024)
        return {
            "request_cpus": str(cpus),
            "request_memory": str(memory_mb),
            "request_disk": str(disk_kb),
        }

    def job_script(self) -> str:
        """The submit descriptions of the scheduler job and of a worker job, for reading."""
        sched = self.scheduler_job_description()
        worker = self.worker_spec.submit_description("<scheduler address>", self.cluster_id)
        lines = ["# scheduler job (the bundle)"]
        lines += [f"{k} = {v}" for k, v in sched.items()] + ["queue", "", "# worker job"]
        lines += [f"{k} = {v}" for k, v in worker.items()] + ["queue"]
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
            if self.site.is_local:
                address = await self._start_local()
            else:
                address = await self._start_remote()
            self.scheduler_comm = rpc(address, connection_args=self._connection_args)
            await super()._start()
        except BaseException as err:
            self.progress.update("failed", str(err)[:200])
            self.progress.done()
            await self._cleanup(f"start failed: {err}")
            self.status = Status.failed
            raise
        self.progress.update("running", self.scheduler_address)
        self.progress.done()
        self._tasks.append(asyncio.create_task(self._heartbeat()))
        if not self.site.is_local:
            self._tasks.append(asyncio.create_task(self._watch_scheduler_job()))

    def _write_inputs(self, bearer: str | None) -> Path:
        from .tokens import write_private_file

        inputs = Path(tempfile.mkdtemp(prefix=f"{self.cluster_id}-"))
        inputs.chmod(0o700)
        (inputs / "bundle.json").write_text(self.bundle_spec().to_json())
        condor_token = self._condor_token()
        write_private_file(inputs / "condor-token", condor_token or "")
        write_private_file(inputs / "bearer-token", bearer or "")
        (inputs / "condor-ca.pem").write_text(self._condor_ca())
        if self.tls:
            (inputs / TLS_CERT).write_text(self.security.tls_scheduler_cert)
            write_private_file(inputs / TLS_KEY, self.security.tls_scheduler_key)
        self._inputs = inputs
        return inputs

    def _condor_token(self) -> str | None:
        import htcondor2

        directory = self.condor_token_dir or htcondor2.param.get("SEC_TOKEN_DIRECTORY")
        if not directory or not Path(directory).is_dir():
            return None
        for path in sorted(Path(directory).iterdir()):
            with contextlib.suppress(OSError):
                text = path.read_text().strip()
                if text:
                    return text
        return None

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
        from .tokens import discover_bearer_token

        if self.token_file:
            token = Path(self.token_file).read_text().strip()
        else:
            token = discover_bearer_token()
        if not token:
            raise GatewayError(
                "no bearer token for the gateway: set BEARER_TOKEN_FILE (WLCG discovery) or "
                "remote-jobqueue.token-file"
            )
        return token

    async def _check_resources(self, schedd_module) -> None:
        import htcondor2

        def query() -> list:
            coll = htcondor2.Collector(self.site.collector) if self.site.collector else None
            coll = coll or htcondor2.Collector()
            return coll.query(
                htcondor2.AdTypes.Startd,
                # In a collector query the machine ad is MY, not TARGET.
                constraint=(self.site.requirements or "true").replace("TARGET.", "MY."),
                projection=["TotalSlotCpus", "TotalSlotMemory", "Cpus", "Memory", "SiteName"],
            )

        try:
            ads = await asyncio.to_thread(query)
        except Exception as err:
            raise schedd_module.ScheddUnreachable(
                f"cannot reach the collector of site {self.site.name} at {self.site.collector}: "
                f"{err}"
            ) from err
        if not ads:
            return  # the site may be joining; the idle watch will say so
        max_cpus = max(int(ad.get("TotalSlotCpus", ad.get("Cpus", 0))) for ad in ads)
        max_mem = max(int(ad.get("TotalSlotMemory", ad.get("Memory", 0))) for ad in ads)
        spec = self.worker_spec
        sched_mem = int(self._scheduler_job_resources()["request_memory"])
        largest = f"the largest has {max_cpus} cores and {format_bytes(max_mem * 2**20)}"
        if spec.cores > max_cpus or spec.memory_mb > max_mem:
            raise ImpossibleResources(
                f"no machine at site {self.site.name} can run a worker job of {spec.cores} cores "
                f"and {format_bytes(spec.memory)}: {largest}. Ask for less per job and scale out "
                "instead."
            )
        if sched_mem > max_mem:
            raise ImpossibleResources(
                f"no machine at site {self.site.name} can run the scheduler job with its resident "
                f"worker ({format_bytes(sched_mem * 2**20)}): {largest}. Ask for less memory "
                "per job, or pass resident_worker=False."
            )

    async def _start_remote(self) -> str:
        from . import schedd as sched

        self.progress.update("checking the site")
        bearer = self._bearer_token()
        self._bundle_token = bearer
        await self._check_resources(sched)
        schedd = await asyncio.to_thread(sched.locate, self.site.collector, self.site.schedd)
        self._schedd = schedd
        inputs = self._write_inputs(bearer)
        desc = self.scheduler_job_description()
        desc["initialdir"] = str(inputs)
        self.progress.update("submitting the scheduler job")
        cluster = await asyncio.to_thread(sched.submit, schedd, desc)
        self.job_id = f"{cluster}.0"
        self._log(f"submitted scheduler job {self.job_id} to {self.site.name}")
        deadline = time.monotonic() + self.start_timeout
        await self._wait_running(schedd, cluster, deadline)
        return await self._open_tunnel(bearer, deadline)

    async def _wait_running(self, schedd, cluster: int, deadline: float) -> None:
        from . import schedd as sched

        idle_since = time.monotonic()
        while True:
            ads = await asyncio.to_thread(
                sched.job_ads,
                schedd,
                f"ClusterId == {cluster}",
                ["LastRejMatchReason", "NumJobMatches", "RemoteHost"],
            )
            if not ads:
                raise ClusterLost(f"the scheduler job {self.job_id} left the queue before running")
            ad = ads[0]
            status = ad["JobStatus"]
            if (
                status == sched.JobStatus.HELD
                and ad.get("HoldReasonCode") != sched.SPOOLING_HOLD_CODE
            ):
                raise SchedulerJobHeld(self.job_id, ad.get("HoldReason", "unknown reason"))
            if status in (sched.JobStatus.REMOVED, sched.JobStatus.COMPLETED):
                raise ClusterLost(
                    f"the scheduler job {self.job_id} ended before the cluster started"
                )
            if status == sched.JobStatus.RUNNING:
                self.progress.update("running", f"scheduler job {self.job_id}")
                return
            reason = ad.get("LastRejMatchReason")
            if status == sched.JobStatus.IDLE:
                why = reason or "waiting for a match"
                self.progress.update("idle", why)
                if reason and time.monotonic() - idle_since > self.idle_grace:
                    raise StartTimeout(
                        f"the scheduler job {self.job_id} cannot start at {self.site.name}: "
                        f"{reason} (after {self.idle_grace:.0f} s idle)"
                    )
            if time.monotonic() > deadline:
                raise StartTimeout(
                    f"the scheduler job {self.job_id} did not start within "
                    f"{self.start_timeout:.0f} s; last state: {self.progress}"
                )
            await asyncio.sleep(0.25)

    async def _open_tunnel(self, bearer: str, deadline: float) -> str:
        from .gateway.tunnel import Tunnel

        self.progress.update("connecting through the gateway", self.gateway)
        token_source = self._bearer_token
        self._tunnel = Tunnel(
            gateway=self.gateway,
            known_host_key=self.gateway_host_key,
            token_source=token_source,
            cluster_id=self.cluster_id,
            services=(SCHEDULER_PORT, DASHBOARD_PORT),
        )
        try:
            await self._tunnel.start()
        except Exception as err:
            raise GatewayError(f"cannot open the tunnel through {self.gateway}: {err}") from err
        scheme = "tls" if self.tls else "tcp"
        address = f"{scheme}://{self._tunnel.local_address(SCHEDULER_PORT)}"
        self._local_dashboard = self._tunnel.local_address(DASHBOARD_PORT)
        self.progress.update("waiting for the scheduler to dial the gateway")
        last_error: Exception | None = None
        while True:
            try:
                async with rpc(address, timeout=5, connection_args=self._connection_args) as probe:
                    await asyncio.wait_for(probe.identity(), 10)
                    self.progress.update("tunnel up", address)
                    return address
            except (OSError, TimeoutError) as err:
                last_error = err
            await self._check_job_alive()
            if time.monotonic() > deadline:
                raise StartTimeout(
                    f"the scheduler job {self.job_id} runs but its scheduler did not reach the "
                    f"gateway {self.gateway} within {self.start_timeout:.0f} s (last error: "
                    f"{last_error}); see the job's scheduler.err"
                )
            await asyncio.sleep(0.1)

    async def _check_job_alive(self) -> None:
        from . import schedd as sched

        ads = await asyncio.to_thread(
            sched.job_ads,
            self._schedd,
            f'RjqClusterId == "{self.cluster_id}" && RjqRole == "scheduler"',
        )
        if not ads or ads[0]["JobStatus"] in (sched.JobStatus.REMOVED, sched.JobStatus.COMPLETED):
            raise ClusterLost(f"the scheduler job {self.job_id} is gone")
        if ads[0]["JobStatus"] == sched.JobStatus.HELD:
            raise SchedulerJobHeld(self.job_id, ads[0].get("HoldReason", "?"))

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
                str(inputs / "bundle.json"),
                "--local",
                "--address-file",
                str(address_file),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
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
        if info.get("dashboard_port"):
            self._local_dashboard = f"127.0.0.1:{info['dashboard_port']}"
        return info["scheduler"]

    # Running --------------------------------------------------------------------------
    async def _heartbeat(self) -> None:
        """Keep the lease, and hand the bundle our bearer token whenever it was renewed here
        (by the spawner's refresher, say), so the bundle can still reach the gateway and the
        schedd after the token it started with has expired."""
        interval = max(1.0, self.lease / 4)
        while self.status == Status.running:
            renewed = None
            if not self.site.is_local:
                with contextlib.suppress(Exception):
                    current = await asyncio.to_thread(self._bearer_token)
                    renewed = current if current != self._bundle_token else None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.scheduler_comm.rjq_heartbeat(token=renewed), interval)
                if renewed:
                    self._bundle_token = renewed
            await asyncio.sleep(interval)

    async def _watch_scheduler_job(self) -> None:
        from . import schedd as sched

        while self.status == Status.running:
            await asyncio.sleep(2)
            try:
                ads = await asyncio.to_thread(
                    sched.job_ads,
                    self._schedd,
                    f"ClusterId == {self.job_id.split('.')[0]}",
                    ["RemoveReason"],
                )
            except Exception:
                continue
            ad = ads[0] if ads else None
            if ad is None or ad["JobStatus"] in (
                sched.JobStatus.REMOVED,
                sched.JobStatus.COMPLETED,
            ):
                why = (ad or {}).get("RemoveReason") or "it left the queue"
                await self._mark_lost(f"the scheduler job {self.job_id} ended: {why}")
                return
            if ad["JobStatus"] == sched.JobStatus.HELD:
                await self._mark_lost(
                    f"the scheduler job {self.job_id} was held: {ad.get('HoldReason', '?')}"
                )
                return

    async def _mark_lost(self, reason: str) -> None:
        self.lost = reason
        logger.error("cluster %s lost: %s", self.cluster_id, reason)
        self._log(f"lost: {reason}")
        self.status = Status.failed
        with contextlib.suppress(Exception):
            if self._watch_worker_status_comm:
                await self._watch_worker_status_comm.close()

    def _check_usable(self) -> None:
        if self.lost:
            raise ClusterLost(f"cluster {self.cluster_id} is gone: {self.lost}")
        if self.status not in (Status.running, Status.starting):
            raise RemoteJobqueueError(f"cluster {self.cluster_id} is {self.status.name}")

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
        """Scale to ``n`` workers (or ``jobs`` jobs, or enough for ``memory`` / ``cores``)."""
        self._check_usable()
        self._adaptive_bounds = None
        return self.sync(self._scale_jobs, self._jobs_for(n, jobs, memory, cores))

    async def _scale_jobs(self, jobs: int) -> None:
        self._check_usable()
        await self.scheduler_comm.rjq_scale(jobs=jobs)

    def adapt(
        self,
        minimum: int | None = None,
        maximum: int | None = None,
        minimum_jobs: int | None = None,
        maximum_jobs: int | None = None,
        wait_count: int = 3,
        **kwargs: Any,
    ) -> RemoteAdaptive:
        """Let the bundle's agent keep between the bounds, decided next to the scheduler."""
        self._check_usable()
        processes = self.worker_spec.processes
        lo = minimum_jobs if minimum_jobs is not None else math.ceil((minimum or 0) / processes)
        hi = maximum_jobs if maximum_jobs is not None else math.ceil((maximum or 10) / processes)
        if lo > hi:
            raise ValueError(f"minimum ({lo} jobs) is larger than maximum ({hi} jobs)")
        self._adaptive_bounds = RemoteAdaptive(self, lo * processes, hi * processes)
        result = self.sync(self._adapt, lo, hi, wait_count)
        if self.asynchronous:

            async def _():
                await result
                return self._adaptive_bounds

            return _()
        return self._adaptive_bounds

    async def _adapt(self, lo: int, hi: int, wait_count: int) -> None:
        await self.scheduler_comm.rjq_adapt(minimum_jobs=lo, maximum_jobs=hi, wait_count=wait_count)

    def jobs(self):
        """The worker jobs the bundle's agent keeps, with their states."""
        return self.sync(self._jobs)

    async def _jobs(self) -> dict[str, Any]:
        self._check_usable()
        return await self.scheduler_comm.rjq_jobs()

    # Views ----------------------------------------------------------------------------
    @property
    def dashboard_link(self) -> str:
        if not self._local_dashboard:
            return ""
        return f"http://{self._local_dashboard}/status"

    def __repr__(self) -> str:
        workers = self.scheduler_info.get("workers", {})
        threads = sum(w.get("nthreads", 0) for w in workers.values())
        state = self.lost or str(self.progress) if self.status != Status.running else "running"
        return (
            f"RemoteHTCondorCluster({self.cluster_id!r}, site={self.site.name!r}, "
            f"{self.scheduler_address!r}, workers={len(workers)}, threads={threads}, "
            f"status={state!r})"
        )

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
        extra = "".join(
            f"<tr><th style='text-align:left'>{k}</th><td>{v}</td></tr>" for k, v in rows.items()
        )
        status_html = f"<table>{extra}</table>"
        return super()._repr_html_(cluster_status=status_html)

    # Logs -----------------------------------------------------------------------------
    async def _get_logs(self, cluster=True, scheduler=True, workers=True):
        """Dask's logs plus the bundle's own ("Bundle": worker jobs, lease, tokens)."""
        from distributed.utils import Log

        logs = await super()._get_logs(cluster=cluster, scheduler=scheduler, workers=workers)
        if scheduler and not self.lost:
            with contextlib.suppress(Exception):
                lines = await asyncio.wait_for(self.scheduler_comm.rjq_logs(), 30)
                logs["Bundle"] = Log("\n".join(line for _level, line in lines))
        return logs

    # Close ----------------------------------------------------------------------------
    async def _close(self) -> None:
        if self.status == Status.closed:
            return
        # Stop watching first: the scheduler job ending now is what we asked for, not a loss.
        for task in self._tasks:
            task.cancel()
        if self.scheduler_comm is not None and not self.lost:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.scheduler_comm.rjq_close(), 10)
        await self._cleanup("cluster closed")
        self.status = Status.running if self.status == Status.failed else self.status
        with contextlib.suppress(Exception):
            await super()._close()
        self.status = Status.closed

    async def _cleanup(self, reason: str) -> None:
        """Remove every job of the cluster, stop the tunnel and local processes, delete inputs."""
        if not self.site.is_local and getattr(self, "_schedd", None) is not None:
            from . import schedd as sched

            constraint = f'RjqClusterId == "{self.cluster_id}"'
            with contextlib.suppress(Exception):
                await asyncio.to_thread(sched.remove, self._schedd, constraint, reason)
            await self._wait_queue_empty(constraint)
        if self._tunnel is not None:
            with contextlib.suppress(Exception):
                await self._tunnel.close()
            self._tunnel = None
        if self._local_proc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.to_thread(self._local_proc.wait), 15)
            if self._local_proc.poll() is None:
                import signal

                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._local_proc.pid, signal.SIGKILL)
        if self._inputs is not None:
            shutil.rmtree(self._inputs, ignore_errors=True)
            self._inputs = None

    async def _wait_queue_empty(self, constraint: str, timeout: float = 30) -> None:
        from . import schedd as sched

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                ads = await asyncio.to_thread(sched.job_ads, self._schedd, constraint)
            except Exception:
                return
            if not ads:
                return
            await asyncio.sleep(0.5)
        logger.warning("jobs of %s still in the queue after %.0f s", self.cluster_id, timeout)
