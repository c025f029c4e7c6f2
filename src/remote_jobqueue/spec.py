"""What a cluster is made of, as plain data: the worker job template and the bundle's spec.

The client builds a :class:`BundleSpec` and ships it to the site as a JSON input file (never a
token in it); the bundle builds worker jobs from its :class:`WorkerSpec`. Both submit
descriptions come from one function (`job_description`), and the names of the files and
logical ports that client, bundle and gateway agree on live here, so `job_script()`, the
scheduler job and the worker jobs cannot drift apart.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from dask.utils import format_bytes, parse_bytes

from .data import JOB_TOKEN_FILE, PRELOAD_VARIABLES
from .errors import ImpossibleResources

#: The cluster's TLS certificate and key (one pair for every role, as `Security.temporary`
#: makes it), in the scratch directory of the scheduler job and of every worker job.
TLS_CERT = "tls-cert.pem"
TLS_KEY = "tls-key.pem"
#: The scheduler job's other input files: its spec (no secrets); the user's bearer token, the
#: only credential it gets (short-lived, renewed by the client): to dial the gateway, and as a
#: SciToken to submit worker jobs; the cluster's secret (its claim at the gateway); the
#: schedd's CA (SciTokens run over SSL). No HTCondor IDTOKEN travels: they rarely expire.
BUNDLE_SPEC = "bundle.json"
BEARER_TOKEN = JOB_TOKEN_FILE
CLUSTER_SECRET = "cluster-secret"
CONDOR_CA = "condor-ca.pem"
BUNDLE_INPUTS = (BUNDLE_SPEC, BEARER_TOKEN, CLUSTER_SECRET, CONDOR_CA)
#: A detached run's refresh token (see `run_token.py`), spooled only when the run has one.
RUN_REFRESH_TOKEN = "run-refresh-token"
#: The inputs that are secrets: 0600, and gone from the client's side once submitted.
SECRET_INPUTS = (BEARER_TOKEN, CLUSTER_SECRET, TLS_KEY, RUN_REFRESH_TOKEN)

#: Logical ports the bundle forwards through the gateway. A detachable cluster's bundle also
#: hands its TLS pair to its owner (the gateway lets no one else open the port), so that a new
#: process, anywhere, can attach to it (see `bundle/credentials.py`).
SCHEDULER_PORT = 8786
DASHBOARD_PORT = 8787
CREDENTIALS_PORT = 8788

#: HTCondor starts jobs without PATH; whatever runs a tool by name needs one (ROOT's C++
#: interpreter asks ``c++`` where the system headers are, or fails to JIT in every job).
JOB_PATH = "/usr/local/bin:/usr/bin:/bin"
#: What the scheduler itself asks for (a resident worker's share comes on top).
SCHEDULER_MEMORY_MB = 1024
SCHEDULER_DISK_KB = 2**20
#: A scheduler job that ended badly stays in the queue (its output in the spool) for 10
#: minutes, until the client has fetched its stdout and stderr; one that ended well leaves.
KEEP_CRASHED = (
    "JobStatus == 4 && (ExitBySignal =?= true || ExitCode =!= 0) && (time() - CompletionDate) < 600"
)
#: The submit variable that carries each worker job's Dask name (one item per job).
WORKER_NAME_VARIABLE = "WorkerName"


@dataclass(frozen=True)
class WorkerSpec:
    """One worker *job*: ``processes`` Dask workers sharing ``cores`` and ``memory``."""

    cores: int = 1
    memory: int = 2 * 2**30
    processes: int = 1
    disk: int = 2**30
    python: str = sys.executable
    worker_extra_args: tuple[str, ...] = ()
    job_extra_directives: dict[str, str] = field(default_factory=dict)
    requirements: str | None = None
    environment: dict[str, str] = field(default_factory=dict)
    death_timeout: int = 60
    tls: bool = False

    @classmethod
    def build(
        cls,
        cores: int,
        memory: str | int,
        processes: int | None,
        disk: str | int,
        **kwargs: Any,
    ) -> WorkerSpec:
        try:
            mem = parse_bytes(memory) if isinstance(memory, str) else int(memory)
            dsk = parse_bytes(disk) if isinstance(disk, str) else int(disk)
        except ValueError as err:
            raise ImpossibleResources(
                f"cannot read a size from {memory!r} / {disk!r}: {err}"
            ) from err
        processes = processes or 1
        if int(cores) < 1:
            raise ImpossibleResources(f"cores must be at least 1, not {cores}")
        if mem < 64 * 2**20:
            raise ImpossibleResources(f"memory {format_bytes(mem)} is too small for a Dask worker")
        if processes < 1 or processes > int(cores):
            raise ImpossibleResources(
                f"processes must be between 1 and cores ({cores}), not {processes}"
            )
        return cls(cores=int(cores), memory=mem, processes=processes, disk=dsk, **kwargs)

    @property
    def threads_per_process(self) -> int:
        return max(1, self.cores // self.processes)

    @property
    def memory_mb(self) -> int:
        return math.ceil(self.memory / 2**20)

    def worker_args(self, scheduler_address: str, name: str) -> list[str]:
        args = [
            "-m",
            "distributed.cli.dask_worker",
            scheduler_address,
            "--name",
            name,
            "--nthreads",
            str(self.threads_per_process),
            "--memory-limit",
            str(self.memory // self.processes),
            "--death-timeout",
            str(self.death_timeout),
            "--no-dashboard",
        ]
        if self.processes > 1:
            args += ["--nworkers", str(self.processes)]
        if self.tls:
            args += ["--tls-ca-file", TLS_CERT, "--tls-cert", TLS_CERT, "--tls-key", TLS_KEY]
        if any(name in self.environment for name in PRELOAD_VARIABLES):
            # Before any task runs, point the worker's XRootD client at the site's cache, the
            # storage's CA and the job's token.
            args += ["--preload", "remote_jobqueue.data"]
        return [*args, *self.worker_extra_args]

    def submit_description(
        self, scheduler_address: str, cluster_id: str, *, token: bool = False
    ) -> dict[str, str]:
        """Worker jobs' submit description; each job's name comes as item data. With
        ``token``, each job gets the scheduler job's bearer token as an input file (a
        ``BEARER_TOKEN_FILE`` for token-protected reads), the copy of the moment it is submitted
        (each worker then follows the scheduler's renewals: `data.follow_scheduler_token`)."""
        return job_description(
            role="worker",
            cluster_id=cluster_id,
            argv=self.worker_args(scheduler_address, f"$({WORKER_NAME_VARIABLE})"),
            resources=(self.cores, self.memory_mb, math.ceil(self.disk / 1024)),
            inputs=((TLS_CERT, TLS_KEY) if self.tls else ()) + ((BEARER_TOKEN,) if token else ()),
            output_stem="worker-$(ClusterId).$(ProcId)",
            worker=self,
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["worker_extra_args"] = list(self.worker_extra_args)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorkerSpec:
        return cls(**{**data, "worker_extra_args": tuple(data.get("worker_extra_args", ()))})


@dataclass(frozen=True)
class BundleSpec:
    """Everything the bundle needs at the site; shipped as ``bundle.json`` (no secrets)."""

    cluster_id: str
    site: str
    worker: WorkerSpec
    collector: str | None = None
    schedd: str | None = None
    gateway: str | None = None
    gateway_host_key: str | None = None
    lease: float = 120.0
    scheduler_options: dict[str, Any] = field(default_factory=dict)
    n_workers: int = 0
    resident_worker: bool = False
    #: Seconds between the bundle's status queries of its worker jobs at steady state.
    poll_interval: float = 10.0
    #: Consecutive failed worker jobs (held, or gone before their worker joined) after which
    #: no replacement is submitted.
    worker_failure_limit: int = 3
    #: A detachable cluster (``shutdown_on_close=False``) outlives its client: it ends after
    #: this many seconds with no client and no work instead of when the lease runs out.
    idle_timeout: float | None = None
    #: For ``site="random"``: every site the job may land at, name → the requirements and the
    #: environment (nearest cache) its workers get once the bundle knows where it runs.
    candidates: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: A detached run's driver (`remote-jobqueue run`): ``script`` (an input file), ``args``,
    #: ``wall_time`` and ``linger`` (seconds the cluster stays after it, for its output).
    driver: dict[str, Any] | None = None
    #: Where a run's refresh token renews its bearer token: ``issuer`` and ``client_id``
    #: (the token itself is the input file `RUN_REFRESH_TOKEN`, never here).
    renewal: dict[str, str] | None = None

    def scheduler_resources(self) -> tuple[int, int, int]:
        """(cpus, memory MB, disk KB): one core and 1 GiB, plus a resident worker's share."""
        if not self.resident_worker:
            return 1, SCHEDULER_MEMORY_MB, SCHEDULER_DISK_KB
        worker = self.worker
        disk_kb = SCHEDULER_DISK_KB + math.ceil(worker.disk / 1024)
        return worker.cores, SCHEDULER_MEMORY_MB + worker.memory_mb, disk_kb

    def submit_description(self) -> dict[str, str]:
        """The scheduler job's submit description (the bundle)."""
        desc = job_description(
            role="scheduler",
            cluster_id=self.cluster_id,
            argv=["-m", "remote_jobqueue.bundle", BUNDLE_SPEC],
            resources=self.scheduler_resources(),
            inputs=BUNDLE_INPUTS
            + ((TLS_CERT, TLS_KEY) if self.worker.tls else ())
            + ((self.driver["script"],) if self.driver else ())
            + ((RUN_REFRESH_TOKEN,) if self.renewal else ()),
            output_stem="scheduler",
            worker=self.worker,
        )
        # A crashed bundle's stdout and stderr stay in the queue a while, for
        # `cluster.get_logs()`; nothing else of its scratch directory comes back (its token).
        desc["transfer_output_files"] = BUNDLE_SPEC
        desc["leave_in_queue"] = KEEP_CRASHED
        return {**desc, "+RjqSite": json.dumps(self.site)}

    def to_json(self) -> str:
        data = asdict(self)
        data["worker"] = self.worker.to_json()
        return json.dumps(data, indent=2)

    @classmethod
    def from_json(cls, text: str) -> BundleSpec:
        data = json.loads(text)
        data["worker"] = WorkerSpec.from_json(data["worker"])
        return cls(**data)


def job_description(
    *,
    role: str,
    cluster_id: str,
    argv: list[str],
    resources: tuple[int, int, int],
    inputs: tuple[str, ...],
    output_stem: str,
    worker: WorkerSpec,
) -> dict[str, str]:
    """A job of the cluster, scheduler or worker: ``worker``'s Python, site, environment and
    extra directives; ``resources`` is (cpus, memory MB, disk KB)."""
    cpus, memory_mb, disk_kb = resources
    desc = {
        "universe": "vanilla",
        "executable": worker.python,
        "transfer_executable": "false",
        "arguments": condor_arguments(argv),
        "request_cpus": str(cpus),
        "request_memory": str(memory_mb),
        "request_disk": str(disk_kb),
        "output": f"{output_stem}.out",
        "error": f"{output_stem}.err",
        "should_transfer_files": "YES",
        "when_to_transfer_output": "ON_EXIT_OR_EVICT",
        # Tags for people and the CLI; we track our jobs by the ClusterIds we got, never these.
        "+RjqClusterId": json.dumps(cluster_id),
        "+RjqRole": json.dumps(role),
        # Spooled jobs would wait in the queue for their output to be fetched: don't.
        "leave_in_queue": "false",
        "job_machine_attrs": "SiteName",
    }
    if inputs:
        desc["transfer_input_files"] = ",".join(inputs)
    if worker.requirements:
        desc["requirements"] = worker.requirements
    if worker.environment:
        desc["environment"] = condor_environment(worker.environment)
    desc.update({k: str(v) for k, v in worker.job_extra_directives.items()})
    return desc


def condor_arguments(argv: list[str]) -> str:
    """HTCondor's "new" argument syntax: double-quoted, single quotes around each argument."""
    parts = []
    for arg in argv:
        escaped = arg.replace('"', '""').replace("'", "''")
        parts.append(f"'{escaped}'" if any(c in arg for c in " \t'\"") or not arg else escaped)
    return '"' + " ".join(parts) + '"'


def condor_environment(env: dict[str, str]) -> str:
    """HTCondor's "new" environment syntax."""
    parts = []
    for key, value in env.items():
        escaped = value.replace('"', '""').replace("'", "''")
        parts.append(
            f"{key}='{escaped}'" if any(c in value for c in " \t'\"") else f"{key}={escaped}"
        )
    return '"' + " ".join(parts) + '"'


def shell_preview(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)
