"""The user's clusters as the schedds know them: list them, stop one.

A cluster is the set of jobs tagged with its ``RjqClusterId``: one scheduler job and its worker
jobs. Listing asks each site's schedd for the user's *own* jobs only (the owner the schedd
authenticates us as, learnt with a ping), and stopping removes every job of the cluster, so a
notebook that died leaves nothing a user cannot clean up from a terminal:
``remote-jobqueue clusters ls`` / ``stop``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from . import schedd as sched
from . import sites
from .errors import RemoteJobqueueError
from .jobstate import STATUS_ATTRIBUTES, JobState, classify


@dataclass(frozen=True)
class ClusterInfo:
    cluster_id: str
    site: str
    scheduler_job: str | None
    scheduler_state: str
    worker_jobs: int
    age_seconds: float
    #: Held worker jobs, each "job id: hold reason" (the bundle replaces them).
    held_workers: tuple[str, ...] = ()


def _schedds(site: str | None) -> dict[tuple[str | None, str | None], list[str]]:
    """The distinct (collector, schedd) pairs of the catalogue's remote sites, with their names."""
    chosen = [sites.resolve(site)] if site else list(sites.catalogue().values())
    pairs: dict[tuple[str | None, str | None], list[str]] = {}
    for spec in chosen:
        if spec.is_local:
            continue
        pairs.setdefault((spec.collector, spec.schedd), []).append(spec.name)
    return pairs


def _owner(location) -> str:
    """Who the schedd at ``location`` takes us for. (``QueryOpt.DefaultMyJobsOnly`` means the
    *local* user when the process has not talked to the schedd yet, so it cannot serve here.)"""
    import htcondor2

    try:
        who = str(htcondor2.ping(location, "WRITE").get("MyRemoteUserName", ""))
    except Exception as err:
        raise sched.ScheddUnreachable(f"cannot reach the schedd: {err}") from err
    if not who or who.startswith("unauthenticated"):
        raise RemoteJobqueueError(
            "the schedd does not know who you are: check your token "
            "(SEC_TOKEN_DIRECTORY or BEARER_TOKEN_FILE)"
        )
    return who.split("@", 1)[0]


def _own_jobs(collector: str | None, schedd_name: str | None, constraint: str, projection):
    import htcondor2

    location = sched.locate_ad(collector, schedd_name)
    schedd = htcondor2.Schedd(location)
    owner = _owner(location)
    return schedd, list(
        schedd.query(f'Owner == "{owner}" && ({constraint})', projection=[*projection])
    )


def list_clusters(site: str | None = None) -> list[ClusterInfo]:
    """The user's clusters at ``site`` (or at every site of the catalogue)."""
    found: list[ClusterInfo] = []
    projection = [*STATUS_ATTRIBUTES, "RjqClusterId", "RjqRole", "RjqSite", "QDate"]
    for (collector, schedd_name), names in _schedds(site).items():
        _, ads = _own_jobs(collector, schedd_name, "RjqClusterId =!= undefined", projection)
        by_cluster: dict[str, list] = {}
        for ad in ads:
            by_cluster.setdefault(str(ad["RjqClusterId"]), []).append(ad)
        for cluster_id, jobs in sorted(by_cluster.items()):
            schedulers = [ad for ad in jobs if ad.get("RjqRole") == "scheduler"]
            head = schedulers[0] if schedulers else None
            workers = [classify(ad) for ad in jobs if ad.get("RjqRole") == "worker"]
            found.append(
                ClusterInfo(
                    cluster_id=cluster_id,
                    site=str(head.get("RjqSite", "?")) if head else "/".join(names),
                    scheduler_job=f"{head['ClusterId']}.{head['ProcId']}" if head else None,
                    scheduler_state=str(classify(head)),
                    worker_jobs=len(workers),
                    age_seconds=time.time() - min(int(ad.get("QDate", time.time())) for ad in jobs),
                    held_workers=tuple(
                        f"{phase.job_id}: {phase.reason}"
                        for phase in workers
                        if phase.state == JobState.HELD
                    ),
                )
            )
    return found


def stop_cluster(cluster_id: str, site: str | None = None) -> int:
    """Remove every job of ``cluster_id``; return how many. Only the owner may do this."""
    import htcondor2

    if not cluster_id.startswith("rjq-") or '"' in cluster_id:
        raise RemoteJobqueueError(f"not a cluster id: {cluster_id!r} (they look like rjq-…)")
    constraint = f'RjqClusterId == "{cluster_id}" && JobStatus =!= 3'
    removed = 0
    for collector, schedd_name in _schedds(site):
        schedd, mine = _own_jobs(collector, schedd_name, constraint, ["ClusterId"])
        if not mine:
            continue
        result = schedd.act(
            htcondor2.JobAction.Remove, constraint, reason="stopped with remote-jobqueue"
        )
        if result.get("TotalPermissionDenied", 0):
            raise RemoteJobqueueError(f"the schedd refused to remove the jobs of {cluster_id}")
        removed += int(result.get("TotalSuccess", 0))
    if not removed:
        raise RemoteJobqueueError(
            f"no cluster {cluster_id} of yours is running; `remote-jobqueue clusters ls` lists them"
        )
    return removed
